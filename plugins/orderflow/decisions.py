"""Human decisions on orders: approvals of typed exceptions (from Airflow's human-in-the-loop
tasks) and reprocessing actions (from the ``order_reprocess`` params form).

Every decision is one transaction: the exception's resolution, the order's status change and
its event, the approval the later stages honour, and an append-only ``audit_log`` row (who,
when, what, before/after, why). Deciding twice is harmless: a resolved exception or an order
no longer in the expected status is reported and left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderflow.domain.approvals import APPROVABLE, APPROVE, KEEP, OPTIONS, POST_RELEASE, REJECT
from orderflow.domain.lifecycle import OrderStatus, transition
from orderflow.store import db, events
from orderflow.store import decisions as store
from orderflow.store import processing as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.processing import RunContext

_RANK = {s: i for i, s in enumerate(OrderStatus)}
ACTIONS = ("revalidate", "reallocate", "release", "cancel")


class DecisionRefused(ValueError):
    """A decision that cannot be applied as asked (message says why and what to do)."""


def _audit(conn, actor, role, action, object_type, object_id, before, after, reason) -> None:
    store.audit(conn, actor, role, action, object_type, object_id, before, after, reason)


def _order(conn, order_id: str) -> dict[str, Any]:
    row = store.lock_order(conn, order_id)
    if row is None:
        raise DecisionRefused(f"order {order_id} does not exist")
    return {"order_id": row[0], "status": row[1], "approvals": list(row[2]), "claimed": row[3]}


def _open_exceptions(conn, order_id: str) -> list[dict[str, Any]]:
    return store.open_exceptions(conn, order_id)


def _resolve(conn, ids: list[int], resolution: str, actor: str, note: str | None) -> None:
    store.resolve(conn, ids, resolution, actor, note)


def _move(conn, order_id, current, target, actor, reasons, ctx, details) -> None:
    events.append(
        conn,
        [
            transition(
                order_id,
                current,
                target,
                actor_type="user",
                actor_id=actor,
                reason_codes=tuple(reasons),
                details=details,
            )
        ],
        **ctx.keys(),
    )
    store.touched_by_hand(conn, order_id)


def _unwind(conn, order_id: str) -> int:
    """Give back held stock and drop the planned (unreleased) shipments."""
    n = repo.cancel_reservations(conn, [order_id])
    repo.drop_planned_shipments(conn, order_id)
    repo.reset_lines(conn, order_id)
    return n


def decide(
    conn: psycopg.Connection,
    exception_id: int,
    choice: str,
    *,
    actor: str,
    reason: str | None,
    ctx: RunContext,
) -> dict[str, Any]:
    """Apply a person's answer to one exception (HITL: Approve / Reject order / Keep on hold)."""
    with db.transaction(conn):
        row = store.lock_exception(conn, exception_id)
        if row is None:
            raise DecisionRefused(f"exception {exception_id} does not exist")
        order_id, category, status, role, line_no = row
        if status != "open":
            return {"exception_id": exception_id, "applied": False, "why": "already resolved"}
        order = _order(conn, order_id)
        before = {"order_status": order["status"], "exception": "open"}
        if choice == KEEP:
            _audit(
                conn,
                actor,
                role,
                "keep_on_hold",
                "order_exception",
                str(exception_id),
                before,
                before,
                reason,
            )
            return {"exception_id": exception_id, "applied": True, "order_status": order["status"]}
        if category in POST_RELEASE:
            return _decide_post_release(
                conn, exception_id, order_id, category, role, choice, actor, reason
            )
        if category == "substitution_needed" and choice in (APPROVE, REJECT):
            # the customer's answer to the proposed substitutes: the label of the ranking
            from orderflow.ai import substitutes

            substitutes.record_outcome(
                conn, order_id, accepted=choice == APPROVE, actor=actor, actor_role=role
            )
        if choice == REJECT:
            ids = [e["exception_id"] for e in _open_exceptions(conn, order_id)]
            _resolve(conn, ids, "rejected", actor, reason)
            _unwind(conn, order_id)
            _move(
                conn,
                order_id,
                order["status"],
                "REJECTED",
                actor,
                [category],
                ctx,
                {"exception_id": exception_id, "decision": "reject"},
            )
            after = {"order_status": "REJECTED", "exception": "rejected"}
            _audit(
                conn,
                actor,
                role,
                "reject_order",
                "order_exception",
                str(exception_id),
                before,
                after,
                reason,
            )
            return {"exception_id": exception_id, "applied": True, "order_status": "REJECTED"}
        if choice != APPROVE:
            raise DecisionRefused(f"unknown choice {choice!r}; one of {', '.join(OPTIONS)}")
        if category not in APPROVABLE:
            raise DecisionRefused(
                f"{category} cannot be approved: fix the data (or the order) and use "
                "order_reprocess → revalidate, or reject the order"
            )
        if not (reason or "").strip():
            raise DecisionRefused("an approval needs a reason (it goes into the audit trail)")
        resolution = (
            "overridden" if category in ("pricing_mismatch", "expired_contract") else "approved"
        )
        _resolve(conn, [exception_id], resolution, actor, reason)
        store.add_approval(conn, order_id, category)
        if category in ("pricing_mismatch", "expired_contract"):
            # The override: the customer's price is what we charge (and invoice).
            store.charge_customer_price(conn, order_id, line_no)
        remaining = _open_exceptions(conn, order_id)
        new_status = order["status"]
        if not remaining and order["status"] == "ON_HOLD":
            new_status = _resume_status(conn, order_id)
            _move(
                conn,
                order_id,
                "ON_HOLD",
                new_status,
                actor,
                [category],
                ctx,
                {"exception_id": exception_id, "decision": "approve", "reason": reason},
            )
        after = {"order_status": new_status, "exception": resolution, "approvals": category}
        _audit(
            conn,
            actor,
            role,
            f"approve_{category}",
            "order_exception",
            str(exception_id),
            before,
            after,
            reason,
        )
        return {
            "exception_id": exception_id,
            "applied": True,
            "order_status": new_status,
            "still_open": [e["category"] for e in remaining],
        }


