"""Carrier tendering: each released shipment is booked with the carrier service planning chose,
through the carrier's API, before the WMS ships it.

- **Queued at release** (``processing.release``), in the transaction that releases the order,
  as a ``carrier_tender`` outbox row keyed ``carrier_tender:<shipment>:<carrier>/<service>``
  (the shipment id carries the release version). The outbox sends it with the WMS releases;
  the carrier answers a repeated key with its first answer, so reruns, retries and a sender
  killed mid-send never book twice.
- **Booked** (:func:`booked`, the row's follow-up, in the transaction that records the send):
  the booking id, PRO number, label and tracking number go on the shipment, with the cost
  *quoted* (the plan's rate of the service) and *booked* (the carrier's answer, surcharges
  included). A late order's ``expedite_cost`` is re-stated in booked money.
- **Refused** (:func:`refused`, a 409 — no capacity, or a service the carrier does not offer
  on that lane — in the transaction that dead-letters the row): the shipment is re-planned
  with the next-best service the carrier rules permit, every refused service excluded
  (``domain.planning.next_service``), and tendered again under that service's key; the change
  is audited on the order. With no service left the shipment is ``refused`` and logistics gets
  a ``no_carrier_service`` exception (book by hand or split). The order stays RELEASED
  either way: the WMS is picking it meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg

from orderflow.store import decisions as decisions_repo
from orderflow.store import outbox_send
from orderflow.store import tenders as store

log = logging.getLogger(__name__)

ACTION = "carrier_tender"
ACTOR = "orderflow.carrier_tender"


def tender_key(shipment_id: str, carrier_id: str, service_code: str) -> str:
    return f"{ACTION}:{shipment_id}:{carrier_id}/{service_code}"


def queue(conn: psycopg.Connection, shipment_ids: Sequence[str], *, carrier_conn_id: str) -> int:
    """Queue the tender of each shipment (in the caller's transaction); returns how many
    rows were queued (a key already queued is not queued again)."""
    from orderflow.store import outbox
    from orderflow.store import processing as repo

    if not shipment_ids:
        return 0
    rows = _shipments(conn, shipment_ids)
    zones = {
        oid: place[1]
        for oid, place in repo.ship_tos_of(conn, [r["order_id"] for r in rows]).items()
    }
    store.mark_tendering(conn, shipment_ids)
    return outbox.enqueue_many(
        conn, [_tender(r, zones.get(r["order_id"]), carrier_conn_id) for r in rows]
    )


def _enqueue(outbox, conn, s: dict, zone: str | None, carrier_conn_id: str) -> bool:
    return outbox.enqueue(conn, **_tender(s, zone, carrier_conn_id))


def _tender(s: dict, zone: str | None, carrier_conn_id: str) -> dict[str, Any]:
    """The outbox row of a shipment's tender (``store.outbox.enqueue``'s arguments)."""
    return dict(
        idempotency_key=tender_key(s["shipment_id"], s["carrier_id"], s["service_code"]),
        action=ACTION,
        target_conn_id=carrier_conn_id,
        order_id=s["order_id"],
        version=s["release_version"],
        payload={
            "shipment_id": s["shipment_id"],
            "order_id": s["order_id"],
            "quoted_rate": str(s["freight_rate"]),
            "request": {
                "order_id": s["order_id"],
                "carrier_id": s["carrier_id"],
                "service_code": s["service_code"],
                "weight_kg": float(s["weight_kg"]) or 0.001,
                "dc_id": s["dc_id"],
                "zone": zone,
                "hazmat": s["hazmat"],
                "reference": s["shipment_id"],
            },
        },
    )


def _shipments(conn, ids: Sequence[str], *, lock: bool = False) -> list[dict[str, Any]]:
    return store.shipments(conn, ids, lock=lock)


def send(conn_id: str, payload: dict, key: str) -> dict:
    """The outbox sender: book the shipment with the carrier under the row's key."""
    from orderflow.integrations.http import hook
    from orderflow.integrations.systems import CarrierHook

    return hook(CarrierHook, conn_id).book(payload["request"], idempotency_key=key)


def booked(conn: psycopg.Connection, payload: dict, answer: dict) -> None:
    """The carrier booked it: booking, PRO, label, tracking and the booked cost on the
    shipment. ``expedite_cost`` (a late order's dearer service) becomes booked money: the
    booked cost less the baseline service's quote at the same booked/quoted ratio (the
    carrier's surcharges apply to either service)."""
    row = _booking(payload, answer)
    store.record_booking(conn, row.pop("shipment_id"), **row)


def booked_many(conn: psycopg.Connection, sent: list[tuple[dict, dict]]) -> bool:
    """:func:`booked` of several (payload, answer) at once, in one statement; False
    (nothing done) when two of them name the same shipment (one at a time, the later
    booking is the one that stays: row by row decides those)."""
    rows = [_booking(p, a) for p, a in sent]
    if len({r["shipment_id"] for r in rows}) < len(rows):
        return False
    store.record_bookings(conn, rows)
    return True


