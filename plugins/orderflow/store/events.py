"""Order events: the append-only lifecycle history (the database refuses UPDATE/DELETE)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg

    from orderflow.domain.lifecycle import Transition

_COLUMNS = (
    "order_id",
    "from_status",
    "to_status",
    "reason_codes",
    "rule_set_version",
    "actor_type",
    "actor_id",
    "details",
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
)


def append(
    conn: psycopg.Connection,
    transitions: Iterable[Transition],
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int | None = None,
) -> int:
    """Record transitions and apply them to the order rows, in the caller's transaction."""
    rows = [
        (
            t.order_id,
            t.from_status,
            t.to_status,
            list(t.reason_codes),
            t.rule_set_version,
            t.actor_type,
            t.actor_id,
            Jsonb(t.details),
            dag_id,
            run_id,
            task_id,
            map_index,
        )
        for t in transitions
    ]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO orderflow.order_event ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
            rows,
        )
        cur.executemany(
            'UPDATE orderflow."order" SET status = %s, status_changed_at = now(), '
            "updated_at = now(), version = version + 1 WHERE order_id = %s AND status = %s",
            [(r[2], r[0], r[1]) for r in rows],
        )
        if cur.rowcount != len(rows):
            # Someone else moved one of these orders first: roll the whole batch back.
            raise StaleOrderState(
                f"{len(rows) - cur.rowcount} of {len(rows)} orders were no longer in the expected "
                "status; the transaction was rolled back. Reload the orders and decide again."
            )
    return len(rows)


class StaleOrderState(RuntimeError):
    """An order changed status between load and write (optimistic concurrency)."""
