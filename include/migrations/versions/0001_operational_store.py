"""Operational store: channel messages, orders, events, exceptions, inventory, outbox, master data,
rule sets, KPIs.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA IF NOT EXISTS orderflow;
SET LOCAL search_path = orderflow;

-- ---------------------------------------------------------------- append-only guard
-- Audit tables refuse UPDATE, DELETE and TRUNCATE at the database level, whoever connects.
CREATE FUNCTION reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'orderflow.%: append-only table, % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Record a compensating event instead of changing history.';
END $$;

-- ---------------------------------------------------------------- lookup: lifecycle + taxonomy
CREATE TABLE order_status (
    status      text PRIMARY KEY,
    rank        smallint NOT NULL,   -- forward-only ordering of the happy path
    terminal    boolean NOT NULL DEFAULT false
);
INSERT INTO order_status (status, rank, terminal) VALUES
    ('RECEIVED', 10, false), ('ON_HOLD', 15, false), ('VALIDATED', 20, false),
    ('CREDIT_OK', 30, false), ('ALLOCATED', 40, false), ('READY', 50, false),
    ('RELEASED', 60, false), ('PICKED', 70, false), ('SHIPPED', 80, false),
    ('DELIVERED', 90, false), ('INVOICED', 100, false), ('CLOSED', 110, true),
    ('CANCELLED', 120, true), ('REJECTED', 130, true);

CREATE TABLE exception_category (
    category            text PRIMARY KEY,
    description         text NOT NULL,
    default_owner_role  text NOT NULL,
    default_sla_minutes integer NOT NULL CHECK (default_sla_minutes > 0),
    transient           boolean NOT NULL DEFAULT false  -- retried automatically before it counts
);
INSERT INTO exception_category VALUES
    ('pricing_mismatch',        'Order price outside contract tolerance',           'pricing',      240, false),
    ('expired_contract',        'Contract price expired for the order date',        'pricing',      240, false),
    ('unknown_item',            'Customer part number or item not recognised',      'customer_service', 120, false),
    ('ship_to_incomplete',      'Ship-to address incomplete or unknown',            'customer_service', 120, false),
    ('unknown_customer',        'Customer not recognised',                          'customer_service', 120, false),
    ('credit_limit',            'Exposure over credit limit',                       'credit',       240, false),
    ('credit_hold',             'Customer account on credit hold',                  'credit',       240, false),
    ('short_stock',             'Not enough stock across DCs',                      'inventory',    240, false),
    ('substitution_needed',     'Substitute requires consent or approval',          'customer_service', 240, false),
    ('compliance_review',       'Restricted-party or export screening hit',         'compliance',   480, false),
    ('duplicate_suspect',       'Possible duplicate of another order',              'customer_service', 120, false),
    ('low_confidence_extraction','Extracted fields below confidence threshold',     'customer_service', 120, false),
    ('integration_failure',     'External system call failed after retries',        'integration',   60, true),
    ('master_data_quality',     'Master data the order depends on failed checks',   'master_data',  480, false),
    ('quantity_mismatch',       'Ordered, shipped and invoiced quantities differ',  'billing',      480, false),
    ('uom_invalid',             'Unit of measure not valid for the item',           'customer_service', 120, false),
    ('minimum_not_met',         'Order below minimum quantity or value',            'customer_service', 240, false);

-- ---------------------------------------------------------------- inbound
CREATE TABLE channel_message (
    message_id        bigserial PRIMARY KEY,
    channel           text NOT NULL CHECK (channel IN ('edi', 'portal', 'email', 'csv', 'api')),
    partner_id        text NOT NULL,
    source_ref        text,                       -- file name, mail id, feed cursor
    content_sha256    text NOT NULL,
    raw               bytea NOT NULL,             -- stored before any parsing
    content_type      text,
    interchange_control_number text,              -- ISA13
    group_control_number       text,              -- GS06
    transaction_control_numbers text[],           -- ST02s
    client_request_id text,                       -- portal / API idempotency
    received_at       timestamptz NOT NULL DEFAULT now(),
    outcome           text NOT NULL DEFAULT 'pending'
                      CHECK (outcome IN ('pending', 'orders_created', 'quarantined', 'duplicate')),
    error             jsonb,                      -- what, where, what to do
    duplicate_of      bigint REFERENCES channel_message (message_id),
    order_count       integer,
    processed_at      timestamptz,
    replay_of         bigint REFERENCES channel_message (message_id),
    CHECK ((outcome = 'duplicate') = (duplicate_of IS NOT NULL)),
    CHECK (outcome <> 'quarantined' OR error IS NOT NULL)
);
CREATE INDEX channel_message_hash_idx ON channel_message (partner_id, content_sha256);
CREATE INDEX channel_message_isa_idx ON channel_message (partner_id, interchange_control_number)
    WHERE interchange_control_number IS NOT NULL;
CREATE UNIQUE INDEX channel_message_request_idx ON channel_message (channel, partner_id, client_request_id)
    WHERE client_request_id IS NOT NULL AND outcome <> 'duplicate';
CREATE INDEX channel_message_outcome_idx ON channel_message (outcome, received_at);

-- ---------------------------------------------------------------- orders
CREATE TABLE "order" (
    order_id          text PRIMARY KEY,
    source_message_id bigint REFERENCES channel_message (message_id),
    channel           text NOT NULL,
    partner_id        text,
    customer_id       text,
    po_number         text NOT NULL,
    ship_to_id        text,
    status            text NOT NULL REFERENCES order_status (status) DEFAULT 'RECEIVED',
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    currency          char(3) NOT NULL DEFAULT 'USD',
    order_total       numeric(14, 2),
    requested_ship_date date,
    received_at       timestamptz NOT NULL DEFAULT now(),
    canonical         jsonb NOT NULL,             -- the pydantic canonical Order
    rule_set_version  text,
    manual_touches    integer NOT NULL DEFAULT 0,
    claimed_by_run    text,                       -- dag run that holds it (processing claim)
    claimed_at        timestamptz,
    version           integer NOT NULL DEFAULT 1, -- optimistic concurrency
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_status_idx ON "order" (status, received_at);
CREATE INDEX order_customer_po_idx ON "order" (customer_id, po_number);
CREATE INDEX order_message_idx ON "order" (source_message_id);

CREATE TABLE order_line (
    order_id          text NOT NULL REFERENCES "order" (order_id) ON DELETE CASCADE,
    line_no           integer NOT NULL CHECK (line_no > 0),
    item_id           text,
    customer_part_number text,
    quantity          numeric(14, 3) NOT NULL CHECK (quantity > 0),
    uom               text NOT NULL,
    unit_price        numeric(14, 4),
    contract_price    numeric(14, 4),
    status            text NOT NULL DEFAULT 'OPEN',
    canonical         jsonb NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_line_item_idx ON order_line (item_id);

CREATE TABLE order_event (
    event_id          bigserial PRIMARY KEY,
    order_id          text NOT NULL REFERENCES "order" (order_id),
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    from_status       text REFERENCES order_status (status),
    to_status         text NOT NULL REFERENCES order_status (status),
    reason_codes      text[] NOT NULL DEFAULT '{}',
    rule_set_version  text,
    actor_type        text NOT NULL CHECK (actor_type IN ('system', 'user', 'model')),
    actor_id          text NOT NULL,              -- dag/task, user name, or model@version
    details           jsonb NOT NULL DEFAULT '{}',
    dag_id            text,
    run_id            text,
    task_id           text,
    map_index         integer
);
CREATE INDEX order_event_order_idx ON order_event (order_id, event_id);
CREATE TRIGGER order_event_append_only BEFORE UPDATE OR DELETE ON order_event
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER order_event_no_truncate BEFORE TRUNCATE ON order_event
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- Every human touch (approval, override, fix), with before/after: append-only too.
CREATE TABLE audit_log (
    audit_id          bigserial PRIMARY KEY,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    actor             text NOT NULL,
    actor_role        text,
    action            text NOT NULL,
    object_type       text NOT NULL,
    object_id         text NOT NULL,
    before            jsonb,
    after             jsonb,
    reason            text
);
CREATE INDEX audit_log_object_idx ON audit_log (object_type, object_id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- ---------------------------------------------------------------- exceptions
CREATE TABLE order_exception (
    exception_id      bigserial PRIMARY KEY,
    order_id          text REFERENCES "order" (order_id),
    line_no           integer,
    entity_type       text,                       -- for master-data-quality holds
    entity_id         text,
    category          text NOT NULL REFERENCES exception_category (category),
    severity          text NOT NULL DEFAULT 'medium' CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    owner_role        text NOT NULL,
    reason            text NOT NULL,              -- human-readable: what, where, what to do
    details           jsonb NOT NULL DEFAULT '{}',
    rule_set_version  text,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    sla_due_at        timestamptz NOT NULL,
    escalation_role   text,
    escalated_at      timestamptz,
    notified_at       timestamptz,
    retry_count       integer NOT NULL DEFAULT 0,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution        text CHECK (resolution IN ('auto_resolved', 'approved', 'overridden', 'rejected', 'fixed')),
    resolved_by       text,
    resolved_at       timestamptz,
    resolution_note   text,
    CHECK ((status = 'resolved') = (resolution IS NOT NULL AND resolved_at IS NOT NULL)),
    CHECK (order_id IS NOT NULL OR (entity_type IS NOT NULL AND entity_id IS NOT NULL))
);
CREATE INDEX order_exception_open_idx ON order_exception (status, sla_due_at) WHERE status = 'open';
CREATE INDEX order_exception_order_idx ON order_exception (order_id);
-- one open exception per (order, line, category): re-validation does not pile up duplicates
CREATE UNIQUE INDEX order_exception_one_open_idx
    ON order_exception (order_id, coalesce(line_no, 0), category) WHERE status = 'open' AND order_id IS NOT NULL;
CREATE UNIQUE INDEX order_exception_one_open_entity_idx
    ON order_exception (entity_type, entity_id, category) WHERE status = 'open' AND order_id IS NULL;

-- ---------------------------------------------------------------- master data
CREATE TABLE customer (
    customer_id       text PRIMARY KEY,
    name              text NOT NULL,
    tier              text NOT NULL DEFAULT 'standard',
    payment_terms     text,
    currency          char(3) NOT NULL DEFAULT 'USD',
    edi_partner_id    text,
    email             text,
    active            boolean NOT NULL DEFAULT true,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    dq_passed         boolean
);

CREATE TABLE ship_to (
    ship_to_id        text PRIMARY KEY,
    customer_id       text NOT NULL,
    name              text,
    address_line1     text,
    address_line2     text,
    city              text,
    region            text,
    postal_code       text,
    country           char(2),
    zone              text,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    dq_passed         boolean
);
CREATE INDEX ship_to_customer_idx ON ship_to (customer_id);

CREATE TABLE item (
    item_id           text PRIMARY KEY,
    description       text NOT NULL,
    uom               text NOT NULL,
    pack_size         integer NOT NULL DEFAULT 1,
    weight_kg         numeric(12, 3),
    length_cm         numeric(10, 2),
    width_cm          numeric(10, 2),
    height_cm         numeric(10, 2),
    hazmat            boolean NOT NULL DEFAULT false,
    discontinued      boolean NOT NULL DEFAULT false,
    substitute_item_ids text[] NOT NULL DEFAULT '{}',
    list_price        numeric(14, 4),
    unit_cost         numeric(14, 4),
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    dq_passed         boolean
);

CREATE TABLE customer_item_xref (
    customer_id       text NOT NULL,
    customer_part_number text NOT NULL,
    item_id           text NOT NULL,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    dq_passed         boolean,
    PRIMARY KEY (customer_id, customer_part_number)
);

CREATE TABLE price_contract (
    contract_id       text PRIMARY KEY,
    customer_id       text NOT NULL,
    item_id           text NOT NULL,
    unit_price        numeric(14, 4) NOT NULL,
    currency          char(3) NOT NULL DEFAULT 'USD',
    uom               text NOT NULL,
    effective_from    date NOT NULL,
    expires_on        date,
    tolerance_pct     numeric(6, 3),
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    dq_passed         boolean
);
CREATE INDEX price_contract_lookup_idx ON price_contract (customer_id, item_id, effective_from);

CREATE TABLE credit_account (
    customer_id       text PRIMARY KEY,
    credit_limit      numeric(14, 2) NOT NULL,
    open_ar           numeric(14, 2) NOT NULL DEFAULT 0,
    on_hold           boolean NOT NULL DEFAULT false,
    hold_reason       text,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE carrier_service (
    carrier_id        text NOT NULL,
    service_code      text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('parcel', 'ltl', 'ftl', 'will_call')),
    transit_days      integer NOT NULL,
    max_weight_kg     numeric(12, 3),
    hazmat_allowed    boolean NOT NULL DEFAULT false,
    active            boolean NOT NULL DEFAULT true,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (carrier_id, service_code)
);

CREATE TABLE distribution_center (
    dc_id             text PRIMARY KEY,
    name              text NOT NULL,
    region            text,
    cutoff_local_time time,
    timezone          text NOT NULL DEFAULT 'UTC'
);

-- Inventory positions synced from the WMS; reservations consume "allocated" atomically:
-- the CHECK makes oversell impossible whatever runs in parallel.
CREATE TABLE inventory_position (
    item_id           text NOT NULL,
    dc_id             text NOT NULL,
    on_hand           numeric(14, 3) NOT NULL CHECK (on_hand >= 0),
    allocated         numeric(14, 3) NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    available         numeric(14, 3) GENERATED ALWAYS AS (on_hand - allocated) STORED,
    as_of             timestamptz NOT NULL DEFAULT now(),
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, dc_id),
    CONSTRAINT inventory_no_oversell CHECK (allocated <= on_hand)
);

CREATE TABLE reservation (
    reservation_id    bigserial PRIMARY KEY,
    order_id          text NOT NULL REFERENCES "order" (order_id),
    line_no           integer NOT NULL,
    item_id           text NOT NULL,
    dc_id             text NOT NULL,
    quantity          numeric(14, 3) NOT NULL CHECK (quantity > 0),
    is_substitute     boolean NOT NULL DEFAULT false,
    status            text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'released', 'consumed', 'cancelled')),
    rule_set_version  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (item_id, dc_id) REFERENCES inventory_position (item_id, dc_id)
);
CREATE UNIQUE INDEX reservation_live_idx ON reservation (order_id, line_no, item_id, dc_id)
    WHERE status IN ('held', 'released');

-- ---------------------------------------------------------------- outbound
CREATE TABLE outbox (
    outbox_id         bigserial PRIMARY KEY,
    idempotency_key   text NOT NULL UNIQUE,       -- (order, action, version): reruns never double-send
    order_id          text,
    action            text NOT NULL,              -- wms_release, erp_invoice, edi_855, email_shipped, ...
    version           integer NOT NULL DEFAULT 1,
    target_conn_id    text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    response          jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (status, next_attempt_at) WHERE status IN ('pending', 'failed');

CREATE TABLE dead_letter (
    dead_letter_id    bigserial PRIMARY KEY,
    source            text NOT NULL,              -- outbox, intake, fulfilment_event, ...
    source_ref        text NOT NULL,
    payload           jsonb NOT NULL,
    error             text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz,
    replayed_by       text,
    UNIQUE (source, source_ref)
);

-- ---------------------------------------------------------------- rules, cursors, KPIs
CREATE TABLE rule_set_version (
    rule_set          text NOT NULL,
    version           text NOT NULL,
    effective_from    timestamptz NOT NULL,
    content           jsonb NOT NULL,
    content_sha256    text NOT NULL,
    loaded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_set, version)
);

-- Persisted cursors (portal watermark, master-data changed-since, event feeds).
CREATE TABLE sync_cursor (
    cursor_name       text PRIMARY KEY,
    value             text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by_run    text
);

CREATE TABLE kpi_snapshot (
    kpi               text NOT NULL,
    grain             text NOT NULL CHECK (grain IN ('hour', 'day')),
    period_start      timestamptz NOT NULL,
    dimension         text NOT NULL DEFAULT 'all', -- e.g. 'channel=edi'
    value             numeric,
    numerator         numeric,
    denominator       numeric,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kpi, grain, period_start, dimension)
);

CREATE TABLE dq_result (
    dq_result_id      bigserial PRIMARY KEY,
    run_id            text NOT NULL,
    suite             text NOT NULL,
    expectation       text NOT NULL,
    success           boolean NOT NULL,
    element_count     bigint,
    unexpected_count  bigint,
    details           jsonb NOT NULL DEFAULT '{}',
    validated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dq_result_suite_idx ON dq_result (suite, validated_at);

-- ---------------------------------------------------------------- platform heartbeat
-- One row per DAG run (the key): reruns and retries of the same run do not add rows.
CREATE TABLE heartbeat (
    dag_id            text NOT NULL,
    run_id            text NOT NULL,
    logical_date      timestamptz,
    written_at        timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 1,
    host              text,
    PRIMARY KEY (dag_id, run_id)
);
"""

