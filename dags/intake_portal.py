"""Portal intake: micro-batch pull of the B2B portal's orders feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import PullPortalOrdersOperator

with DAG(
    dag_id="intake_portal",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "intake"],
    default_args={
        "owner": "orderflow-intake",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
    doc_md="""
### Portal intake

Every 5 minutes, reads the B2B portal's orders feed from the stored watermark to its end.
Each order is stored raw, then parsed; each ends **created**, **quarantined** (with the
reason, replayable from `intake_replay`) or **duplicate** (pointer to the original).
Emits `orders_received` for order processing.

Rerun or clear freely: the watermark only advances past stored items and a re-read item is
recognised, never stored twice. Connection: `portal_default`.
""",
):
    PullPortalOrdersOperator(task_id="pull_portal_orders", outlets=[ORDERS_RECEIVED])
