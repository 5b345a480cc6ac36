"""The marketplace's status callbacks: what it requires from a seller, and within which limit.

A marketplace (``channels.marketplace``) requires three callbacks per order, each within a
time limit it states itself:

- **acknowledgement** (by the order's ``acknowledge_by``): queued by intake in the
  transaction that creates the order (``ParseResult.acks``), key
  ``marketplace:ack:<marketplace order id>``;
- **shipment** (by ``ship_by``): queued with the ``shipment_shipped`` notification of each
  shipment, key ``marketplace:shipment:<shipment id>``;
- **cancellation answer** (by the request's ``respond_by``): a buyer's cancellation request
  is an order change (``orderflow.changes``): before release it cancels the order, after
  release it follows the rules of every change. Its outcome — ``order_cancelled`` or
  ``change_refused`` — is answered with ``cancelled`` or ``refused``, key
  ``marketplace:cancellation:<order>:chg<change id>``.

Marketplace customers get no e-mail or webhook of ours (the marketplace owns the buyer
conversation; the fulfilment rules list no ``marketplace`` channel): these callbacks are
their status. All go through the outbox (``KEYED_ACTIONS``: the marketplace answers a
repeated key with its first answer), sent by the ``intake_marketplace`` DAG (shipment
confirmations also by ``fulfilment_events``, in the run that queued them). The answer
carries the marketplace's receipt time and whether it was late by its clock; the follow-up
records both on ``marketplace_order`` (the KPIs ``marketplace_*_on_time_rate``), and a late
one is logged as a warning.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MARKETPLACE_CONN_ID = "marketplace_default"
#: outbox actions of the marketplace callbacks (one per kind: failures show per endpoint)
ACTIONS = ("marketplace_ack", "marketplace_shipment", "marketplace_cancel")
#: notification event → (callback kind, the answer to a cancellation request)
STATUS_EVENTS: dict[str, tuple[str, str | None]] = {
    "shipment_shipped": ("shipment", None),
    "order_cancelled": ("cancellation", "cancelled"),
    "change_refused": ("cancellation", "refused"),
}
_ACTION = {
    "acknowledgement": "marketplace_ack",
    "shipment": "marketplace_shipment",
    "cancellation": "marketplace_cancel",
}


def ack(order_id: str, marketplace_order_id: str, marketplace_id: str, conn_id: str) -> dict:
    """The acknowledgement of a received order, as an ``outbox.enqueue`` keyword set (intake
    queues it with the order, in one transaction)."""
    return {
        "idempotency_key": f"marketplace:ack:{marketplace_id}:{marketplace_order_id}",
        "action": "marketplace_ack",
        "target_conn_id": conn_id,
        "order_id": order_id,
        "payload": {
            "marketplace_id": marketplace_id,
            "marketplace_order_id": marketplace_order_id,
            "kind": "acknowledgement",
            "body": {"status": "accepted", "seller_order_id": order_id},
        },
    }


def queue_status_callback(
    conn: psycopg.Connection,
    *,
    event: str,
    ref: str,
    order: dict[str, Any],
    context: dict[str, Any],
    conn_id: str = MARKETPLACE_CONN_ID,
) -> int:
    """The callback a notification event means for a marketplace order (0: none, or a
    rerun). ``order`` as for ``notifications.queue`` (``po_number`` is the marketplace's
    order id); ``context`` the event's template context."""
    from orderflow.store import outbox

    if event not in STATUS_EVENTS:
        return 0
    kind, answer = STATUS_EVENTS[event]
    marketplace_id = order.get("partner_id") or "marketplace"
    if kind == "shipment":
        body: dict[str, Any] = {
            "seller_order_id": order["order_id"],
            "shipment_id": context.get("shipment_id"),
            "carrier_id": context.get("carrier_id"),
            "service_code": context.get("service_code"),
            "tracking_number": context.get("tracking_number") or None,
            "lines": [
                {"line_no": ln["line_no"], "quantity": str(ln["quantity"])}
                for ln in context.get("lines", [])
            ],
        }
    else:
        body = {
            "seller_order_id": order["order_id"],
            "status": answer,
            "cancellation_id": context.get("reference") or None,
            "reason": context.get("why") or None,
        }
    return int(
        outbox.enqueue(
            conn,
            idempotency_key=f"marketplace:{kind}:{ref}",
            action=_ACTION[kind],
            target_conn_id=conn_id,
            order_id=order["order_id"],
            payload={
                "marketplace_id": marketplace_id,
                "marketplace_order_id": order["po_number"],
                "kind": kind,
                "body": body,
            },
        )
    )


def send_callback(conn_id: str, payload: dict, key: str) -> dict:
    """Outbox sender of every marketplace action."""
    from orderflow.integrations.systems import MarketplaceHook

    return MarketplaceHook(conn_id).callback(
        payload["marketplace_order_id"], payload["kind"], payload["body"], idempotency_key=key
    )


def callback_sent(conn: psycopg.Connection, payload: dict, answer: dict) -> None:
    """Follow-up of a sent callback: the marketplace's receipt time and its verdict on the
    limit, on ``marketplace_order``."""
    from orderflow.store import marketplace as repo

    late = answer.get("late")
    repo.record_callback(
        conn,
        marketplace_id=payload["marketplace_id"],
        marketplace_order_id=payload["marketplace_order_id"],
        kind=payload["kind"],
        received_at=answer.get("received_at"),
        late=bool(late) if late is not None else None,
        cancel_answer=payload["body"].get("status") if payload["kind"] == "cancellation" else None,
    )
    if late:
        log.warning(
            "marketplace %s: the %s of order %s arrived after its limit (%s, due %s)",
            payload["marketplace_id"],
            payload["kind"],
            payload["marketplace_order_id"],
            answer.get("received_at"),
            answer.get("due_by"),
        )
