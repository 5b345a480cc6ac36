"""Approvals dispatch: one `order_approval` run (a human-in-the-loop task) per exception that
policy lets a person approve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param

from orderflow.operators.decisions import APPROVAL_DAG_ID, RequestApprovalsOperator
from orderflow.settings import APPROVAL_WINDOW

with DAG(
    dag_id="order_approvals",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "exceptions"],
    default_args={"owner": "orderflow-ops", "retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "approval_window": Param(
            APPROVAL_WINDOW,
            type="integer",
            minimum=0,
            title="Approvals waiting at once",
            description="order_approval runs active at most (its max_active_runs).",
        )
    },
    doc_md="""
### Approvals dispatch

Every 5 minutes, finds open exceptions a person may approve — price override (pricing
mismatch, expired contract), credit exception (limit, hold), substitution without standing
consent, compliance review, duplicate suspicion, minimum, low-confidence extraction — and
starts one **order_approval** run per exception (run id `exception-<id>-<time>`, recorded
on the exception, so it is never asked twice; an answer that cannot be applied — e.g. an
approval without a reason — asks again). Each appears under **Required Actions** for the
owner role to answer.

At most **approval_window** approvals wait at once (`ORDERFLOW_APPROVAL_WINDOW`, default 24;
`order_approval`'s `max_active_runs` is the same number), so no run ever queues behind the
run limit: on a day with more holds than that, the rest are on the OrderFlow desk (every open
exception is) and reach Required Actions as answers free places, most urgent SLA first.
Each waiting approval is a running DAG run, and the scheduler looks at running runs in turn
(`[scheduler] max_dagruns_per_loop_to_schedule`, which `orderflow run` sets to the window
+ 40): raise the window only with it, or every other DAG's tasks wait for their run's turn.
""",
):
    requests = RequestApprovalsOperator(
        task_id="find_exceptions_to_approve", window="{{ params.approval_window }}"
    )
    TriggerDagRunOperator.partial(
        task_id="request_approval",
        trigger_dag_id=APPROVAL_DAG_ID,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.trigger_run_id }}",
    ).expand_kwargs(requests.output)
