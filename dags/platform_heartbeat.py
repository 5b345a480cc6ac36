"""Platform heartbeat: proves scheduler → worker → operational store works end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from orderflow.operators.heartbeat import RecordHeartbeatOperator

with DAG(
    dag_id="platform_heartbeat",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "platform"],
    default_args={
        "owner": "orderflow-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
    },
    doc_md="""
### Platform heartbeat

Every 10 minutes, writes one row to `orderflow.heartbeat` keyed by this run.
A green run means the scheduler, a LocalExecutor/Celery worker, the `orderflow_db`
Connection and the operational store all work. A red run: check the `orderflow_db`
Connection and that the store is migrated (`orderflow db current`).
""",
):
    RecordHeartbeatOperator(task_id="record_heartbeat")
