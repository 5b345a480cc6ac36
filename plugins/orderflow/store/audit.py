"""Audit trail repository: reads of the append-only ``orderflow.audit_log`` and its rows of
own shape (the generic row is ``store.decisions.audit``, an outbox row's ``store.outbox_send.audit``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


def record_ai_review(
    conn: psycopg.Connection,
    *,
    actor: str,
    actor_role: str | None,
    decision_id: int,
    followed: bool,
    label: str | None,
) -> None:
    """Audit a person's verdict on an AI decision (no ``before``, no reason)."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, "
        "object_id, after) VALUES (%s, %s, 'ai_review', 'ai_decision', %s, "
        "jsonb_build_object('followed', %s::boolean, 'label', %s::text))",
        (actor, actor_role, str(decision_id), followed, label),
    )


def rule_set_trail(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` audit rows of rule-set governance (refusals too), newest first."""
    cur = conn.execute(
        "SELECT audit_id, occurred_at, actor, actor_role, action, object_id, before, after, reason "
        "FROM orderflow.audit_log WHERE object_type = 'rule_set' "
        "ORDER BY audit_id DESC LIMIT %s",
        (limit,),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]
