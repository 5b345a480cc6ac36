"""Pushed fulfilment events end to end over HTTP: the sandbox WMS and carrier push signed
webhooks to ``POST /orderflow/api/events/{source}`` of a real ``airflow api-server``, which
stores them under the poll's natural key, commits, then publishes a wake-up on Redis (a
Redis server of this module, so it can be taken down). Pushed twice and polled, an event is
stored once; a bad signature stores nothing; with Redis down the events are stored all the
same and the poll finds nothing missing; the AssetWatcher's trigger fires on the wake-up."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from redis_support import RedisServer

from orderflow import fulfilment
from orderflow.domain import fulfilment as domain
from orderflow.pushed import signing

pytestmark = [pytest.mark.db, pytest.mark.airflow_db, pytest.mark.sandbox]

SECRET = "test-push-secret-0123456789"
CHANNEL = "orderflow.test.fulfilment.wake"
INTAKE_CHANNEL = "orderflow.test.intake"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian's redis-server)")
    server = RedisServer(exe, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(store_url, airflow_db, redis_server, tmp_path_factory):
    from orderflow.dev.api_server import start_api_server

    server = start_api_server(
        tmp_path_factory.mktemp("api"),
        {"boss": "admin"},
        {"boss": ["operations_manager"]},
        env={
            "AIRFLOW_CONN_FULFILMENT_PUSH": json.dumps(
                {"conn_type": "generic", "password": SECRET}
            ),
            "AIRFLOW_CONN_REDIS_DEFAULT": redis_server.conn_env(),
            "ORDERFLOW_FULFILMENT_WAKE_CHANNEL": CHANNEL,
            "ORDERFLOW_INTAKE_WAKE_CHANNEL": INTAKE_CHANNEL,
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wake_messages(redis_server):
    """Wake-ups published on the channel since the module started (a listener thread)."""
    pubsub = redis_server.client().pubsub()
    got: list[dict] = []
    pubsub.subscribe(**{CHANNEL: lambda m: got.append(json.loads(m["data"]))})
    thread = pubsub.run_in_thread(
        sleep_time=0.05, daemon=True, exception_handler=lambda *_: time.sleep(0.2)
    )  # Redis taken down by a test: keep listening, it reconnects
    yield got
    thread.stop()
    thread.join(5)
    pubsub.close()


def _url(api) -> str:
    return f"{api.base}/orderflow/api/events/{{source}}"


def _subscribe(
    sandbox, api, secret: str = SECRET, sources: tuple[str, ...] = ("wms", "carrier"), **extra
) -> None:
    for source in sources:
        r = sandbox.client.put(
            f"/admin/subscriptions/{source}", json={"url": _url(api), "secret": secret, **extra}
        )
        r.raise_for_status()


def _subscriptions(sandbox) -> dict:
    return sandbox.client.get("/admin/subscriptions").json()["subscriptions"]


def _wait_delivered(sandbox, timeout: float = 45) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        subs = _subscriptions(sandbox)
        if all(s["pending"] == 0 and s["failures"] == 0 for s in subs.values()):
            return subs
        time.sleep(0.25)
    raise AssertionError(f"pushes not delivered within {timeout} s: {_subscriptions(sandbox)}")


def _release(sandbox, tag: str, n: int) -> None:
    c = sandbox.client
    items = [p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 2]
    for i, pos in enumerate(items[:n]):
        c.post(
            "/wms/releases",
            headers={"Idempotency-Key": f"ORD-{tag}{i}:release:v1"},
            json={
                "order_id": f"ORD-{tag}{i}",
                "dc_id": pos["dc_id"],
                "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 1}],
            },
        ).raise_for_status()


def _feed(sandbox, source: str) -> list[dict]:
    path = "/wms/milestones" if source == "wms" else "/carrier/tracking"
    return sandbox.client.get(path, params={"cursor": 0, "limit": 1000}).json()["items"]


def _poll(store, sandbox, source: str) -> dict:
    path = "/wms/milestones" if source == "wms" else "/carrier/tracking"

    def fetch(cursor: int, limit: int) -> dict:
        r = sandbox.client.get(path, params={"cursor": cursor, "limit": limit})
        r.raise_for_status()
        return r.json()

    return fulfilment.pull_feed(store, source, fetch)


def _stored(store, source: str) -> list[str]:
    return [
        r[0]
        for r in store.execute(
            "SELECT event_key FROM orderflow.fulfilment_event WHERE source = %s", (source,)
        )
    ]


def _post(api, source: str, events: list[dict], secret: str = SECRET) -> httpx.Response:
    body = json.dumps({"events": events}).encode()
    return httpx.post(
        _url(api).format(source=source),
        content=body,
        headers={"Content-Type": "application/json", signing.HEADER: signing.sign(secret, body)},
        timeout=10,
    )


def test_pushed_twice_and_polled_each_event_is_stored_once(store, sandbox, api, wake_messages):
    _subscribe(sandbox, api, duplicate_rate=1.0)  # every batch delivered twice
    _release(sandbox, "PU", 4)
    sandbox.client.put("/admin/clock", json={"advance_minutes": 2 * 24 * 60})
    subs = _wait_delivered(sandbox)
    assert subs["wms"]["delivered"] > 0 and subs["carrier"]["delivered"] > 0
    assert subs["wms"]["requests"] >= 2  # the duplicates went out too

    for source in ("wms", "carrier"):
        feed = {domain.event_key(source, e) for e in _feed(sandbox, source)}
        stored = _stored(store, source)
        assert len(stored) == len(set(stored)) == len(feed)
        assert set(stored) == feed
        polled = _poll(store, sandbox, source)  # the 2-minute poll reads the same feed
        assert polled["stored"] == 0 and polled["received"] == len(feed)
        assert sorted(_stored(store, source)) == sorted(stored)

    # an event arrived before OrderFlow knew the order: still only stored, pending its apply
    pending = store.execute(
        "SELECT count(*) FROM orderflow.fulfilment_event WHERE status = 'pending'"
    ).fetchone()[0]
    assert pending == sum(len(_stored(store, s)) for s in ("wms", "carrier"))

    # the wake-up reached Redis once per request that stored something, never for duplicates
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not wake_messages:
        time.sleep(0.1)
    assert {m["source"] for m in wake_messages} == {"wms", "carrier"}
    assert sum(m["stored"] for m in wake_messages) == sum(
        len(_stored(store, s)) for s in ("wms", "carrier")
    )


def test_a_bad_signature_is_refused_with_401_and_stores_nothing(store, sandbox, api):
    event = {
        "release_id": "REL-FORGED",
        "milestone": "shipped",
        "order_id": "ORD-FORGED",
        "occurred_at": "2026-03-02T10:00:00+00:00",
    }
    assert _post(api, "wms", [event], secret="not-the-secret").status_code == 401
    unsigned = httpx.post(_url(api).format(source="wms"), json={"events": [event]}, timeout=10)
    assert unsigned.status_code == 401
    stale = json.dumps({"events": [event]}).encode()
    old = signing.sign(SECRET, stale, int(time.time()) - 3600)
    r = httpx.post(
        _url(api).format(source="wms"), content=stale, headers={signing.HEADER: old}, timeout=10
    )
    assert r.status_code == 401 and "from now" in r.json()["detail"]
    assert "WMS-FORGED" not in " ".join(_stored(store, "wms"))
    assert not [k for k in _stored(store, "wms") if k.startswith("REL-FORGED")]

    # a sandbox pushing with the wrong secret is refused, keeps its events, and delivers them
    # all once the secret is right
    before = set(_stored(store, "wms"))
    _subscribe(sandbox, api, secret="wrong-secret-0000")
    _release(sandbox, "BS", 2)
    sandbox.client.put("/admin/clock", json={"advance_minutes": 60})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _subscriptions(sandbox)["wms"]["last_error"]:
        time.sleep(0.2)
    wms = _subscriptions(sandbox)["wms"]
    assert wms["last_error"].startswith("HTTP 401") and wms["pending"] > 0
    assert set(_stored(store, "wms")) == before
    _subscribe(sandbox, api)  # same URL: resumes from its cursor
    _wait_delivered(sandbox)
    feed = {domain.event_key("wms", e) for e in _feed(sandbox, "wms")}
    assert set(_stored(store, "wms")) == feed


def test_a_malformed_push_is_refused_with_422(api):
    assert _post(api, "wms", [{"milestone": "shipped"}]).status_code == 422
    assert _post(api, "erp", [{"x": 1}]).status_code == 422


def test_the_portal_and_marketplace_announce_new_orders_and_wake_their_intake_dags(
    store, sandbox, api, redis_server
):
    """A notice per new feed item, never the order; the receiver stores nothing and wakes the
    source's intake DAG on its own channel (not the fulfilment DAG's)."""
    got: dict[str, list[dict]] = {"portal": [], "marketplace": [], "fulfilment": []}
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(
        **{
            f"{INTAKE_CHANNEL}.portal": lambda m: got["portal"].append(json.loads(m["data"])),
            f"{INTAKE_CHANNEL}.marketplace": lambda m: got["marketplace"].append(
                json.loads(m["data"])
            ),
            CHANNEL: lambda m: got["fulfilment"].append(json.loads(m["data"])),
        }
    )
    thread = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not redis_server.client().pubsub_numsub(CHANNEL)[0][1]:
        time.sleep(0.05)
    messages_before = store.execute("SELECT count(*) FROM orderflow.channel_message").fetchone()
    try:
        sandbox.client.put("/admin/clock", json={"advance_minutes": 2 * 24 * 60})
        feeds = {
            "portal": sandbox.client.get("/portal/orders", params={"limit": 1000}).json(),
            "marketplace": sandbox.client.get("/marketplace/orders", params={"limit": 1000}).json(),
        }
        assert all(f["items"] and not f["has_more"] for f in feeds.values())
        _subscribe(sandbox, api, sources=("portal", "marketplace"), from_start=True)
        subs = _wait_delivered(sandbox)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (got["portal"] and got["marketplace"]):
            time.sleep(0.1)
    finally:
        thread.stop()
        thread.join(5)
        pubsub.close()
        for source in ("portal", "marketplace"):
            sandbox.client.delete(f"/admin/subscriptions/{source}")
    for source, feed in feeds.items():
        assert subs[source]["delivered"] == subs[source]["cursor"] == len(feed["items"])
        assert {m["source"] for m in got[source]} == {source}
        # at least once: a batch the sender retried after a slow answer rings again
        assert sum(m["stored"] for m in got[source]) >= len(feed["items"]), (got, subs)
    # the WMS's and carrier's pushes (earlier tests' subscriptions) may wake fulfilment
    # meanwhile; a notice never does, and stores nothing: the intake DAG reads the feed
    assert not {m["source"] for m in got["fulfilment"]} & {"portal", "marketplace"}
    assert store.execute(
        "SELECT count(*) FROM orderflow.fulfilment_event WHERE source NOT IN ('wms', 'carrier')"
    ).fetchone() == (0,)
    assert (
        store.execute("SELECT count(*) FROM orderflow.channel_message").fetchone()
        == messages_before
    )


def test_a_notice_without_its_feed_position_is_refused_with_422(api):
    r = _post(api, "portal", [{"feed": "portal", "arrived_at": "2026-03-02T10:00:00+00:00"}])
    assert r.status_code == 422 and "lacks seq" in r.json()["detail"]
    ok = _post(api, "marketplace", [{"feed": "marketplace", "seq": 1}])
    assert ok.status_code == 200 and ok.json()["stored"] == 0


def test_with_redis_down_events_are_stored_and_the_poll_finds_nothing_missing(
    store, sandbox, api, redis_server
):
    _subscribe(sandbox, api)
    redis_server.stop()
    try:
        event = {
            "release_id": "REL-QDOWN",
            "milestone": "released",
            "order_id": "ORD-QDOWN",
            "occurred_at": "2026-03-02T10:00:00+00:00",
        }
        r = _post(api, "wms", [event])
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == 1 and r.json()["woken"] is False
        assert "REL-QDOWN:released" in _stored(store, "wms")

        _release(sandbox, "QD", 3)
        sandbox.client.put("/admin/clock", json={"advance_minutes": 2 * 24 * 60})
        _wait_delivered(sandbox)  # pushed and stored although nothing could be woken
    finally:
        redis_server.start()
    for source in ("wms", "carrier"):
        feed = {domain.event_key(source, e) for e in _feed(sandbox, source)}
        assert feed <= set(_stored(store, source))
        assert _poll(store, sandbox, source)["stored"] == 0  # nothing lost, nothing doubled
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.fulfilment_event WHERE order_id LIKE 'ORD-QD%%' "
            "AND status = 'pending'"
        ).fetchone()[0]
        > 0
    )  # waiting for the next (polled) run's apply


def test_with_redis_frozen_webhooks_are_stored_and_answered_without_waiting_on_it(
    store, api, redis_server
):
    """SIGSTOP: Redis accepts connections and answers nothing. The receiver gives the first
    wake-up one short timeout (after the events are committed and the store's connection is
    given back), skips the next ones without trying, and every request is answered 200."""
    import os
    import signal

    def event(n: int) -> dict:
        return {
            "release_id": f"REL-FROZEN{n}",
            "milestone": "released",
            "order_id": f"ORD-FROZEN{n}",
            "occurred_at": "2026-03-02T11:00:00+00:00",
        }

    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        answers = [_post(api, "wms", [event(n)]) for n in range(4)]
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    bodies = [r.json() for r in answers]
    assert all(b["stored"] == 1 and b["woken"] is False for b in bodies)
    assert sum(1 for b in bodies if b.get("skipped")) >= 2  # not tried within the back-off
    stored = set(_stored(store, "wms"))
    assert {f"REL-FROZEN{n}:released" for n in range(4)} <= stored


def test_the_asset_watchers_trigger_fires_on_a_wake_up(redis_server, monkeypatch):
    """The trigger the DAG's AssetWatcher runs in the triggerer, run here on its own."""
    from orderflow.pushed import wake
    from orderflow.pushed.asset import wake_trigger

    monkeypatch.setenv("AIRFLOW_CONN_REDIS_DEFAULT", redis_server.conn_env())
    channel = "orderflow.test.trigger"
    trigger = wake_trigger(channel)
    classpath, kwargs = trigger.serialize()
    assert classpath == "orderflow.pushed.trigger.WakeTrigger"
    assert kwargs["channels"] == [channel] and kwargs["poll_interval"] <= 1

    async def fire() -> dict:
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        client = redis_server.client()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.pubsub_numsub(channel)[0][1]:
            await asyncio.sleep(0.05)  # the trigger subscribes inside run()
        sent = wake.publish("wms", 3, channel=channel)
        assert sent == {"woken": True, "listeners": 1}
        event = await asyncio.wait_for(first, 10)
        return event.payload

    payload = asyncio.run(fire())
    assert payload["channel"] == channel
    assert json.loads(payload["data"])["source"] == "wms"


