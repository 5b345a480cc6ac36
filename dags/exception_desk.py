"""Exception desk: SLA timers (notify, escalate) and automatic retry of transient failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from orderflow.operators.operations import (
    RetryTransientExceptionsOperator,
    RunSlaTimersOperator,
    WatchOperationsOperator,
)
from orderflow.operators.outbox import SendOutboxOperator

with DAG(
    dag_id="exception_desk",
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "exceptions"],
    default_args={"owner": "orderflow-ops", "retries": 2, "retry_delay": timedelta(seconds=30)},
    doc_md="""
### Exception desk
Every 5 minutes:
0. **watch_operations** — orders stalled in RELEASED / PICKED / SHIPPED past the fulfilment
   rules' `stage_limits` (SHIPPED plus the carrier service's transit days) open a `stalled`
   exception for the stage's owner; an outbox action whose rows wait while nothing of it was
   sent for 15 minutes opens an `integration_failure` on `outbox/<action>`. Both resolve
   themselves when things move again.
1. **run_sla_timers** — an open exception past 80% of its SLA emails its owner role once; past
   its SLA it escalates once to its escalation role (addresses: `contacts` in
   `include/rules/routing/`). Both are audited and show on the desk
   (`orderflow.exception_desk`, the OrderFlow UI).
2. **retry_transient_exceptions** — orders held `integration_failure` go back to the stage
   that failed (the next processing run retries them), up to `transient_retries` times;
   after that they wait for a person.
3. **send_notifications** — delivers the emails (outbox, one per exception and event).
""",
):
    watch = WatchOperationsOperator(task_id="watch_operations")
    timers = RunSlaTimersOperator(task_id="run_sla_timers")
    retry = RetryTransientExceptionsOperator(task_id="retry_transient_exceptions")
    send = SendOutboxOperator(task_id="send_notifications", actions=["email"], limit=5000)
    watch >> timers >> retry >> send