def _decide_post_release(conn, exception_id, order_id, category, role, choice, actor, reason):
    """A quantity mismatch on a shipped order: approving bills the quantities the WMS
    reported (the withheld invoice goes out); the order itself shipped and cannot be
    rejected here."""
    from orderflow import fulfilment, rules

    if choice == REJECT:
        raise DecisionRefused(
            f"order {order_id} has shipped: it cannot be rejected. Correct the quantities with "
            "the warehouse, then approve, or keep it on hold"
        )
    if choice != APPROVE:
        raise DecisionRefused(f"unknown choice {choice!r}; one of {', '.join(OPTIONS)}")
    if not (reason or "").strip():
        raise DecisionRefused("an approval needs a reason (it goes into the audit trail)")
    shipment_id = store.exception_shipment(conn, exception_id)
    if not shipment_id:
        raise DecisionRefused(f"exception {exception_id} names no shipment")
    invoice_id = fulfilment.release_withheld(
        conn, shipment_id, actor=actor, reason=reason, book=rules.load(), role=role
    )
    return {
        "exception_id": exception_id,
        "applied": True,
        "order_status": _order(conn, order_id)["status"],
        "invoice_id": invoice_id,
        "category": category,
    }


def ask_again(conn: psycopg.Connection, exception_id: int) -> None:
    """A decision could not be applied: let the dispatcher ask for this exception again."""
    store.ask_again(conn, exception_id)


#: The actor recorded when OrderFlow itself ends a Required Action nobody needs to answer.
SYSTEM_ACTOR = "orderflow"


def required_action_ended(
    conn: psycopg.Connection, exception_id: int, run_id: str, resolved: dict[str, Any]
) -> str:
    """Audit that the Required Action of ``run_id`` ended unanswered because its exception
    was resolved elsewhere (``resolved``: its status, resolution, resolved_by, resolved_at).
    Returns the sentence recorded as the reason."""
    why = (
        f"exception {exception_id} was resolved ({resolved.get('resolution') or 'resolved'}) "
        f"by {resolved.get('resolved_by') or 'unknown'} at {resolved.get('resolved_at')} "
        "outside its Required Action: nothing left to ask"
    )
    with db.transaction(conn):
        _audit(
            conn,
            SYSTEM_ACTOR,
            None,
            "end_required_action",
            "order_exception",
            str(exception_id),
            {"required_action": "waiting", "approval_run_id": run_id},
            {"required_action": "ended", **resolved},
            why,
        )
    return why


def _resume_status(conn, order_id: str) -> str:
    """Where an order held by approvable exceptions resumes: the earliest target among the
    categories of its current hold."""
    cats = store.categories_of_last_hold(conn, order_id)
    targets = [APPROVABLE.get(c, "RECEIVED") for c in cats] or ["RECEIVED"]
    return min(targets, key=lambda s: _RANK[OrderStatus(s)])


def _roles_text(actor: str) -> str | None:
    from orderflow import access

    return ",".join(sorted(access.roles_of(actor))) or None


def _override_refusal(order_id: str, actor: str, open_ex: list[dict[str, Any]]) -> str | None:
    """Why ``actor`` may not override these exceptions (None: they hold the owner or
    escalation role of each, or the super role)."""
    from orderflow import access

    missing = [
        e
        for e in open_ex
        if not access.may_resolve(actor, e["owner_role"], e.get("escalation_role"))
    ]
    if not missing:
        return None
    needed = "; ".join(
        f"{e['category']} (exception {e['exception_id']}) needs the {e['owner_role']} role"
        + (f" or {e['escalation_role']}" if e.get("escalation_role") else "")
        for e in missing
    )
    return (
        f"{actor} may not release order {order_id}: releasing a held order overrides its "
        f"exceptions, and {needed} (or {access.SUPER_ROLE}). Ask a holder of that role to "
        f"approve it on the exception desk or under Required Actions, or have the role "
        f"granted in {access.roles_file()}"
    )


