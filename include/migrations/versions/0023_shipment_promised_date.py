"""Delay risk (#17, model 3): the date each shipment was promised for.

Planning knows it (the customer's requested delivery date, else the ship date plus the
carrier rules' default promise in business days) and now keeps it on the shipment, so that a
delivery can be judged late against what was promised — the lane and carrier performance the
delay-risk model reads, and its labels. Shipments planned before this have none (NULL) and
are left out of those figures.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
ALTER TABLE shipment ADD COLUMN promised_date date;
-- lane performance: deliveries of the last weeks by carrier service
CREATE INDEX shipment_delivered_idx ON shipment (delivered_at) WHERE delivered_at IS NOT NULL;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX shipment_delivered_idx;
ALTER TABLE shipment DROP COLUMN promised_date;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
