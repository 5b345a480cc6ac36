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

from orderflow.store import db, edi_documents, orders
from orderflow.store import decisions as audit_repo
from orderflow.store import desk as repo

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
    from orderflow import notifications

    out = TimerResult()
    contacts = book.routing.contacts
    with db.transaction(conn):
        rows = repo.sla_timers_due(conn)
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
                repo.stamp_sla(conn, eid, column)
                audit_repo.audit(
                    conn,
                    actor=ACTOR,
                    actor_role="system",
                    action="escalate" if event == "sla_breached" else "notify_owner",
                    object_type="order_exception",
                    object_id=str(eid),
                    before={"sla_state": state},
                    after={"role": role, "emailed": bool(to)},
                    reason=f"SLA {'breached' if event == 'sla_breached' else 'nearing'} "
                    f"(due {ctx['sla_due_at']})",
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
        rows = repo.lock_transient_holds(conn, limit)
        moves = []
        for eid, order_id, stage, status, retries in rows:
            others = repo.count_other_open(conn, order_id, eid)
            if retries >= max_retries or others or stage not in STAGE_INPUT:
                if retries >= max_retries:
                    out.gave_up.append(eid)
                continue
            repo.resolve_auto_retried(
                conn, eid, ACTOR, f"automatic retry {retries + 1} of {max_retries}"
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


# --------------------------------------------------------------------------- desk actions
#: Categories that hold no order (a follow-up for a person, not a gate): closed as done.
CLOSABLE = frozenset({"change_too_late", "delivery_exception"})


class ActionRefused(ValueError):
    """A desk action that cannot be applied as asked (message says why)."""


def _audit(conn, actor, role, action, object_type, object_id, before, after, reason) -> None:
    audit_repo.audit(
        conn,
        actor=actor,
        actor_role=role,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        reason=reason,
    )


def _lock_open(conn, exception_id: int):
    row = repo.lock_exception(conn, exception_id)
    if row is None:
        raise ActionRefused(f"exception {exception_id} does not exist")
    if row[2] != "open":
        raise ActionRefused(f"exception {exception_id} is already resolved")
    return row


def retry(
    conn: psycopg.Connection, exception_id: int, *, actor: str, reason: str, ctx: RunContext
) -> dict[str, Any]:
    """A person retries an order held for a failed integration: it goes back to the input of
    the stage that failed (the next processing run takes it), the exception is resolved
    ``fixed`` and the retry audited. Refused while the order is held for anything else."""
    from orderflow.domain.lifecycle import transition
    from orderflow.store import events

    if not (reason or "").strip():
        raise ActionRefused("say why (the reason goes into the audit trail)")
    with db.transaction(conn):
        order_id, category, _, role, stage = _lock_open(conn, exception_id)
        if category != "integration_failure" and category != "no_carrier_service":
            raise ActionRefused(f"{category} is not retried: it needs a decision")
        if not order_id:
            raise ActionRefused("this failure holds no order: fix the integration at its source")
        status, claimed = orders.lock_status(conn, order_id)
        stage = stage or ("plan" if category == "no_carrier_service" else None)
        if status != "ON_HOLD" or stage not in STAGE_INPUT:
            raise ActionRefused(
                f"order {order_id} is {status}: only an order held by a stage can be retried"
            )
        if claimed:
            raise ActionRefused(f"order {order_id} is being processed by run {claimed}")
        others = repo.other_open_categories(conn, order_id, exception_id)
        if others:
            raise ActionRefused(
                f"order {order_id} is also held for {', '.join(others)}: resolve those first"
            )
        repo.resolve_retried(conn, exception_id, actor, f"retried by hand: {reason}")
        target = STAGE_INPUT[stage]
        events.append(
            conn,
            [
                transition(
                    order_id,
                    "ON_HOLD",
                    target,
                    actor_type="user",
                    actor_id=actor,
                    reason_codes=(f"{category}_retry",),
                    details={"exception_id": exception_id, "reason": reason},
                )
            ],
            **ctx.keys(),
        )
        audit_repo.touched_by_hand(conn, order_id)
        _audit(
            conn,
            actor,
            role,
            f"retry_{category}",
            "order_exception",
            str(exception_id),
            {"order_status": "ON_HOLD", "exception": "open"},
            {"order_status": target, "exception": "fixed"},
            reason,
        )
    return {"exception_id": exception_id, "applied": True, "order_status": target}


def close(
    conn: psycopg.Connection, exception_id: int, *, actor: str, reason: str
) -> dict[str, Any]:
    """Close a follow-up exception that holds no order (the customer was told, the carrier's
    exception was handled, a follow-up call to another system was settled): resolved
    ``fixed`` with the reason, audited. Refused on an exception that holds its order."""
    if not (reason or "").strip():
        raise ActionRefused("say what was done (the reason goes into the audit trail)")
    with db.transaction(conn):
        order_id, category, _, role, _ = _lock_open(conn, exception_id)
        status = orders.status_of(conn, order_id) if order_id else None
        if not (
            category in CLOSABLE or (category == "integration_failure" and status != "ON_HOLD")
        ):
            raise ActionRefused(f"{category} holds its order: it is not closed, it is decided")
        edi_documents.resolve_fixed(conn, exception_id, actor, reason)
        _audit(
            conn,
            actor,
            role,
            f"close_{category}",
            "order_exception",
            str(exception_id),
            {"exception": "open"},
            {"exception": "fixed"},
            reason,
        )
    return {"exception_id": exception_id, "applied": True, "order_status": status}


# --------------------------------------------------------------------------- claims
#: Who works a desk item is kept in the append-only audit log (no column of its own): the
#: latest ``claim`` / ``assign`` / ``unclaim`` row of the item since its oldest open
#: exception opened. A claim made before the item last emptied no longer counts.
CLAIM_OBJECT = "desk_item"
CLAIM_ACTIONS = ("claim", "assign", "unclaim")


def claims(conn: psycopg.Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The current claim of each desk item in ``keys`` (absent: nobody works it)."""
    if not keys:
        return {}
    rows = repo.claims(conn, keys, CLAIM_OBJECT)
    return {k: {"assignee": a, "by": by, "at": at} for k, a, by, at in rows}


def set_claim(
    conn: psycopg.Connection,
    item_key: str,
    assignee: str | None,
    *,
    actor: str,
    role: str | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Claim (``assignee == actor``), assign to someone else, or release (``None``) one desk
    item. Audited; the caller checks who may."""
    with db.transaction(conn):
        before = claims(conn, [item_key]).get(item_key)
        action = "unclaim" if assignee is None else ("claim" if assignee == actor else "assign")
        _audit(
            conn,
            actor,
            role,
            action,
            CLAIM_OBJECT,
            item_key,
            {"assignee": before["assignee"] if before else None},
            {"assignee": assignee},
            reason,
        )
    return {"item": item_key, "action": action, "assignee": assignee}