def _booking(payload: dict, answer: dict) -> dict[str, Any]:
    amount = answer.get("amount")
    return {
        "shipment_id": payload["shipment_id"],
        "booking_id": answer.get("booking_id") or answer.get("shipment_id"),
        "pro_number": answer.get("pro_number"),
        "label_url": answer.get("label_url"),
        "booked_at": answer.get("booked_at"),
        "amount": Decimal(str(amount)) if amount is not None else None,
        "quoted": Decimal(payload["quoted_rate"]) if payload.get("quoted_rate") else None,
        "tracking_number": answer.get("tracking_number"),
    }


def refused(conn: psycopg.Connection, key: str, payload: dict, error: str) -> str:
    """The carrier refused the tender (409): re-plan with the next-best permitted service and
    tender it, or — nothing left — an exception for logistics. In the caller's transaction.
    Returns ``replanned``, ``exhausted`` or ``ignored``."""
    from orderflow import rules
    from orderflow.domain.planning import next_service, promise_days, zone_number
    from orderflow.store import exceptions, outbox
    from orderflow.store import processing as repo

    found = _shipments(conn, [payload.get("shipment_id") or ""], lock=True)
    if not found:
        return "ignored"
    s = found[0]
    request = payload.get("request") or {}
    tendered = (request.get("carrier_id"), request.get("service_code"))
    if s["status"] == "cancelled" or s["tender_status"] == "booked":
        _handled(conn, key, "ignored")
        return "ignored"  # re-released or booked meanwhile: nothing waits on this tender
    refusals = list(s["tender_refusals"] or [])
    refusals.append(
        {
            "carrier_id": tendered[0],
            "service_code": tendered[1],
            "error": error[:300],
            "idempotency_key": key,
        }
    )
    customer_id, requested_delivery = store.order_customer_and_delivery(conn, s["order_id"])
    book = rules.in_force(conn, rules.load())
    zone = repo.ship_tos_of(conn, [s["order_id"]]).get(s["order_id"], (None, None))[1]
    chosen = next_service(
        repo.carrier_services(conn),
        {(r["carrier_id"], r["service_code"]) for r in refusals},
        s["weight_kg"],
        s["hazmat"],
        zone_number(zone),
        promise_days(s["ship_date"], requested_delivery, book.carrier),
        customer_id,
        book.carrier,
    )
    before = {
        "carrier_id": tendered[0],
        "service_code": tendered[1],
        "rate": str(s["freight_rate"]),
    }
    if chosen is None:
        store.mark_refused(conn, s["shipment_id"], refusals)
        tried = ", ".join(f"{r['carrier_id']}/{r['service_code']}" for r in refusals)
        reason = (
            f"the carriers refused every service the carrier rules permit for shipment "
            f"{s['shipment_id']} ({tried}); book one by hand or split the shipment"
        )
        exceptions.open_routed(
            conn,
            category="no_carrier_service",
            reason=reason,
            order_id=s["order_id"],
            details={
                "kind": "carrier_refused",
                "shipment_id": s["shipment_id"],
                "refusals": refusals,
            },
        )
        _audit(
            conn, s["order_id"], "carrier_tender_exhausted", reason, before, {"refusals": refusals}
        )
        _handled(conn, key, "exhausted")
        log.warning("carrier refused %s: no service left for %s", key, s["shipment_id"])
        return "exhausted"
    service, amount, met = chosen
    store.replan(
        conn,
        s["shipment_id"],
        carrier_id=service.carrier_id,
        service_code=service.service_code,
        mode=service.mode,
        rate=amount,
        promise_met=met,
        refusals=refusals,
    )
    s.update(
        carrier_id=service.carrier_id,
        service_code=service.service_code,
        mode=service.mode,
        freight_rate=amount,
    )
    _enqueue(outbox, conn, s, zone, _target(conn, key))
    after = {
        "carrier_id": service.carrier_id,
        "service_code": service.service_code,
        "rate": str(amount),
        "promise_met": met,
        "idempotency_key": tender_key(s["shipment_id"], service.carrier_id, service.service_code),
    }
    _audit(
        conn,
        s["order_id"],
        "carrier_tender_replanned",
        f"{tendered[0]}/{tendered[1]} refused the tender of {s['shipment_id']}: {error[:300]}",
        before,
        after,
    )
    _handled(conn, key, "replanned")
    log.info("carrier refused %s: re-tendered with %s", key, after["idempotency_key"])
    return "replanned"


def _target(conn, key: str) -> str:
    target = outbox_send.target_conn_of(conn, key)
    return target if target is not None else "carrier_default"


def _handled(conn, key: str, outcome: str) -> None:
    """The dead letter of a refused tender needs no person: it was acted on here."""
    outbox_send.mark_letter_replayed(conn, "outbox", key, f"{ACTOR} ({outcome})")


def _audit(conn, order_id: str, action: str, reason: str, before: dict, after: dict) -> None:
    decisions_repo.audit(conn, ACTOR, None, action, "order", order_id, before, after, reason)
