"""The sandbox's marketplace: a seller API like a B2B marketplace's (``/marketplace``).

- ``GET /marketplace/orders?cursor=&limit=``: the order feed, read with a cursor — orders
  (``"type": "order"``, with the marketplace's limits ``acknowledge_by`` and ``ship_by``)
  and buyers' cancellation requests (``"type": "cancellation"``, ``respond_by``), each
  visible once the simulated clock passes its time (``marketplace_orders.jsonl`` of the day).
- ``POST /marketplace/orders/{id}/acknowledgement | shipment | cancellation`` (idempotent by
  ``Idempotency-Key``): the seller's callbacks. Each is recorded with the marketplace's
  receipt time (the simulated clock) and whether it came after its limit; the answer says
  both (``received_at``, ``due_by``, ``late``).
- ``GET /marketplace/callbacks``: what it received (inspection: the tests' "within the limit").

The limits are the marketplace's policy: acknowledge within :data:`ACKNOWLEDGE_WITHIN` of the
order, ship (confirm the shipment) within :data:`SHIP_WITHIN`, answer a cancellation request
within :data:`RESPOND_WITHIN`.

State lives in the :class:`~orderflow_sandbox.state.Distributor` (persisted with the rest):
``marketplace_feed`` (the day's items), ``marketplace_callbacks`` (list, persisted) and the
``marketplace`` idempotency store.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from orderflow_sandbox.faults import FaultInjector
    from orderflow_sandbox.state import Distributor

FEED_FILE = "marketplace_orders.jsonl"
ACKNOWLEDGE_WITHIN = timedelta(hours=4)
SHIP_WITHIN = timedelta(days=3)
RESPOND_WITHIN = timedelta(hours=24)
KINDS = ("acknowledgement", "shipment", "cancellation")


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _iso(ts: datetime) -> str:
    from orderflow_sandbox.state import _iso as iso

    return iso(ts)


def load_feed(day_dir: Path) -> list[dict]:
    """The day's marketplace items (orders and cancellation requests) by arrival time, with
    the marketplace's limits."""
    path = day_dir / FEED_FILE
    if not path.exists():
        return []
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items.sort(key=lambda it: _parse(it["arrival_at"]))
    return items


def _public(item: dict) -> dict:
    at = _parse(item["arrival_at"])
    if item["type"] == "cancellation":
        return {
            "type": "cancellation",
            "cancellation_id": item["cancellation_id"],
            "marketplace_order_id": item["marketplace_order_id"],
            "account_id": item["account_id"],
            "requested_at": item["arrival_at"],
            "respond_by": _iso(at + RESPOND_WITHIN),
            "reason": item.get("reason"),
        }
    return {
        "type": "order",
        "marketplace_order_id": item["marketplace_order_id"],
        "created_at": item["arrival_at"],
        "acknowledge_by": _iso(at + ACKNOWLEDGE_WITHIN),
        "ship_by": _iso(at + SHIP_WITHIN),
        "buyer": {
            "account_id": item["customer_id"],
            "ship_to_id": item.get("ship_to_id"),
            "name": item.get("buyer_name"),
        },
        "currency": item.get("currency", "USD"),
        "lines": [
            {
                "line_no": ln["line_no"],
                "sku": ln["sku"],
                "title": ln.get("title"),
                "quantity": ln["quantity"],
                "uom": ln["uom"],
                "unit_price": ln["unit_price"],
            }
            for ln in item["lines"]
        ],
    }


def page(state: Distributor, after: int, limit: int) -> dict:
    now = state.now()
    visible = [it for it in state.marketplace_feed if _parse(it["arrival_at"]) <= now]
    chunk = visible[after : after + limit]
    return {
        "items": [_public(it) for it in chunk],
        "next_cursor": after + len(chunk),
        "has_more": after + len(chunk) < len(visible),
        "as_of": _iso(now),
    }


