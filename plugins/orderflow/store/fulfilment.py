"""The fulfilment tables: the event inbox, shipment lines and milestones, invoices and the
outbound X12 documents a partner's 997 is matched to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


def _rows(cur) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


# ------------------------------------------------------------------------------ inbox
def store_events(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert feed events; an event already stored (same source and key) is skipped.
    Returns how many were new."""
    if not rows:
        return 0
    cur = conn.execute(
        """
        INSERT INTO orderflow.fulfilment_event (source, event_key, feed_seq, kind, order_id,
            release_id, tracking_number, occurred_at, payload)
        SELECT r.source, r.event_key, r.feed_seq, r.kind, r.order_id, r.release_id,
               r.tracking_number, r.occurred_at, r.payload
          FROM jsonb_to_recordset(%s) AS r(source text, event_key text, feed_seq bigint,
               kind text, order_id text, release_id text, tracking_number text,
               occurred_at timestamptz, payload jsonb)
        ON CONFLICT (source, event_key) DO NOTHING
        """,
        (Jsonb(list(rows)),),
    )
    return cur.rowcount


def claim_pending(
    conn: psycopg.Connection, limit: int, skip: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Pending events in the order they happened, locked for this transaction (parallel
    appliers skip each other's rows); ``skip``: events this run already tried."""
    return _rows(
        conn.execute(
            """
            SELECT event_id, source, event_key, kind, order_id, release_id, tracking_number,
                   occurred_at, payload, attempts
              FROM orderflow.fulfilment_event
             WHERE status = 'pending' AND NOT (event_id = ANY(%s))
             ORDER BY occurred_at, event_id
             LIMIT %s
             FOR UPDATE SKIP LOCKED
            """,
            (list(skip), limit),
        )
    )


def shipments_for_releases(conn: psycopg.Connection, release_ids: Sequence[str]) -> dict[str, str]:
    """WMS release id → our shipment. The release answer sets ``wms_release_id``; the outbox
    row's recorded answer covers a sender that died before the bookkeeping."""
    ids = list(release_ids)
    found = dict(
        conn.execute(
            "SELECT wms_release_id, shipment_id FROM orderflow.shipment "
            "WHERE wms_release_id = ANY(%s)",
            (ids,),
        ).fetchall()
    )
    missing = [r for r in ids if r not in found]
    if missing:
        for rid, sid in conn.execute(
            "SELECT response->>'release_id', payload->>'shipment_id' FROM orderflow.outbox "
            "WHERE action = 'wms_release' AND status = 'sent' "
            "AND response->>'release_id' = ANY(%s)",
            (missing,),
        ):
            found[rid] = sid
            conn.execute(
                "UPDATE orderflow.shipment SET wms_release_id = %s WHERE shipment_id = %s "
                "AND wms_release_id IS NULL",
                (rid, sid),
            )
    return found


def known_orders(conn: psycopg.Connection, order_ids: Sequence[str]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            'SELECT order_id FROM orderflow."order" WHERE order_id = ANY(%s)', (list(order_ids),)
        )
    }


def lock_shipments(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> dict[str, dict]:
    return {
        r["shipment_id"]: r
        for r in _rows(
            conn.execute(
                "SELECT shipment_id, order_id, status, tracking_number, short_picked, "
                "shipped_at, delayed_at FROM orderflow.shipment WHERE shipment_id = ANY(%s) "
                "ORDER BY shipment_id FOR UPDATE",
                (list(shipment_ids),),
            )
        )
    }


def mark_events(conn: psycopg.Connection, outcomes: Sequence[tuple]) -> None:
    """(event_id, status, shipment_id, error) for each event handled."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE orderflow.fulfilment_event SET status = %s, shipment_id = %s, error = %s, "
            "attempts = attempts + 1, applied_at = CASE WHEN %s IN ('applied', 'no_op') "
            "THEN now() END WHERE event_id = %s",
            [(st, sid, err, st, eid) for eid, st, sid, err in outcomes],
        )


def record_line_quantities(
    conn: psycopg.Connection, shipment_id: str, column: str, lines: Sequence[dict]
) -> list[str]:
    """Picked or shipped quantities per (line, item); returns the event's lines the shipment
    does not have (shipped but never released)."""
    assert column in ("quantity_picked", "quantity_shipped")
    unknown = []
    for ln in lines:
        qty = ln.get("shipped", ln.get("picked")) if column == "quantity_shipped" else ln["picked"]
        cur = conn.execute(
            f"UPDATE orderflow.shipment_line SET {column} = %s "
            "WHERE shipment_id = %s AND line_no = %s AND item_id = %s",
            (qty, shipment_id, ln["line_no"], ln["item_id"]),
        )
        if cur.rowcount == 0:
            unknown.append(f"line {ln['line_no']} item {ln['item_id']} ({qty})")
    return unknown


# ------------------------------------------------------------------------------ orders
ORDER_PROGRESS = """
SELECT o.order_id, o.status,
       array_agg(s.status ORDER BY s.shipment_id) AS statuses,
       bool_and(s.status NOT IN ('shipped', 'in_transit', 'delivered')
                OR i.status = 'posted'
                OR NOT EXISTS (SELECT 1 FROM orderflow.shipment_line l
                                WHERE l.shipment_id = s.shipment_id
                                  AND l.quantity_shipped > 0)) AS invoiced
  FROM orderflow."order" o
  JOIN orderflow.shipment s ON s.order_id = o.order_id AND s.release_version = o.release_version
  LEFT JOIN orderflow.invoice i ON i.shipment_id = s.shipment_id
 WHERE o.status IN ('RELEASED', 'PICKED', 'SHIPPED', 'DELIVERED') {where}
 GROUP BY o.order_id, o.status
"""


def order_progress(
    conn: psycopg.Connection, order_ids: Sequence[str] | None
) -> list[tuple[str, str, list[str], bool]]:
    if order_ids is None:
        return conn.execute(ORDER_PROGRESS.format(where="")).fetchall()
    return conn.execute(
        ORDER_PROGRESS.format(where="AND o.order_id = ANY(%s)"), (list(order_ids),)
    ).fetchall()


# ------------------------------------------------------------------------------ documents
def shipment_lines(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Each shipment's lines with the price validated for its order line."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in _rows(
        conn.execute(
            """
            SELECT sl.shipment_id, sl.line_no, sl.item_id, sl.ordered_item_id, sl.uom,
                   sl.quantity_released, sl.quantity_picked, sl.quantity_shipped,
                   coalesce(ol.contract_price, ol.unit_price) AS unit_price,
                   ol.canonical AS line_canonical
              FROM orderflow.shipment_line sl
              JOIN orderflow.shipment s USING (shipment_id)
              JOIN orderflow.order_line ol ON ol.order_id = s.order_id AND ol.line_no = sl.line_no
             WHERE sl.shipment_id = ANY(%s)
             ORDER BY sl.shipment_id, sl.line_no, sl.item_id
            """,
            (list(shipment_ids),),
        )
    ):
        out[r["shipment_id"]].append(r)
    return out


def shipments(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> list[dict]:
    """Shipments with what their documents need about the order, customer and partner."""
    return _rows(
        conn.execute(
            """
            SELECT s.shipment_id, s.order_id, s.dc_id, s.carrier_id, s.service_code, s.mode,
                   s.weight_kg, s.tracking_number, s.shipped_at, s.freight_rate, s.short_picked,
                   o.channel, o.partner_id, o.customer_id, o.po_number, o.currency,
                   o.tax_amount, o.canonical, o.ship_to_id, o.release_version,
                   dc.name AS dc_name,
                   st.name AS st_name, st.address_line1, st.address_line2, st.city, st.region,
                   st.postal_code, st.country,
                   tp.isa_qualifier, tp.isa_id, tp.gs_id, tp.x12_version
              FROM orderflow.shipment s
              JOIN orderflow."order" o USING (order_id)
              LEFT JOIN orderflow.distribution_center dc ON dc.dc_id = s.dc_id
              LEFT JOIN orderflow.ship_to st ON st.ship_to_id = o.ship_to_id
              LEFT JOIN orderflow.trading_partner tp ON tp.partner_id = o.partner_id
             WHERE s.shipment_id = ANY(%s)
             ORDER BY s.shipment_id
            """,
            (list(shipment_ids),),
        )
    )


def order_billable_subtotal(conn: psycopg.Connection, order_id: str) -> Any:
    """What the order's lines are worth at their validated prices: the base the tax was
    quoted on at planning (ordered quantities, backorders included)."""
    return conn.execute(
        """
        SELECT coalesce(sum(ol.quantity * coalesce(ol.contract_price, ol.unit_price, 0)), 0)
          FROM orderflow.order_line ol
         WHERE ol.order_id = %s
        """,
        (order_id,),
    ).fetchone()[0]


def record_outbound(
    conn: psycopg.Connection,
    *,
    idempotency_key: str,
    partner_id: str,
    document_type: str,
    functional_id: str,
    control_number: int,
    order_id: str | None,
    shipment_id: str | None = None,
    version: int = 1,
) -> None:
    """Remember the envelope of an X12 document we queued, for the partner's 997."""
    conn.execute(
        """
        INSERT INTO orderflow.outbound_document (idempotency_key, partner_id, document_type,
            functional_id, interchange_control_number, group_control_number,
            set_control_numbers, order_id, shipment_id, version)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (idempotency_key) DO NOTHING
        """,
        (
            idempotency_key,
            partner_id,
            document_type,
            functional_id,
            f"{control_number:09d}",
            str(control_number),
            ["0001"],
            order_id,
            shipment_id,
            version,
        ),
    )


def record_outbound_many(conn: psycopg.Connection, docs: list[dict[str, Any]]) -> None:
    """:func:`record_outbound` of several documents (each its keyword arguments), in one
    statement, in the order given."""
    if not docs:
        return
    conn.execute(
        """
        INSERT INTO orderflow.outbound_document (idempotency_key, partner_id, document_type,
            functional_id, interchange_control_number, group_control_number,
            set_control_numbers, order_id, shipment_id, version)
        SELECT k, p, t, f, lpad(c::text, 9, '0'), c::text, ARRAY['0001'], o, s, v
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                      %s::text[], %s::text[], %s::int[])
               WITH ORDINALITY AS u(k, p, t, f, c, o, s, v, n)
         ORDER BY n
        ON CONFLICT (idempotency_key) DO NOTHING
        """,
        (
            [d["idempotency_key"] for d in docs],
            [d["partner_id"] for d in docs],
            [d["document_type"] for d in docs],
            [d["functional_id"] for d in docs],
            [d["control_number"] for d in docs],
            [d.get("order_id") for d in docs],
            [d.get("shipment_id") for d in docs],
            [d.get("version", 1) for d in docs],
        ),
    )


def match_ack(
    conn: psycopg.Connection,
    partner_id: str,
    functional_id: str,
    group_control_number: str,
    status: str | None,
    detail: dict,
    message_id: int | None,
) -> str | None:
    """Mark the document a 997 acknowledges; returns its idempotency key (None: unknown).
    A rejection opens ``edi_rejected`` with the partner's codes, and a late 997 resolves
    ``edi_ack_overdue`` (``orderflow.edi_acks``), in the same transaction."""
    from orderflow import edi_acks

    row = conn.execute(
        """
        UPDATE orderflow.outbound_document
           SET ack_status = %s, ack_received_at = now(), ack_message_id = %s, ack_detail = %s
         WHERE partner_id = %s AND functional_id = %s AND group_control_number = %s
        RETURNING idempotency_key
        """,
        (
            status,
            message_id,
            Jsonb(detail),
            partner_id,
            functional_id,
            str(int(group_control_number)) if group_control_number.isdecimal() else "",
        ),
    ).fetchone()
    if row is None:
        return None
    edi_acks.on_ack(conn, row[0], status, detail, message_id)
    return row[0]


# ------------------------------------------------------------------------------ latency
#: Seconds from a shipment's *shipped* milestone arriving in OrderFlow (its first shipped
#: event's ``received_at``: the push, or the poll that read it) to its customer notice being
#: sent (the first shipped e-mail, portal webhook or marketplace shipment confirmation
#: marked sent). One row per shipment that has both; ``%(since)s`` bounds the arrivals.
SHIPPED_TO_NOTIFIED_SQL = """
WITH shipped AS (
    SELECT shipment_id, min(received_at) AS arrived
      FROM orderflow.fulfilment_event
     WHERE source = 'wms' AND kind = 'shipped' AND shipment_id IS NOT NULL
       AND received_at >= %(since)s
     GROUP BY shipment_id
), notified AS (
    -- the key is <kind>:<event>:<shipment id>, and a shipment id has colons of its own
    SELECT regexp_replace(idempotency_key, '^[^:]+:[^:]+:', '') AS shipment_id,
           min(sent_at) AS sent
      FROM orderflow.outbox
     WHERE status = 'sent'
       AND ((action IN ('email', 'webhook') AND idempotency_key LIKE '%%:shipment_shipped:%%')
            OR (action = 'marketplace_shipment' AND idempotency_key LIKE 'marketplace:shipment:%%'))
     GROUP BY 1
)
SELECT s.shipment_id, extract(epoch FROM n.sent - s.arrived)::float8
  FROM shipped s JOIN notified n USING (shipment_id)
 ORDER BY s.arrived
"""


def shipped_to_notified_seconds(conn: psycopg.Connection, since: Any = "-infinity") -> list[float]:
    """See :data:`SHIPPED_TO_NOTIFIED_SQL`."""
    return [float(r[1]) for r in conn.execute(SHIPPED_TO_NOTIFIED_SQL, {"since": since})]


# ---------------------------------------------------------------------------- feeds


def feed_rewound_since(conn: psycopg.Connection, feed: str) -> Any:
    """When the open "feed does not continue" exception of ``feed`` was opened (None: none
    is open)."""
    row = conn.execute(
        "SELECT min(opened_at) FROM orderflow.order_exception WHERE status = 'open' "
        "AND entity_type = 'feed' AND entity_id = %s AND details->>'kind' = 'feed_rewound'",
        (feed,),
    ).fetchone()
    return row[0] if row else None


def audit_feed_resync(
    conn: psycopg.Connection,
    actor: str,
    feed: str,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str,
) -> None:
    """The ``feed_resync`` audit row of a feed whose cursor a person moved."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, action, object_type, object_id, before, "
        "after, reason) VALUES (%s, 'feed_resync', 'feed', %s, %s, %s, %s)",
        (actor, feed, Jsonb(before), Jsonb(after), reason),
    )


# ---------------------------------------------------------------------------- milestones


def update_shipment(
    conn: psycopg.Connection, shipment_id: str, sets: dict[str, Any], stamps: frozenset[str]
) -> None:
    """Set the shipment's columns in ``sets`` (column names from our code, never from a
    message); a column in ``stamps`` keeps the first value it was given."""
    if not sets:
        return
    assign = []
    params: list[Any] = []
    for col, value in sets.items():
        if col in stamps:
            assign.append(f"{col} = coalesce({col}, %s)")
        else:
            assign.append(f"{col} = %s")
        params.append(value)
    conn.execute(
        f"UPDATE orderflow.shipment SET {', '.join(assign)}, updated_at = now() "
        "WHERE shipment_id = %s",
        (*params, shipment_id),
    )


def dead_letter_event(conn: psycopg.Connection, source_ref: str, event_id: int, error: str) -> None:
    """A dead letter for a quarantined fulfilment event (``source_ref`` is
    ``<source>:<event_key>``); one already there is refreshed and un-replayed."""
    conn.execute(
        """
        INSERT INTO orderflow.dead_letter (source, source_ref, payload, error)
        VALUES ('fulfilment_event', %s, %s, %s)
        ON CONFLICT (source, source_ref) DO UPDATE
           SET error = EXCLUDED.error, created_at = now(), replayed_at = NULL
        """,
        (source_ref, Jsonb({"event_id": event_id}), error),
    )


def requeue_quarantined(
    conn: psycopg.Connection, event_ids: Sequence[int] | None, actor: str
) -> list[str]:
    """Put quarantined events (those given, or all) back in the queue and mark their dead
    letters replayed by ``actor``; returns their ``<source>:<event_key>`` refs."""
    cur = conn.execute(
        "UPDATE orderflow.fulfilment_event SET status = 'pending', attempts = 0, error = NULL "
        "WHERE status = 'quarantined' AND (%s::bigint[] IS NULL OR event_id = ANY(%s)) "
        "RETURNING source || ':' || event_key",
        (list(event_ids) if event_ids else None, list(event_ids) if event_ids else None),
    )
    refs = [r[0] for r in cur]
    conn.execute(
        "UPDATE orderflow.dead_letter SET replayed_at = now(), replayed_by = %s "
        "WHERE source = 'fulfilment_event' AND source_ref = ANY(%s)",
        (actor, refs),
    )
    return refs


# ---------------------------------------------------------------------------- invoices


def next_invoice_number(conn: psycopg.Connection) -> int:
    """The next number of ``invoice_number_seq``."""
    return conn.execute("SELECT nextval('orderflow.invoice_number_seq')").fetchone()[0]


def insert_invoice(
    conn: psycopg.Connection,
    *,
    invoice_id: str,
    shipment_id: str,
    order_id: str,
    status: str,
    document: dict[str, Any],
    subtotal: Any,
    tax: Any,
    freight: Any,
    total: Any,
    currency: str,
) -> int:
    """The invoice of a shipment (one per shipment: a second is not written); returns the
    rows written (0 or 1)."""
    return conn.execute(
        """
        INSERT INTO orderflow.invoice (invoice_id, shipment_id, order_id, status, document,
            subtotal, tax, freight, total, currency)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (shipment_id) DO NOTHING
        """,
        (
            invoice_id,
            shipment_id,
            order_id,
            status,
            Jsonb(document),
            subtotal,
            tax,
            freight,
            total,
            currency,
        ),
    ).rowcount


def lock_shipment_invoice(conn: psycopg.Connection, shipment_id: str) -> tuple | None:
    """Lock the invoice of a shipment: (invoice_id, document, status, order_id), or None."""
    return conn.execute(
        "SELECT invoice_id, document, status, order_id FROM orderflow.invoice "
        "WHERE shipment_id = %s FOR UPDATE",
        (shipment_id,),
    ).fetchone()


def requeue_invoice(
    conn: psycopg.Connection,
    invoice_id: str,
    document: dict[str, Any],
    subtotal: Any,
    tax: Any,
    total: Any,
) -> None:
    """A withheld invoice, re-billed, is queued."""
    conn.execute(
        "UPDATE orderflow.invoice SET status = 'queued', document = %s, subtotal = %s, "
        "tax = %s, total = %s, updated_at = now() WHERE invoice_id = %s",
        (Jsonb(document), subtotal, tax, total, invoice_id),
    )


def resolve_quantity_mismatches(
    conn: psycopg.Connection, actor: str, note: str, order_id: str, shipment_id: str
) -> None:
    """Approve the open quantity-mismatch exceptions of ``order_id`` about ``shipment_id``."""
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = 'approved', "
        "resolved_by = %s, resolved_at = now(), resolution_note = %s "
        "WHERE order_id = %s AND category = 'quantity_mismatch' AND status = 'open' "
        "AND details->>'shipment_id' = %s",
        (actor, note, order_id, shipment_id),
    )


def audit_withheld_release(
    conn: psycopg.Connection,
    actor: str,
    actor_role: str | None,
    invoice_id: str,
    before: Any,
    after: dict[str, Any],
    reason: str,
) -> None:
    """The ``release_withheld_invoice`` audit row."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, object_id, "
        "before, after, reason) VALUES (%s, %s, 'release_withheld_invoice', 'invoice', %s, "
        "%s, %s, %s)",
        (actor, actor_role, invoice_id, Jsonb(before), Jsonb(after), reason),
    )
