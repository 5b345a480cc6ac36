"""Portal intake: pull of the B2B portal's orders feed, woken by its new-order notices."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, DeltaTriggerTimetable

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import PullPortalOrdersOperator
from orderflow.operators.intake_tasks import INTAKE_DAG_KWARGS
from orderflow.pushed.asset import PORTAL_ORDERS_ANNOUNCED

with DAG(
    dag_id="intake_portal",
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(timedelta(minutes=5)), assets=PORTAL_ORDERS_ANNOUNCED
    ),
    doc_md="""
### Portal intake

As soon as the portal announces new orders (its signed webhook to
`/orderflow/api/events/portal` wakes this DAG through the `portal_orders_announced` Asset's
watcher on Redis) and every 5 minutes — the poll that catches whatever a notice or a
wake-up missed (and all of it where no Redis runs) — reads the B2B portal's orders feed from
the stored watermark to its end. The notice carries no order: the feed is the record.
Each order is stored raw, then parsed; each ends **created**, **quarantined** (with the
reason, replayable from `intake_replay`) or **duplicate** (pointer to the original).
Emits `orders_received` for order processing when the feed had anything new (an empty poll starts no processing run).

Rerun or clear freely: the watermark only advances past stored items and a re-read item is
recognised, never stored twice. Connection: `portal_default`.
""",
    **INTAKE_DAG_KWARGS,
):
    PullPortalOrdersOperator(task_id="pull_portal_orders", announces=ORDERS_RECEIVED)
