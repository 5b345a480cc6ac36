"""Backorders filled as stock arrives: a *backorder release* is an order of its own (its
parent is the customer's order), allocated with the stock that arrived and sent through
planning and release like any other; the parent's line keeps what still waits.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
ALTER TABLE "order" ADD COLUMN parent_order_id text REFERENCES "order" (order_id);
CREATE INDEX order_parent_idx ON "order" (parent_order_id) WHERE parent_order_id IS NOT NULL;
CREATE INDEX order_line_backordered_idx ON order_line (order_id) WHERE backordered_qty > 0;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX order_line_backordered_idx;
DROP INDEX order_parent_idx;
ALTER TABLE "order" DROP COLUMN parent_order_id;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
