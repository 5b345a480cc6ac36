"""Rule governance (#18): rule-set versions referenced by content hash, promotions and
rollbacks kept append-only, and what-if replays kept in tables of their own.

``rule_set_version`` is keyed by (rule set, content hash) — a decision's
``rule_set_version`` text names ``<set>@<version>#<first 12 hex of the hash>`` — and says
where a version came from (``file`` under include/rules, ``candidate`` promoted from a file
or pasted YAML). ``rule_set_activation``: every promotion and rollback, append-only; the
latest one of a rule set overrides the files from its time on (until a file version takes
effect after it). ``whatif_run`` / ``whatif_diff``: replays of a candidate against a window
of history — the only tables a what-if writes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

ALTER TABLE rule_set_version DROP CONSTRAINT rule_set_version_pkey;
ALTER TABLE rule_set_version ADD PRIMARY KEY (rule_set, content_sha256);
ALTER TABLE rule_set_version ADD COLUMN source text NOT NULL DEFAULT 'file'
    CHECK (source IN ('file', 'candidate'));
CREATE INDEX rule_set_version_version_idx ON rule_set_version (rule_set, version);

CREATE TABLE whatif_run (
    whatif_run_id     bigserial PRIMARY KEY,
    requested_by      text NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    window_from       timestamptz NOT NULL,
    window_to         timestamptz NOT NULL CHECK (window_to > window_from),
    -- the versions in force it compared against: {rule_set: {version, sha256}}
    current_versions  jsonb NOT NULL,
    -- [{rule_set, version, sha256, source, content}]: exactly what was replayed
    candidates        jsonb NOT NULL,
    orders            integer NOT NULL,
    changed           integer NOT NULL,
    -- {current: {...}, candidate: {...}}: first-pass rate, freight cost, holds per category
    totals            jsonb NOT NULL,
    dag_id            text,
    run_id            text
);

CREATE TABLE whatif_diff (
    whatif_run_id     bigint NOT NULL REFERENCES whatif_run (whatif_run_id) ON DELETE CASCADE,
    order_id          text NOT NULL,
    changed           text[] NOT NULL,  -- status, holds, amount, dcs, carriers, freight_cost
    current           jsonb NOT NULL,
    candidate         jsonb NOT NULL,
    PRIMARY KEY (whatif_run_id, order_id)
);

CREATE TABLE rule_set_activation (
    activation_id     bigserial PRIMARY KEY,
    rule_set          text NOT NULL,
    version           text NOT NULL,
    content_sha256    text NOT NULL,
    action            text NOT NULL CHECK (action IN ('promote', 'rollback')),
    previous_version  text,
    previous_sha256   text,
    undoes            bigint REFERENCES rule_set_activation (activation_id),
    whatif_run_id     bigint REFERENCES whatif_run (whatif_run_id),
    actor             text NOT NULL,
    reason            text NOT NULL,
    activated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (rule_set, content_sha256) REFERENCES rule_set_version (rule_set, content_sha256)
);
CREATE INDEX rule_set_activation_set_idx ON rule_set_activation (rule_set, activated_at);
CREATE TRIGGER rule_set_activation_append_only BEFORE UPDATE OR DELETE ON rule_set_activation
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER rule_set_activation_no_truncate BEFORE TRUNCATE ON rule_set_activation
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TABLE rule_set_activation;
DROP TABLE whatif_diff;
DROP TABLE whatif_run;
DROP INDEX rule_set_version_version_idx;
-- (rule_set, version) is the key again: keep the first content loaded under each version
DELETE FROM rule_set_version v USING rule_set_version w
 WHERE v.rule_set = w.rule_set AND v.version = w.version
   AND (v.loaded_at, v.content_sha256) > (w.loaded_at, w.content_sha256);
ALTER TABLE rule_set_version DROP COLUMN source;
ALTER TABLE rule_set_version DROP CONSTRAINT rule_set_version_pkey;
ALTER TABLE rule_set_version ADD PRIMARY KEY (rule_set, version);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
