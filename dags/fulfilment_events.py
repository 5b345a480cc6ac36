"""Fulfilment events: WMS milestones and carrier tracking → order state → 856, invoice (ERP
and 810), customer notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, chain

from orderflow.assets import ORDERS_RELEASED
from orderflow.operators.fulfilment import (
    AdvanceOrdersOperator,
    ApplyFulfilmentEventsOperator,
    PullFeedOperator,
)
from orderflow.operators.outbox import SendOutboxOperator
from orderflow.pushed.asset import FULFILMENT_EVENTS_PUSHED

with DAG(
    dag_id="fulfilment_events",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/2 * * * *", timezone="UTC"),
        assets=ORDERS_RELEASED | FULFILMENT_EVENTS_PUSHED,
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    # two runs at most: a task stuck in one (a lost Celery message waits task_queued_timeout
    # to be requeued) must not hold every customer notification behind it; the feeds' readers
    # and the event applier wait for each other across runs (orderflow.fulfilment)
    max_active_runs=2,
    tags=["orderflow", "fulfilment"],
    default_args={
        "owner": "orderflow-ops",
        "retries": 3,
        # a task that failed holds its run's notices until its retry, so the first retry
        # comes soon (10-20 s, then 20-40, 40-80); the pulls resume from their cursors,
        # nothing is lost by trying early
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": True,
        # customers wait on these: ahead of order processing's partitions when the
        # executor's slots are full (a run has five tasks; processing maps dozens)
        "priority_weight": 50,
        "weight_rule": "absolute",
    },
    doc_md="""
### Fulfilment events
Whenever the WMS or the carrier pushes events (their webhooks store them in
`fulfilment_event` and wake this DAG through the `fulfilment_events_pushed` Asset's watcher
on Redis), whenever order processing releases orders, and every 2 minutes — the poll that
catches whatever a push or a wake-up missed (and all of it where no Redis runs):
1. **pull_wms_milestones** / **pull_carrier_tracking** — read each feed from its persisted
   cursor (`sync_cursor`) into `fulfilment_event`. Rows and cursor move in one transaction
   per page: an event is never lost; one delivered twice is stored once.
2. **apply_events** — applies pending events in the order they happened. A shipment only
   moves forward (released → picked → packed → shipped → in transit → delivered); a late or
   repeated event records what it knows and changes nothing else. The first *shipped*
   confirms the quantities: the 856 (EDI customers), the shipped notice (email / portal
   webhook / the marketplace's shipment callback) and the invoice — built from shipped quantities at the validated contract
   price — are queued in the same transaction. A quantity that does not add up (shipped
   more than released, dock count ≠ pick) withholds the invoice with a `quantity_mismatch`
   exception for billing. An event for an order OrderFlow does not know is quarantined
   (dead letter); replay it with `orderflow fulfilment replay-events` after the fix.
   The shipped notices it queued are sent at once, from this task (keyed; what it
   cannot send waits for the next task).
3. **send_documents** — delivers 856/810, ERP invoices, emails, webhooks and marketplace
   shipment confirmations (outbox,
   idempotency key per document and version: reruns never send twice).
4. **advance_orders** — orders whose last invoice the ERP accepted move to INVOICED.

Two runs may overlap, so that a task stuck in one (say its Celery message was lost with a
killed worker) does not hold the next run's notices. Across runs the feeds' readers and the
applier wait for each other: a shipment's events still apply in the order they happened.
Rerun or clear any task freely.
""",
):
    pulls = [
        PullFeedOperator(task_id="pull_wms_milestones", source="wms"),
        PullFeedOperator(task_id="pull_carrier_tracking", source="carrier"),
    ]
    apply = ApplyFulfilmentEventsOperator(
        task_id="apply_events", notify_actions=["email", "webhook", "marketplace_shipment"]
    )
    send = SendOutboxOperator(
        task_id="send_documents",
        actions=["edi_856", "edi_810", "erp_invoice", "email", "webhook", "marketplace_shipment"],
        limit=50_000,
    )
    advance = AdvanceOrdersOperator(task_id="advance_orders")
    chain(pulls, apply, send, advance)
