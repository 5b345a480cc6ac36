"""The outbox: every side effect is queued under an idempotency key, in the same transaction
as the decision that caused it; a sender delivers it later, at most once per key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


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
