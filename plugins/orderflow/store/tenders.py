"""Carrier tenders on shipments: the shipments a tender is for, the tender's status, the
carrier's booking, and a refused tender's re-plan. Always in the caller's transaction
(``orderflow.tendering``: at release, in the outbox sender's follow-up, or in the
transaction that dead-letters a refused tender).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


def shipments(
    conn: psycopg.Connection, shipment_ids: Sequence[str], *, lock: bool = False
) -> list[dict[str, Any]]:
    """The shipments given (by id), with what a tender needs; locked when ``lock``."""
    cur = conn.execute(
        "SELECT shipment_id, order_id, dc_id, release_version, carrier_id, service_code, mode, "
        "weight_kg, hazmat, freight_rate, ship_date, status, tender_status, tender_refusals, "
        "promise_met FROM orderflow.shipment WHERE shipment_id = ANY(%s) ORDER BY shipment_id"
        + (" FOR UPDATE" if lock else ""),
        (list(shipment_ids),),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def mark_tendering(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> None:
    """The shipments not tendered yet are being tendered: the plan's rate is the quote, and
    an expedited shipment keeps its baseline service's rate. Set-based."""
    conn.execute(
        """
        UPDATE orderflow.shipment
           SET tender_status = 'tendering', quoted_rate = freight_rate,
               baseline_rate = CASE WHEN baseline_service IS NOT NULL
                                    THEN freight_rate - expedite_cost END,
               updated_at = now()
         WHERE shipment_id = ANY(%s) AND tender_status IS NULL
        """,
        (list(shipment_ids),),
    )


def record_booking(
    conn: psycopg.Connection,
    shipment_id: str,
    *,
    booking_id: str | None,
    pro_number: str | None,
    label_url: str | None,
    booked_at: Any,
    amount: Any,
    quoted: Any,
    tracking_number: str | None,
) -> None:
    """The carrier's booking on the shipment: booking, PRO, label, tracking, the booked
    cost, and ``expedite_cost`` re-stated in booked money."""
    conn.execute(
        """
        UPDATE orderflow.shipment
           SET tender_status = 'booked', carrier_booking_id = %(booking)s,
               pro_number = %(pro)s, label_url = %(label)s, booked_at = %(at)s,
               booked_rate = %(amount)s,
               quoted_rate = coalesce(quoted_rate, %(quoted)s),
               tracking_number = coalesce(tracking_number, %(tracking)s),
               expedite_cost = CASE
                   WHEN baseline_rate IS NOT NULL AND %(amount)s::numeric IS NOT NULL
                        AND coalesce(quoted_rate, %(quoted)s) > 0
                   THEN greatest(0, round(%(amount)s::numeric - baseline_rate * %(amount)s::numeric
                                          / coalesce(quoted_rate, %(quoted)s), 2))
                   ELSE expedite_cost END,
               updated_at = now()
         WHERE shipment_id = %(sid)s
        """,
        {
            "booking": booking_id,
            "pro": pro_number,
            "label": label_url,
            "at": booked_at,
            "amount": amount,
            "quoted": quoted,
            "tracking": tracking_number,
            "sid": shipment_id,
        },
    )


def record_bookings(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`record_booking` of several shipments (each row its keyword arguments and
    ``shipment_id``; no shipment twice), in one statement."""
    if not rows:
        return
    cols = ("shipment_id", "booking_id", "pro_number", "label_url", "booked_at", "amount")
    cols += ("quoted", "tracking_number")
    conn.execute(
        """
        UPDATE orderflow.shipment s
           SET tender_status = 'booked', carrier_booking_id = t.booking_id,
               pro_number = t.pro_number, label_url = t.label_url,
               booked_at = t.booked_at::timestamptz,
               booked_rate = t.amount,
               quoted_rate = coalesce(s.quoted_rate, t.quoted),
               tracking_number = coalesce(s.tracking_number, t.tracking_number),
               expedite_cost = CASE
                   WHEN s.baseline_rate IS NOT NULL AND t.amount IS NOT NULL
                        AND coalesce(s.quoted_rate, t.quoted) > 0
                   THEN greatest(0, round(t.amount - s.baseline_rate * t.amount
                                          / coalesce(s.quoted_rate, t.quoted), 2))
                   ELSE s.expedite_cost END,
               updated_at = now()
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                      %s::numeric[], %s::numeric[], %s::text[])
               AS t(shipment_id, booking_id, pro_number, label_url, booked_at, amount,
                    quoted, tracking_number)
         WHERE s.shipment_id = t.shipment_id
        """,
        tuple(
            [None if r[c] is None else str(r[c]) for r in rows]
            if c in ("booked_at",)
            else [r[c] for r in rows]
            for c in cols
        ),
    )


def order_customer_and_delivery(conn: psycopg.Connection, order_id: str) -> tuple:
    """(customer_id, requested delivery date) of an order."""
    return conn.execute(
        "SELECT customer_id, (canonical->>'requested_delivery_date')::date "
        'FROM orderflow."order" WHERE order_id = %s',
        (order_id,),
    ).fetchone()


def mark_refused(conn: psycopg.Connection, shipment_id: str, refusals: list[dict]) -> None:
    """Every permitted service was refused: the shipment's tender is ``refused``."""
    conn.execute(
        "UPDATE orderflow.shipment SET tender_status = 'refused', tender_refusals = %s, "
        "updated_at = now() WHERE shipment_id = %s",
        (Jsonb(refusals), shipment_id),
    )


def replan(
    conn: psycopg.Connection,
    shipment_id: str,
    *,
    carrier_id: str,
    service_code: str,
    mode: str,
    rate: Any,
    promise_met: bool,
    refusals: list[dict],
) -> None:
    """The shipment re-planned with another service, tendered again."""
    conn.execute(
        """
        UPDATE orderflow.shipment
           SET carrier_id = %s, service_code = %s, mode = %s, freight_rate = %s,
               quoted_rate = %s, promise_met = %s, tender_status = 'tendering',
               tender_refusals = %s, updated_at = now()
         WHERE shipment_id = %s
        """,
        (
            carrier_id,
            service_code,
            mode,
            rate,
            rate,
            promise_met,
            Jsonb(refusals),
            shipment_id,
        ),
    )
