"""The AssetWatcher's trigger: waits in the triggerer for one wake-up on the Redis pub/sub
channel, and rides out Redis going away.

It replaces ``MessageQueueTrigger(scheme="redis+pubsub")`` (the Redis provider's
``AwaitMessageTrigger``), which, measured against a ``redis-server`` taken down and brought
back:

- SIGKILLed: ends with ``ConnectionError``; the triggerer logs a traceback and starts the
  Asset's trigger again on its next loop (every ~2 s, failing again until Redis is back).
  Wake-ups resume, at the price of a traceback every 2 s for the whole outage.
- frozen (SIGSTOP, or a network that drops packets): connects with no socket timeout and
  waits for the server's answer *synchronously, inside the triggerer's event loop* — every
  trigger of that triggerer (deferred sensors included) stalls until Redis answers again.

This one uses ``redis.asyncio`` with connect and read timeouts, never blocks the event loop,
and when the connection fails it logs one line, waits (1 s doubling to 10 s) and subscribes
again, for as long as it runs. It also keeps its subscription after an event (the triggerer
takes every event an event trigger yields): the provider's returned after each message and
was started again by the triggerer, and a wake-up published in that gap — a second or more
on a busy machine — was not heard. A message published while it reconnects is not seen
either — the DAG's scheduled poll covers that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

log = logging.getLogger(__name__)

#: Seconds to connect to / hear back from Redis before the connection counts as failed.
TIMEOUT_S = 5.0
#: Reconnect back-off (s): first wait and longest wait.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 10.0


class WakeTrigger(BaseEventTrigger):
    """Fire on every message on ``channels`` of the ``redis_conn_id`` Redis, for as long as
    it runs (never ends by itself)."""

    def __init__(
        self,
        channels: list[str] | str,
        redis_conn_id: str = "redis_default",
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.channels = [channels] if isinstance(channels, str) else list(channels)
        self.redis_conn_id = redis_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "channels": self.channels,
                "redis_conn_id": self.redis_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def _client(self):
        import redis.asyncio as aioredis
        from airflow.sdk import BaseHook

        c = await BaseHook.aget_connection(self.redis_conn_id)
        extra = c.extra_dejson
        return aioredis.Redis(
            host=c.host or "127.0.0.1",
            port=int(c.port or 6379),
            db=int(extra.get("db") or 0),
            password=c.password or None,
            socket_connect_timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            # a silent subscription is PINGed: a frozen server is noticed, not waited on
            health_check_interval=30,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis

        backoff = BACKOFF_FIRST_S
        failing = False
        while True:
            client = pubsub = None
            try:
                client = await self._client()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(*self.channels)
                if failing:
                    log.info("wake-up channel subscribed again after Redis came back")
                    failing, backoff = False, BACKOFF_FIRST_S
                while True:
                    message = await pubsub.get_message(timeout=self.poll_interval)
                    if message and message.get("type") == "message":
                        yield TriggerEvent(
                            {
                                "channel": _text(message.get("channel")),
                                "data": _text(message.get("data")),
                            }
                        )
            except (TimeoutError, redis.RedisError, OSError) as exc:
                if not failing:
                    log.warning(
                        "Redis of the wake-ups unreachable (%s: %s); subscribing again every "
                        "%.0f-%.0f s, the DAGs' scheduled polls cover the meantime",
                        type(exc).__name__,
                        exc,
                        BACKOFF_FIRST_S,
                        BACKOFF_MAX_S,
                    )
                failing = True
            finally:
                await _close(pubsub, client)
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _close(pubsub, client) -> None:
    for thing in (pubsub, client):
        if thing is None:
            continue
        # closing a dead connection: nothing left to do when it fails
        with contextlib.suppress(Exception):
            await asyncio.wait_for(thing.aclose(), 2)
