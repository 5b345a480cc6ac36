"""What partners' 997s say about the EDI documents we sent (``outbound_document``): the
codes recorded on a document, the documents not accepted or overdue, the resend links, and
the resolutions and audit of the ``edi_rejected`` / ``edi_ack_overdue`` exceptions. Always in
the caller's transaction (``orderflow.edi_acks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


def _rows(cur) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def _subject(order_id: str | None, key: str | None) -> tuple[str, tuple]:
    """The documents of an order, or (without one) the document ``key``; (None, None): all."""
    if order_id:
        return "d.order_id = %s", (order_id,)
    if key is not None:
        return "idempotency_key = %s", (key,)
    return "true", ()


# ---------------------------------------------------------------------------- documents


def document(conn: psycopg.Connection, key: str) -> tuple | None:
    """(order_id, functional_id, group_control_number) of the document sent under ``key``."""
    return conn.execute(
        "SELECT order_id, functional_id, group_control_number FROM orderflow.outbound_document "
        "WHERE idempotency_key = %s",
        (key,),
    ).fetchone()


def message_raw(conn: psycopg.Connection, message_id: int) -> bytes | None:
    """The raw bytes of a received channel message (None when there is no such message)."""
    row = conn.execute(
        "SELECT raw FROM orderflow.channel_message WHERE message_id = %s", (message_id,)
    ).fetchone()
    return bytes(row[0]) if row else None


def add_ack_detail(conn: psycopg.Connection, key: str, detail: dict[str, Any]) -> None:
    """Merge ``detail`` (the partner's codes, explained) into the document's ack detail."""
    conn.execute(
        "UPDATE orderflow.outbound_document SET ack_detail = ack_detail || %s "
        "WHERE idempotency_key = %s",
        (Jsonb(detail), key),
    )


def acknowledged_documents(
    conn: psycopg.Connection, order_id: str | None, key: str
) -> list[dict[str, Any]]:
    """The documents of ``order_id`` (or, without one, the document ``key``) not resent,
    with their ack status and detail and when they were sent."""
    where, params = _subject(order_id, key)
    return _rows(
        conn.execute(
            f"""
            SELECT d.idempotency_key, d.partner_id, d.document_type, d.functional_id,
                   d.interchange_control_number, d.group_control_number, d.version,
                   d.ack_status, d.ack_received_at, d.ack_detail, d.order_id, o.sent_at
              FROM orderflow.outbound_document d
              JOIN orderflow.outbox o USING (idempotency_key)
             WHERE d.resent_as IS NULL AND {where}
             ORDER BY d.idempotency_key
            """,
            params,
        )
    )


def overdue_documents(
    conn: psycopg.Connection, order_id: str | None = None, key: str | None = None
) -> list[dict[str, Any]]:
    """Sent documents without a 997 past their partner's window (NULL window: never
    overdue), not resent — all of them, or those of ``order_id`` (or of the document
    ``key``)."""
    where, params = _subject(order_id, key)
    return _rows(
        conn.execute(
            f"""
            SELECT d.idempotency_key, d.partner_id, d.document_type,
                   d.interchange_control_number, d.group_control_number, d.version,
                   d.order_id, o.sent_at, tp.ack_window_hours,
                   extract(epoch FROM now() - o.sent_at) / 3600 AS hours
              FROM orderflow.outbound_document d
              JOIN orderflow.outbox o USING (idempotency_key)
              JOIN orderflow.trading_partner tp ON tp.partner_id = d.partner_id
             WHERE d.ack_status IS NULL AND d.resent_as IS NULL AND o.status = 'sent'
               AND tp.ack_window_hours IS NOT NULL
               AND o.sent_at < now() - make_interval(secs => tp.ack_window_hours * 3600)
               AND {where}
             ORDER BY d.order_id, d.idempotency_key
            """,
            params,
        )
    )


def lock_documents(conn: psycopg.Connection, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Lock the documents of ``keys`` (in key order), with the body and connection they
    were sent with."""
    return _rows(
        conn.execute(
            "SELECT d.idempotency_key, d.partner_id, d.document_type, d.functional_id, "
            "d.order_id, d.shipment_id, d.version, d.resent_as, d.ack_status, d.ack_detail, "
            "d.interchange_control_number, o.payload->>'body' AS body, o.target_conn_id "
            "FROM orderflow.outbound_document d JOIN orderflow.outbox o "
            "USING (idempotency_key) WHERE d.idempotency_key = ANY(%s) "
            "ORDER BY d.idempotency_key FOR UPDATE OF d",
            (list(keys),),
        )
    )