DOWNGRADE = """
SET LOCAL search_path = orderflow;
DROP TABLE IF EXISTS heartbeat CASCADE;
DROP TABLE IF EXISTS dq_result CASCADE;
DROP TABLE IF EXISTS kpi_snapshot CASCADE;
DROP TABLE IF EXISTS sync_cursor CASCADE;
DROP TABLE IF EXISTS rule_set_version CASCADE;
DROP TABLE IF EXISTS dead_letter CASCADE;
DROP TABLE IF EXISTS outbox CASCADE;
DROP TABLE IF EXISTS reservation CASCADE;
DROP TABLE IF EXISTS inventory_position CASCADE;
DROP TABLE IF EXISTS distribution_center CASCADE;
DROP TABLE IF EXISTS carrier_service CASCADE;
DROP TABLE IF EXISTS credit_account CASCADE;
DROP TABLE IF EXISTS price_contract CASCADE;
DROP TABLE IF EXISTS customer_item_xref CASCADE;
DROP TABLE IF EXISTS item CASCADE;
DROP TABLE IF EXISTS ship_to CASCADE;
DROP TABLE IF EXISTS customer CASCADE;
DROP TABLE IF EXISTS order_exception CASCADE;
DROP TABLE IF EXISTS audit_log CASCADE;
DROP TABLE IF EXISTS order_event CASCADE;
DROP TABLE IF EXISTS order_line CASCADE;
DROP TABLE IF EXISTS "order" CASCADE;
DROP TABLE IF EXISTS channel_message CASCADE;
DROP TABLE IF EXISTS exception_category CASCADE;
DROP TABLE IF EXISTS order_status CASCADE;
DROP FUNCTION IF EXISTS reject_mutation();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
