"""Orders repository: single-order reads and small updates outside the processing stages
(the desk's checks, the order page and its trace, the lookup, notification contacts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


# --------------------------------------------------------------------------- checks, updates
def lock_status(conn: psycopg.Connection, order_id: str) -> tuple:
    """(status, claimed_by_run) of an order, locked."""
    return conn.execute(
        'SELECT status, claimed_by_run FROM orderflow."order" WHERE order_id = %s FOR UPDATE',
        (order_id,),
    ).fetchone()


def status_of(conn: psycopg.Connection, order_id: str) -> str:
    """The status of an existing order."""
    return conn.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


def unclaim(conn: psycopg.Connection, order_id: str, run_id: str) -> None:
    """Drop ``run_id``'s claim on the order (if it still holds it)."""
    conn.execute(
        'UPDATE orderflow."order" SET claimed_by_run = NULL, claimed_at = NULL '
        "WHERE order_id = %s AND claimed_by_run = %s",
        (order_id, run_id),
    )


def contacts(conn: psycopg.Connection, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per order: channel, customer, PO number, the customer's name and e-mail, partner."""
    cur = conn.execute(
        """
        SELECT o.order_id, o.channel, o.customer_id, o.po_number, c.name AS customer_name,
               c.email, o.partner_id
          FROM orderflow."order" o LEFT JOIN orderflow.customer c USING (customer_id)
         WHERE o.order_id = ANY(%s)
        """,
        (order_ids,),
    )
    cols = [c.name for c in cur.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in cur}


def in_window(
    conn: psycopg.Connection,
    *,
    since: datetime,
    until: datetime,
    channel: str | None,
    customer: str | None,
    status: str | None,
    hold: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Orders received in [since, until) (of that channel, customer, status, held for that
    category when given), oldest first, with their claim and open exception categories."""
    return _rows(
        conn.execute(
            """
            SELECT o.order_id, o.status, o.channel, o.customer_id, o.received_at,
                   o.claimed_by_run,
                   coalesce((SELECT array_agg(e.category ORDER BY e.exception_id)
                               FROM orderflow.order_exception e
                              WHERE e.order_id = o.order_id AND e.status = 'open'), '{}')
                       AS open_exceptions
              FROM orderflow."order" o
             WHERE o.received_at >= %(since)s AND o.received_at < %(until)s
               AND (%(channel)s::text IS NULL OR o.channel = %(channel)s::text)
               AND (%(customer)s::text IS NULL OR o.customer_id = %(customer)s::text)
               AND (%(status)s::text IS NULL OR o.status = %(status)s::text)
               AND (%(hold)s::text IS NULL OR EXISTS (
                    SELECT 1 FROM orderflow.order_exception h
                     WHERE h.order_id = o.order_id AND h.status = 'open'
                       AND h.category = %(hold)s::text))
             ORDER BY o.received_at, o.order_id
             LIMIT %(limit)s
            """,
            {
                "since": since,
                "until": until,
                "channel": channel,
                "customer": customer,
                "status": status,
                "hold": hold,
                "limit": limit,
            },
        )
    )


# --------------------------------------------------------------------------- order trace
def header(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's row (a list of one, or empty)."""
    return _rows(
        conn.execute(
            "SELECT order_id, channel, partner_id, customer_id, po_number, ship_to_id, status, "
            "status_changed_at, order_total, tax_amount, currency, received_at, "
            "requested_ship_date, rule_set_version, manual_touches, approvals, release_version, "
            'source_message_id FROM orderflow."order" WHERE order_id = %s',
            (order_id,),
        )
    )


def source_message(conn: psycopg.Connection, message_id: Any, preview: int) -> list[dict[str, Any]]:
    """The channel message an order came from, with the first ``preview`` bytes of it."""
    return _rows(
        conn.execute(
            "SELECT message_id, channel, partner_id, source_ref, content_sha256, received_at, "
            "interchange_control_number, group_control_number, transaction_control_numbers, "
            "client_request_id, outcome, substring(raw FROM 1 FOR %s) AS raw_head, "
            "length(raw) AS raw_length FROM orderflow.channel_message WHERE message_id = %s",
            (preview, message_id),
        )
    )


def events(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's lifecycle events, in order."""
    return _rows(
        conn.execute(
            "SELECT event_id, occurred_at, from_status, to_status, reason_codes, "
            "rule_set_version, actor_type, actor_id, details, dag_id, run_id, task_id, map_index "
            "FROM orderflow.order_event WHERE order_id = %s ORDER BY event_id",
            (order_id,),
        )
    )


def lines(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's lines."""
    return _rows(
        conn.execute(
            "SELECT line_no, item_id, customer_part_number, quantity, uom, unit_price, "
            "contract_price, status, substitute_item_id, backordered_qty "
            "FROM orderflow.order_line WHERE order_id = %s ORDER BY line_no",
            (order_id,),
        )
    )


def exceptions(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """Every exception of the order, open or resolved."""
    return _rows(
        conn.execute(
            "SELECT exception_id, line_no, category, severity, owner_role, reason, status, "
            "opened_at, sla_due_at, escalated_at, resolution, resolved_by, resolved_at, "
            "resolution_note, rule_set_version FROM orderflow.order_exception "
            "WHERE order_id = %s ORDER BY exception_id",
            (order_id,),
        )
    )


def audit_trail(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """Audit rows of the order, its exceptions and its invoices."""
    return _rows(
        conn.execute(
            "SELECT a.occurred_at, a.actor, a.actor_role, a.action, a.object_type, "
            "a.object_id, a.reason FROM orderflow.audit_log a "
            "WHERE (a.object_type = 'order' AND a.object_id = %s) "
            "OR (a.object_type = 'order_exception' AND a.object_id IN "
            "(SELECT exception_id::text FROM orderflow.order_exception WHERE order_id = %s)) "
            "OR (a.object_type = 'invoice' AND a.object_id IN "
            "(SELECT invoice_id FROM orderflow.invoice WHERE order_id = %s)) "
            "ORDER BY a.audit_id",
            (order_id, order_id, order_id),
        )
    )


def documents(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's outbox rows with their outbound document's acknowledgement."""
    return _rows(
        conn.execute(
            "SELECT o.action, o.idempotency_key, o.version, o.status, o.attempts, "
            "o.created_at, o.sent_at, o.last_error, d.ack_status, d.ack_received_at, "
            "d.interchange_control_number, d.resent_as, d.resend_of, "
            "d.ack_detail->>'explained' AS ack_explained FROM orderflow.outbox o "
            "LEFT JOIN orderflow.outbound_document d USING (idempotency_key) "
            "WHERE o.order_id = %s ORDER BY o.outbox_id",
            (order_id,),
        )
    )


def shipments(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's shipments with their service's transit days."""
    return _rows(
        conn.execute(
            "SELECT shipment_id, dc_id, s.status, carrier_id, service_code, s.mode, weight_kg, "
            "freight_rate, ship_date, promise_met, wms_release_id, tracking_number, "
            "released_at, picked_at, packed_at, shipped_at, in_transit_at, delivered_at, "
            "delayed_at, delay_reason, delivery_exception, expedite_cost, expedite_cause, "
            "baseline_service, cs.transit_days FROM orderflow.shipment s "
            "LEFT JOIN orderflow.carrier_service cs USING (carrier_id, service_code) "
            "WHERE s.order_id = %s ORDER BY shipment_id",
            (order_id,),
        )
    )


def invoices(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The order's invoices."""
    return _rows(
        conn.execute(
            "SELECT invoice_id, shipment_id, version, status, subtotal, tax, freight, total, "
            "currency, erp_invoice_number, posted_at FROM orderflow.invoice "
            "WHERE order_id = %s ORDER BY invoice_id",
            (order_id,),
        )
    )


def now(conn: psycopg.Connection) -> datetime:
    """The store's clock (the transaction's start)."""
    return conn.execute("SELECT now()").fetchone()[0]


# --------------------------------------------------------------------------- lookup
def search(conn: psycopg.Connection, q: str, like: str, limit: int) -> list[dict[str, Any]]:
    """Orders matching ``like`` (an escaped ILIKE pattern) by order id, PO number, customer id
    or name, tracking number or invoice number; exact (``q``) matches first."""
    return _rows(
        conn.execute(
            """
            WITH hits AS (
                SELECT order_id, 'order id' AS matched, (order_id ILIKE %(q)s) AS exact
                  FROM orderflow."order" WHERE order_id ILIKE %(like)s
                UNION ALL
                SELECT order_id, 'PO number', po_number ILIKE %(q)s
                  FROM orderflow."order" WHERE po_number ILIKE %(like)s
                UNION ALL
                SELECT o.order_id, 'customer', (o.customer_id ILIKE %(q)s OR c.name ILIKE %(q)s)
                  FROM orderflow."order" o LEFT JOIN orderflow.customer c USING (customer_id)
                 WHERE o.customer_id ILIKE %(like)s OR c.name ILIKE %(like)s
                UNION ALL
                SELECT order_id, 'tracking number', tracking_number ILIKE %(q)s
                  FROM orderflow.shipment WHERE tracking_number ILIKE %(like)s
                UNION ALL
                SELECT order_id, 'invoice number',
                       (invoice_id ILIKE %(q)s OR erp_invoice_number ILIKE %(q)s)
                  FROM orderflow.invoice
                 WHERE invoice_id ILIKE %(like)s OR erp_invoice_number ILIKE %(like)s
            ), best AS (
                SELECT order_id, bool_or(exact) AS exact,
                       array_agg(DISTINCT matched ORDER BY matched) AS matched
                  FROM hits WHERE order_id IS NOT NULL GROUP BY order_id
            )
            SELECT b.order_id, b.exact, b.matched, o.po_number, o.customer_id,
                   c.name AS customer_name, o.channel, o.status, o.received_at, o.order_total,
                   o.currency,
                   (SELECT string_agg(DISTINCT s.tracking_number, ', ')
                      FROM orderflow.shipment s WHERE s.order_id = o.order_id) AS tracking,
                   (SELECT string_agg(DISTINCT coalesce(i.erp_invoice_number, i.invoice_id), ', ')
                      FROM orderflow.invoice i WHERE i.order_id = o.order_id) AS invoices
              FROM best b JOIN orderflow."order" o USING (order_id)
              LEFT JOIN orderflow.customer c USING (customer_id)
             ORDER BY b.exact DESC, o.received_at DESC, b.order_id
             LIMIT %(limit)s
            """,
            {"q": q, "like": like, "limit": limit},
        )
    )


def summaries(conn: psycopg.Connection, order_ids: list[str]) -> list[dict[str, Any]]:
    """What a list of orders shows of each (by order id)."""
    return _rows(
        conn.execute(
            "SELECT o.order_id, o.po_number, o.customer_id, o.channel, o.status, o.received_at, "
            'o.order_total, o.currency, o.manual_touches FROM orderflow."order" o '
            "WHERE o.order_id = ANY(%s) ORDER BY o.order_id",
            (order_ids,),
        )
    )
