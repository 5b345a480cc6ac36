"""Master data fields the decisions need: customer policies, item identifiers, carrier rates,
DC zones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
ALTER TABLE customer
    ADD COLUMN ship_complete boolean NOT NULL DEFAULT false,
    ADD COLUMN accepts_substitutes boolean NOT NULL DEFAULT false;
ALTER TABLE item
    ADD COLUMN upc text,
    ADD COLUMN vendor_part text;
CREATE INDEX item_upc_idx ON item (upc);
CREATE INDEX item_vendor_part_idx ON item (vendor_part);
ALTER TABLE carrier_service
    ADD COLUMN base_rate numeric(12, 2),
    ADD COLUMN per_kg numeric(12, 4);
ALTER TABLE distribution_center
    ADD COLUMN zones text[] NOT NULL DEFAULT '{}',
    ADD COLUMN postal_code text,
    ADD COLUMN country char(2);
CREATE INDEX customer_email_idx ON customer (lower(email));
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX customer_email_idx;
ALTER TABLE distribution_center DROP COLUMN zones, DROP COLUMN postal_code, DROP COLUMN country;
ALTER TABLE carrier_service DROP COLUMN base_rate, DROP COLUMN per_kg;
DROP INDEX item_upc_idx;
DROP INDEX item_vendor_part_idx;
ALTER TABLE item DROP COLUMN upc, DROP COLUMN vendor_part;
ALTER TABLE customer DROP COLUMN ship_complete, DROP COLUMN accepts_substitutes;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
