"""Marketplace channel (#19): ``channel_message.channel`` gains ``marketplace``, and
``marketplace_order`` keeps, per marketplace order, the time limits the marketplace set and
when the marketplace received each of our callbacks (acknowledgement, shipment,
cancellation answer) — by its own clock, from its answer to the callback.

A row is written when the order is read from the marketplace's feed (before or whatever the
intake outcome: a quarantined order still has a deadline to miss), so an order we never
acknowledged is as visible as one acknowledged late.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-09
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE channel_message DROP CONSTRAINT channel_message_channel_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_channel_check
    CHECK (channel IN ('edi', 'portal', 'email', 'csv', 'api', 'marketplace'));

CREATE TABLE marketplace_order (
    marketplace_id         text NOT NULL,
    marketplace_order_id   text NOT NULL,
    order_id               text,          -- ours (no FK: the order may be quarantined)
    ordered_at             timestamptz NOT NULL,
    acknowledge_by         timestamptz NOT NULL,
    ship_by                timestamptz NOT NULL,
    acknowledged_at        timestamptz,   -- the marketplace's receipt time of our ack
    ack_late               boolean,
    shipment_confirmed_at  timestamptz,   -- ... of our first shipment callback
    ship_late              boolean,
    cancel_requested_at    timestamptz,   -- the buyer asked to cancel
    cancel_respond_by      timestamptz,
    cancel_answered_at     timestamptz,   -- ... of our answer (cancelled or refused)
    cancel_answer          text CHECK (cancel_answer IN ('cancelled', 'refused')),
    cancel_late            boolean,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (marketplace_id, marketplace_order_id)
);
CREATE INDEX marketplace_order_order_idx ON marketplace_order (order_id);
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TABLE marketplace_order;
-- refused (the constraint) while marketplace messages are stored: they are kept, not dropped
ALTER TABLE channel_message DROP CONSTRAINT channel_message_channel_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_channel_check
    CHECK (channel IN ('edi', 'portal', 'email', 'csv', 'api'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
