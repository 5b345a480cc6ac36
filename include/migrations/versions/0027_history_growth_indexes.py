"""Reads of recent work that no longer read the whole history.

A distributor's store only grows: after a year about 1.5 million orders, ten million order
events and as many shipments. These statements read a window of recent rows, but no index
could find that window, so each read every row ever written:

* ``orderflow status`` — orders received, moved, picked or shipped in the day, and the stamps
  ahead of the clock: ``shipment_picked_idx``, ``shipment_shipped_idx`` and a BRIN index on
  ``order_event (occurred_at)``. ``order_event`` is append-only (a trigger refuses UPDATE and
  DELETE), so its rows lie in the order they happened and a BRIN index of a few pages finds a
  day's events; a btree would cost every stage's event insert an index entry.
* Validation's duplicate search (``store.processing.PRIOR_WHERE``, and the order check's
  copy of it): a customer's orders of the last hours, found through
  ``order_customer_received_idx (customer_id, received_at)`` instead of every order the
  customer ever placed. It replaces ``order_customer_po_idx (customer_id, po_number)``, which
  nothing needs: every lookup by PO number goes through ``order_po_number_idx`` (the
  existing-PO check joins on ``po_number``), so ``"order"`` keeps eight indexes and its
  updates cost what they did.
* The delay-risk features read in planning (``store.ai.delay_stats``): the shipments still
  open per DC, through ``shipment_open_idx``, a partial index that holds only the open ones
  (and the lanes' deliveries now through ``shipment_delivered_idx``: the statement compares
  ``delivered_at`` itself with the dates, not ``delivered_at::date``).
* The rows that wait for a person (``orderflow status``, ``orderflow outbox attention``,
  the quarantined fulfilment events): partial indexes that hold only those rows.

Measured in docs/performance.md ("A year of history").

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
CREATE INDEX shipment_picked_idx ON shipment (picked_at) WHERE picked_at IS NOT NULL;
CREATE INDEX shipment_shipped_idx ON shipment (shipped_at) WHERE shipped_at IS NOT NULL;
CREATE INDEX shipment_open_idx ON shipment (dc_id)
    WHERE shipped_at IS NULL AND status IN ('planned', 'released', 'picked', 'packed');
CREATE INDEX order_event_occurred_brin ON order_event USING brin (occurred_at);
CREATE INDEX order_customer_received_idx ON "order" (customer_id, received_at);
DROP INDEX order_customer_po_idx;
CREATE INDEX outbox_attention_idx ON outbox (outbox_id)
    WHERE status IN ('dead', 'unknown') OR followup_status = 'dead';
CREATE INDEX fulfilment_event_quarantined_idx ON fulfilment_event (event_id)
    WHERE status = 'quarantined';
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX fulfilment_event_quarantined_idx;
DROP INDEX outbox_attention_idx;
CREATE INDEX order_customer_po_idx ON "order" (customer_id, po_number);
DROP INDEX order_customer_received_idx;
DROP INDEX order_event_occurred_brin;
DROP INDEX shipment_open_idx;
DROP INDEX shipment_shipped_idx;
DROP INDEX shipment_picked_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
