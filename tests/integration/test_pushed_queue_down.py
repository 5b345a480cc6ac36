"""The wake-ups' Redis going away and coming back, on a ``redis-server`` of this module:

- a frozen Redis (SIGSTOP: it accepts connections, answers nothing) costs one wake-up one
  timeout and no retries, and the wake-ups right after are skipped without trying;
- the AssetWatcher's trigger keeps running across a Redis restart and fires on the next
  wake-up after it, and never blocks the triggerer's event loop on a frozen Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import threading
import time

import pytest
from redis_support import RedisServer

from orderflow.pushed import wake

CHANNEL = "orderflow.test.queue_down"


@pytest.fixture
def redis_server(tmp_path, monkeypatch):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian's redis-server)")
    server = RedisServer(exe, tmp_path)
    server.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_REDIS_DEFAULT",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": server.port}),
    )
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.kill()


def test_a_frozen_redis_costs_one_attempt_and_the_next_wake_ups_are_skipped(redis_server):
    assert wake.publish("wms", 1, channel=CHANNEL) == {"woken": True, "listeners": 0}
    before = redis_server.connections_received()
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        failed = wake.publish("wms", 2, channel=CHANNEL)
        assert failed["woken"] is False and "Timeout" in failed["error"]
        assert "skipped" not in failed
        skipped = wake.publish("carrier", 3, channel=CHANNEL)
        assert skipped["woken"] is False and skipped["skipped"] is True
        assert "not tried" in skipped["error"]
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # one attempt: no retry opened another connection while it was frozen (the kernel
    # accepts them; the server counts them once it runs again); +1 is this INFO's own
    assert redis_server.connections_received() == before + 1
    deadline = time.monotonic() + wake.BACKOFF_S + 5
    while time.monotonic() < deadline:
        again = wake.publish("wms", 4, channel=CHANNEL)
        if again.get("woken"):
            break
        time.sleep(0.5)
    assert again == {"woken": True, "listeners": 0}


async def _subscribed(server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if server.client().pubsub_numsub(CHANNEL)[0][1]:
                return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the trigger did not subscribe")


async def _wake_until(fired: asyncio.Future, timeout: float) -> dict:
    """Publish wake-ups until the trigger fires (one may be skipped by the publisher's
    back-off after a failure: the next push publishes again)."""
    deadline = time.monotonic() + timeout
    while not fired.done() and time.monotonic() < deadline:
        wake.publish("wms", 5, channel=CHANNEL)
        await asyncio.sleep(0.5)
    return (await asyncio.wait_for(fired, 5)).payload


def test_the_watchers_trigger_rides_out_a_redis_restart_and_fires_after_it(redis_server):
    """Regression: the provider's trigger ended with ConnectionError when Redis died (the
    triggerer restarted it every ~2 s, a traceback each time). The watcher's trigger keeps
    running, subscribes again once Redis is back (same port), and fires on the next wake-up."""
    from orderflow.pushed.asset import wake_trigger

    async def scenario() -> dict:
        fired = asyncio.ensure_future(wake_trigger(CHANNEL).run().__anext__())
        await _subscribed(redis_server)
        redis_server.kill()
        await asyncio.sleep(3)
        assert not fired.done()  # still running: no error for the triggerer to log
        redis_server.start()
        await _subscribed(redis_server)
        return await _wake_until(fired, wake.BACKOFF_S + 10)

    payload = asyncio.run(scenario())
    assert payload["channel"] == CHANNEL and json.loads(payload["data"])["source"] == "wms"


def test_the_watchers_trigger_never_blocks_the_triggerers_event_loop_on_a_frozen_redis(
    redis_server,
):
    """Regression: started while Redis was frozen (SIGSTOP), the provider's trigger waited for
    the server's answer synchronously inside the event loop — every other trigger of the
    triggerer stalled with it. Here a ticker on the same loop keeps ticking, and the trigger
    fires once Redis runs again."""
    from orderflow.pushed.asset import wake_trigger

    async def scenario() -> tuple[list[float], dict]:
        ticks: list[float] = []

        async def ticker(seconds: float) -> None:
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                ticks.append(time.monotonic() - t0)
                await asyncio.sleep(0.2)

        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        # woken from another thread: a trigger that blocks the loop delays the ticks, not this
        thaw = threading.Timer(5, os.kill, (redis_server.proc.pid, signal.SIGCONT))
        thaw.start()
        try:
            fired = asyncio.ensure_future(wake_trigger(CHANNEL).run().__anext__())
            await ticker(4)
            assert not fired.done()
        finally:
            thaw.join()
        await _subscribed(redis_server, 30)
        return ticks, await _wake_until(fired, wake.BACKOFF_S + 10)

    ticks, payload = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # the loop ran all along: ticks every 0.2 s, never held for the connect/read timeout
    assert len(ticks) >= 10 and max(gaps) < 2.0, gaps
    assert json.loads(payload["data"])["source"] == "wms"


def test_the_watchers_trigger_keeps_its_subscription_between_wake_ups(redis_server):
    """Regression: the provider's trigger returned after each message and the triggerer
    started it again; a wake-up published in between was not heard. One run of the
    watcher's trigger hears every wake-up, one event each."""
    from orderflow.pushed.asset import wake_trigger

    async def scenario() -> list[dict]:
        events = wake_trigger(CHANNEL).run()
        first = asyncio.ensure_future(events.__anext__())
        await _subscribed(redis_server)
        for n in (1, 2, 3):  # back to back: nobody restarts anything in between
            assert wake.publish("carrier", n, channel=CHANNEL)["listeners"] == 1
        got = [(await asyncio.wait_for(first, 10)).payload]
        for _ in range(2):
            got.append((await asyncio.wait_for(events.__anext__(), 10)).payload)
        await events.aclose()
        return got

    got = asyncio.run(scenario())
    assert [json.loads(p["data"])["stored"] for p in got] == [1, 2, 3]
