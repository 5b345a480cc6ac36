"""The Assets DAGs are scheduled on besides their clocks, each updated by the triggerer
whenever a wake-up arrives on its channel: the fulfilment DAG's on
:data:`orderflow.pushed.wake.CHANNEL`, the portal's and marketplace's intake DAGs' on
:func:`orderflow.pushed.wake.intake_channel`.

An :class:`~airflow.sdk.AssetWatcher` runs its trigger in the triggerer (no worker waits):
:class:`~orderflow.pushed.trigger.WakeTrigger` fires on every message and keeps its
subscription; when Redis goes away it subscribes again until Redis is back, without
blocking the triggerer (the provider's ``AwaitMessageTrigger``, which
``MessageQueueTrigger(scheme="redis+pubsub")`` dispatches to, stalled the triggerer's event
loop on a frozen Redis, and missed wake-ups while the triggerer restarted it after each
one — see :mod:`orderflow.pushed.trigger`). A message published while Redis is down or the
trigger reconnects is not seen — the DAG's scheduled poll covers that. Several wake-ups
during one run queue a single next run.

``ORDERFLOW_PUSH_WAKE=off`` (the local stack sets it when no Redis answers at start) leaves
the Assets without a watcher: the DAGs run on their clocks (and fulfilment on releases).
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher

from orderflow.pushed.trigger import WakeTrigger
from orderflow.pushed.wake import CHANNEL, REDIS_CONN_ID, intake_channel
from orderflow.settings import switched_on

#: How often the trigger checks its subscription (s): the wake-up's share of the latency.
POLL_INTERVAL_S = 0.5

WAKE_ENABLED = switched_on("ORDERFLOW_PUSH_WAKE")


def wake_trigger(channel: str = CHANNEL) -> WakeTrigger:
    return WakeTrigger(
        channels=[channel],
        redis_conn_id=REDIS_CONN_ID,
        poll_interval=POLL_INTERVAL_S,
    )


#: Pushed fulfilment events are in the store. The fulfilment DAG listens to it.
FULFILMENT_EVENTS_PUSHED = Asset(
    name="fulfilment_events_pushed",
    uri="orderflow://store/fulfilment/pushed",
    watchers=[AssetWatcher(name="fulfilment_events_wake", trigger=wake_trigger())]
    if WAKE_ENABLED
    else [],
)


def announced_asset(source: str) -> Asset:
    """The Asset an intake DAG of a feed that announces new orders is scheduled on, watched
    on the feed's wake-up channel."""
    channel = intake_channel(source)
    return Asset(
        name=f"{source}_orders_announced",
        uri=f"orderflow://intake/{source}/announced",
        watchers=[AssetWatcher(name=f"{source}_orders_wake", trigger=wake_trigger(channel))]
        if WAKE_ENABLED
        else [],
    )


#: The portal / the marketplace announced new orders in its feed. Their intake DAGs listen.
PORTAL_ORDERS_ANNOUNCED = announced_asset("portal")
MARKETPLACE_ORDERS_ANNOUNCED = announced_asset("marketplace")
