"""Outbound X12 to a trading partner (855, 856, 810): one place that takes the partner's
envelope, allocates its control number, queues the document in the outbox under its key and
records the envelope a 997 will be matched to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


def envelope(conn: psycopg.Connection, partner_id: str) -> dict[str, Any] | None:
    """The builders' envelope arguments for ``partner_id`` (None: no ISA id on file)."""
    from orderflow.store import control_numbers, partners

    row = partners.envelope_ids(conn, partner_id)
    if row is None or not row[1]:
        return None
    return _envelope(row, control_numbers.next_number(conn, partner_id, "isa"))


def _envelope(row: tuple, control_number: int) -> dict[str, Any]:
    from orderflow.intake.drops import OUR_EDI_ID

    qualifier, isa_id, gs_id, version = row
    return {
        "sender": ("ZZ", OUR_EDI_ID),
        "receiver": (qualifier or "ZZ", isa_id),
        "gs_sender": OUR_EDI_ID,
        "gs_receiver": gs_id or isa_id,
        "control_number": control_number,
        "now": datetime.now(UTC),
        "version": version if version and len(version) >= 6 else "004010",
    }


def queue_x12_many(conn: psycopg.Connection, docs: Sequence[dict[str, Any]]) -> int:
    """:func:`queue_x12` of several documents (each its keyword arguments), in the order
    given, in a few statements: the keys already queued read at once, each partner's
    envelope once, each partner's control numbers taken in one statement (the same numbers,
    in the same order per partner, as one document at a time), the documents queued and
    their envelopes recorded in one statement each. Returns how many it queued."""
    from orderflow.store import control_numbers, fulfilment, outbox, outbox_report, partners

    queued = outbox_report.queued_keys(conn, [d["key"] for d in docs])
    ids: dict[str, tuple | None] = {}
    todo: list[dict[str, Any]] = []
    for d in docs:
        if d["key"] in queued:
            continue  # a rerun (or the same key twice): same document, no second number
        partner_id = d["partner_id"]
        if partner_id not in ids:
            ids[partner_id] = partners.envelope_ids(conn, partner_id)
        row = ids[partner_id]
        if row is None or not row[1]:
            log.warning(
                "order %s: no trading-partner envelope for %s; %s not queued",
                d["order_id"],
                partner_id,
                d["kind"],
            )
            continue
        queued.add(d["key"])
        todo.append(d)
    wanted: dict[str, int] = {}
    for d in todo:
        wanted[d["partner_id"]] = wanted.get(d["partner_id"], 0) + 1
    numbers = {p: iter(control_numbers.next_numbers(conn, p, n, "isa")) for p, n in wanted.items()}
    rows, envelopes = [], []
    for d in todo:
        env = _envelope(ids[d["partner_id"]], next(numbers[d["partner_id"]]))
        rows.append(
            dict(
                idempotency_key=d["key"],
                action=f"edi_{d['kind']}",
                target_conn_id=d.get("conn_id", "edi_default"),
                order_id=d["order_id"],
                version=d.get("version", 1),
                payload={
                    "partner_id": d["partner_id"],
                    "document_type": d["kind"],
                    "body": d["build"](env),
                },
            )
        )
        envelopes.append(
            dict(
                idempotency_key=d["key"],
                partner_id=d["partner_id"],
                document_type=d["kind"],
                functional_id=d["functional_id"],
                control_number=env["control_number"],
                order_id=d["order_id"],
                shipment_id=d.get("shipment_id"),
                version=d.get("version", 1),
            )
        )
    outbox.enqueue_many(conn, rows)
    fulfilment.record_outbound_many(conn, envelopes)
    return len(rows)


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
