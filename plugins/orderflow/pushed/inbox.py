"""Receive one pushed request: authenticate, then

- fulfilment events (``wms``, ``carrier``): store, commit, then wake the fulfilment DAG.
  Order matters: the events are committed to ``fulfilment_event`` (under the same natural
  key the poll uses, so push + poll and a re-delivered push all count once) before the
  wake-up is published, so whatever wakes the DAG finds them; if the wake-up is lost the
  poll's run applies them.
- notices of new orders (``portal``, ``marketplace``): nothing is stored — the feed is the
  record, read by the intake DAG from its own watermark — only that DAG is woken. A lost
  notice (or wake-up) costs time, never an order: the DAG's 5-minute poll reads the feed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orderflow.pushed import signing, wake

if TYPE_CHECKING:
    import psycopg

#: The Connection whose password is the secret the senders sign with (never in code).
PUSH_CONN_ID = "fulfilment_push"
#: Sources whose events are pushed whole and stored.
EVENT_SOURCES = ("wms", "carrier")
#: Sources that announce new orders in their feeds: their intake DAG is woken.
NOTICE_SOURCES = ("portal", "marketplace")
SOURCES = EVENT_SOURCES + NOTICE_SOURCES
#: What each source's event must carry: its natural key and when it happened (a notice: its
#: position in the feed).
REQUIRED = {
    "wms": ("release_id", "milestone", "occurred_at"),
    "carrier": ("tracking_number", "status", "occurred_at"),
    "portal": ("seq",),
    "marketplace": ("seq",),
}
SECRET_TTL_S = 30.0
MAX_EVENTS = 1000

_lock = threading.Lock()
_secret: tuple[float, str, str] | None = None  # (fetched, conn_id, secret)


class Rejected(Exception):
    """The request is well signed but not acceptable (HTTP 422): what is wrong and where."""


def secret(conn_id: str = PUSH_CONN_ID) -> str:
    """The shared secret (the Connection's password), cached for :data:`SECRET_TTL_S` s so a
    rotated secret applies within that."""
    global _secret
    now = time.monotonic()
    with _lock:
        cached = _secret
        if cached and cached[1] == conn_id and now - cached[0] < SECRET_TTL_S:
            return cached[2]
    from airflow.sdk import BaseHook

    value = BaseHook.get_connection(conn_id).password or ""
    if not value:
        raise LookupError(f"Connection {conn_id!r} has no password (the push secret)")
    with _lock:
        _secret = (now, conn_id, value)
    return value


def authenticate(body: bytes, header: str | None, conn_id: str = PUSH_CONN_ID) -> None:
    """Raise :class:`~orderflow.pushed.signing.BadSignature` unless signed with the secret."""
    signing.verify(secret(conn_id), body, header)


def parse(source: str, payload: Any) -> list[dict]:
    """The events of a request body ``{"events": [...]}`` (or one event object)."""
    if source not in SOURCES:
        raise Rejected(f"unknown source {source!r}: pushes are accepted for {', '.join(SOURCES)}")
    if isinstance(payload, dict) and "events" in payload:
        events = payload["events"]
    elif isinstance(payload, dict):
        events = [payload]
    else:
        events = payload
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Rejected('the body must be {"events": [<event object>, ...]}')
    if len(events) > MAX_EVENTS:
        raise Rejected(f"{len(events)} events in one request; send at most {MAX_EVENTS}")
    for i, e in enumerate(events):
        missing = [k for k in REQUIRED[source] if not e.get(k)]
        if missing:
            raise Rejected(f"event {i} of this {source} push lacks {', '.join(missing)}")
    return events


def store(conn: psycopg.Connection, source: str, events: Sequence[dict]) -> dict[str, int]:
    """Store the events in one committed transaction; an event already there (pushed before,
    or read by the poll) is skipped by its natural key."""
    from orderflow.fulfilment import event_rows
    from orderflow.store import db
    from orderflow.store import fulfilment as repo

    with db.transaction(conn):
        new = repo.store_events(conn, event_rows(source, events))
    return {"received": len(events), "stored": new, "duplicates": len(events) - new}


def announce(source: str, notices: Sequence[dict]) -> dict[str, Any]:
    """Wake the intake DAG of ``source`` for ``notices`` of new orders (nothing stored)."""
    out: dict[str, Any] = {"received": len(notices), "stored": 0, "duplicates": 0}
    out.update(wake.publish(source, len(notices), channel=wake.intake_channel(source)))
    return out


def receive(conn: psycopg.Connection, source: str, events: Sequence[dict]) -> dict[str, Any]:
    """Store, commit, then wake the fulfilment DAG if anything was new."""
    return wake_after(source, store(conn, source, events))


def wake_after(source: str, stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` (what :func:`store` committed) with the wake-up's outcome: published only
    when something was new. Called once the store's connection is given back, so a slow or
    absent Redis never holds a database connection."""
    out: dict[str, Any] = dict(stored)
    out.update(wake.publish(source, out["stored"]) if out["stored"] else {"woken": False})
    return out
