"""The exception desk's clockwork: SLA timers and automatic retries.

- An exception past 80% of its SLA (``exception_desk.sla_state = 'nearing'``) notifies its
  owner role once (``notified_at``); past its SLA (``breached``) it escalates once to its
  escalation role (``escalated_at``). Both are emails through the outbox
  (``email:sla_nearing:<id>`` / ``email:sla_breached:<id>``) to the role addresses of the
  routing rules, and both are audited.
- Transient exceptions (``integration_failure``) are retried automatically: the order goes
  back to the input of the stage that failed (the next processing run takes it) and the
  exception is resolved ``auto_resolved``. After ``transient_retries`` such retries of one
  order it stays for a person — only then does it count as a true exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.store import db

if TYPE_CHECKING:
    import psycopg

    from orderflow.processing import RunContext
    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

#: The status a stage takes its orders from: where a retried order goes back to.
STAGE_INPUT = {
    "validate": "RECEIVED",
    "credit": "VALIDATED",
    "allocate": "CREDIT_OK",
    "plan": "ALLOCATED",
    "release": "READY",
}
ACTOR = "orderflow.exception_desk"


@dataclass
class TimerResult:
    notified: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)

    def as_xcom(self) -> dict[str, Any]:
        return {k: len(v) for k, v in self.__dict__.items()}


def run_timers(
    conn: psycopg.Connection, book: RuleBook, *, smtp_conn_id: str = "smtp_default"
) -> TimerResult:
    """Notify owners of exceptions nearing their SLA and escalate breached ones (each once)."""
    from psycopg.types.json import Jsonb

    from orderflow import notifications

    out = TimerResult()
    contacts = book.routing.contacts
    with db.transaction(conn):
        rows = conn.execute(
            """
            SELECT d.exception_id, d.order_id, d.category, d.owner_role, d.escalation_role,
                   d.reason, d.sla_due_at, d.sla_state, d.notified_at, d.escalated_at,
                   d.po_number, d.customer_id, d.entity_type, d.entity_id
              FROM orderflow.exception_desk d
             WHERE (d.sla_state IN ('nearing', 'breached') AND d.notified_at IS NULL)
                OR (d.sla_state = 'breached' AND d.escalated_at IS NULL)
             ORDER BY d.sla_due_at
            """
        ).fetchall()
        for (
            eid,
            order_id,
            cat,
            owner,
            esc,
            reason,
            due,
            state,
            notified,
            escalated,
            po,
            cust,
            etype,
            eref,
        ) in rows:
            subject_ref = order_id or f"{etype} {eref}"
            ctx = {
                "exception_id": eid,
                "category": cat,
                "subject": subject_ref,
                "po_number": po or "",
                "customer_id": cust or "",
                "reason": reason,
                "sla_due_at": due.strftime("%Y-%m-%d %H:%M UTC"),
                "owner_role": owner,
                "escalation_role": esc or "",
            }
            sends = []
            if notified is None:
                sends.append(("sla_nearing", owner, "notified_at"))
            if state == "breached" and escalated is None:
                sends.append(("sla_breached", esc or owner, "escalated_at"))
            for event, role, column in sends:
                to = contacts.get(role)
                if to:
                    notifications.queue_email(
                        conn, to, event, str(eid), ctx, order_id=order_id, conn_id=smtp_conn_id
                    )
                else:
                    log.warning("no address for role %s: exception %s not emailed", role, eid)
                conn.execute(
                    f"UPDATE orderflow.order_exception SET {column} = now() WHERE exception_id = %s",
                    (eid,),
                )
                conn.execute(
                    "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, "
                    "object_id, before, after, reason) VALUES (%s, 'system', %s, "
                    "'order_exception', %s, %s, %s, %s)",
                    (
                        ACTOR,
                        "escalate" if event == "sla_breached" else "notify_owner",
                        str(eid),
                        Jsonb({"sla_state": state}),
                        Jsonb({"role": role, "emailed": bool(to)}),
                        f"SLA {'breached' if event == 'sla_breached' else 'nearing'} "
                        f"(due {ctx['sla_due_at']})",
                    ),
                )
                (out.escalated if event == "sla_breached" else out.notified).append(eid)
    return out


def retry_transient(
    conn: psycopg.Connection, book: RuleBook, ctx: RunContext, *, limit: int = 500
) -> TimerResult:
    """Send orders held for a transient failure back to the stage that failed."""
    from orderflow.domain.lifecycle import transition
    from orderflow.store import events

    out = TimerResult()
    max_retries = book.routing.transient_retries
    with db.transaction(conn):
        rows = conn.execute(
            """
            SELECT e.exception_id, e.order_id, e.stage, o.status,
                   (SELECT count(*) FROM orderflow.order_exception p
                     WHERE p.order_id = e.order_id AND p.category = e.category
                       AND p.resolution = 'auto_resolved') AS retries
              FROM orderflow.order_exception e
              JOIN orderflow.exception_category c USING (category)
              JOIN orderflow."order" o USING (order_id)
             WHERE e.status = 'open' AND c.transient AND o.status = 'ON_HOLD'
               AND o.claimed_by_run IS NULL
             ORDER BY e.opened_at
             LIMIT %s
               FOR UPDATE OF e, o SKIP LOCKED
            """,
            (limit,),
        ).fetchall()
        moves = []
        for eid, order_id, stage, status, retries in rows:
            others = conn.execute(
                "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s "
                "AND status = 'open' AND exception_id <> %s",
                (order_id, eid),
            ).fetchone()[0]
            if retries >= max_retries or others or stage not in STAGE_INPUT:
                if retries >= max_retries:
                    out.gave_up.append(eid)
                continue
            conn.execute(
                "UPDATE orderflow.order_exception SET status = 'resolved', "
                "resolution = 'auto_resolved', resolved_by = %s, resolved_at = now(), "
                "retry_count = retry_count + 1, resolution_note = %s WHERE exception_id = %s",
                (ACTOR, f"automatic retry {retries + 1} of {max_retries}", eid),
            )
            moves.append(
                transition(
                    order_id,
                    status,
                    STAGE_INPUT[stage],
                    actor_type="system",
                    actor_id=ACTOR,
                    reason_codes=("integration_retry",),
                    rule_set_version=book.tag("routing"),
                    details={"exception_id": eid, "retry": retries + 1},
                )
            )
            out.retried.append(eid)
        events.append(conn, moves, **ctx.keys())
    return out
