"""What-if: replay a candidate rule-set version against a window of history (manual, form)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from orderflow.operators.governance import RuleWhatIfOperator

with DAG(
    dag_id="rule_whatif",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["orderflow", "replay"],
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "candidate": Param(
            "",
            type="string",
            title="Candidate version",
            description="A candidate YAML file on the workers (in a directory named after "
            "its rule set, e.g. include/rules_candidates/pricing/2026.12.5.yaml, or with a "
            "'rule_set:' key) or a stored version such as pricing@2026.12.5. Several: "
            "separate with spaces (one per rule set). Or paste one below.",
        ),
        "candidate_yaml": Param(
            "",
            type="string",
            title="Or: candidate pasted as YAML",
            description="rule_set, version, effective_from and the settings, as in "
            "include/rules/<rule_set>/<version>.yaml.",
            format="multiline",
        ),
        "window_from": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Orders received from",
            description="Empty: seven days before the end of the window.",
        ),
        "window_to": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="… until before",
            description="Empty: now.",
        ),
    },
    doc_md="""
### What-if: a candidate rule version against history

Trigger with the form: a candidate version of a rule set that decides orders (validation,
pricing, credit, substitution, sourcing, carrier) and a window of received orders. Each
order is rebuilt from its canonical payload and taken through the same pure decision
functions as `order_processing`, once with the versions in force and once with the
candidate, against today's master data. Per-order differences (status, hold category,
price, DCs, carriers, freight cost) and totals (first-pass rate, freight cost) go to
`orderflow.whatif_run` / `orderflow.whatif_diff` — the only tables it writes; no order,
stock, exception or outbox row changes, and no external service is called.

Read the result with `orderflow rules whatif …` / the run's XCom; promote the candidate
with `orderflow rules promote --whatif-run ID --reason …` (rule_approver role, audited) and
roll back with `orderflow rules rollback RULE_SET --reason …`.
""",
):
    RuleWhatIfOperator(
        task_id="replay_candidate",
        candidates="{{ params.candidate }}",
        candidate_yaml="{{ params.candidate_yaml }}",
        window_from="{{ params.window_from or '' }}",
        window_to="{{ params.window_to or '' }}",
    )
