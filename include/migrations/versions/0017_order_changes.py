"""Customer changes and cancellations of orders already received (``domain.changes``):
kept as received, then applied to the order according to its state.

``channel_message.outcome`` gains ``change_received`` (a message that carried changes, not
new orders). ``order_change.status``: ``pending`` (received, not yet applied), ``waiting_wms``
(the WMS release is being changed or cancelled through the outbox), ``applied``, ``refused``
(too late — picking started or shipped — with an exception for customer service).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE channel_message DROP CONSTRAINT channel_message_outcome_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_outcome_check
    CHECK (outcome IN ('pending', 'orders_created', 'quarantined', 'duplicate',
                       'acknowledgment', 'change_received'));

CREATE TABLE order_change (
    change_id        bigserial PRIMARY KEY,
    order_id         text NOT NULL REFERENCES "order" (order_id),
    message_id       bigint REFERENCES channel_message (message_id),
    kind             text NOT NULL CHECK (kind IN ('cancel', 'replace', 'change')),
    source           text NOT NULL,  -- x12_850_cancel, x12_850_replace, x12_860, portal, inside_sales
    reference        text,           -- the sender's id for the change (860 BCH03, portal request id)
    payload          jsonb NOT NULL, -- domain.changes.OrderChange
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'waiting_wms', 'applied', 'refused')),
    outcome          text,           -- what applying it did, in words
    requested_by     text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    applied_at       timestamptz,
    UNIQUE (order_id, source, reference)
);
CREATE INDEX order_change_open_idx ON order_change (status, change_id)
    WHERE status IN ('pending', 'waiting_wms');
CREATE INDEX order_change_order_idx ON order_change (order_id);

INSERT INTO exception_category VALUES
    ('change_too_late', 'Customer change or cancellation after picking started or shipment',
     'customer_service', 120, false)
ON CONFLICT DO NOTHING;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DELETE FROM order_exception WHERE category = 'change_too_late';
DELETE FROM exception_category WHERE category = 'change_too_late';
DROP TABLE order_change;
UPDATE channel_message SET outcome = 'quarantined' WHERE outcome = 'change_received';
ALTER TABLE channel_message DROP CONSTRAINT channel_message_outcome_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_outcome_check
    CHECK (outcome IN ('pending', 'orders_created', 'quarantined', 'duplicate',
                       'acknowledgment'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