def test_the_fulfilment_dag_is_scheduled_on_the_watched_asset(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow import settings

    bag = DagBag(dag_folder=str(Path(settings.DAGS_DIR) / "fulfilment_events.py"))
    dag = bag.get_dag("fulfilment_events")
    assets = {a.name: a for a in dag.timetable.asset_condition.objects}
    assert {"orders_released", "fulfilment_events_pushed"} <= set(assets)
    assert [w.name for w in assets["fulfilment_events_pushed"].watchers] == [
        "fulfilment_events_wake"
    ]


def test_the_portal_and_marketplace_intake_dags_are_scheduled_on_their_watched_assets(
    airflow_db,
):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow import settings

    for source in ("portal", "marketplace"):
        bag = DagBag(dag_folder=str(Path(settings.DAGS_DIR) / f"intake_{source}.py"))
        dag = bag.get_dag(f"intake_{source}")
        condition = dag.timetable.asset_condition  # one Asset: the condition is the Asset
        assets = {a.name: a for a in getattr(condition, "objects", [condition])}
        assert set(assets) == {f"{source}_orders_announced"}
        assert [w.name for w in assets[f"{source}_orders_announced"].watchers] == [
            f"{source}_orders_wake"
        ]
        trigger = assets[f"{source}_orders_announced"].watchers[0].trigger
        assert trigger.channels == [f"orderflow.intake.{source}"]


def test_a_sandbox_configured_at_start_pushes_and_resumes_after_a_restart(
    store, api, day_dir, tmp_path, monkeypatch
):
    """How the local stack runs it: the subscription comes from the environment, and a
    restarted sandbox continues from the cursor it had (push.json beside its state)."""
    from tests_support import start_sandbox

    monkeypatch.setenv("ORDERFLOW_SANDBOX_PUSH_URL", _url(api))
    monkeypatch.setenv("ORDERFLOW_SANDBOX_PUSH_SECRET", SECRET)
    sb = start_sandbox(day_dir, tmp_path / "drop")
    try:
        assert set(_subscriptions(sb)) == {"wms", "carrier", "portal", "marketplace"}
        _release(sb, "EN", 2)
        sb.client.put("/admin/clock", json={"advance_minutes": 60})
        before = _wait_delivered(sb)
        assert before["wms"]["delivered"] > 0
    finally:
        sb.stop()
    sb = start_sandbox(day_dir, tmp_path / "drop")
    try:
        again = _subscriptions(sb)
        assert again["wms"]["cursor"] == before["wms"]["cursor"]
        sb.client.put("/admin/clock", json={"advance_minutes": 2 * 24 * 60})
        _wait_delivered(sb)
        for source in ("wms", "carrier"):
            feed = {domain.event_key(source, e) for e in _feed(sb, source)}
            assert feed and feed <= set(_stored(store, source))
    finally:
        sb.stop()
