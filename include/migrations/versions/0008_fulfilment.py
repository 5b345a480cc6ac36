"""Fulfilment: the inbox of WMS / carrier events, shipment lines and milestones, invoices,
outbound EDI documents (for 997 matching) and expedited-freight attribution.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

INSERT INTO exception_category VALUES
    ('delivery_exception', 'Carrier reported a delivery exception (damage, loss, refusal)',
     'logistics', 240, false)
ON CONFLICT DO NOTHING;

-- Every WMS milestone and carrier tracking event, stored before it is applied. The natural
-- key makes a re-delivered event a no-op; the status says what applying it did.
CREATE TABLE fulfilment_event (
    event_id         bigserial PRIMARY KEY,
    source           text NOT NULL CHECK (source IN ('wms', 'carrier')),
    event_key        text NOT NULL,
    feed_seq         bigint,
    kind             text NOT NULL,
    order_id         text,
    release_id       text,
    tracking_number  text,
    shipment_id      text,
    occurred_at      timestamptz NOT NULL,
    payload          jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'applied', 'no_op', 'quarantined')),
    attempts         integer NOT NULL DEFAULT 0,
    error            text,
    applied_at       timestamptz,
    UNIQUE (source, event_key)
);
CREATE INDEX fulfilment_event_pending_idx ON fulfilment_event (occurred_at, event_id)
    WHERE status = 'pending';
CREATE INDEX fulfilment_event_shipment_idx ON fulfilment_event (shipment_id);
CREATE INDEX fulfilment_event_order_idx ON fulfilment_event (order_id);

ALTER TABLE shipment DROP CONSTRAINT shipment_status_check;
ALTER TABLE shipment
    ADD CONSTRAINT shipment_status_check CHECK (status IN (
        'planned', 'released', 'picked', 'packed', 'shipped', 'in_transit', 'delivered',
        'cancelled')),
    ADD COLUMN released_at        timestamptz,
    ADD COLUMN picked_at          timestamptz,
    ADD COLUMN packed_at          timestamptz,
    ADD COLUMN shipped_at         timestamptz,
    ADD COLUMN in_transit_at      timestamptz,
    ADD COLUMN delivered_at       timestamptz,
    ADD COLUMN delayed_at         timestamptz,
    ADD COLUMN delay_reason       text,
    ADD COLUMN delivery_exception text,
    ADD COLUMN short_picked       boolean NOT NULL DEFAULT false,
    ADD COLUMN baseline_service   text,                 -- what an on-time release would use
    ADD COLUMN expedite_cost      numeric(12, 2) NOT NULL DEFAULT 0 CHECK (expedite_cost >= 0),
    ADD COLUMN expedite_cause     text;
CREATE UNIQUE INDEX shipment_wms_release_idx ON shipment (wms_release_id)
    WHERE wms_release_id IS NOT NULL;
CREATE INDEX shipment_tracking_idx ON shipment (tracking_number) WHERE tracking_number IS NOT NULL;

-- What a shipment carries: released at release, picked and shipped from the WMS.
CREATE TABLE shipment_line (
    shipment_id       text NOT NULL REFERENCES shipment (shipment_id),
    line_no           integer NOT NULL,
    item_id           text NOT NULL,
    ordered_item_id   text,
    uom               text NOT NULL,
    quantity_released numeric(14, 3) NOT NULL CHECK (quantity_released >= 0),
    quantity_picked   numeric(14, 3),
    quantity_shipped  numeric(14, 3),
    PRIMARY KEY (shipment_id, line_no, item_id)
);

-- One invoice per shipment (a re-issue after a fix bumps the version, same invoice id).
CREATE TABLE invoice (
    invoice_id        text PRIMARY KEY,
    shipment_id       text NOT NULL UNIQUE REFERENCES shipment (shipment_id),
    order_id          text NOT NULL REFERENCES "order" (order_id),
    version           integer NOT NULL DEFAULT 1,
    status            text NOT NULL CHECK (status IN ('withheld', 'queued', 'posted')),
    document          jsonb NOT NULL,                    -- the canonical Invoice
    subtotal          numeric(14, 2) NOT NULL,
    tax               numeric(14, 2) NOT NULL,
    freight           numeric(14, 2) NOT NULL,
    total             numeric(14, 2) NOT NULL,
    currency          char(3) NOT NULL,
    erp_invoice_number text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    posted_at         timestamptz
);
CREATE INDEX invoice_order_idx ON invoice (order_id);

-- Outbound X12 we sent, by envelope, so a partner's 997 finds what it acknowledges.
CREATE TABLE outbound_document (
    idempotency_key   text PRIMARY KEY REFERENCES outbox (idempotency_key),
    partner_id        text NOT NULL,
    document_type     text NOT NULL,                      -- 855, 856, 810
    functional_id     text NOT NULL,                      -- GS01: PR, SH, IN
    interchange_control_number text NOT NULL,
    group_control_number text NOT NULL,
    set_control_numbers text[] NOT NULL,
    order_id          text,
    shipment_id       text,
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    ack_status        text CHECK (ack_status IN ('A', 'E', 'M', 'P', 'R', 'W', 'X')),
    ack_received_at   timestamptz,
    ack_message_id    bigint REFERENCES channel_message (message_id),
    ack_detail        jsonb,
    UNIQUE (partner_id, functional_id, group_control_number)
);
-- A partner's 997 is a message of its own: matched to what it acknowledges, not an order.
ALTER TABLE channel_message DROP CONSTRAINT channel_message_outcome_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_outcome_check
    CHECK (outcome IN ('pending', 'orders_created', 'quarantined', 'duplicate', 'acknowledgment'));

CREATE SEQUENCE invoice_number_seq;

CREATE INDEX outbound_document_order_idx ON outbound_document (order_id);
CREATE INDEX outbound_document_unacked_idx ON outbound_document (created_at)
    WHERE ack_status IS NULL;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TABLE outbound_document;
DROP SEQUENCE invoice_number_seq;
ALTER TABLE channel_message DROP CONSTRAINT channel_message_outcome_check;
ALTER TABLE channel_message ADD CONSTRAINT channel_message_outcome_check
    CHECK (outcome IN ('pending', 'orders_created', 'quarantined', 'duplicate'));
DROP TABLE invoice;
DROP TABLE shipment_line;
DROP INDEX shipment_tracking_idx;
DROP INDEX shipment_wms_release_idx;
ALTER TABLE shipment DROP CONSTRAINT shipment_status_check;
ALTER TABLE shipment
    DROP COLUMN released_at, DROP COLUMN picked_at, DROP COLUMN packed_at,
    DROP COLUMN shipped_at, DROP COLUMN in_transit_at, DROP COLUMN delivered_at,
    DROP COLUMN delayed_at, DROP COLUMN delay_reason, DROP COLUMN delivery_exception,
    DROP COLUMN short_picked, DROP COLUMN baseline_service, DROP COLUMN expedite_cost,
    DROP COLUMN expedite_cause,
    ADD CONSTRAINT shipment_status_check CHECK (status IN ('planned', 'released', 'picked',
        'packed', 'shipped', 'delivered', 'cancelled'));
DROP TABLE fulfilment_event;
DELETE FROM exception_category WHERE category = 'delivery_exception';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
