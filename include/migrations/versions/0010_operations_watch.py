"""Failures of our own: outbox follow-ups and ambiguous sends, feed continuity, stalled orders.

- ``outbox``: a send that succeeded is recorded as sent on its own; the bookkeeping after it
  (the WMS release id on the shipment, the posted invoice) is a *follow-up* with its own
  status, attempts and error. ``send_started_at`` marks the moment a non-keyed send (e-mail)
  was handed over: a row found ``sending`` with it set after a crash is ``unknown`` (it may
  or may not have gone out) and waits for a person instead of being sent blindly again.
- ``sync_cursor.last_key``: the natural key of the last event read, so a feed whose history
  changed (or that was rewound behind our cursor) is noticed on the next read.
- ``stalled``: an order that stays in a stage longer than the rules allow.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox
    ADD CONSTRAINT outbox_status_check
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'unknown')),
    ADD COLUMN send_started_at   timestamptz,
    ADD COLUMN followup_status   text CHECK (followup_status IN ('pending', 'done', 'dead')),
    ADD COLUMN followup_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN followup_error    text,
    ADD COLUMN followup_next_at  timestamptz;
CREATE INDEX outbox_followup_idx ON outbox (followup_next_at) WHERE followup_status = 'pending';
CREATE INDEX outbox_open_idx ON outbox (action, created_at)
    WHERE status IN ('pending', 'sending', 'failed');

ALTER TABLE sync_cursor ADD COLUMN last_key text;

INSERT INTO exception_category VALUES
    ('stalled', 'Order stayed in a stage longer than the rules allow', 'logistics', 240, false)
ON CONFLICT DO NOTHING;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DELETE FROM order_exception WHERE category = 'stalled';
DELETE FROM exception_category WHERE category = 'stalled';
ALTER TABLE sync_cursor DROP COLUMN last_key;
DROP INDEX outbox_open_idx;
DROP INDEX outbox_followup_idx;
UPDATE outbox SET status = 'failed' WHERE status = 'unknown';
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox
    DROP COLUMN send_started_at, DROP COLUMN followup_status, DROP COLUMN followup_attempts,
    DROP COLUMN followup_error, DROP COLUMN followup_next_at,
    ADD CONSTRAINT outbox_status_check
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
