"""Data-quality repository: the reference sets a suite checks against, ``dq_result`` (one row
per expectation per run), the ``master_data_quality`` exceptions the gate opens on entities
and resolves, and the ``dq_passed`` flag on the published master-data tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    import psycopg


# --------------------------------------------------------------------------- references
def customer_ids(conn: psycopg.Connection) -> set[str]:
    """Every customer id."""
    return {r[0] for r in conn.execute("SELECT customer_id FROM orderflow.customer")}


def item_ids(conn: psycopg.Connection) -> set[str]:
    """Every item id."""
    return {r[0] for r in conn.execute("SELECT item_id FROM orderflow.item")}


def dc_ids(conn: psycopg.Connection) -> set[str]:
    """Every distribution centre id."""
    return {r[0] for r in conn.execute("SELECT dc_id FROM orderflow.distribution_center")}


def contracts(conn: psycopg.Connection, cols: Sequence[str]) -> list[tuple]:
    """The columns ``cols`` (trusted names) of every price contract."""
    return conn.execute(f"SELECT {', '.join(cols)} FROM orderflow.price_contract").fetchall()


# --------------------------------------------------------------------------- results
def previous_extract(
    conn: psycopg.Connection, suite: str, expectation: str, run_id: str
) -> tuple[Any, Any]:
    """(when, age in seconds) of the latest ``expectation`` row of ``suite`` of another run."""
    return conn.execute(
        "SELECT max(validated_at), extract(epoch FROM now() - max(validated_at)) "
        "FROM orderflow.dq_result WHERE suite = %s AND expectation = %s AND run_id <> %s",
        (suite, expectation, run_id),
    ).fetchone()


def replace_results(
    conn: psycopg.Connection, run_id: str, suite: str, rows: Sequence[tuple]
) -> None:
    """This run's rows of the suite (expectation, success, element_count, unexpected_count,
    details as JSON text), replacing earlier attempts'."""
    conn.execute(
        "DELETE FROM orderflow.dq_result WHERE run_id = %s AND suite = %s",
        (run_id, suite),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.dq_result (run_id, suite, expectation, success, "
            "element_count, unexpected_count, details) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
            [(run_id, suite, *row) for row in rows],
        )


# --------------------------------------------------------------------------- exceptions
def open_entity_exceptions(
    conn: psycopg.Connection,
    *,
    entity_type: str,
    category: str,
    entity_ids: list[str],
    severities: list[str],
    reasons: list[str],
    details: list[str],
) -> list[bool]:
    """One open exception per entity (insert, or refresh reason, details and severity when
    the reason or severity changed); per row written, whether it was inserted."""
    rows = conn.execute(
        """
        INSERT INTO orderflow.order_exception AS e (entity_type, entity_id, category, severity,
            owner_role, reason, details, sla_due_at)
        SELECT %s, v.entity_id, c.category, v.severity, c.default_owner_role, v.reason,
               v.details::jsonb, now() + make_interval(mins => c.default_sla_minutes)
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
               AS v(entity_id, severity, reason, details)
          JOIN orderflow.exception_category c ON c.category = %s
        ON CONFLICT (entity_type, entity_id, category) WHERE status = 'open' AND order_id IS NULL
        DO UPDATE SET reason = EXCLUDED.reason, details = EXCLUDED.details,
                      severity = EXCLUDED.severity
            WHERE e.reason IS DISTINCT FROM EXCLUDED.reason
               OR e.severity IS DISTINCT FROM EXCLUDED.severity
        RETURNING (xmax = 0) AS inserted
        """,
        (entity_type, entity_ids, severities, reasons, details, category),
    ).fetchall()
    return [inserted for (inserted,) in rows]


def open_entity_exception_ids(
    conn: psycopg.Connection, category: str, entity_type: str
) -> list[tuple[int, str]]:
    """(exception_id, entity_id) of the open ``category`` exceptions on ``entity_type``."""
    return conn.execute(
        "SELECT exception_id, entity_id FROM orderflow.order_exception "
        "WHERE status = 'open' AND category = %s AND order_id IS NULL AND entity_type = %s",
        (category, entity_type),
    ).fetchall()


def auto_resolve(conn: psycopg.Connection, ids: list[int], resolver: str, note: str) -> int:
    """Resolve the open exceptions ``ids`` ``auto_resolved``; returns how many."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception
           SET status = 'resolved', resolution = 'auto_resolved', resolved_by = %s,
               resolved_at = now(), resolution_note = %s
         WHERE exception_id = ANY(%s) AND status = 'open'
        """,
        (resolver, note, ids),
    ).rowcount


# --------------------------------------------------------------------------- dq_passed
def flagged_tables(conn: psycopg.Connection) -> set[str]:
    """The tables of the ``orderflow`` schema with a ``dq_passed`` column."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'orderflow' AND column_name = 'dq_passed'"
        )
    }


def _key_expr(key: Iterable[str]) -> sql.Composable:
    parts = [sql.SQL("t.{}::text").format(sql.Identifier(k)) for k in key]
    return sql.SQL(" || '|' || ").join(parts)


def set_dq_passed(
    conn: psycopg.Connection, table_name: str, key: Iterable[str], category: str
) -> int:
    """``dq_passed`` on ``table_name``: false where an open ``category`` exception on the
    entity type ``table_name`` names the row (its ``key`` columns joined by ``|``), true
    elsewhere. Returns rows changed."""
    open_ids = sql.SQL(
        "SELECT entity_id FROM orderflow.order_exception WHERE status = 'open' "
        "AND category = {cat} AND order_id IS NULL AND entity_type = {et}"
    ).format(cat=sql.Literal(category), et=sql.Literal(table_name))
    table = sql.SQL("orderflow.{} AS t").format(sql.Identifier(table_name))
    key_expr = _key_expr(key)
    n = conn.execute(
        sql.SQL(
            "UPDATE {table} SET dq_passed = false "
            "WHERE t.dq_passed IS DISTINCT FROM false AND {key} IN ({open_ids})"
        ).format(table=table, key=key_expr, open_ids=open_ids)
    ).rowcount
    n += conn.execute(
        sql.SQL(
            "UPDATE {table} SET dq_passed = true "
            "WHERE t.dq_passed IS DISTINCT FROM true AND {key} NOT IN ({open_ids})"
        ).format(table=table, key=key_expr, open_ids=open_ids)
    ).rowcount
    return n
