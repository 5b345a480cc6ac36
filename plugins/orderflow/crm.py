"""The CRM's account context in OrderFlow.

1. **Sync** (:func:`sync_account_context`): accounts (owner, team), special price agreements
   and quotes → ``crm_account`` / ``crm_price_agreement`` / ``crm_quote``, incremental by
   changed-since with an overlap and idempotent upserts (the master-data sync's machinery,
   cursors ``crm:<entity>``). Validation reads them from the store: a price outside its
   contract is no mismatch when a valid quote or agreement explains it (the line records
   which), and a price from an expired quote is held ``pricing_mismatch`` with cause
   ``quote_expired`` (``orderflow.domain.validation``).
2. **Routing and requests**: when validation opens a pricing hold (``pricing_mismatch``,
   ``expired_contract``) on an order of a customer with a CRM account, the exception gets the
   account's team and owner, and an approval request is queued in the same transaction —
   outbox action ``crm_approval_request``, key ``crm-approval:<exception id>``. The outbox
   sender delivers it (the CRM answers a repeated key with its first answer) and records the
   CRM's request id (``crm_approval``). :func:`request_missing` sweeps up pricing holds
   opened before the CRM was synced.
3. **Decisions** (:func:`apply_decisions`): the CRM's decision feed is read after a cursor
   (``crm:approval_decisions``). Each decision is applied in one transaction with the cursor
   and the request's ``applied_at``, so it takes effect exactly once however often it is
   read: *approved* resolves the exception as an override (``orderflow.decisions.decide``:
   the customer's price is charged, the order resumes once nothing else holds it), audited
   with the CRM user as actor (``crm:<name>``); *rejected* keeps the hold and escalates it to
   the exception's escalation role (audited too). A decision on an exception a person already
   resolved on the desk changes nothing and says so. An approval is the account owner's to
   give: one by anyone else (``decided_by`` ≠ the owner the request went to) is recorded
   (``crm_decision_refused``) and refused — the hold stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.masterdata import Spec, _nz, _ts
from orderflow.store import crm as repo
from orderflow.store import cursors, db, desk
from orderflow.store import decisions as audit_repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.masterdata import EntityResult
    from orderflow.processing import RunContext

log = logging.getLogger(__name__)

DECISIONS_CURSOR = "crm:approval_decisions"

#: The CRM's entities, in publish order.
SPECS: dict[str, Spec] = {
    s.entity: s
    for s in [
        Spec(
            "accounts",
            "crm",
            "crm_account",
            ("account_id",),
            {
                "account_id": "account_id",
                "customer_id": "customer_id",
                "name": "name",
                "owner": "owner",
                "owner_email": "owner_email",
                "team": "team",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "agreements",
            "crm",
            "crm_price_agreement",
            ("agreement_id",),
            {
                "agreement_id": "agreement_id",
                "customer_id": "customer_id",
                "item_id": "item_id",
                "unit_price": "unit_price",
                "currency": _nz("currency", "USD"),
                "valid_from": "valid_from",
                "valid_to": "valid_to",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "quotes",
            "crm",
            "crm_quote",
            ("quote_id",),
            {
                "quote_id": "quote_id",
                "customer_id": "customer_id",
                "item_id": "item_id",
                "quoted_price": "quoted_price",
                "currency": _nz("currency", "USD"),
                "quoted_on": "quoted_on",
                "expires_on": "expires_on",
                "status": _nz("status", "issued"),
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
    ]
}


def sync_account_context(
    conn: psycopg.Connection, hook: Any, *, full: bool = False, run_id: str | None = None
) -> list[EntityResult]:
    """Accounts, agreements and quotes from the CRM into the store (see module doc)."""
    from orderflow import masterdata

    return masterdata.sync(conn, {"crm": hook}, full=full, run_id=run_id, specs=SPECS)


def request_missing(conn: psycopg.Connection) -> int:
    """Queue a CRM approval request for every open pricing hold that has none."""
    with db.transaction(conn):
        repo.route_to_account_team(
            conn,
            repo.pricing_holds_unrouted(conn),
        )
        return repo.enqueue_requests(conn)


# ---------------------------------------------------------------------------- outbox
def send_request(conn_id: str, payload: dict, key: str) -> dict:
    """Outbox sender of ``crm_approval_request``."""
    from orderflow.integrations.crm import CrmHook

    return CrmHook(conn_id).request_approval(
        {k: v for k, v in payload.items() if k != "exception_id"}, idempotency_key=key
    )


def request_sent(conn: psycopg.Connection, payload: dict, answer: dict) -> None:
    """Follow-up of a sent request: the CRM's request id against the exception."""
    repo.record_request(conn, payload, answer)


