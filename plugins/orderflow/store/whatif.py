"""What-if repository: the history a what-if replays (read in one read-only snapshot) and
the stored runs (``whatif_run``) with their per-order differences (``whatif_diff``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


# --------------------------------------------------------------------------- history
def read_only_snapshot(conn: psycopg.Connection) -> None:
    """Make the transaction just begun one read-only snapshot (first statement of it)."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def window_orders(
    conn: psycopg.Connection, window_from: datetime, window_to: datetime
) -> list[tuple]:
    """(order_id, channel, partner_id, customer_id, ship_to_id, received_at, canonical) of
    the customers' orders received in [from, to) (not backorder releases), in order."""
    return conn.execute(
        """
        SELECT order_id, channel, partner_id, customer_id, ship_to_id, received_at, canonical
          FROM orderflow."order"
         WHERE received_at >= %s AND received_at < %s AND parent_order_id IS NULL
         ORDER BY received_at, order_id
        """,
        (window_from, window_to),
    ).fetchall()


def open_exposure(
    conn: psycopg.Connection,
    customer_ids: Sequence[str],
    statuses: Sequence[str],
    excluding: Sequence[str],
) -> dict[str, Any]:
    """Per customer: the value of its orders in ``statuses``, not counting ``excluding``."""
    return {
        r[0]: r[1]
        for r in conn.execute(
            """
            SELECT o.customer_id, sum(l.quantity * coalesce(l.contract_price, l.unit_price, 0))
              FROM orderflow."order" o JOIN orderflow.order_line l USING (order_id)
             WHERE o.customer_id = ANY(%s) AND o.status = ANY(%s)
               AND NOT o.order_id = ANY(%s)
             GROUP BY o.customer_id
            """,
            (list(customer_ids), list(statuses), list(excluding)),
        )
    }


def available_now(conn: psycopg.Connection, item_ids: Sequence[str]) -> list[tuple]:
    """(item_id, dc_id, available, never below 0) of the items' inventory positions."""
    return conn.execute(
        "SELECT item_id, dc_id, greatest(available, 0) FROM orderflow.inventory_position "
        "WHERE item_id = ANY(%s)",
        (list(item_ids),),
    ).fetchall()


def live_reservations(conn: psycopg.Connection, order_ids: Sequence[str]) -> list[tuple]:
    """(item_id, dc_id, quantity) the orders' live (held or released) reservations hold."""
    return conn.execute(
        "SELECT item_id, dc_id, sum(quantity) FROM orderflow.reservation "
        "WHERE order_id = ANY(%s) AND status IN ('held', 'released') GROUP BY 1, 2",
        (list(order_ids),),
    ).fetchall()


# --------------------------------------------------------------------------- runs
def add_run(
    conn: psycopg.Connection,
    *,
    requested_by: str | None,
    window_from: datetime,
    window_to: datetime,
    current_versions: dict[str, Any],
    candidates: list[dict[str, Any]],
    orders: int,
    changed: int,
    totals: dict[str, Any],
    dag_id: str | None,
    run_id: str | None,
) -> int:
    """Store a what-if run; returns its id."""
    return conn.execute(
        """
        INSERT INTO orderflow.whatif_run (requested_by, window_from, window_to,
            current_versions, candidates, orders, changed, totals, dag_id, run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING whatif_run_id
        """,
        (
            requested_by,
            window_from,
            window_to,
            Jsonb(current_versions),
            Jsonb(candidates),
            orders,
            changed,
            Jsonb(totals),
            dag_id,
            run_id,
        ),
    ).fetchone()[0]


def add_diffs(
    conn: psycopg.Connection, whatif_run_id: int, diffs: Sequence[dict[str, Any]]
) -> None:
    """Store a run's per-order differences (order_id, changed, current, candidate)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.whatif_diff (whatif_run_id, order_id, changed, current, "
            "candidate) VALUES (%s, %s, %s, %s, %s)",
            [
                (
                    whatif_run_id,
                    d["order_id"],
                    d["changed"],
                    Jsonb(d["current"]),
                    Jsonb(d["candidate"]),
                )
                for d in diffs
            ],
        )


def run(conn: psycopg.Connection, whatif_run_id: int) -> dict[str, Any] | None:
    """A stored run (without its differences); None when it does not exist."""
    cur = conn.execute(
        "SELECT whatif_run_id, requested_by, requested_at, window_from, window_to, "
        "current_versions, candidates, orders, changed, totals, dag_id, run_id "
        "FROM orderflow.whatif_run WHERE whatif_run_id = %s",
        (whatif_run_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def diffs(conn: psycopg.Connection, whatif_run_id: int, limit: int) -> list[tuple]:
    """(order_id, changed, current, candidate) of a run's first ``limit`` differences, by
    order id."""
    return conn.execute(
        "SELECT order_id, changed, current, candidate FROM orderflow.whatif_diff "
        "WHERE whatif_run_id = %s ORDER BY order_id LIMIT %s",
        (whatif_run_id, limit),
    ).fetchall()


def latest_runs(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` runs, newest first."""
    return _rows(
        conn.execute(
            "SELECT whatif_run_id, requested_by, requested_at, window_from, window_to, "
            "candidates, orders, changed, totals, dag_id, run_id FROM orderflow.whatif_run "
            "ORDER BY whatif_run_id DESC LIMIT %s",
            (limit,),
        )
    )
