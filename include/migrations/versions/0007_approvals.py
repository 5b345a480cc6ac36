"""Human approvals an order carries (price override, credit exception, substitution consent,
compliance clearance), which later stages honour.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE orderflow."order" ADD COLUMN approvals text[] NOT NULL DEFAULT '{}';
        ALTER TABLE orderflow.order_exception ADD COLUMN approval_run_id text;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE orderflow.order_exception DROP COLUMN approval_run_id;
        ALTER TABLE orderflow."order" DROP COLUMN approvals;
        """
    )
