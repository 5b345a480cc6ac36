"""``parse``: bytes of an EDI file → interchanges, groups, sets, canonical orders and our
acknowledgments. Never raises on bad input; see ``results`` for the outcome rules."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

from . import fast850
from .ack import build_997, build_ta1, read_997
from .elements import x12_date
from .findings import Finding
from .po850 import MapContext, Mapper850
from .po860 import Mapper860
from .reader import FastSet, RawInterchange, decode, iter_interchanges, not_x12
from .results import (
    GroupResult,
    InterchangeResult,
    SegmentNote,
    TransactionResult,
    X12Result,
)
from .validate import GroupWork, InterchangeWork, TxnWork, functional_id_ok, walk_envelopes

MAX_BYTES = 64 * 1024 * 1024
"""Larger files are quarantined unread: a day of 5,000 orders is ~10 MB of X12."""

SUPPORTED = {"850": "purchase order", "860": "purchase order change request"}
_MAPPERS = {"850": Mapper850, "860": Mapper860}


@dataclass(slots=True)
class SetAck:
    """What the 997 needs of one set (kept per group while a streamed interchange is read,
    instead of the set's whole result)."""

    set_id: str
    control_number: str
    implementation_ref: str | None
    accepted: bool
    ack_code: str
    ak5_codes: tuple[str, ...]
    segment_notes: tuple[SegmentNote, ...]


class SetAcks(list):
    """What the 997 needs of each set of a group being read, in order. A set accepted as is
    (850, AK5 A, nothing to say, no ST03) is kept as its ST02 alone (a 32 MB file is
    126,488 of them); iterating gives a :class:`SetAck` for every set."""

    def __iter__(self) -> Iterator[SetAck]:  # type: ignore[override]
        for a in list.__iter__(self):
            yield SetAck("850", a, None, True, "A", _NONE, _NONE) if type(a) is str else a

    def compact(self) -> Iterator[SetAck | str]:
        """The entries as kept: a ``str`` is an 850 accepted as is (its ST02)."""
        return list.__iter__(self)


Event = TransactionResult | GroupResult | InterchangeResult


class X12Stream:
    """An EDI file read one transaction set at a time, in file order::

        stream = X12Stream(data, partner_id="ACME")
        for ev in stream:
            TransactionResult  # one per set, as soon as its SE is read (its order, when the
                               # set was accepted, is provisional: see below)
            GroupResult        # when a group is closed, after its sets (``transactions``
                               # empty: the sets were yielded one by one)
            InterchangeResult  # when an interchange is closed, after its groups: final
                               # ``rejected`` flags, the TA1 and 997s (``acknowledgments``)
        stream.result          # file level: sha256, encoding, errors (complete at the end)
        stream.failed          # the reader failed (x12.internal_error): use nothing of it

    Nothing from a rejected group or interchange is used: orders of a set count once its
    GroupResult and InterchangeResult are not rejected. Only the set being read is in
    memory (plus, per group being read, what the 997 needs of each set): a consumer that
    lets each result go reads a file of any size in bounded memory. :func:`parse` collects
    the same events into one :class:`X12Result`.

    ``light_orders=True`` (EDI intake): an 850 set read whole by the fast path
    (``fast850``: accepted as is, nothing to note) is yielded as its
    :class:`~orderflow.channels.x12.reader.FastSet` instead of a ``TransactionResult``:
    ``.control`` (ST02), ``.order`` a ``fast850.LightOrder`` (the order's values and the
    JSON the store keeps of it, no model instances; ``.order.to_model()`` the ``Order``),
    ``.result`` the ``TransactionResult`` the stream would have yielded.
    """

    def __init__(
        self,
        data: bytes,
        *,
        partner_id: str | None = None,
        source_ref: str | None = None,
        received_at: datetime | None = None,
        our_id: str | None = None,
        our_qualifier: str = "ZZ",
        next_control_number: Callable[[], int] | None = None,
        max_bytes: int = MAX_BYTES,
        light_orders: bool = False,
    ) -> None:
        if received_at is not None and received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        self._data = data
        self._received_at = received_at
        self._our_id = our_id
        self._our_qualifier = our_qualifier
        self._next_control = next_control_number or itertools.count(1).__next__
        self._max_bytes = max_bytes
        self._light = light_orders
        self.failed = False
        #: ISA13 of the first interchange, once it is read (duplicate detection)
        self.first_control: str | None = None
        self.result = X12Result(
            source_ref=source_ref,
            partner_id=partner_id,
            document_sha256=hashlib.sha256(data).hexdigest(),
        )

    def __iter__(self) -> Iterator[Event]:
        result = self.result
        try:
            yield from self._events()
        except Exception as exc:  # a batch must survive a reader bug; the file is quarantined
            self.failed = True
            result.errors.append(
                Finding(
                    "x12.internal_error",
                    f"The X12 reader failed on this file ({type(exc).__name__}: {exc}).",
                    where=result.source_ref or "file",
                    action="Quarantined; report it to the OrderFlow team with the file.",
                ).error()
            )

    def _events(self) -> Iterator[Event]:
        # The stream is read once. Only this frame holds the bytes from here, and only until
        # they are decoded: a caller that keeps no reference of its own (EDI intake) does
        # not hold the file twice (bytes and text) while it is read.
        data, self._data = self._data, b""
        result = self.result
        max_bytes = self._max_bytes
        if len(data) > max_bytes:
            result.errors.append(
                Finding(
                    "x12.too_large",
                    f"The file is {len(data):,} bytes, over the {max_bytes:,}-byte limit; it "
                    "was not read.",
                    where="file",
                    action="Ask the partner to split it, or raise the limit for this partner.",
                ).error()
            )
            return
        decoded = decode(data)
        del data
        result.encoding = decoded.encoding
        text = decoded.text
        if text is None:
            result.errors.append(decoded.finding.error())  # type: ignore[union-attr]
            return
        decoded.text = None
        bad = not_x12(text)
        if bad is not None:
            result.errors.append(bad.error())
            return
        findings: list[Finding] = []
        now = self._received_at or datetime.now(UTC)
        seen: set[tuple[str, str, str]] = set()
        for raw in iter_interchanges(text, findings):
            if self.first_control is None:
                self.first_control = raw.isa.el(13)
            ic = yield from self._interchange(raw, seen, now)
            if not ic.rejected:
                seen.add((raw.isa.el(5), raw.isa.el(6), raw.isa.el(13).lstrip("0")))
        result.errors += [f.error() for f in findings]

    def _interchange(
        self, raw: RawInterchange, seen: set[tuple[str, str, str]], now: datetime
    ) -> Generator[Event, None, InterchangeResult]:
        result = self.result
        received_at = self._received_at
        work = InterchangeWork(raw=raw, findings=list(raw.isa.findings) + list(raw.findings))
        mappers: dict[int, Mapper850 | Mapper860] = {}
        light = self._light

        def map_context(g: GroupWork) -> MapContext:
            return MapContext(
                partner_id=result.partner_id,
                sender_id=raw.isa.el(6),
                interchange_control=raw.isa.el(13),
                group_control=g.el(6),
                version=g.el(8),
                source_ref=result.source_ref,
                received_at=received_at,
                document_sha256=result.document_sha256,
                element=raw.isa.delimiters.element,
            )

        def on_st(g: GroupWork, t: TxnWork) -> None:
            if t.set_id == "997" and g.el(1) in ("FA", ""):
                return  # read whole by read_997
            if t.set_id in _MAPPERS and functional_id_ok(g, t.set_id):
                m = _MAPPERS[t.set_id](t, map_context(g))
                mappers[id(t)] = m
                t.sink = m.feed
            else:
                t.sink = _discard  # not read: only counted

        fast = None
        patterns = fast850.set_pattern(raw.isa.delimiters) if fast850.usable() else None
        if patterns is not None:
            contexts: dict[int, tuple[GroupWork, fast850.Group | None]] = {}

            def build(g: GroupWork, m: re.Match[str], st_index: int) -> FastSet | None:
                got = contexts.get(id(g))
                if got is None or got[0] is not g:
                    ctx = map_context(g)
                    contexts.clear()
                    fits = g.el(1) == "PO" and fast850.context_fits(ctx)
                    contexts[id(g)] = got = (g, fast850.Group(ctx) if fits else None)
                if got[1] is None:
                    return None
                return fast850.build(m, st_index, patterns, got[1])

            fast = (patterns[0], build)

        groups: list[tuple[GroupWork, GroupResult, SetAcks]] = []
        acks = SetAcks()
        for g, t in walk_envelopes(work, on_st, keep_txns=False, fast=fast):
            if type(t) is FastSet:
                acks.append(t.control)  # accepted as is: its ST02 says it all (below)
                yield t if light else t.result  # type: ignore[misc]
                continue
            if t is not None:
                tr = _transaction(t, g, mappers.pop(id(t), None))
                t.segments = [t.st]
                if (
                    tr.ack_code == "A"
                    and tr.set_id == "850"
                    and tr.implementation_ref is None
                    and not tr.ak5_codes
                    and not tr.segment_notes
                ):
                    acks.append(tr.control_number)  # the common set: its ST02 says it all
                else:
                    acks.append(
                        SetAck(
                            tr.set_id,
                            tr.control_number,
                            tr.implementation_ref,
                            tr.accepted,
                            tr.ack_code,
                            tuple(tr.ak5_codes) or _NONE,
                            tuple(tr.segment_notes) or _NONE,
                        )
                    )
                yield tr
            else:
                gr = _group(g, acks)
                groups.append((g, gr, acks))
                acks = SetAcks()
                yield gr
        key = (raw.isa.el(5), raw.isa.el(6), raw.isa.el(13).lstrip("0"))
        if key in seen:  # an earlier, usable copy: this one is the duplicate
            work.findings.append(
                Finding(
                    "x12.duplicate_interchange",
                    f"Interchange control number {raw.isa.el(13)} from {key[0]}:{key[1]} "
                    "appears twice in this file; the second copy was not used.",
                    where=work.where,
                    action="Nothing to do if it is a repeat; otherwise ask the partner to "
                    "resend with a new control number.",
                    ta1_note="025",
                )
            )
        ic = _interchange(
            work,
            groups,
            our_id=self._our_id,
            our_qualifier=self._our_qualifier,
            next_control=self._next_control,
            now=now,
        )
        yield ic
        return ic


_NONE: tuple = ()


def _discard(seg: object) -> None:
    return None


def parse(
    data: bytes,
    *,
    partner_id: str | None = None,
    source_ref: str | None = None,
    received_at: datetime | None = None,
    our_id: str | None = None,
    our_qualifier: str = "ZZ",
    next_control_number: Callable[[], int] | None = None,
    max_bytes: int = MAX_BYTES,
) -> X12Result:
    """Read an EDI file whole (every set's result and order held; :class:`X12Stream` reads
    it set by set in bounded memory).

    :param partner_id: our id for the trading partner (else ISA06 stands in for it in
        order ids and provenance).
    :param source_ref: file name or inbox reference, kept in each order's provenance.
    :param received_at: when the file arrived (UTC; naive values are taken as UTC). Also the
        timestamp of the acknowledgments built here.
    :param our_id, our_qualifier: how our 997/TA1 name us (default: the id they addressed).
    :param next_control_number: allocates ISA13/GS06 of each acknowledgment built here
        (default 1, 2, 3… per call: provisional; the store re-renders with
        :func:`build_997` / :func:`build_ta1` and numbers it allocates).
    :param max_bytes: larger input is quarantined unread.
    """
    stream = X12Stream(
        data,
        partner_id=partner_id,
        source_ref=source_ref,
        received_at=received_at,
        our_id=our_id,
        our_qualifier=our_qualifier,
        next_control_number=next_control_number,
        max_bytes=max_bytes,
    )
    result = stream.result
    pending: list[TransactionResult] = []
    for ev in stream:
        if isinstance(ev, TransactionResult):
            pending.append(ev)
        elif isinstance(ev, GroupResult):
            ev.transactions, pending = pending, []
        else:
            result.interchanges.append(ev)
            for g in ev.groups:
                if g.rejected or ev.rejected:  # nothing from an unusable envelope is used
                    for tr in g.transactions:
                        tr.accepted = False
                        tr.order = None
                        tr.change = None
    if stream.failed:
        result.interchanges = []
    return result


def _codes(findings: list[Finding], attr: str) -> list[str]:
    out: list[str] = []
    for f in sorted(findings, key=lambda f: f.severity != "reject"):
        code = getattr(f, attr)
        if f.severity != "info" and code and code not in out:
            out.append(code)
    return out


def _outcome(findings: list[Finding]) -> str:
    if any(f.severity == "reject" for f in findings):
        return "R"
    if any(f.severity == "note" for f in findings):
        return "E"
    return "A"


def _isa_date(v: str) -> date | None:
    return x12_date(v) if len(v) == 6 else None


def _interchange(
    work: InterchangeWork,
    groups: list[tuple[GroupWork, GroupResult, SetAcks]],
    *,
    our_id: str | None,
    our_qualifier: str,
    next_control: Callable[[], int],
    now: datetime,
) -> InterchangeResult:
    raw: RawInterchange = work.raw
    isa = raw.isa
    rejected = any(f.severity == "reject" for f in work.findings)
    ta1_code = _outcome(work.findings)
    notes = _codes(work.findings, "ta1_note")
    ic = InterchangeResult(
        sender_qualifier=isa.el(5),
        sender_id=isa.el(6),
        receiver_qualifier=isa.el(7),
        receiver_id=isa.el(8),
        date=_isa_date(isa.el(9)),
        time=isa.el(10),
        control_number=isa.el(13),
        version=isa.el(12),
        ack_requested=isa.el(14) == "1",
        usage=isa.el(15),
        delimiters=isa.delimiters,
        segment_index=raw.isa_index,
        rejected=rejected,
        ta1_code=ta1_code,  # type: ignore[arg-type]
        ta1_note=notes[0] if notes else ("022" if ta1_code != "A" else "000"),
        errors=[f.error() for f in work.findings],
        received_ta1=[
            {
                "control_number": s.el(1),
                "date": s.el(2),
                "time": s.el(3),
                "ack_code": s.el(4),
                "note_code": s.el(5),
            }
            for s in work.ta1_segments
        ],
        groups=[gr for _, gr, _ in groups],
    )
    if ic.ack_requested or ic.ta1_code != "A":
        ic.ta1 = build_ta1(
            ic, our_id=our_id, our_qualifier=our_qualifier, control_number=next_control(), now=now
        )
    if not ic.rejected:
        for gw, gr, sets in groups:
            if gw.gs is not None and gr.functional_id != "FA":
                gr.ack_997 = build_997(
                    gr,
                    ic,
                    our_id=our_id,
                    our_qualifier=our_qualifier,
                    control_number=next_control(),
                    now=now,
                    sets=sets,
                )
    return ic


def _group(g: GroupWork, sets: SetAcks) -> GroupResult:
    rejected = any(f.severity == "reject" for f in g.findings)
    own = ["A" if type(t) is str else t.ack_code for t in sets.compact()]
    if rejected or (own and all(c == "R" for c in own)):
        code = "R"
    elif any(c == "R" for c in own):
        code = "P"
    elif any(c == "E" for c in own) or _outcome(g.findings) == "E":
        code = "E"
    else:
        code = "A"
    return GroupResult(
        functional_id=g.el(1),
        sender=g.el(2),
        receiver=g.el(3),
        date=g.el(4),
        time=g.el(5),
        control_number=g.el(6),
        agency=g.el(7) or "X",
        version=g.el(8),
        declared_count=g.ge.el(1) if g.ge is not None else None,
        segment_index=g.gs.index if g.gs is not None else (g.first_st_index or 0),
        rejected=rejected,
        ack_code=code,  # type: ignore[arg-type]
        ak9_codes=_codes(g.findings, "ak9_code"),
        errors=[f.error() for f in g.findings],
    )


def _transaction(
    t: TxnWork, g: GroupWork, mapper: Mapper850 | Mapper860 | None
) -> TransactionResult:
    findings = list(t.findings)
    order = po_number = ack = change = None
    if any(f.code == "x12.functional_group_mismatch" for f in findings):
        pass  # in the wrong kind of group: not read as what it claims to be
    elif t.set_id in _MAPPERS and mapper is not None:
        order, po_number, more = mapper.result()
        change = mapper.change
        findings += more
    elif t.set_id == "997" and g.el(1) in ("FA", ""):
        ack, more = read_997(t)
        findings += more
    elif t.set_id:
        name = {"855": "purchase order acknowledgment", "856": "ship notice", "810": "invoice"}
        what = name.get(t.set_id, "")
        findings.append(
            Finding(
                "x12.unsupported_transaction",
                f"Transaction set {t.set_id}{f' ({what})' if what else ''}, ST {t.control}, is "
                "not one OrderFlow takes from partners: the EDI channel reads 850 purchase "
                "orders, 860 purchase order changes (and 997 acknowledgments).",
                where=t.where(),
                action="Rejected in our 997 (AK5 R 1). If the partner sent it to the wrong "
                "address, tell them.",
                ak5_code="1",
            )
        )
    code = _outcome(findings)
    accepted = code != "R"
    notes = _merge_notes(
        [f.segment_note for f in findings if f.segment_note is not None and f.severity != "info"]
    )
    return TransactionResult(
        set_id=t.set_id,
        control_number=t.control,
        implementation_ref=t.st.el(3) or None,
        segment_count=t.count,
        declared_segment_count=t.se.el(1) if t.se is not None else None,
        segment_index=t.st.index,
        accepted=accepted,
        ack_code=code,  # type: ignore[arg-type]
        ak5_codes=_codes(findings, "ak5_code"),
        segment_notes=notes,
        errors=[f.error() for f in findings],
        po_number=po_number,
        order=order if accepted else None,
        change=change if accepted else None,
        acknowledgment=ack,
    )


def _merge_notes(notes: list[SegmentNote]) -> list[SegmentNote]:
    """One AK3 per segment, its AK4s without repeats, in segment order."""
    merged: dict[tuple[str, int], SegmentNote] = {}
    for n in notes:
        key = (n.segment_id, n.position)
        if key not in merged:
            merged[key] = n.model_copy(deep=True)
            continue
        into = merged[key]
        into.code = into.code or n.code
        seen = {(e.position, e.code) for e in into.elements}
        into.elements += [e for e in n.elements if (e.position, e.code) not in seen]
    return sorted(merged.values(), key=lambda n: n.position)
