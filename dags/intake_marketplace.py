"""Marketplace intake: pull of the marketplace's order feed (woken by its new-order notices),
and its callbacks."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, DeltaTriggerTimetable

from orderflow.assets import ORDERS_RECEIVED
from orderflow.marketplace import ACTIONS
from orderflow.operators.intake import PullMarketplaceOrdersOperator
from orderflow.operators.intake_tasks import INTAKE_DAG_KWARGS
from orderflow.operators.outbox import SendOutboxOperator
from orderflow.pushed.asset import MARKETPLACE_ORDERS_ANNOUNCED

with DAG(
    dag_id="intake_marketplace",
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(timedelta(minutes=5)), assets=MARKETPLACE_ORDERS_ANNOUNCED
    ),
    doc_md="""
### Marketplace intake

As soon as the marketplace announces new items (its signed webhook to
`/orderflow/api/events/marketplace` wakes this DAG through the
`marketplace_orders_announced` Asset's watcher on Redis) and every 5 minutes — the poll
that catches whatever a notice or a wake-up missed — reads the marketplace's order feed
from the stored watermark to its end: orders, and buyers' cancellation requests. Each item is stored raw, then parsed; an order
ends **created** (its acknowledgement queued with it), **quarantined** (replayable from
`intake_replay`) or **duplicate**; a cancellation request is stored as a cancel of its
order (`change_received`), which the next `order_processing` run applies: before release
the order is cancelled; after release it follows the rules of every customer change.
Emits `orders_received` for order processing when the feed had anything new (an empty poll starts no processing run).

Then sends every marketplace callback due in the outbox — acknowledgements, shipment
confirmations (queued by `fulfilment_events`), answers to cancellation requests — each
under its key. The marketplace sets a time limit for each (acknowledge by, ship by,
respond by); its answer says when it received the callback and whether that was late,
kept per order in `marketplace_order` and counted by the `marketplace_callback_on_time_rate`
KPIs. Even the 5-minute poll alone is far inside the limits (hours).

Rerun or clear freely: the watermark only advances past stored items and a re-read item is
recognised; callbacks are exactly once by key. Connection: `marketplace_default`.
""",
    **INTAKE_DAG_KWARGS,
):
    pull = PullMarketplaceOrdersOperator(
        task_id="pull_marketplace_orders", announces=ORDERS_RECEIVED
    )
    # all_done: callbacks have deadlines; a feed that cannot be read must not hold them back
    pull >> SendOutboxOperator(
        task_id="send_marketplace_callbacks", actions=list(ACTIONS), trigger_rule="all_done"
    )