def link_resend(conn: psycopg.Connection, key: str, new_key: str, actor: str) -> None:
    """The document ``key`` was resent as ``new_key`` by ``actor``: each points to the
    other."""
    conn.execute(
        "UPDATE orderflow.outbound_document SET resend_of = %s WHERE idempotency_key = %s",
        (key, new_key),
    )
    conn.execute(
        "UPDATE orderflow.outbound_document SET resent_as = %s, resent_by = %s, "
        "resent_at = now() WHERE idempotency_key = %s",
        (new_key, actor, key),
    )


# ---------------------------------------------------------------------------- exceptions


def exception(conn: psycopg.Connection, exception_id: int, *, lock: bool = False) -> tuple | None:
    """(order_id, category, status, owner_role, details) of an exception (locked when
    ``lock``), or None."""
    return conn.execute(
        "SELECT order_id, category, status, owner_role, details FROM "
        "orderflow.order_exception WHERE exception_id = %s" + (" FOR UPDATE" if lock else ""),
        (exception_id,),
    ).fetchone()


def resolve_open_of_order(
    conn: psycopg.Connection, resolver: str, note: str, category: str, order_id: str
) -> int:
    """Auto-resolve the open exceptions of ``category`` on ``order_id``; returns how many."""
    return conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', "
        "resolution = 'auto_resolved', resolved_by = %s, resolved_at = now(), "
        "resolution_note = %s WHERE status = 'open' AND category = %s AND order_id = %s",
        (resolver, note, category, order_id),
    ).rowcount


def resolve_acknowledged(
    conn: psycopg.Connection,
    resolver: str,
    category: str,
    order_ids: Sequence[str],
    entity_ids: Sequence[str],
) -> int:
    """Auto-resolve the open exceptions of ``category`` whose order (or, without one, whose
    outbound document) is not among those still overdue; returns how many. Set-based."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception
           SET status = 'resolved', resolution = 'auto_resolved', resolved_by = %s,
               resolved_at = now(),
               resolution_note = 'the partner acknowledged (or the document was resent)'
         WHERE status = 'open' AND category = %s
           AND ((order_id IS NOT NULL AND NOT (order_id = ANY(%s)))
             OR (order_id IS NULL AND entity_type = 'outbound_document'
                 AND NOT (entity_id = ANY(%s))))
        """,
        (resolver, category, list(order_ids), list(entity_ids)),
    ).rowcount


def resolve_fixed(conn: psycopg.Connection, exception_id: int, actor: str, note: str) -> None:
    """Resolve an exception ``fixed`` by ``actor``."""
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = 'fixed', "
        "resolved_by = %s, resolved_at = now(), resolution_note = %s "
        "WHERE exception_id = %s",
        (actor, note, exception_id),
    )


def audit_resend(
    conn: psycopg.Connection,
    actor: str,
    actor_role: str | None,
    exception_id: int,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str | None,
) -> None:
    """The ``edi_resend`` audit row of an exception."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, "
        "object_id, before, after, reason) VALUES (%s, %s, 'edi_resend', "
        "'order_exception', %s, %s, %s, %s)",
        (actor, actor_role, str(exception_id), Jsonb(before), Jsonb(after), reason),
    )
