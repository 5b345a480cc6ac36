"""Partners' rejections and missing 997s reach the desk (#12 part 3).

- ``trading_partner.ack_window_hours``: how long a partner may take to acknowledge what we
  send (default 24 h); past it a sent document without a 997 opens ``edi_ack_overdue``.
  NULL: the partner sends no 997s (nothing is ever overdue for it).
- ``outbound_document.resent_as`` / ``resend_of``: a document corrected and resent from the
  desk points to its successor (new control number, version + 1) and back. A document is
  resent at most once (``resent_as`` is set once, and each successor has one predecessor);
  a superseded document is neither rejected nor overdue any more.
- ``edi_rejected`` (a 997 with AK9/AK5 R or E) and ``edi_ack_overdue``, owned by the EDI
  team (routing rules 2026.12.2 and later).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE trading_partner
    ADD COLUMN ack_window_hours numeric DEFAULT 24 CHECK (ack_window_hours > 0);

ALTER TABLE outbound_document
    ADD COLUMN resent_as text UNIQUE REFERENCES outbound_document (idempotency_key),
    ADD COLUMN resend_of text UNIQUE REFERENCES outbound_document (idempotency_key),
    ADD COLUMN resent_by text,
    ADD COLUMN resent_at timestamptz;

INSERT INTO exception_category VALUES
    ('edi_rejected', 'A trading partner rejected (or noted errors in) a document we sent',
     'edi', 240, false),
    ('edi_ack_overdue', 'A trading partner has not acknowledged a document within its window',
     'edi', 240, false)
ON CONFLICT DO NOTHING;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DELETE FROM order_exception WHERE category IN ('edi_rejected', 'edi_ack_overdue');
DELETE FROM exception_category WHERE category IN ('edi_rejected', 'edi_ack_overdue');
ALTER TABLE outbound_document
    DROP COLUMN resent_as, DROP COLUMN resend_of, DROP COLUMN resent_by, DROP COLUMN resent_at;
ALTER TABLE trading_partner DROP COLUMN ack_window_hours;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
