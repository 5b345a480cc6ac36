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
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

ACTOR = "orderflow.release_refusals"


def release_refused(conn: psycopg.Connection, key: str, payload: dict, error: str) -> str:
    """Re-route the order of a refused WMS release (in the caller's transaction). Returns
    what was done: ``backordered``, ``reprocess``, ``child_cancelled`` or ``ignored``."""
    from orderflow.domain.lifecycle import transition
    from orderflow.store import events
    from orderflow.store import processing as repo

    order_id, shipment_id = payload.get("order_id"), payload.get("shipment_id")
    if not order_id or not shipment_id:
        return "ignored"
    row = conn.execute(
        'SELECT status, parent_order_id FROM orderflow."order" WHERE order_id = %s FOR UPDATE',
        (order_id,),
    ).fetchone()
    if row is None or row[0] != "RELEASED":
        return "ignored"  # cancelled or moved on meanwhile: nothing waits on this release
    status, parent = row
    conn.execute(
        "UPDATE orderflow.shipment SET status = 'cancelled', updated_at = now() "
        "WHERE shipment_id = %s AND status IN ('planned', 'released')",
        (shipment_id,),
    )
    held = conn.execute(
        "UPDATE orderflow.reservation SET status = 'cancelled', updated_at = now() "
        "WHERE order_id = %s AND dc_id = %s AND status IN ('held', 'released') "
        "RETURNING item_id, dc_id",
        (order_id, payload.get("dc_id")),
    ).fetchall()
    repo.refresh_allocated(conn, sorted(set(held)))
    lines = _refused_lines(payload)
    others = conn.execute(
        "SELECT count(*) FROM orderflow.shipment WHERE order_id = %s AND shipment_id <> %s "
        "AND status <> 'cancelled'",
        (order_id, shipment_id),
    ).fetchone()[0]
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
        conn.execute(
            "UPDATE orderflow.order_line SET status = 'OPEN', substitute_item_id = NULL, "
            "backordered_qty = 0 WHERE order_id = %s",
            (order_id,),
        )
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
    conn.execute(
        "UPDATE orderflow.dead_letter SET replayed_at = now(), replayed_by = %s "
        "WHERE source = 'outbox' AND source_ref = %s",
        (f"{ACTOR} ({outcome})", key),
    )
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
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE orderflow.order_line SET backordered_qty = backordered_qty + %s, "
            "status = 'BACKORDERED' WHERE order_id = %s AND line_no = %s",
            [(q, order_id, no) for no, q in sorted(lines.items())],
        )


def _audit(conn, order_id: str, action: str, reason: str, details: dict, lines) -> None:
    after: dict[str, Any] = {**details, "backordered": {str(k): str(v) for k, v in lines.items()}}
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, object_id, "
        "before, after, reason) VALUES (%s, NULL, %s, 'order', %s, %s, %s, %s)",
        (ACTOR, action, order_id, Jsonb({"status": "RELEASED"}), Jsonb(after), reason),
    )
