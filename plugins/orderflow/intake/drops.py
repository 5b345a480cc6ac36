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
from orderflow.intake.core import Outcome, ParseResult, StreamedParse, ingest
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
    waiting_for_master_data: int = 0  # e-mails left for a run after the first master-data sync

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
            **(
                {"waiting_for_master_data": self.waiting_for_master_data}
                if self.waiting_for_master_data
                else {}
            ),
        }


def _customer_for_partner(conn: psycopg.Connection, partner_id: str) -> str | None:
    from orderflow.store import intake as intake_store

    return intake_store.partner_customer(conn, partner_id)


def edi_parser(
    conn: psycopg.Connection, partner_id: str, name: str, *, edi_conn_id: str = "edi_default"
):
    """The parser for one EDI file: 850s → orders (850 cancel/replace and 860s → changes),
    control numbers, 997/TA1 to the outbox.
    Streamed (:class:`~orderflow.channels.x12.X12Stream`): each set's orders are handed
    over as it is read and inserted in batches, so a 32 MiB file is decided in bounded
    memory; the message's errors, controls and acknowledgments are the same as
    :func:`~orderflow.channels.x12.parse` gives."""
    from orderflow.channels import x12

    def parse(data: bytes, stored) -> StreamedParse:
        stream = x12.X12Stream(
            data,
            partner_id=partner_id,
            source_ref=name,
            received_at=datetime.now(UTC),
            our_id=OUR_EDI_ID,
            next_control_number=lambda: control_numbers.next_number(conn, partner_id, "isa"),
            light_orders=True,
        )
        customer = _customer_for_partner(conn, partner_id)
        st = _EdiState()

        def events():
            for ev in stream:
                if not st.ic_open:  # the interchange's scope: its first set or group
                    st.ic_open = True
                    yield ("open", None)
                if type(ev) is x12.FastSet:
                    # an 850 read whole, accepted as is: its order as plain values, stored
                    # without a model instance (``fast850.LightOrder``)
                    if not st.group_open:
                        st.group_open = True
                        yield ("open", None)
                    st.st02s.append(ev.control)
                    o = ev.order
                    o.customer_id = o.customer_id or customer
                    st.orders += 1
                    yield ("orders", [o])
                elif isinstance(ev, x12.TransactionResult):
                    if not st.group_open:
                        st.group_open = True
                        yield ("open", None)
                    st.st02s.append(ev.control_number)
                    st.set_errors += ev.errors
                    if ev.acknowledgment is not None:
                        st.received.append(ev.acknowledgment.model_dump())
                    if ev.order is not None:
                        o = ev.order
                        o.customer_id = o.customer_id or customer
                        st.orders += 1
                        yield ("orders", [o])
                    if ev.change is not None:  # 850 BEG01 01/03/04/05, 860
                        c = ev.change
                        c.customer_id = c.customer_id or customer
                        if c.replacement is not None:
                            c.replacement.customer_id = c.replacement.customer_id or customer
                        st.orders += 1
                        yield ("changes", [c])
                elif isinstance(ev, x12.GroupResult):
                    if st.group_open:
                        st.group_open = False
                        yield ("close", not ev.rejected)
                    st.groups.append((ev, st.set_errors))
                    st.set_errors = []
                else:
                    if st.group_open:  # cannot happen: a group closes before its interchange
                        st.group_open = False
                        yield ("close", False)
                    st.ic_open = False
                    yield ("close", not ev.rejected)
                    st.interchange(ev, partner_id, edi_conn_id)

        def summary() -> tuple[ParseResult, bool]:
            result = stream.result
            failed = stream.failed  # x12.internal_error: nothing of the file is used
            errors = list(result.errors) if failed else [*result.errors, *st.errors]
            drop = failed
            if failed:
                st.acks, st.received, st.st02s, st.n_interchanges = [], [], [], 0
                st.isa13 = st.gs06 = None
            if st.orders and not drop and st.usage == {"T"}:
                errors.append(x12_test_usage(name))
                drop = True
            control = {"isa13": st.isa13, "gs06": st.gs06, "st02s": st.st02s or None}
            return (
                ParseResult(
                    errors=errors,
                    control=control,
                    acks=st.acks,
                    acknowledgments=st.received,
                    details={
                        "interchanges": st.n_interchanges,
                        "transactions": len(st.st02s),
                        "encoding": result.encoding,
                    },
                ),
                drop,
            )

        return StreamedParse(
            events=events(), summary=summary, first_control=lambda: stream.first_control
        )

    return parse


@dataclass
class _EdiState:
    """What a streamed EDI message keeps while it is read: per set only its ST02 (and the
    errors of sets that have some), per interchange its acknowledgments."""

    ic_open: bool = False
    group_open: bool = False
    st02s: list[str] = field(default_factory=list)
    orders: int = 0
    set_errors: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    received: list = field(default_factory=list)
    acks: list = field(default_factory=list)
    usage: set = field(default_factory=set)
    isa13: str | None = None
    gs06: str | None = None
    n_interchanges: int = 0

    def interchange(self, ic, partner_id: str, edi_conn_id: str) -> None:
        """An interchange is closed: its errors in file order, its acknowledgments."""
        if self.n_interchanges == 0:
            self.isa13 = ic.control_number
            self.gs06 = ic.groups[0].control_number if ic.groups else None
        self.n_interchanges += 1
        self.usage.add(ic.usage)
        self.errors += ic.errors
        for g, set_errors in self.groups:
            self.errors += g.errors
            self.errors += set_errors
        self.groups = []
        if ic.ta1:
            self.acks.append(
                _ack(partner_id, "TA1", f"{ic.sender_id}:{ic.control_number}", ic.ta1, edi_conn_id)
            )
        for g in ic.groups:
            if g.ack_997:
                self.acks.append(
                    _ack(
                        partner_id,
                        "997",
                        f"{ic.sender_id}:{ic.control_number}:{g.control_number}",
                        g.ack_997,
                        edi_conn_id,
                    )
                )


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
        held = [raw]  # handed to ingest without a reference left here (see ``ingest``)
        del raw
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
            raw=held.pop(),
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
        from orderflow.store import intake as intake_store

        stats.lines = intake_store.count_lines(conn, stats.order_ids)
    return stats
