"""Exceptions repository: typed holds with owner role and SLA from the category's defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


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
