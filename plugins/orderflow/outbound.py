"""Outbound X12 to a trading partner (855, 856, 810): one place that takes the partner's
envelope, allocates its control number, queues the document in the outbox under its key and
records the envelope a 997 will be matched to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


def envelope(conn: psycopg.Connection, partner_id: str) -> dict[str, Any] | None:
    """The builders' envelope arguments for ``partner_id`` (None: no ISA id on file)."""
    from orderflow.intake.drops import OUR_EDI_ID
    from orderflow.store import control_numbers, partners

    row = partners.envelope_ids(conn, partner_id)
    if row is None or not row[1]:
        return None
    qualifier, isa_id, gs_id, version = row
    return {
        "sender": ("ZZ", OUR_EDI_ID),
        "receiver": (qualifier or "ZZ", isa_id),
        "gs_sender": OUR_EDI_ID,
        "gs_receiver": gs_id or isa_id,
        "control_number": control_numbers.next_number(conn, partner_id, "isa"),
        "now": datetime.now(UTC),
        "version": version if version and len(version) >= 6 else "004010",
    }


def queue_x12(
    conn: psycopg.Connection,
    *,
    partner_id: str,
    kind: str,
    functional_id: str,
    key: str,
    build: Callable[[dict[str, Any]], str],
    order_id: str,
    shipment_id: str | None = None,
    version: int = 1,
    conn_id: str = "edi_default",
) -> bool:
    """Queue one document (``build(envelope)`` → X12 text) unless ``key`` is queued already
    (a rerun: same document, no second control number). Returns whether it queued."""
    from orderflow.store import fulfilment, outbox, outbox_report

    if outbox_report.is_queued(conn, key):
        return False
    env = envelope(conn, partner_id)
    if env is None:
        log.warning(
            "order %s: no trading-partner envelope for %s; %s not queued",
            order_id,
            partner_id,
            kind,
        )
        return False
    outbox.enqueue(
        conn,
        idempotency_key=key,
        action=f"edi_{kind}",
        target_conn_id=conn_id,
        order_id=order_id,
        version=version,
        payload={"partner_id": partner_id, "document_type": kind, "body": build(env)},
    )
    fulfilment.record_outbound(
        conn,
        idempotency_key=key,
        partner_id=partner_id,
        document_type=kind,
        functional_id=functional_id,
        control_number=env["control_number"],
        order_id=order_id,
        shipment_id=shipment_id,
        version=version,
    )
    return True
