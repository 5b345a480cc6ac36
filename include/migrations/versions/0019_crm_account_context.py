"""The CRM's account context (#19): accounts with owner and team, special price agreements,
quotes, and the pricing-approval requests OrderFlow raised in the CRM.

- ``crm_account`` / ``crm_price_agreement`` / ``crm_quote``: synced from the CRM like master
  data (idempotent upserts, ``synced_at``).
- ``order_line.price_source`` / ``price_document_id``: which document the charged price came
  from (``contract``, ``list``, ``quote``, ``agreement``), so a price the CRM explained says
  which quote or agreement explained it.
- ``order_exception.owner_team`` / ``account_owner``: the account's team and owner from the
  CRM, on the pricing exceptions routed to them (the desk shows them).
- ``crm_approval``: one row per approval requested in the CRM (by the CRM's request id, one
  per exception), and the decision applied from it — at most once (``applied_at``).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-10
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

CREATE TABLE crm_account (
    account_id         text PRIMARY KEY,
    customer_id        text NOT NULL,
    name               text,
    owner              text,
    owner_email        text,
    team               text,
    source_updated_at  timestamptz,
    synced_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_account_customer_idx ON crm_account (customer_id);

CREATE TABLE crm_price_agreement (
    agreement_id       text PRIMARY KEY,
    customer_id        text NOT NULL,
    item_id            text NOT NULL,
    unit_price         numeric(14, 4) NOT NULL,
    currency           text NOT NULL DEFAULT 'USD',
    valid_from         date NOT NULL,
    valid_to           date,
    source_updated_at  timestamptz,
    synced_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_price_agreement_pair_idx ON crm_price_agreement (customer_id, item_id);

CREATE TABLE crm_quote (
    quote_id           text PRIMARY KEY,
    customer_id        text NOT NULL,
    item_id            text NOT NULL,
    quoted_price       numeric(14, 4) NOT NULL,
    currency           text NOT NULL DEFAULT 'USD',
    quoted_on          date NOT NULL,
    expires_on         date NOT NULL,
    status             text NOT NULL DEFAULT 'issued',
    source_updated_at  timestamptz,
    synced_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_quote_pair_idx ON crm_quote (customer_id, item_id);

ALTER TABLE order_line ADD COLUMN price_source text;
ALTER TABLE order_line ADD COLUMN price_document_id text;

ALTER TABLE order_exception ADD COLUMN owner_team text;
ALTER TABLE order_exception ADD COLUMN account_owner text;

CREATE TABLE crm_approval (
    request_id         text PRIMARY KEY,             -- the CRM's id
    exception_id       bigint NOT NULL UNIQUE REFERENCES order_exception (exception_id),
    order_id           text REFERENCES "order" (order_id),
    owner              text,
    team               text,
    requested_at       timestamptz NOT NULL DEFAULT now(),
    status             text NOT NULL DEFAULT 'requested'
                       CHECK (status IN ('requested', 'approved', 'rejected')),
    decided_by         text,
    decided_at         timestamptz,
    decision_note      text,
    decision_seq       bigint,
    applied_at         timestamptz,
    outcome            text                          -- what applying it did (or why not)
);

CREATE OR REPLACE VIEW exception_desk AS
SELECT e.exception_id, e.order_id, e.line_no, e.entity_type, e.entity_id, e.category,
       e.severity, e.owner_role, e.escalation_role, e.reason, e.stage, e.details,
       e.opened_at, e.sla_due_at, e.notified_at, e.escalated_at, e.retry_count,
       now() - e.opened_at                                            AS age,
       CASE WHEN now() >= e.sla_due_at THEN 'breached'
            WHEN now() >= e.opened_at + (e.sla_due_at - e.opened_at) * 0.8 THEN 'nearing'
            ELSE 'ok' END                                             AS sla_state,
       c.transient,
       o.status AS order_status, o.channel, o.customer_id, o.po_number, o.order_total,
       e.owner_team, e.account_owner
  FROM order_exception e
  JOIN exception_category c USING (category)
  LEFT JOIN "order" o USING (order_id)
 WHERE e.status = 'open';
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP VIEW exception_desk;
CREATE VIEW exception_desk AS
SELECT e.exception_id, e.order_id, e.line_no, e.entity_type, e.entity_id, e.category,
       e.severity, e.owner_role, e.escalation_role, e.reason, e.stage, e.details,
       e.opened_at, e.sla_due_at, e.notified_at, e.escalated_at, e.retry_count,
       now() - e.opened_at                                            AS age,
       CASE WHEN now() >= e.sla_due_at THEN 'breached'
            WHEN now() >= e.opened_at + (e.sla_due_at - e.opened_at) * 0.8 THEN 'nearing'
            ELSE 'ok' END                                             AS sla_state,
       c.transient,
       o.status AS order_status, o.channel, o.customer_id, o.po_number, o.order_total
  FROM order_exception e
  JOIN exception_category c USING (category)
  LEFT JOIN "order" o USING (order_id)
 WHERE e.status = 'open';
DROP TABLE crm_approval;
ALTER TABLE order_exception DROP COLUMN account_owner;
ALTER TABLE order_exception DROP COLUMN owner_team;
ALTER TABLE order_line DROP COLUMN price_document_id;
ALTER TABLE order_line DROP COLUMN price_source;
DROP TABLE crm_quote;
DROP TABLE crm_price_agreement;
DROP TABLE crm_account;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
