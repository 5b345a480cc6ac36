"""Inventory across days: reservations are consumed by what shipped, and ``allocated`` is
derived from the reservations against the WMS snapshot it sits on.

- ``reservation.consumed_qty`` / ``consumed_at``: a released reservation is consumed by the
  quantity that shipped, at the WMS's shipment time (a short pick consumes less; nothing
  shipped cancels it).
- ``inventory_position.allocated`` = held + released reservations + consumed ones the WMS
  snapshot (``as_of``) does not reflect yet (shipped after it). The WMS on-hand as of its
  timestamp is the truth; only our reservations not yet shipped at that time sit on top, so
  a snapshot that arrives before or after a shipment never subtracts it twice.
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
    ADD COLUMN consumed_qty numeric(14, 3) CHECK (consumed_qty >= 0),
    ADD COLUMN consumed_at  timestamptz,
    ADD CONSTRAINT reservation_consumed_check
        CHECK ((status = 'consumed') = (consumed_at IS NOT NULL AND consumed_qty IS NOT NULL));
CREATE INDEX reservation_open_position_idx ON reservation (item_id, dc_id)
    WHERE status IN ('held', 'released');
CREATE INDEX reservation_consumed_position_idx ON reservation (item_id, dc_id, consumed_at)
    WHERE status = 'consumed';

ALTER TABLE inventory_position DROP CONSTRAINT inventory_no_oversell;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
UPDATE inventory_position SET allocated = least(allocated, on_hand);
ALTER TABLE inventory_position
    ADD CONSTRAINT inventory_no_oversell CHECK (allocated <= on_hand);
DROP INDEX reservation_consumed_position_idx;
DROP INDEX reservation_open_position_idx;
ALTER TABLE reservation
    DROP CONSTRAINT reservation_consumed_check,
    DROP COLUMN consumed_at,
    DROP COLUMN consumed_qty;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
