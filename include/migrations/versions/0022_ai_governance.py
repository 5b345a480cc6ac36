"""Decision support (#17): model versions, AI decisions, labelled examples, the ``anomaly`` hold.

- ``ai_model_version``: one row per trained version of a model (``orderflow.ai.registry``):
  when it was trained, on which window of history, its metrics, and the artifact itself
  (bytes, with the SHA-256 the database checks on insert: a version is only ever loaded from
  bytes OrderFlow wrote and whose hash matches). At most one version per model is active.
- ``ai_decision``: every output of a model (``orderflow.ai.governance`` is the one writer):
  the order (and exception, line) it is about, model name and version, the hash and the
  values of its inputs, the output label, score and evidence (the top features), the action
  it was allowed (``recommend``, ``route``, ``flag`` or ``hold`` — never an approval: the
  CHECK refuses anything else), and whether a person followed it, who and when. Append-only
  like the audit trail: the review columns are set once, nothing else ever changes.
- ``ai_example``: labelled examples recorded outside the flow (a history import, a backfill),
  append-only; training reads them with the reviewed decisions.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

CREATE TABLE ai_model_version (
    version_id       bigserial PRIMARY KEY,
    model_name       text NOT NULL,
    version          text NOT NULL,
    trained_at       timestamptz NOT NULL DEFAULT now(),
    window_from      timestamptz,
    window_to        timestamptz,
    n_examples       integer NOT NULL DEFAULT 0,
    metrics          jsonb NOT NULL DEFAULT '{}',
    library          text NOT NULL,
    artifact         bytea NOT NULL,
    artifact_sha256  text NOT NULL CHECK (artifact_sha256 = encode(sha256(artifact), 'hex')),
    active           boolean NOT NULL DEFAULT false,
    activated_at     timestamptz,
    decision_note    text,
    UNIQUE (model_name, version)
);
CREATE UNIQUE INDEX ai_model_version_active_idx ON ai_model_version (model_name) WHERE active;

CREATE TABLE ai_decision (
    decision_id      bigserial PRIMARY KEY,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    model_name       text NOT NULL,
    model_version    text NOT NULL,
    order_id         text REFERENCES "order" (order_id),
    exception_id     bigint REFERENCES order_exception (exception_id),
    line_no          integer,
    input_hash       text NOT NULL,
    features         jsonb NOT NULL,
    output_label     text NOT NULL,
    score            double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    evidence         jsonb NOT NULL DEFAULT '[]',
    action           text NOT NULL CHECK (action IN ('recommend', 'route', 'flag', 'hold')),
    rule_set_version text,
    followed         boolean,
    label            text,
    reviewed_by      text,
    reviewed_at      timestamptz,
    CHECK ((followed IS NULL) = (reviewed_at IS NULL)),
    CHECK ((reviewed_by IS NULL) = (reviewed_at IS NULL))
);
CREATE UNIQUE INDEX ai_decision_once_idx ON ai_decision (model_name, model_version,
    coalesce(order_id, ''), coalesce(exception_id, 0), coalesce(line_no, 0), input_hash);
CREATE INDEX ai_decision_order_idx ON ai_decision (order_id);
CREATE INDEX ai_decision_exception_idx ON ai_decision (exception_id);
CREATE INDEX ai_decision_reviewed_idx ON ai_decision (model_name, reviewed_at)
    WHERE reviewed_at IS NOT NULL;

-- Append-only, except that a person's review (followed, label, who, when) is set once.
CREATE FUNCTION ai_decision_review_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD.reviewed_at IS NOT NULL
       OR (to_jsonb(NEW) - ARRAY['followed', 'label', 'reviewed_by', 'reviewed_at'])
          IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['followed', 'label', 'reviewed_by', 'reviewed_at'])
    THEN
        RAISE EXCEPTION 'orderflow.ai_decision: append-only (a review is set once), % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ai_decision_append_only BEFORE UPDATE OR DELETE ON ai_decision
    FOR EACH ROW EXECUTE FUNCTION ai_decision_review_once();
CREATE TRIGGER ai_decision_no_truncate BEFORE TRUNCATE ON ai_decision
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

CREATE TABLE ai_example (
    example_id       bigserial PRIMARY KEY,
    model_name       text NOT NULL,
    source           text NOT NULL,
    subject          text NOT NULL,
    observed_at      timestamptz NOT NULL,
    features         jsonb NOT NULL,
    label            text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_name, source, subject)
);
CREATE INDEX ai_example_window_idx ON ai_example (model_name, observed_at);
CREATE TRIGGER ai_example_append_only BEFORE UPDATE OR DELETE ON ai_example
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();

INSERT INTO exception_category (category, description, default_owner_role, default_sla_minutes)
VALUES ('anomaly', 'Order far from the customer''s history (quantity, ship-to, price)',
        'customer_service', 120)
ON CONFLICT DO NOTHING;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TABLE ai_example;
DROP TABLE ai_decision;
DROP FUNCTION ai_decision_review_once();
DROP TABLE ai_model_version;
DELETE FROM exception_category WHERE category = 'anomaly'
    AND NOT EXISTS (SELECT 1 FROM order_exception WHERE category = 'anomaly');
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
