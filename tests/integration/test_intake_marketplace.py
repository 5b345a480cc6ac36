"""Marketplace intake against the sandbox: every feed item one outcome, the acknowledgement
queued with the order and sent once by key, a re-read changes nothing, and an
acknowledgement sent after the marketplace's limit is visible — in the marketplace's answer,
on ``marketplace_order`` and in the KPIs."""

import json
from datetime import datetime, timedelta

import pytest

from orderflow import kpis, marketplace
from orderflow.channels.marketplace import order_id
from orderflow.intake import marketplace as intake
from orderflow.integrations import outbox
from orderflow.integrations.systems import MarketplaceHook
from orderflow.store import cursors

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _orders(day_dir) -> list[dict]:
    rows = [json.loads(x) for x in (day_dir / "marketplace_orders.jsonl").read_text().splitlines()]
    return [r for r in rows if r["type"] == "order"]


def test_pull_acknowledge_once_and_a_late_acknowledgement_is_visible(sandbox, store, day_dir):
    orders = _orders(day_dir)
    first, late = orders[0], orders[1]
    sandbox.client.put("/admin/clock", json={"now": first["arrival_at"]}).raise_for_status()
    stats = intake.pull(store, MarketplaceHook())
    assert stats.outcomes["orders_created"] >= 1
    assert outbox.send(store, list(marketplace.ACTIONS)).sent == stats.outcomes["orders_created"]
    ack = store.execute(
        "SELECT acknowledged_at, ack_late FROM orderflow.marketplace_order "
        "WHERE marketplace_order_id = %s",
        (first["marketplace_order_id"],),
    ).fetchone()
    assert ack[0] is not None and ack[1] is False

    # a re-read from the start: redeliveries only, nothing queued or sent again
    cursors.put(store, "marketplace:marketplace_default", "0")
    again = intake.pull(store, MarketplaceHook())
    assert again.redeliveries == stats.items and not again.outcomes
    assert outbox.send(store, list(marketplace.ACTIONS)).claimed == 0

    # the next order is read five simulated hours after it was placed: acknowledged late
    at = _at(late["arrival_at"]) + timedelta(hours=5)
    sandbox.client.put("/admin/clock", json={"now": at.isoformat()}).raise_for_status()
    intake.pull(store, MarketplaceHook())
    outbox.send(store, list(marketplace.ACTIONS))
    answer = sandbox.client.get(
        "/marketplace/callbacks",
        params={"marketplace_order_id": late["marketplace_order_id"], "kind": "acknowledgement"},
    ).json()["items"]
    assert [a["late"] for a in answer] == [True]
    assert store.execute(
        "SELECT ack_late FROM orderflow.marketplace_order WHERE marketplace_order_id = %s",
        (late["marketplace_order_id"],),
    ).fetchone() == (True,)
    since = _at(first["arrival_at"]) - timedelta(days=1)
    missed = kpis.BY_NAME["marketplace_callbacks_late"]
    assert sum(r[2] for r in kpis.compute(store, missed, "day", since) if r[1] == "all") >= 1
    end = at + timedelta(days=30)
    acks = {"dimension": "kind=acknowledgement"}
    assert order_id(late["marketplace_order_id"]) in kpis.drill(store, missed, since, end, **acks)
    assert order_id(first["marketplace_order_id"]) not in kpis.drill(
        store, missed, since, end, **acks
    )
