"""Intake of drop-folder channels: EDI X12 files and inside-sales CSV files (e-mail: see
``intake.mailbox``). One file = one channel message = exactly one outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow.channels import csv_orders
from orderflow.intake import files
from orderflow.intake.core import Outcome, ParseResult, ingest
from orderflow.store import control_numbers

if TYPE_CHECKING:
    import psycopg

#: our ISA id in acknowledgments (the receiver id partners address us by)
OUR_EDI_ID = "ORDERFLOW"


@dataclass
class BatchStats:
    files: int = 0
    outcomes: Counter = field(default_factory=Counter)
    seen_before: int = 0
    orders: int = 0
    lines: int = 0
    order_ids: list[str] = field(default_factory=list)

    def add(self, out: Outcome) -> None:
        self.files += 1
        if out.seen_before:
            self.seen_before += 1
        self.outcomes[out.outcome] += 1
        self.orders += len(out.order_ids)
        self.order_ids += out.order_ids

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "outcomes": dict(self.outcomes),
            "seen_before": self.seen_before,
            "orders_created": self.orders,
            "lines": self.lines,
        }


def _customer_for_partner(conn: psycopg.Connection, partner_id: str) -> str | None:
    row = conn.execute(
        "SELECT customer_id FROM orderflow.trading_partner WHERE partner_id = %s AND active",
        (partner_id,),
    ).fetchone()
    return row[0] if row else None


def edi_parser(
    conn: psycopg.Connection, partner_id: str, name: str, *, edi_conn_id: str = "edi_default"
):
    """The parser for one EDI file: 850s → orders, control numbers, 997/TA1 to the outbox."""
    from orderflow.channels import x12

    def parse(data: bytes, stored) -> ParseResult:
        result = x12.parse(
            data,
            partner_id=partner_id,
            source_ref=name,
            received_at=datetime.now(UTC),
            our_id=OUR_EDI_ID,
            next_control_number=lambda: control_numbers.next_number(conn, partner_id, "isa"),
        )
        customer = _customer_for_partner(conn, partner_id)
        orders = result.orders
        for o in orders:
            o.customer_id = o.customer_id or customer
        errors = result.error_list
        usage = {i.usage for i in result.interchanges}
        if orders and usage == {"T"}:
            orders, errors = [], [*errors, x12_test_usage(name)]
        ics = result.interchanges
        control = {
            "isa13": ics[0].control_number if ics else None,
            "gs06": ics[0].groups[0].control_number if ics and ics[0].groups else None,
            "st02s": [t.control_number for t in result.transactions] or None,
        }
        acks = []
        for i in ics:
            if i.ta1:
                acks.append(
                    _ack(partner_id, "TA1", f"{i.sender_id}:{i.control_number}", i.ta1, edi_conn_id)
                )
            for g in i.groups:
                if g.ack_997:
                    acks.append(
                        _ack(
                            partner_id,
                            "997",
                            f"{i.sender_id}:{i.control_number}:{g.control_number}",
                            g.ack_997,
                            edi_conn_id,
                        )
                    )
        received = [t.acknowledgment.model_dump() for t in result.transactions if t.acknowledgment]
        return ParseResult(
            orders=orders,
            errors=errors,
            control=control,
            acks=acks,
            acknowledgments=received,
            details={
                "interchanges": len(ics),
                "transactions": len(result.transactions),
                "encoding": result.encoding,
            },
        )

    return parse


def x12_test_usage(name: str):
    from orderflow.domain.models import IntakeError

    return IntakeError(
        code="x12.test_interchange",
        message=f"{name} is a test interchange (ISA15 = T); its orders are not live",
        where="ISA15",
        action="Confirm with the partner; if it was meant as production, ask for a resend with ISA15 = P.",
    )


def _ack(partner_id: str, kind: str, ref: str, body: str, conn_id: str) -> dict[str, Any]:
    return {
        "idempotency_key": f"edi_{kind.lower()}:{partner_id}:{ref}",
        "action": f"edi_{kind.lower()}",
        "target_conn_id": conn_id,
        "payload": {"partner_id": partner_id, "document_type": kind, "body": body},
    }


def csv_parser(partner_id: str, name: str):
    def parse(data: bytes, stored) -> ParseResult:
        if not name.lower().endswith((".csv", ".txt")):
            from orderflow.domain.models import IntakeError

            return ParseResult(
                errors=[
                    IntakeError(
                        code="csv.not_csv",
                        message=f"{name} is not a .csv file",
                        where=name,
                        action="Export the order as CSV (UTF-8) and upload that.",
                    )
                ]
            )
        res = csv_orders.parse(
            data,
            partner_id=partner_id,
            source_ref=name,
            message_id=stored.message_id,
            sha=stored.content_sha256,
        )
        return ParseResult(
            orders=res.orders,
            errors=res.errors,
            details={
                "rows": res.rows,
                "encoding": res.encoding,
                "decimal_separator": res.decimal_separator,
            },
        )

    return parse


def ingest_folder(
    conn: psycopg.Connection,
    root: Path,
    channel: str,
    *,
    run: dict[str, Any] | None = None,
    max_bytes: int = files.DEFAULT_MAX_BYTES,
    limit: int | None = None,
    edi_conn_id: str = "edi_default",
) -> BatchStats:
    """Ingest every waiting file of ``root`` for ``channel`` ('edi' or 'csv'), then archive it."""
    if channel not in ("edi", "csv"):
        raise ValueError(f"drop-folder intake handles 'edi' and 'csv', not {channel!r}")
    stats = BatchStats()
    per_partner = channel == "edi"
    for f in files.scan(root, per_partner=per_partner, default_partner="inside-sales", limit=limit):
        raw, precheck = files.read(f, max_bytes)
        parse = (
            edi_parser(conn, f.partner_id, f.name, edi_conn_id=edi_conn_id)
            if channel == "edi"
            else csv_parser(f.partner_id, f.name)
        )
        out = ingest(
            conn,
            channel=channel,
            partner_id=f.partner_id,
            source_ref=f.name,
            raw=raw,
            parse=parse,
            size_bytes=f.size,
            precheck=precheck,
            run=run,
            content_type="application/edi-x12" if channel == "edi" else "text/csv",
            actor_id=f"intake_{channel}",
        )
        stats.add(out)
        files.archive(f, root, out.outcome)
    if stats.order_ids:
        stats.lines = conn.execute(
            "SELECT count(*) FROM orderflow.order_line WHERE order_id = ANY(%s)", (stats.order_ids,)
        ).fetchone()[0]
    return stats
