"""The sandbox CRM: the account context a distributor keeps next to its ERP.

- **Accounts**: one per customer, with the account owner (a sales rep) and the owner's team.
- **Special price agreements**: a price for one customer and item, valid between two dates.
- **Quotes**: a quoted price for one customer and item, valid from the day it was quoted
  until it expires.
- **Pricing-approval requests**: OrderFlow asks the account's owner to approve a price it
  holds; the owner decides in the CRM (approved / rejected, with a note). Creating one needs
  an ``Idempotency-Key`` (a repeated key returns the first answer). Decisions are published
  as a feed numbered in the order they were taken (``/crm/approval-decisions?after=N``), so
  a poller never misses one and never sees one twice.

Accounts, agreements and quotes are master records of the :class:`Distributor` (generated
into ``world.json`` as ``crm_accounts``, ``crm_agreements``, ``crm_quotes``; changed through
``/admin/master/crm_quotes/<id>``), so they persist and extract like the ERP's. Approval
requests persist as their own collection.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response
from pydantic import BaseModel, Field

from orderflow_sandbox.state import Conflict, Distributor, Invalid, NotFound, _iso

ENTITIES = {"accounts": "crm_accounts", "agreements": "crm_agreements", "quotes": "crm_quotes"}


class ApprovalRequestIn(BaseModel):
    reference: str = Field(description="The caller's reference, e.g. its exception id")
    customer_id: str
    order_id: str | None = None
    po_number: str | None = None
    line_no: int | None = None
    item_id: str | None = None
    order_price: float | None = None
    reference_price: float | None = None
    category: str = "pricing_mismatch"
    reason: str = ""


class DecisionIn(BaseModel):
    decision: Literal["approved", "rejected"]
    decided_by: str | None = Field(None, description="Default: the account's owner")
    note: str = ""


def account_of(state: Distributor, customer_id: str) -> dict | None:
    return next(
        (a for a in state.master["crm_accounts"].values() if a["customer_id"] == customer_id),
        None,
    )


def request_approval(state: Distributor, key: str, body: dict) -> tuple[dict, bool]:
    """Open a pricing-approval request on the customer's account, for its owner."""
    with state._txn():
        idem = state._idem["crm_approval"]
        if (prior := idem.replay(key, body)) is not None:
            return prior, True
        account = account_of(state, body["customer_id"])
        if account is None:
            raise Invalid(f"customer {body['customer_id']} has no CRM account")
        request_id = f"APR-{len(state.crm_approvals) + 1:06d}"
        req = {
            **body,
            "request_id": request_id,
            "account_id": account["account_id"],
            "owner": account["owner"],
            "team": account["team"],
            "status": "open",
            "decision": None,
            "decided_by": None,
            "decided_at": None,
            "note": None,
            "decision_seq": None,
            "created_at": _iso(state.now()),
        }
        state.crm_approvals[request_id] = req
        state._mark("crm_approval", request_id)
        return idem.remember(key, body, dict(req)), False


def decide(state: Distributor, request_id: str, body: dict) -> dict:
    """The owner decides in the CRM. Deciding again the same way answers the same; the other
    way is refused (a decision is final)."""
    with state._txn():
        req = state.crm_approvals.get(request_id)
        if req is None:
            raise NotFound(f"approval request {request_id}")
        if req["status"] == "decided":
            if req["decision"] != body["decision"]:
                raise Conflict(f"{request_id} was already {req['decision']}")
            return dict(req)
        decided = sum(1 for r in state.crm_approvals.values() if r["status"] == "decided")
        req.update(
            status="decided",
            decision=body["decision"],
            decided_by=body.get("decided_by") or req["owner"],
            decided_at=_iso(state.now()),
            note=body.get("note") or "",
            decision_seq=decided + 1,
        )
        state._mark("crm_approval", request_id)
        return dict(req)


def decisions(state: Distributor, after: int, limit: int) -> dict:
    with state.lock:
        done = sorted(
            (r for r in state.crm_approvals.values() if (r["decision_seq"] or 0) > after),
            key=lambda r: r["decision_seq"],
        )
    page = [dict(r) for r in done[:limit]]
    return {
        "items": page,
        "cursor": page[-1]["decision_seq"] if page else after,
        "more": len(done) > limit,
    }


def router(state: Distributor) -> APIRouter:
    crm = APIRouter(prefix="/crm", tags=["CRM"])

    @crm.post("/approval-requests", status_code=201, summary="Ask the account owner (idempotent)")
    def create_request(
        body: ApprovalRequestIn,
        response: Response,
        key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict:
        if not key:
            raise HTTPException(400, "Idempotency-Key header is required for this operation")
        answer, replayed = request_approval(state, key, body.model_dump())
        response.status_code = 200 if replayed else 201
        response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
        return answer

    @crm.get("/approval-requests", summary="Approval requests (inspection)")
    def list_requests(status: Literal["open", "decided"] | None = None) -> dict:
        with state.lock:
            rows = [dict(r) for r in state.crm_approvals.values()]
        return {"items": [r for r in rows if status is None or r["status"] == status]}

    @crm.get("/approval-requests/{request_id}")
    def get_request(request_id: str) -> dict:
        with state.lock:
            req = state.crm_approvals.get(request_id)
            if req is None:
                raise NotFound(f"approval request {request_id}")
            return dict(req)

    @crm.post(
        "/approval-requests/{request_id}/decision",
        summary="The account owner approves or rejects (what a CRM user does in its UI)",
    )
    def decide_request(request_id: str, body: DecisionIn) -> dict:
        return decide(state, request_id, body.model_dump())

    @crm.get(
        "/approval-decisions",
        summary="Decisions in the order they were taken, after a cursor (decision_seq)",
    )
    def decision_feed(after: int = 0, limit: Annotated[int, Query(le=1000)] = 200) -> dict:
        return decisions(state, after, limit)

    # Last: the generic path would otherwise shadow the routes above.
    @crm.get("/{entity}", summary="Accounts, agreements or quotes (incremental: changed_since)")
    def extract(
        entity: Literal["accounts", "agreements", "quotes"],
        changed_since: Annotated[
            str | None, Query(description="ISO timestamp; rows updated after it")
        ] = None,
        offset: int = 0,
        limit: Annotated[int, Query(le=10000)] = 1000,
    ) -> dict:
        return state.extract(ENTITIES[entity], changed_since, offset, limit)

    return crm