# ---------------------------------------------------------------------------- decisions
@dataclass
class DecisionsResult:
    read: int = 0
    approved: int = 0
    rejected: int = 0
    unchanged: int = 0  # read again, or on an exception already resolved
    unknown: int = 0  # a decision on a request we did not raise
    refused: int = 0  # an approval by someone other than the account owner it went to
    cursor: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)

    def as_xcom(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "outcomes"}


def apply_decisions(
    conn: psycopg.Connection, hook: Any, ctx: RunContext, *, page_size: int = 200
) -> DecisionsResult:
    """Read the CRM's decisions after the cursor and apply each exactly once."""
    out = DecisionsResult()
    after = int(cursors.get(conn, DECISIONS_CURSOR) or 0)
    while True:
        page = hook.decisions(after, limit=page_size)
        for d in page["items"]:
            out.read += 1
            with db.transaction(conn):
                kind, outcome = _apply(conn, d, ctx)
                after = max(after, int(d["decision_seq"]))
                cursors.put(conn, DECISIONS_CURSOR, str(after), ctx.run_id)
            setattr(out, kind, getattr(out, kind) + 1)
            out.outcomes[d["request_id"]] = outcome
        if not page.get("more") or not page["items"]:
            break
    out.cursor = after
    return out


def _apply(conn: psycopg.Connection, d: dict, ctx: RunContext) -> tuple[str, str]:
    """One decision, inside the caller's transaction: (counter, what it did)."""
    from orderflow import decisions
    from orderflow.domain.approvals import APPROVE, KEEP

    request_id = d["request_id"]
    row = repo.lock_approval(conn, request_id)
    if row is None and _known_exception(conn, d.get("reference")):
        # The send's follow-up has not recorded the request yet: the reference names it.
        repo.record_request(
            conn,
            {"exception_id": int(d["reference"]), "order_id": d.get("order_id")},
            {"request_id": request_id, "owner": d.get("owner"), "team": d.get("team")},
        )
        row = repo.lock_approval(conn, request_id)
    if row is None:
        log.warning("CRM decision on unknown request %s ignored", request_id)
        return "unknown", "unknown request"
    if row["applied_at"] is not None:
        return "unchanged", "already applied"
    eid = row["exception_id"]
    actor = f"crm:{d.get('decided_by') or 'unknown'}"
    note = (d.get("note") or "").strip()
    what = f"{d['decision']} in the CRM ({request_id}){': ' + note if note else ''}"
    approve = d["decision"] == "approved"
    if approve and row.get("owner") and d.get("decided_by") != row["owner"]:
        # An override is the account owner's to give (the request went to them): anyone else's
        # approval in the CRM is recorded and refused, the hold stays.
        outcome = (
            f"refused: approved by {d.get('decided_by') or 'nobody'}, not by {row['owner']}, "
            "the account owner the request went to"
        )
        _audit_decision(conn, actor, "crm_decision_refused", request_id, row, d, outcome, what)
        repo.mark_refused(conn, request_id, d, outcome)
        log.warning("CRM decision %s refused: %s", request_id, outcome)
        return "refused", outcome
    try:
        res = decisions.decide(
            conn, eid, APPROVE if approve else KEEP, actor=actor, reason=what, ctx=ctx
        )
    except decisions.DecisionRefused as exc:  # recorded, never retried forever
        res = {"applied": False, "why": f"refused: {exc}"}
    if not res["applied"]:
        kind, outcome = "unchanged", res.get("why", "")
    elif approve:
        kind, outcome = "approved", f"resolved; order {res.get('order_status')}"
    else:
        role = repo.escalate(conn, eid)
        kind, outcome = "rejected", f"kept on hold, escalated to {role}"
    _audit_decision(conn, actor, "crm_decision", request_id, row, d, outcome, what)
    repo.mark_applied(conn, request_id, d, outcome)
    return kind, outcome


def _audit_decision(conn, actor, action, request_id, row, d, outcome, what) -> None:
    audit_repo.audit(
        conn,
        actor=actor,
        actor_role="crm",
        action=action,
        object_type="crm_approval",
        object_id=request_id,
        before={"status": row["status"], "exception_id": row["exception_id"]},
        after={"decision": d["decision"], "outcome": outcome},
        reason=what,
    )


def _known_exception(conn: psycopg.Connection, reference: Any) -> bool:
    if not str(reference or "").isdigit():
        return False
    return desk.exception_exists(conn, int(reference))
