"""Carrier tendering (#20 part 4): each released shipment is booked with its planned carrier
service through the carrier's API (the ``carrier_tender`` outbox action), and the shipment
keeps what the carrier answered.

``shipment`` gains:

- ``tender_status``: NULL (never tendered: shipments before this), ``tendering`` (queued),
  ``booked``, ``refused`` (every service the carrier rules permit was refused: an exception
  for logistics);
- ``carrier_booking_id``, ``pro_number``, ``label_url``, ``booked_at``: the booking;
- ``quoted_rate``: the plan's rate of the service tendered (what the rate table said);
  ``booked_rate``: what the carrier booked it for (surcharges included) — the real money;
- ``baseline_rate``: the quoted rate of the service an on-time plan would have used (kept
  from the first plan, so ``expedite_cost`` can be re-stated as booked minus baseline);
- ``tender_refusals``: each refusal (service, error, when), oldest first.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-10
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE shipment
    ADD COLUMN tender_status      text
        CHECK (tender_status IN ('tendering', 'booked', 'refused')),
    ADD COLUMN carrier_booking_id text,
    ADD COLUMN pro_number         text,
    ADD COLUMN label_url          text,
    ADD COLUMN booked_at          timestamptz,
    ADD COLUMN quoted_rate        numeric(12, 2),
    ADD COLUMN booked_rate        numeric(12, 2),
    ADD COLUMN baseline_rate      numeric(12, 2),
    ADD COLUMN tender_refusals    jsonb NOT NULL DEFAULT '[]';
CREATE INDEX shipment_tender_idx ON shipment (tender_status)
    WHERE tender_status IN ('tendering', 'refused');
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX shipment_tender_idx;
ALTER TABLE shipment
    DROP COLUMN tender_status, DROP COLUMN carrier_booking_id, DROP COLUMN pro_number,
    DROP COLUMN label_url, DROP COLUMN booked_at, DROP COLUMN quoted_rate,
    DROP COLUMN booked_rate, DROP COLUMN baseline_rate, DROP COLUMN tender_refusals;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
