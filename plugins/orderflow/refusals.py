"""A release the WMS refused because it cannot cover it never leaves the order stuck.

Allocation decides on our copy of the WMS's inventory (synced every few minutes by
``inventory_sync``); the WMS confirms at release and answers 409 when the stock is not
there after all (a count correction, a pick face emptied by another system). The outbox
dead-letters the refused row and, in the same transaction, hands it here:

- the refused shipment is cancelled and the stock our store held for it given back;
- an order (or backorder release) with other releases the WMS accepted: the refused lines
  wait as backorders on it, filled when stock arrives;
- a **backorder release** (``<order>-B<n>``) with nothing else at the WMS: it is cancelled and
  its quantities wait again on the parent order's lines;
- an order with nothing else at the WMS: it goes back to RECEIVED and is processed again
  (validated, credit-checked, allocated on the inventory as now synced — split, backordered or
  substituted by the rules) under the next release version, so its next release has a new key.

Each way is recorded on the order (an event, or an audit row when the status stays) and the
dead letter is marked handled, so no person has to act on it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import psycopg

from orderflow.store import decisions as decisions_repo
from orderflow.store import outbox_send
from orderflow.store import processing as repo

log = logging.getLogger(__name__)

ACTOR = "orderflow.release_refusals"


def release_refused(conn: psycopg.Connection, key: str, payload: dict, error: str) -> str:
    """Re-route the order of a refused WMS release (in the caller's transaction). Returns
    what was done: ``backordered``, ``reprocess``, ``child_cancelled`` or ``ignored``."""
    from orderflow.domain.lifecycle import transition
    from orderflow.store import events

    order_id, shipment_id = payload.get("order_id"), payload.get("shipment_id")
    if not order_id or not shipment_id:
        return "ignored"
    row = repo.lock_order_and_parent(conn, order_id)
    if row is None or row[0] != "RELEASED":
        return "ignored"  # cancelled or moved on meanwhile: nothing waits on this release
    status, parent = row
    repo.cancel_refused_shipment(conn, shipment_id)
    held = repo.cancel_release_reservations(conn, order_id, payload.get("dc_id"))
    repo.refresh_allocated(conn, sorted(set(held)))
    lines = _refused_lines(payload)
    others = repo.other_live_shipments(conn, order_id, shipment_id)
    why = f"the WMS refused release {key}: {error[:300]}"
    details = {"idempotency_key": key, "shipment_id": shipment_id, "error": error[:300]}
    if others:
        _backorder(conn, order_id, lines)
        _audit(conn, order_id, "wms_release_refused_backordered", why, details, lines)
        outcome, move = "backordered", None
    elif parent:
        _backorder(conn, parent, lines)
        outcome = "child_cancelled"
        move = transition(
            order_id,
            status,
            "CANCELLED",
            actor_type="system",
            actor_id=ACTOR,
            reason_codes=("wms_refused_release",),
            details={**details, "backordered_on": parent},
        )
    else:
        repo.cancel_reservations(conn, [order_id])
        repo.reset_lines(conn, order_id)
        outcome = "reprocess"
        move = transition(
            order_id,
            status,
            "RECEIVED",
            actor_type="system",
            actor_id=ACTOR,
            reason_codes=("wms_refused_release",),
            details=details,
        )
    if move is not None:
        events.append(conn, [move])
    outbox_send.mark_letter_replayed(conn, "outbox", key, f"{ACTOR} ({outcome})")
    log.info("WMS refused release %s of %s: %s", key, order_id, outcome)
    return outcome


def _refused_lines(payload: dict) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for ln in payload.get("lines") or []:
        if ln.get("line_no") is not None and ln.get("quantity"):
            out[int(ln["line_no"])] = out.get(int(ln["line_no"]), Decimal(0)) + Decimal(
                str(ln["quantity"])
            )
    return out


def _backorder(conn: psycopg.Connection, order_id: str, lines: dict[int, Decimal]) -> None:
    repo.backorder_lines(conn, order_id, sorted(lines.items()))


def _audit(conn, order_id: str, action: str, reason: str, details: dict, lines) -> None:
    after: dict[str, Any] = {**details, "backordered": {str(k): str(v) for k, v in lines.items()}}
    decisions_repo.audit(
        conn, ACTOR, None, action, "order", order_id, {"status": "RELEASED"}, after, reason
    )
