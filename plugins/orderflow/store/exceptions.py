"""Exceptions repository: typed holds with owner role and SLA from the category's defaults."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules.registry import ExceptionCategory


def open_for_order(
    conn: psycopg.Connection,
    *,
    order_id: str,
    category: str,
    reason: str,
    details: dict[str, Any] | None = None,
    line_no: int | None = None,
    severity: str = "medium",
    rule_set_version: str | None = None,
) -> int | None:
    """Open an exception on an order (one open per order, line and category: a second call
    while it is open returns None and changes nothing)."""
    row = conn.execute(
        """
        INSERT INTO orderflow.order_exception (order_id, line_no, category, severity, owner_role,
            reason, details, rule_set_version, sla_due_at)
        SELECT %s, %s, c.category, %s, c.default_owner_role, %s, %s, %s,
               now() + make_interval(mins => c.default_sla_minutes)
          FROM orderflow.exception_category c WHERE c.category = %s
        ON CONFLICT DO NOTHING
        RETURNING exception_id
        """,
        (order_id, line_no, severity, reason, Jsonb(details or {}), rule_set_version, category),
    ).fetchone()
    return row[0] if row else None


def open_routed(
    conn: psycopg.Connection,
    *,
    category: str,
    reason: str,
    order_id: str | None = None,
    entity: tuple[str, str] | None = None,
    details: dict[str, Any] | None = None,
    owner_role: str | None = None,
    stage: str | None = None,
) -> int | None:
    """Open an exception on an order or, without one, on an entity (a feed, an outbox
    action), routed by the routing rules in effect now (owner role unless given, SLA,
    escalation, severity). One open per (order, category) or (entity, category): while it is
    open a second call refreshes its reason and details and returns None."""
    from orderflow import rules

    book = rules.load()
    route = book.routing.route(category)
    entity_type, entity_id = entity or (None, None)
    target = (
        "(order_id, (coalesce(line_no, 0)), category) WHERE status = 'open' AND order_id IS NOT NULL"
        if order_id
        else "(entity_type, entity_id, category) WHERE status = 'open' AND order_id IS NULL"
    )
    row = conn.execute(
        f"""
        INSERT INTO orderflow.order_exception AS e (order_id, entity_type, entity_id, category,
            severity, owner_role, reason, details, rule_set_version, sla_due_at,
            escalation_role, stage)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(mins => %s), %s, %s)
        ON CONFLICT {target}
        DO UPDATE SET reason = EXCLUDED.reason, details = EXCLUDED.details
        RETURNING exception_id, (xmax = 0) AS inserted
        """,
        (
            order_id,
            entity_type,
            entity_id,
            category,
            route.severity,
            owner_role or route.owner_role,
            reason,
            Jsonb(details or {}),
            book.tag("routing"),
            route.sla_minutes,
            route.escalation_role,
            stage,
        ),
    ).fetchone()
    return row[0] if row and row[1] else None


def resolve_entity(
    conn: psycopg.Connection, *, category: str, entity: tuple[str, str], resolver: str, note: str
) -> int:
    """Auto-resolve the open exception of an entity whose cause went away."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception
           SET status = 'resolved', resolution = 'auto_resolved', resolved_by = %s,
               resolved_at = now(), resolution_note = %s
         WHERE status = 'open' AND order_id IS NULL AND category = %s
           AND entity_type = %s AND entity_id = %s
        """,
        (resolver, note, category, *entity),
    ).rowcount


def ensure_categories(conn: psycopg.Connection, categories: Iterable[ExceptionCategory]) -> int:
    """Create the exception categories a rule type declares (``orderflow.rules.registry``)
    that the store does not have yet; one already there is left as it is. Run it outside the
    stage's transaction: only a missing category is written, so parallel partitions never
    wait on each other once it exists. Returns how many were created."""
    wanted = {c.category: c for c in categories}
    if not wanted:
        return 0
    have = {
        r[0]
        for r in conn.execute(
            "SELECT category FROM orderflow.exception_category WHERE category = ANY(%s)",
            (list(wanted),),
        )
    }
    rows = [
        (c.category, c.description, c.default_owner_role, c.default_sla_minutes, c.transient)
        for name, c in wanted.items()
        if name not in have
    ]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.exception_category (category, description, "
            "default_owner_role, default_sla_minutes, transient) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            rows,
        )
    return len(rows)
