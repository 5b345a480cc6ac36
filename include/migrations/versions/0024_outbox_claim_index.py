"""The outbox senders' claim reads only the rows still to send.

A sender claims the oldest due rows of its actions (``ORDER BY outbox_id ... FOR UPDATE SKIP
LOCKED LIMIT n``, ``store.outbox_send.claim_due``). With no index that both holds only the
open rows and is in ``outbox_id`` order, PostgreSQL walked the primary key from the first row
ever queued and filtered out every row already sent: 28 ms a claim over 150,000 sent rows on
an idle machine, paid for every batch of 200, so a backlog's sends grew with the square of
its size. This partial index holds only the rows a claim can take, in claim order.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
CREATE INDEX outbox_claim_idx ON outbox (outbox_id)
 WHERE status IN ('pending', 'failed', 'sending');
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP INDEX outbox_claim_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
