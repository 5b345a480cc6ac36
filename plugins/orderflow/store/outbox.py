"""The outbox: every side effect is queued under an idempotency key, in the same transaction
as the decision that caused it; a sender delivers it later, at most once per key."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


#: (connection, rows) while :func:`deferred` collects that connection's enqueues
_collecting: ContextVar[tuple[Any, list[dict[str, Any]]] | None] = ContextVar(
    "outbox_collecting", default=None
)


@contextmanager
def deferred(conn: psycopg.Connection) -> Iterator[None]:
    """Within the block, :func:`enqueue` on ``conn`` collects its rows, and they are queued
    at the end of the block in one statement (:func:`enqueue_many`, in the order enqueued;
    a key already queued skipped as before). An enqueue inside answers True — whether the
    key was new is known only at the end. For callers that queue many side effects in one
    transaction and do not use the answer (the release stage's notices)."""
    rows: list[dict[str, Any]] = []
    token = _collecting.set((conn, rows))
    try:
        yield
    finally:
        _collecting.reset(token)
    enqueue_many(conn, rows)


def enqueue(
    conn: psycopg.Connection,
    *,
    idempotency_key: str,
    action: str,
    target_conn_id: str,
    payload: dict[str, Any],
    order_id: str | None = None,
    version: int = 1,
) -> bool:
    """Queue a side effect; returns False when that key was already queued (a rerun)."""
    collecting = _collecting.get()
    if collecting is not None and collecting[0] is conn:
        collecting[1].append(
            dict(
                idempotency_key=idempotency_key,
                order_id=order_id,
                action=action,
                version=version,
                target_conn_id=target_conn_id,
                payload=payload,
            )
        )
        return True
    cur = conn.execute(
        """
        INSERT INTO orderflow.outbox (idempotency_key, order_id, action, version, target_conn_id, payload)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (idempotency_key) DO NOTHING
        """,
        (idempotency_key, order_id, action, version, target_conn_id, Jsonb(payload)),
    )
    return cur.rowcount == 1


def enqueue_many(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """:func:`enqueue` for many side effects in one statement (in the given order; a key
    already queued is skipped). Each row has ``enqueue``'s keyword arguments. Returns how
    many were queued."""
    from orderflow.store import bulk

    return bulk.insert_values(
        conn,
        "outbox",
        ("idempotency_key", "order_id", "action", "version", "target_conn_id", "payload"),
        [
            (
                r["idempotency_key"],
                r.get("order_id"),
                r["action"],
                r.get("version", 1),
                r["target_conn_id"],
                Jsonb(r["payload"]),
            )
            for r in rows
        ],
        "ON CONFLICT (idempotency_key) DO NOTHING",
    )
