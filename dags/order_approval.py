"""One human decision on one exception: Approve / Reject order / Keep on hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from orderflow.domain.approvals import KEEP, OPTIONS
from orderflow.operators.decisions import ApplyDecisionOperator, OwnerRoleHITLOperator
from orderflow.settings import APPROVAL_WINDOW

with DAG(
    dag_id="order_approval",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    # Each run waits (deferred) for one person's answer; order_approvals starts no more than
    # this many, so none queues behind the limit (the default of 16 once held 42 of 60).
    max_active_runs=APPROVAL_WINDOW,
    tags=["orderflow", "exceptions"],
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "exception_id": Param(0, type="integer", title="Exception id"),
        "order_id": Param("", type="string", title="Order"),
        "category": Param("", type="string", title="Category"),
        "owner_role": Param("", type="string", title="Owner role"),
        "escalation_role": Param("", type="string", title="Escalation role"),
        "subject": Param("", type="string"),
        "body": Param("", type="string"),
    },
    doc_md="""
### Order approval (human in the loop)

Started by `order_approvals` for one exception. **decide_exception** waits under *Required Actions*
for the users holding the exception's owner (or escalation) role (`include/access/roles.yaml`)
— Airflow refuses anyone else's answer — with the exception's reason: **Approve** (a reason is required: price override, credit
exception, customer's consent to the substitute, compliance clearance), **Reject order**, or
**Keep on hold**. **apply_decision** then resolves the exception, records the approval the
later stages honour, moves the order on (or rejects it) and writes the audit trail with the
responder, time, before/after and reason. Processing picks the order up on its next run.

The Required Action waits deferred (no worker slot) on a trigger that also watches the
exception: resolved anywhere else — on the desk, from the CLI, by a reprocess or a rule —
**decide_exception** ends *skipped* within ~10 s (`ORDERFLOW_APPROVAL_WATCH_S`), audited as
`end_required_action` by `orderflow` with who resolved it and how, and the run frees its place
in the approval window (instead of waiting for the 3-day timeout).
""",
):
    decide_exception = OwnerRoleHITLOperator(
        task_id="decide_exception",
        owner_role="{{ params.owner_role }}",
        escalation_role="{{ params.escalation_role }}",
        exception_id="{{ params.exception_id }}",
        subject="{{ params.subject }}",
        body="{{ params.body }}",
        options=OPTIONS,
        defaults=[KEEP],
        params={"reason": Param("", type="string", title="Reason (required to approve)")},
        response_timeout=timedelta(days=3),
    )
    ApplyDecisionOperator(
        task_id="apply_decision",
        exception_id="{{ params.exception_id }}",
        answer=decide_exception.output,
    )
