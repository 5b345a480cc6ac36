"""Data-quality views: pass rates per suite and expectation over time, one line per suite run,
master-data freshness; an index for the gate's per-run replace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

-- The gate replaces a run's rows of a suite on retry (DELETE by run_id, suite).
CREATE INDEX dq_result_run_idx ON dq_result (run_id, suite);

-- Pass rates per day, suite and expectation: how often the expectation passed, and the share
-- of validated rows that met it. `extract_freshness` rows count runs, not rows.
CREATE VIEW dq_pass_rate_daily AS
SELECT date_trunc('day', validated_at)                       AS day,
       suite,
       expectation,
       count(*)                                              AS validations,
       count(*) FILTER (WHERE success)                       AS passed,
       round(count(*) FILTER (WHERE success)::numeric / count(*), 4) AS validation_pass_rate,
       sum(element_count)                                    AS rows_checked,
       sum(unexpected_count)                                 AS rows_failed,
       CASE WHEN sum(element_count) > 0
            THEN round(1 - sum(unexpected_count)::numeric / sum(element_count), 6)
       END                                                   AS row_pass_rate
  FROM dq_result
 GROUP BY 1, 2, 3;

-- One line per suite run: did every expectation pass, how many rows, was the extract fresh.
CREATE VIEW dq_suite_run AS
SELECT run_id,
       suite,
       max(validated_at)                                                  AS validated_at,
       count(*) FILTER (WHERE expectation <> 'extract_freshness')         AS expectations,
       count(*) FILTER (WHERE expectation <> 'extract_freshness' AND NOT success) AS failed,
       coalesce(bool_and(success) FILTER (WHERE expectation <> 'extract_freshness'), true)
                                                                          AS success,
       max(element_count) FILTER (WHERE expectation = 'extract_freshness') AS rows_extracted,
       bool_and(success) FILTER (WHERE expectation = 'extract_freshness')  AS fresh
  FROM dq_result
 GROUP BY run_id, suite;

-- Age of the store's copy of each master-data entity: the last extract the gate saw.
-- Readers that must not decide on stale master data compare `age` with their limit.
CREATE VIEW master_data_freshness AS
SELECT substr(suite, length('masterdata.') + 1)  AS entity,
       suite,
       max(validated_at)                         AS last_extract_at,
       now() - max(validated_at)                 AS age
  FROM dq_result
 WHERE expectation = 'extract_freshness' AND suite LIKE 'masterdata.%'
 GROUP BY suite;
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP VIEW master_data_freshness;
DROP VIEW dq_suite_run;
DROP VIEW dq_pass_rate_daily;
DROP INDEX dq_result_run_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
