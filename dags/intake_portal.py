"""Portal intake: micro-batch pull of the B2B portal's orders feed."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import PullPortalOrdersOperator
from orderflow.operators.intake_tasks import INTAKE_DAG_KWARGS

with DAG(
    dag_id="intake_portal",
    schedule=timedelta(minutes=5),
    doc_md="""
### Portal intake

Every 5 minutes, reads the B2B portal's orders feed from the stored watermark to its end.
Each order is stored raw, then parsed; each ends **created**, **quarantined** (with the
reason, replayable from `intake_replay`) or **duplicate** (pointer to the original).
Emits `orders_received` for order processing when the feed had anything new (an empty poll starts no processing run).

Rerun or clear freely: the watermark only advances past stored items and a re-read item is
recognised, never stored twice. Connection: `portal_default`.
""",
    **INTAKE_DAG_KWARGS,
):
    PullPortalOrdersOperator(task_id="pull_portal_orders", announces=ORDERS_RECEIVED)
