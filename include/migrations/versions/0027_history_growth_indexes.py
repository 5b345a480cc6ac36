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
* The KPI snapshots (``kpis.publish``, after every processing run and hourly) and the
  dashboard: each KPI aggregates its source over the last 48 hours and 35 days by the time
  that places a row in a period; every such time now has an index (``order_fact``'s
  released, picked, shipped, invoiced and delivery-outcome times; an exception's opened,
  resolved and SLA-judged times; shipments', invoices' and outbox rows' creation), and so do
  the snapshots' own periods (the delete before each recompute, the dashboard's read) and
  the AI decisions people reviewed. ``order_fact`` is a materialised view: its indexes cost
  only the rows a refresh changes. The outbox's ``created_at`` costs a send ≈ 5.6 µs a row
  (4,453 rows inserted, leased and marked sent in a rolled-back transaction: 149-159 ms
  without it, 172-189 ms with it).
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
CREATE INDEX order_fact_released_idx ON order_fact (released_at);
CREATE INDEX order_fact_picked_idx ON order_fact (picked_at);
CREATE INDEX order_fact_shipped_idx ON order_fact (shipped_at);
CREATE INDEX order_fact_invoiced_idx ON order_fact (invoiced_at);
CREATE INDEX order_fact_outcome_idx ON order_fact (delivery_outcome_at);
CREATE INDEX order_exception_opened_idx ON order_exception (opened_at);
CREATE INDEX order_exception_resolved_idx ON order_exception (resolved_at)
    WHERE resolved_at IS NOT NULL;
-- orderflow.kpis.EXCEPTION_SLA's sla_judged_at, written exactly as there
CREATE INDEX order_exception_sla_judged_idx ON order_exception ((
    CASE WHEN resolved_at IS NOT NULL AND resolved_at <= sla_due_at THEN resolved_at
    ELSE sla_due_at END));
CREATE INDEX shipment_created_idx ON shipment (created_at);
CREATE INDEX invoice_created_idx ON invoice (created_at);
CREATE INDEX outbox_created_idx ON outbox (created_at);
CREATE INDEX kpi_snapshot_period_idx ON kpi_snapshot (grain, period_start);
CREATE INDEX ai_decision_reviewed_at_idx ON ai_decision (reviewed_at)
    WHERE reviewed_at IS NOT NULL;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX ai_decision_reviewed_at_idx;
DROP INDEX kpi_snapshot_period_idx;
DROP INDEX outbox_created_idx;
DROP INDEX invoice_created_idx;
DROP INDEX shipment_created_idx;
DROP INDEX order_exception_sla_judged_idx;
DROP INDEX order_exception_resolved_idx;
DROP INDEX order_exception_opened_idx;
DROP INDEX order_fact_outcome_idx;
DROP INDEX order_fact_invoiced_idx;
DROP INDEX order_fact_shipped_idx;
DROP INDEX order_fact_picked_idx;
DROP INDEX order_fact_released_idx;
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