def _due(state: Distributor, order_id: str, kind: str) -> datetime | None:
    """The limit of a callback kind for an order (None: a cancellation nobody asked for)."""
    order = next(
        (
            it
            for it in state.marketplace_feed
            if it["type"] == "order" and it["marketplace_order_id"] == order_id
        ),
        None,
    )
    if order is None:
        from orderflow_sandbox.state import NotFound

        raise NotFound(f"marketplace order {order_id}")
    at = _parse(order["arrival_at"])
    if kind == "acknowledgement":
        return at + ACKNOWLEDGE_WITHIN
    if kind == "shipment":
        return at + SHIP_WITHIN
    asked = [
        _parse(it["arrival_at"])
        for it in state.marketplace_feed
        if it["type"] == "cancellation"
        and it["marketplace_order_id"] == order_id
        and _parse(it["arrival_at"]) <= state.now()
    ]
    return min(asked) + RESPOND_WITHIN if asked else None


def receive_callback(
    state: Distributor, key: str, order_id: str, kind: str, body: dict
) -> tuple[dict, bool]:
    """Record one callback (idempotent per key): receipt time and lateness by our clock."""
    payload = {"marketplace_order_id": order_id, "kind": kind, "body": body}
    with state._txn():
        store = state._idem["marketplace"]
        if (prior := store.replay(key, payload)) is not None:
            return prior, True
        due = _due(state, order_id, kind)
        now = state.now()
        answer = {
            "callback_id": f"MC{len(state.marketplace_callbacks) + 1:07d}",
            "marketplace_order_id": order_id,
            "kind": kind,
            "received_at": _iso(now),
            "due_by": _iso(due) if due else None,
            "late": bool(due and now > due),
        }
        state._mark("marketplace_callback", len(state.marketplace_callbacks))
        state.marketplace_callbacks.append({**answer, "body": body, "idempotency_key": key})
        return store.remember(key, payload, answer), False


def callbacks(state: Distributor, order_id: str | None, kind: str | None) -> list[dict]:
    with state.lock:
        return [
            dict(c)
            for c in state.marketplace_callbacks
            if (not order_id or c["marketplace_order_id"] == order_id)
            and (not kind or c["kind"] == kind)
        ]


def summary(state: Distributor) -> dict[str, Any]:
    late = sum(1 for c in state.marketplace_callbacks if c["late"])
    return {
        "feed_items": len(state.marketplace_feed),
        "callbacks": len(state.marketplace_callbacks),
        "late_callbacks": late,
    }


class CallbackIn(BaseModel):
    seller_order_id: str | None = Field(None, description="The seller's own order id")
    status: str | None = Field(
        None, description="acknowledgement: accepted | rejected; cancellation: cancelled | refused"
    )
    shipment_id: str | None = None
    carrier_id: str | None = None
    service_code: str | None = None
    tracking_number: str | None = None
    lines: list[dict[str, Any]] = Field(default_factory=list)
    cancellation_id: str | None = None
    reason: str | None = None


def router(state: Distributor, injector: FaultInjector) -> APIRouter:
    r = APIRouter(prefix="/marketplace", tags=["Marketplace"])

    @r.get("/orders", summary="Order feed (orders and buyers' cancellation requests), by cursor")
    def orders(
        request: Request, cursor: int = 0, limit: Annotated[int, Query(le=1000)] = 100
    ) -> dict:
        out = page(state, cursor, limit)
        out["items"] = injector.feed_faults(request.url.path, out["items"])
        return out

    @r.post(
        "/orders/{order_id}/{kind}",
        status_code=201,
        summary="A seller callback: acknowledgement, shipment or cancellation (idempotent; "
        "the answer says when it was received and whether after its limit)",
    )
    def callback(
        order_id: str,
        kind: Literal["acknowledgement", "shipment", "cancellation"],
        body: CallbackIn,
        response: Response,
        key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict:
        if not key:
            raise HTTPException(400, "Idempotency-Key header is required for this operation")
        answer, replayed = receive_callback(
            state, key, order_id, kind, body.model_dump(exclude_none=True)
        )
        response.status_code = 200 if replayed else 201
        response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
        return answer

    @r.get("/callbacks", summary="Callbacks received, with receipt time and lateness (inspection)")
    def received(marketplace_order_id: str | None = None, kind: str | None = None) -> dict:
        return {"items": callbacks(state, marketplace_order_id, kind)}

    return r
