"""The wake-up: one message on a Redis pub/sub channel that a DAG's
:class:`~airflow.sdk.AssetWatcher` listens to (see :mod:`orderflow.pushed.asset`) —
the fulfilment DAG's after pushed events are committed, an intake DAG's when the portal or
the marketplace announces new orders in its feed.

The message is only a nudge — it carries counts, never the events (already in the store)
or the orders (in the feed). Publishing is best effort with short timeouts: Redis down (or
no ``redis_default`` Connection) is logged and reported, never raised, and the DAG's
scheduled poll picks the work up anyway.

A webhook must not wait on a Redis that is gone: one attempt (redis-py's default of three
retries with backoff took 5.8 s against an unresponsive server), :data:`TIMEOUT_S` to
connect or answer, and after a failure the next :data:`BACKOFF_S` seconds of wake-ups are
skipped without trying (reported as such) — a down queue costs one webhook at most one
timeout every few seconds, not every webhook.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: The Connection of the Redis the triggerer watches (RedisHook's default name).
REDIS_CONN_ID = "redis_default"
#: The pub/sub channel (``ORDERFLOW_FULFILMENT_WAKE_CHANNEL`` overrides it, for tests that
#: share one Redis).
CHANNEL = os.environ.get("ORDERFLOW_FULFILMENT_WAKE_CHANNEL", "orderflow.fulfilment.events")
#: The intake channels' common prefix (``ORDERFLOW_INTAKE_WAKE_CHANNEL`` overrides it).
INTAKE_CHANNEL = os.environ.get("ORDERFLOW_INTAKE_WAKE_CHANNEL", "orderflow.intake")
#: Seconds to connect to / answer from Redis before giving up on a wake-up.
TIMEOUT_S = 1.0
#: After a failed publish, wake-ups are skipped (not tried) for this many seconds.
BACKOFF_S = 5.0

_lock = threading.Lock()
_clients: dict[tuple, Any] = {}
_failed_at: float | None = None  # monotonic time of the last failed publish


def _client(conn_id: str):
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(conn_id)
    extra = c.extra_dejson
    key = (c.host, c.port, extra.get("db"), c.password)
    with _lock:
        client = _clients.get(key)
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = redis.Redis(
                host=c.host or "127.0.0.1",
                port=int(c.port or 6379),
                db=int(extra.get("db") or 0),
                password=c.password or None,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),  # one attempt: the poll is the retry
            )
            _clients[key] = client
        return client


def intake_channel(source: str) -> str:
    """The channel that wakes the intake DAG of ``source`` (``portal``, ``marketplace``)."""
    return f"{INTAKE_CHANNEL}.{source}"


def publish(
    source: str, stored: int, *, conn_id: str = REDIS_CONN_ID, channel: str | None = None
) -> dict[str, Any]:
    """Publish one wake-up for ``stored`` new events (or announced orders) of ``source`` on
    ``channel`` (the fulfilment DAG's by default). Returns
    ``{"woken": bool, "listeners": n}`` or ``{"woken": False, "error": ...}`` (``"skipped"``
    too within :data:`BACKOFF_S` of a failure); never raises."""
    global _failed_at
    failed_at = _failed_at
    if failed_at is not None and time.monotonic() - failed_at < BACKOFF_S:
        return {
            "woken": False,
            "skipped": True,
            "error": f"Redis failed {time.monotonic() - failed_at:.1f} s ago; not tried",
        }
    message = json.dumps(
        {"source": source, "stored": stored, "at": datetime.now(UTC).isoformat()},
        separators=(",", ":"),
    )
    try:
        listeners = _client(conn_id).publish(channel or CHANNEL, message)
    except Exception as exc:  # Redis down, no Connection: the poll is the safety net
        _failed_at = time.monotonic()
        log.warning(
            "%s new %s item(s), but no wake-up on %s through Redis (%s: %s); the DAG's "
            "scheduled poll will take them",
            stored,
            source,
            channel or CHANNEL,
            type(exc).__name__,
            exc,
        )
        return {"woken": False, "error": f"{type(exc).__name__}: {exc}"}
    _failed_at = None
    return {"woken": True, "listeners": int(listeners)}
