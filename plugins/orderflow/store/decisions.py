"""People's decisions on orders: the locked order and its open exceptions, resolutions,
approvals the later stages honour, manual touches, the claim of a reprocessed order, and
the audit row of every decision. Always in the caller's transaction (one per decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


def audit(
    conn: psycopg.Connection,
    actor: str,
    actor_role: str | None,
    action: str,
    object_type: str,
    object_id: str,
    before: Any,
    after: Any,
    reason: str | None,
) -> None:
    """An ``audit_log`` row (who, what, before/after, why)."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, object_id, "
        "before, after, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (actor, actor_role, action, object_type, object_id, Jsonb(before), Jsonb(after), reason),
    )


def lock_order(conn: psycopg.Connection, order_id: str) -> tuple | None:
    """Lock an order: (order_id, status, approvals, claimed_by_run), or None."""
    return conn.execute(
        'SELECT order_id, status, approvals, claimed_by_run FROM orderflow."order" '
        "WHERE order_id = %s FOR UPDATE",
        (order_id,),
    ).fetchone()


def open_exceptions(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The open exceptions of an order (exception_id, category, line_no, stage, owner_role,
    escalation_role), oldest first."""
    cur = conn.execute(
        "SELECT exception_id, category, line_no, stage, owner_role, escalation_role "
        "FROM orderflow.order_exception WHERE order_id = %s AND status = 'open' "
        "ORDER BY exception_id",
        (order_id,),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def lock_exception(conn: psycopg.Connection, exception_id: int) -> tuple | None:
    """Lock an exception: (order_id, category, status, owner_role, line_no), or None."""
    return conn.execute(
        "SELECT order_id, category, status, owner_role, line_no FROM orderflow.order_exception "
        "WHERE exception_id = %s FOR UPDATE",
        (exception_id,),
    ).fetchone()


def exception_shipment(conn: psycopg.Connection, exception_id: int) -> str | None:
    """The shipment an exception's details name."""
    return conn.execute(
        "SELECT details->>'shipment_id' FROM orderflow.order_exception WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()[0]


def resolve(
    conn: psycopg.Connection,
    exception_ids: Sequence[int],
    resolution: str,
    actor: str,
    note: str | None,
) -> None:
    """Resolve the exceptions given that are still open."""
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = %s, "
        "resolved_by = %s, resolved_at = now(), resolution_note = %s "
        "WHERE exception_id = ANY(%s) AND status = 'open'",
        (resolution, actor, note, list(exception_ids)),
    )


def ask_again(conn: psycopg.Connection, exception_id: int) -> None:
    """Let the approval dispatcher ask for an open exception again."""
    conn.execute(
        "UPDATE orderflow.order_exception SET approval_run_id = NULL "
        "WHERE exception_id = %s AND status = 'open'",
        (exception_id,),
    )


def touched_by_hand(conn: psycopg.Connection, order_id: str) -> None:
    """Count one more manual touch of the order."""
    conn.execute(
        'UPDATE orderflow."order" SET manual_touches = manual_touches + 1 WHERE order_id = %s',
        (order_id,),
    )


def add_approval(conn: psycopg.Connection, order_id: str, category: str) -> None:
    """Record that ``category`` is approved on the order (once)."""
    conn.execute(
        'UPDATE orderflow."order" SET approvals = array_append(approvals, %s) '
        "WHERE order_id = %s AND NOT %s = ANY(approvals)",
        (category, order_id, category),
    )


def charge_customer_price(conn: psycopg.Connection, order_id: str, line_no: int | None) -> None:
    """The price override: the customer's price is what we charge, on ``line_no`` (or on
    every line when None)."""
    conn.execute(
        "UPDATE orderflow.order_line SET contract_price = unit_price "
        "WHERE order_id = %s AND (%s::int IS NULL OR line_no = %s)",
        (order_id, line_no, line_no),
    )


def categories_of_last_hold(conn: psycopg.Connection, order_id: str) -> list[str]:
    """The categories of the exceptions resolved since the order's last move to ON_HOLD."""
    return [
        r[0]
        for r in conn.execute(
            """
            SELECT e.category FROM orderflow.order_exception e
             WHERE e.order_id = %s AND e.resolved_at >= (
                   SELECT max(occurred_at) FROM orderflow.order_event
                    WHERE order_id = %s AND to_status = 'ON_HOLD')
            """,
            (order_id, order_id),
        )
    ]


def claim_for_run(conn: psycopg.Connection, order_id: str, run_id: str | None) -> None:
    """Claim an order for ``run_id`` (a reprocess run)."""
    conn.execute(
        'UPDATE orderflow."order" SET claimed_by_run = %s, claimed_at = now() WHERE order_id = %s',
        (run_id, order_id),
    )


def take_for_approval(
    conn: psycopg.Connection, categories: Sequence[str], limit: int
) -> list[tuple]:
    """Mark up to ``limit`` open order exceptions of ``categories`` that no approval run
    holds yet with an approval run id (most urgent SLA first, ``SKIP LOCKED``). Returns
    (exception_id, order_id, category, owner_role, reason, sla_due_at, approval_run_id,
    escalation_role)."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception e
           SET approval_run_id = 'exception-' || e.exception_id || '-'
                                 || to_char(now(), 'YYYYMMDD"T"HH24MISS')
         WHERE e.exception_id IN (
               SELECT exception_id FROM orderflow.order_exception
                WHERE status = 'open' AND order_id IS NOT NULL
                  AND category = ANY(%s) AND approval_run_id IS NULL
                ORDER BY sla_due_at, exception_id LIMIT %s FOR UPDATE SKIP LOCKED)
        RETURNING e.exception_id, e.order_id, e.category, e.owner_role, e.reason,
                  e.sla_due_at, e.approval_run_id, e.escalation_role
        """,
        (list(categories), limit),
    ).fetchall()


def exception_states(conn: psycopg.Connection, exception_ids: Sequence[int]) -> dict[int, dict]:
    """exception_id → {status, resolution, resolved_by, resolved_at (ISO)} of those given."""
    return {
        eid: {
            "status": status,
            "resolution": resolution,
            "resolved_by": resolved_by,
            "resolved_at": resolved_at.isoformat() if resolved_at else None,
        }
        for eid, status, resolution, resolved_by, resolved_at in conn.execute(
            "SELECT exception_id, status, resolution, resolved_by, resolved_at "
            "FROM orderflow.order_exception WHERE exception_id = ANY(%s)",
            (list(exception_ids),),
        )
    }
