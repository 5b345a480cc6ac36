"""The wake-up: after pushed events are committed, one message on a Redis pub/sub channel
that the fulfilment DAG's :class:`~airflow.sdk.AssetWatcher` listens to (see
:mod:`orderflow.pushed.asset`).

The message is only a nudge — it carries counts, never the events, which are already in the
store. Publishing is best effort with short timeouts: Redis down (or no ``redis_default``
Connection) is logged and reported, never raised, and the 2-minute poll picks the stored
events up anyway.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: The Connection of the Redis the triggerer watches (RedisHook's default name).
REDIS_CONN_ID = "redis_default"
#: The pub/sub channel (``ORDERFLOW_FULFILMENT_WAKE_CHANNEL`` overrides it, for tests that
#: share one Redis).
CHANNEL = os.environ.get("ORDERFLOW_FULFILMENT_WAKE_CHANNEL", "orderflow.fulfilment.events")
#: Seconds to connect to / answer from Redis before giving up on a wake-up.
TIMEOUT_S = 1.0

_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def _client(conn_id: str):
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(conn_id)
    extra = c.extra_dejson
    key = (c.host, c.port, extra.get("db"), c.password)
    with _lock:
        client = _clients.get(key)
        if client is None:
            import redis

            client = redis.Redis(
                host=c.host or "127.0.0.1",
                port=int(c.port or 6379),
                db=int(extra.get("db") or 0),
                password=c.password or None,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
            )
            _clients[key] = client
        return client


def publish(
    source: str, stored: int, *, conn_id: str = REDIS_CONN_ID, channel: str | None = None
) -> dict[str, Any]:
    """Publish one wake-up for ``stored`` new events of ``source``. Returns
    ``{"woken": bool, "listeners": n}`` or ``{"woken": False, "error": ...}``; never raises."""
    message = json.dumps(
        {"source": source, "stored": stored, "at": datetime.now(UTC).isoformat()},
        separators=(",", ":"),
    )
    try:
        listeners = _client(conn_id).publish(channel or CHANNEL, message)
    except Exception as exc:  # Redis down, no Connection: the poll is the safety net
        log.warning(
            "stored %s pushed %s event(s) but could not wake fulfilment through Redis (%s: %s); "
            "the 2-minute poll will apply them",
            stored,
            source,
            type(exc).__name__,
            exc,
        )
        return {"woken": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"woken": True, "listeners": int(listeners)}
