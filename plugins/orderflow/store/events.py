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
    if len({r[0] for r in rows}) < len(rows):
        # An order moved twice in one call: each move must see the one before it.
        _append_one_by_one(conn, rows)
        return len(rows)
    # One statement for the events, one for the orders (in the given order: event ids
    # ascend as the transitions were given).
    cols = list(zip(*rows, strict=True))
    conn.execute(
        f"INSERT INTO orderflow.order_event ({', '.join(_COLUMNS)}) "
        "SELECT order_id, from_status, to_status, "
        "       ARRAY(SELECT jsonb_array_elements_text(reason_codes)), "
        "       rule_set_version, actor_type, actor_id, details, dag_id, run_id, task_id, map_index "
        "  FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::text[], %s::text[], "
        "              %s::text[], %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::int[]) "
        "       WITH ORDINALITY AS t(order_id, from_status, to_status, reason_codes, "
        "            rule_set_version, actor_type, actor_id, details, dag_id, run_id, task_id, "
        "            map_index, n) "
        " ORDER BY n",
        [
            list(cols[0]),
            list(cols[1]),
            list(cols[2]),
            [Jsonb(list(codes)) for codes in cols[3]],
            *(list(c) for c in cols[4:7]),
            list(cols[7]),
            *(list(c) for c in cols[8:]),
        ],
    )
    moved = conn.execute(
        'UPDATE orderflow."order" o SET status = t.to_status, status_changed_at = now(), '
        "updated_at = now(), version = o.version + 1 "
        "  FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(order_id, from_status, to_status) "
        " WHERE o.order_id = t.order_id AND o.status = t.from_status",
        (list(cols[0]), list(cols[1]), list(cols[2])),
    ).rowcount
    if moved != len(rows):
        raise _stale(len(rows) - moved, len(rows))
    return len(rows)


def _append_one_by_one(conn: psycopg.Connection, rows: list[tuple]) -> None:
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
            raise _stale(len(rows) - cur.rowcount, len(rows))


def _stale(missing: int, total: int) -> StaleOrderState:
    # Someone else moved one of these orders first: the caller's transaction rolls back.
    return StaleOrderState(
        f"{missing} of {total} orders were no longer in the expected "
        "status; the transaction was rolled back. Reload the orders and decide again."
    )


class StaleOrderState(RuntimeError):
    """An order changed status between load and write (optimistic concurrency)."""
