"""Assets that connect OrderFlow's DAGs (data-aware scheduling)."""

from typing import Any

from airflow.sdk import Asset, AssetAlias

#: New canonical orders are in the store (any channel). Order processing listens to it.
ORDERS_RECEIVED = Asset(name="orders_received", uri="orderflow://store/orders/received")
#: A processing run claimed as many orders as it may (its ``batch_limit``): more wait.
#: Order processing listens to it, so the next run starts at once, not at the next schedule.
ORDERS_WAITING = Asset(name="orders_waiting", uri="orderflow://store/orders/waiting")
#: Master data published to the store after its quality gate.
MASTER_DATA_PUBLISHED = Asset(name="master_data_published", uri="orderflow://store/master_data")
#: Orders were released to the WMS (their milestones will follow). Fulfilment listens to it.
ORDERS_RELEASED = Asset(name="orders_released", uri="orderflow://store/orders/released")
#: A processing run finished (its orders' statuses are published). KPIs listen to it.
ORDERS_PROCESSED = Asset(name="orders_processed", uri="orderflow://store/orders/processed")


def when_any(asset: Asset) -> AssetAlias:
    """The outlet of a task that announces ``asset`` only when it did something: a poll that
    found nothing, or a send that sent nothing, starts no run of the DAGs scheduled on it
    (their own timetables still run them). Declared by the operators' ``announces``."""
    return AssetAlias(name=f"{asset.name}__when_any")


def announce(context: Any, asset: Asset) -> None:
    """Emit ``asset`` through its :func:`when_any` alias (in the task's ``execute``)."""
    context["outlet_events"][when_any(asset)].add(asset)


def announcing(announces: Asset | None, kwargs: dict[str, Any]) -> None:
    """For an operator's ``__init__``: with ``announces``, its :func:`when_any` alias is an
    outlet of the task."""
    if announces is not None:
        kwargs["outlets"] = [*(kwargs.get("outlets") or []), when_any(announces)]


def announce_if(context: Any, announces: Asset | None, happened: Any) -> None:
    """For an operator's ``execute``: emit ``announces`` when ``happened`` is truthy."""
    if announces is not None and happened:
        announce(context, announces)