def reprocess(
    conn: psycopg.Connection,
    order_id: str,
    action: str,
    *,
    actor: str,
    reason: str | None,
    ctx: RunContext,
) -> dict[str, Any]:
    """Prepare one order for a reprocess run and claim it for ``ctx.run_id``.

    - ``revalidate``: open exceptions resolved as fixed, stock given back, back to RECEIVED;
    - ``reallocate``: stock given back, back to CREDIT_OK (allocation runs again);
    - ``release``: continue where it stands (an order on hold resumes like an approval of
      every open approvable exception; anything else is refused);
    - ``cancel``: stock given back, exceptions closed, CANCELLED.

    Releasing a held order overrides its exceptions, so ``actor`` must hold the owner or
    escalation role of every one of them (``orderflow.access``, as on the desk and under
    Required Actions), whatever the entry point (``order_reprocess``, CLI, UI). Otherwise
    the refusal is audited (committed) and :class:`DecisionRefused` says what is missing.
    """
    if action not in ACTIONS:
        raise DecisionRefused(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if not (reason or "").strip():
        raise DecisionRefused("say why (the reason goes into the audit trail)")
    with db.transaction(conn):
        order = _order(conn, order_id)
        if order["claimed"] and order["claimed"] != ctx.run_id:
            raise DecisionRefused(
                f"order {order_id} is being processed by run {order['claimed']}; try again "
                "when that run has finished"
            )
        status = order["status"]
        open_ex = _open_exceptions(conn, order_id)
        before = {"status": status, "open_exceptions": [e["category"] for e in open_ex]}
        pre_release = status in (
            "RECEIVED",
            "ON_HOLD",
            "VALIDATED",
            "CREDIT_OK",
            "ALLOCATED",
            "READY",
        )
        target = status
        refused: str | None = None
        if action == "cancel":
            if not pre_release:
                raise DecisionRefused(f"order {order_id} is {status}: cancel it in the WMS first")
            _resolve(conn, [e["exception_id"] for e in open_ex], "rejected", actor, reason)
            _unwind(conn, order_id)
            target = "CANCELLED"
        elif action == "revalidate":
            if not pre_release:
                raise DecisionRefused(f"order {order_id} is {status}: already released")
            _resolve(conn, [e["exception_id"] for e in open_ex], "fixed", actor, reason)
            _unwind(conn, order_id)
            target = "RECEIVED"
        elif action == "reallocate":
            if status not in ("ON_HOLD", "ALLOCATED", "READY", "CREDIT_OK"):
                raise DecisionRefused(
                    f"order {order_id} is {status}: only an allocated (or held) order can be "
                    "reallocated"
                )
            if status == "ON_HOLD" and any(
                _RANK[OrderStatus(APPROVABLE.get(e["category"], "RECEIVED"))]
                < _RANK[OrderStatus.CREDIT_OK]
                for e in open_ex
                if e["category"] not in ("short_stock", "substitution_needed")
            ):
                raise DecisionRefused(
                    f"order {order_id} is held before credit "
                    f"({', '.join(e['category'] for e in open_ex)}); revalidate it instead"
                )
            _resolve(conn, [e["exception_id"] for e in open_ex], "fixed", actor, reason)
            _unwind(conn, order_id)
            target = "CREDIT_OK"
        elif action == "release":
            if status == "ON_HOLD":
                bad = [e["category"] for e in open_ex if e["category"] not in APPROVABLE]
                if bad:
                    raise DecisionRefused(
                        f"order {order_id} is held for {', '.join(bad)}, which no one can "
                        "override: fix the data and revalidate"
                    )
                refused = _override_refusal(order_id, actor, open_ex)
                if refused is None:
                    for e in open_ex:
                        store.add_approval(conn, order_id, e["category"])
                    _resolve(
                        conn, [e["exception_id"] for e in open_ex], "overridden", actor, reason
                    )
                    target = _resume_status(conn, order_id)
            elif not pre_release:
                raise DecisionRefused(f"order {order_id} is {status}: nothing to release")
        if refused is not None:
            # Nothing changed but this audit row, committed before the refusal is raised.
            _audit(
                conn,
                actor,
                None,
                "reprocess_release_refused",
                "order",
                order_id,
                before,
                {**before, "refused": refused},
                reason,
            )
        else:
            if target != status:
                _move(
                    conn,
                    order_id,
                    status,
                    target,
                    actor,
                    [f"reprocess_{action}"],
                    ctx,
                    {"action": action, "reason": reason},
                )
            if target not in ("CANCELLED", "REJECTED"):
                store.claim_for_run(conn, order_id, ctx.run_id)
            _audit(
                conn,
                actor,
                _roles_text(actor),
                f"reprocess_{action}",
                "order",
                order_id,
                before,
                {"status": target},
                reason,
            )
    if refused is not None:
        raise DecisionRefused(refused)
    return {"order_id": order_id, "action": action, "from": status, "to": target}
