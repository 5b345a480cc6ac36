"""Intake: idempotent message ingestion, trading partners, control-number allocation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

-- The same delivery seen again (a rerun over the same file, a re-read portal page) maps to the
-- same message row instead of a new one: channel:partner:source_ref:sha256.
ALTER TABLE channel_message
    ADD COLUMN ingest_key text,
    ADD COLUMN size_bytes bigint,
    ADD COLUMN delivery_count integer NOT NULL DEFAULT 1,
    ADD COLUMN details jsonb NOT NULL DEFAULT '{}';
UPDATE channel_message SET ingest_key = 'legacy:' || message_id WHERE ingest_key IS NULL;
ALTER TABLE channel_message ALTER COLUMN ingest_key SET NOT NULL;
CREATE UNIQUE INDEX channel_message_ingest_key_idx ON channel_message (ingest_key);
-- A reused client request id with other content must still be stored (raw first) and then
-- judged a duplicate, so the request id cannot be a unique constraint.
DROP INDEX channel_message_request_idx;
CREATE INDEX channel_message_request_idx ON channel_message (channel, partner_id, client_request_id)
    WHERE client_request_id IS NOT NULL;

-- An order created from a message can be traced back, and one message holds many orders.
CREATE INDEX order_po_partner_idx ON "order" (partner_id, po_number);

-- Trading partners: who sends what, and which customer they are. Synced from master data
-- or configured; EDI orders get their customer from here.
CREATE TABLE trading_partner (
    partner_id        text PRIMARY KEY,
    customer_id       text,
    channel           text NOT NULL DEFAULT 'edi',
    isa_qualifier     text,
    isa_id            text,
    gs_id             text,
    x12_version       text,
    element_sep       text,
    segment_term      text,
    component_sep     text,
    repetition_sep    text,
    active            boolean NOT NULL DEFAULT true,
    synced_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX trading_partner_isa_idx ON trading_partner (isa_qualifier, isa_id)
    WHERE isa_id IS NOT NULL;

-- Outbound control numbers (ISA13, GS06, ST02) per partner, allocated in the caller's
-- transaction so a rolled-back send never burns or reuses a number.
CREATE TABLE control_number (
    partner_id        text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('isa', 'gs', 'st')),
    last_value        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (partner_id, kind)
);
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TABLE control_number;
DROP TABLE trading_partner;
DROP INDEX order_po_partner_idx;
DROP INDEX channel_message_ingest_key_idx;
DROP INDEX channel_message_request_idx;
CREATE UNIQUE INDEX channel_message_request_idx ON channel_message (channel, partner_id, client_request_id)
    WHERE client_request_id IS NOT NULL AND outcome <> 'duplicate';
ALTER TABLE channel_message DROP COLUMN ingest_key, DROP COLUMN size_bytes,
    DROP COLUMN delivery_count, DROP COLUMN details;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
