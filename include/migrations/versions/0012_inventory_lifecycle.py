"""Inventory across days: the WMS snapshot is the truth as of its time; only what the WMS
could not know at that time sits on top of it.

- ``inventory_position.wms_reserved``: what the WMS itself holds for releases it received
  and has not shipped (as of ``as_of``, the WMS's time).
- ``reservation.wms_received_at``: when the WMS took the release that carries it (its own
  clock, from its answer). ``consumed_qty`` / ``consumed_at``: what shipped, and when.
- ``allocated`` = held reservations + released ones the WMS had not received at ``as_of``
  (their shipped quantity once consumed). Everything the WMS had received is already in its
  numbers: in ``wms_reserved`` while unshipped, out of ``on_hand`` once shipped. So a
  snapshot that arrives before or after we hear of a shipment never subtracts it twice, and
  ``available = on_hand - wms_reserved - allocated``.
- The ``allocated <= on_hand`` CHECK goes: a WMS count may legitimately drop below what we
  hold (damage, cycle count) and must not make every later sync fail. Oversell is refused
  where it is decided — when reserving (``store.processing.reserve``) — and a position whose
  snapshot falls below its open reservations shows as a negative ``available``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE reservation
    ADD COLUMN wms_received_at timestamptz,
    ADD COLUMN consumed_qty numeric(14, 3) CHECK (consumed_qty >= 0),
    ADD COLUMN consumed_at  timestamptz,
    ADD CONSTRAINT reservation_consumed_check
        CHECK ((status = 'consumed') = (consumed_at IS NOT NULL AND consumed_qty IS NOT NULL));
CREATE INDEX reservation_held_position_idx ON reservation (item_id, dc_id)
    WHERE status = 'held';
CREATE INDEX reservation_received_position_idx ON reservation (item_id, dc_id, wms_received_at)
    WHERE status IN ('released', 'consumed');

ALTER TABLE inventory_position DROP CONSTRAINT inventory_no_oversell;
ALTER TABLE inventory_position DROP COLUMN available;
ALTER TABLE inventory_position
    ADD COLUMN wms_reserved numeric(14, 3) NOT NULL DEFAULT 0 CHECK (wms_reserved >= 0),
    ADD COLUMN available numeric(14, 3)
        GENERATED ALWAYS AS (on_hand - wms_reserved - allocated) STORED;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
ALTER TABLE inventory_position DROP COLUMN available, DROP COLUMN wms_reserved;
UPDATE inventory_position SET allocated = least(allocated, on_hand);
ALTER TABLE inventory_position
    ADD COLUMN available numeric(14, 3) GENERATED ALWAYS AS (on_hand - allocated) STORED,
    ADD CONSTRAINT inventory_no_oversell CHECK (allocated <= on_hand);
DROP INDEX reservation_received_position_idx;
DROP INDEX reservation_held_position_idx;
ALTER TABLE reservation
    DROP CONSTRAINT reservation_consumed_check,
    DROP COLUMN wms_received_at,
    DROP COLUMN consumed_at,
    DROP COLUMN consumed_qty;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
