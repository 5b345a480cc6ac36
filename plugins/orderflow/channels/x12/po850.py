"""850 Purchase Order → canonical :class:`~orderflow.domain.models.Order`.

Severity of what can go wrong in an 850 (see ``results`` for A/E/R):

- reject (AK5 R): no BEG, no PO number (BEG03), no or bad PO date (BEG05), no PO1, a PO1
  quantity that is missing, not a number or negative, no unit of measure (PO103), a unit
  price that is not a number or negative. The order cannot be built faithfully from it.
- note (AK5 E, the order is created): CTT01 ≠ number of PO1 segments (the lines are all
  there — SE01 vouches for that — the sender's control total is wrong); X12 syntax notes
  violated in segments we read (PO1 P0607…P2425 product id pairs, C0504; PO4 C0506, P0607,
  P0809; N1 P0304); a date that is not a date in DTM.
- info (AK5 A, the order is created; recorded for the people downstream): a PO1 with
  quantity 0 is left out of the order (nothing to ship; X12-wise it is valid), a line that
  asks for its own ship-to.

Mapping: BEG (purpose, type, PO number, date, release → ``references["RE"]``, contract →
``references["CT"]``), CUR, REF, PER (→ ``contacts``, never logged), DTM (002/106/996/074/
077/064 delivery, 010/037/118 ship, 001/177 cancel after; others → notes), TD5, N1 loops
(ST ship-to, BT bill-to, BY buyer — SO/OB stand in for a missing BY) with N2/N3/N4, ITD
(→ "2% 10 NET 30"), SAC (SAC05 has two implied decimals), N9/MSG/NTE (→ notes), PO1 (every
qualifier/value pair), PID, PO4 (→ ``pack``), line DTM, CTT.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from orderflow.domain.changes import ChangeKind, OrderChange
from orderflow.domain.models import (
    CURRENCY_PATTERN,
    MAX_CODE_CHARS,
    MAX_ID_CHARS,
    MAX_INT,
    Address,
    Channel,
    Charge,
    Order,
    OrderLine,
    ProductId,
    Provenance,
    order_id_for,
    unstorable_char,
)

from . import prechecked
from .elements import MAX_PO1_LOOPS, check_segment, count_value, x12_date
from .findings import RESEND, Finding
from .reader import Segment
from .results import ElementNote, SegmentNote
from .validate import TxnWork

_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$", re.ASCII)
_N1_LOOP = {"N1", "N2", "N3", "N4", "NX2", "REF", "PER", "SI", "FOB", "TD1", "TD5", "TD3"}
_N1_LOOP |= {"TD4", "PKG"}
_LINE_N1_LOOP = _N1_LOOP | {"DTM", "QTY", "SCH"}
_PURPOSE = {
    "00": "original",
    "07": "original",  # duplicate
    "18": "original",  # reissue
    "01": "cancel",
    "03": "cancel",  # delete
    "04": "replace",  # change
    "05": "replace",
    "06": "confirmation",
}
#: BEG01 codes that are a change to an order sent before, not a new order: the set maps to
#: an :class:`OrderChange` (``TransactionResult.change``), never to a second order
CHANGE_PURPOSES = {"01": ChangeKind.CANCEL, "03": ChangeKind.CANCEL}
CHANGE_PURPOSES |= {"04": ChangeKind.REPLACE, "05": ChangeKind.REPLACE}
_DELIVERY = ("002", "106", "996", "074", "077", "064", "071")
_SHIP = ("010", "037", "118", "068")
_CANCEL = ("001", "177")
_LINE_SHIP = ("010", "037", "068", "002", "106", "996", "074", "064")
_DTM_NAMES = {
    "001": "cancel after",
    "002": "delivery requested",
    "010": "requested ship",
    "037": "ship not before",
    "038": "ship no later",
    "063": "do not deliver after",
    "064": "do not deliver before",
    "106": "required by",
    "118": "requested pick-up",
    "177": "cancellation",
    "196": "start",
    "197": "end",
    "004": "purchase order",
}
_ITD_TYPES = {
    "01": "Basic",
    "02": "End of month",
    "03": "Fixed date",
    "05": "Discount not applicable",
    "08": "Basic discount offered",
    "14": "Previously agreed upon",
}
_FIVE_EMPTY = ["", "", "", "", ""]
_PO1_REF = {1: "350", 2: "330", 3: "355", 4: "212", 5: "639"}
_PO1_REF |= {q: "235" if q % 2 == 0 else "234" for q in range(6, 26)}
_LINE_FIELDS = {"source_line_id": 1, "quantity": 2, "uom": 3, "unit_price": 4, "price_basis": 5}
_LOOP_OF = {"PO1": "PO1", "PID": "PO1", "PO4": "PO1", "N1": "N1", "CTT": "CTT", "N9": "N9"}
_LOOP_OF |= {"SAC": "SAC"}
# pydantic error type → AK403 (5: longer than OrderFlow can hold, 4: too short, 6: invalid)
_AK403_FOR = {
    "decimal_max_digits": "5",
    "decimal_max_places": "5",
    "decimal_whole_digits": "5",
    "string_too_long": "5",
    "too_long": "5",
    "string_too_short": "4",
}


@dataclass(slots=True)
class MapContext:
    partner_id: str | None
    sender_id: str
    interchange_control: str
    group_control: str
    version: str  # GS08: six-digit dates before 004010
    source_ref: str | None = None
    received_at: datetime | None = None
    document_sha256: str | None = None
    element: str | None = None  # the interchange's element separator (fast element checks)


@dataclass(slots=True)
class _Party:
    seg: Segment
    n2: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    n4: Segment | None = None
    pers: list[Segment] = field(default_factory=list)

    @property
    def code(self) -> str:
        return self.seg.el(1)

    def address(self) -> Address:
        n4 = self.n4
        paired = bool(self.seg.el(3)) and bool(self.seg.el(4))  # syntax note P0304
        values = {
            "name": self.seg.el(2) or (self.n2[0] if self.n2 else None) or None,
            "party_id_qualifier": self.seg.el(3) if paired else None,
            "party_id": self.seg.el(4) if paired else None,
            "address_lines": [*(self.n2[1:] if not self.seg.el(2) else self.n2), *self.lines],
            "city": (n4.el(1) or None) if n4 else None,
            "region": (n4.el(2) or None) if n4 else None,
            "postal_code": (n4.el(3) or None) if n4 else None,
            "country": (n4.el(4) or None) if n4 else None,
        }
        if prechecked.ENABLED:
            texts = prechecked.Strings()
            texts.add(values["party_id_qualifier"], prechecked.CODE)
            texts.add(values["party_id"], prechecked.ID)
            for key in ("name", "city", "region", "postal_code", "country"):
                texts.add(values[key], prechecked.TEXT)
            texts.add_all(values["address_lines"], prechecked.TEXT)
            if texts.ok():
                return _ADDRESS(**values)
        return Address(**values)


class _Line:
    """One PO1 loop: its PO1 and what the loop added. The lists start as one shared empty
    tuple and become lists at their first item (most lines have none: five empty lists were
    most of the memory of a held line, and a PO holds up to 100,000 of them)."""

    __slots__ = ("dtms", "parties", "pids", "po4", "sacs", "seg")

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.pids: list[str] | tuple = ()
        self.po4: list[Segment] | tuple = ()
        self.dtms: list[Segment] | tuple = ()
        self.sacs: list[Segment] | tuple = ()
        self.parties: list[_Party] | tuple = ()

    def bare(self) -> bool:
        """The loop is its PO1 alone."""
        return not (self.pids or self.po4 or self.dtms or self.sacs or self.parties)

    def add(self, name: str, item: object) -> None:
        have = getattr(self, name)
        if have:
            have.append(item)
        else:
            setattr(self, name, [item])


class _DroppedLine(_Line):
    """The open loop of a PO1 past the loop limit: what the loop adds is not kept."""

    __slots__ = ()

    def add(self, name: str, item: object) -> None:
        return None


_DROPPED = _DroppedLine(Segment("PO1", ["PO1"], 0))


class _Mapper:
    def __init__(self, t: TxnWork, ctx: MapContext) -> None:
        self.t = t
        self.ctx = ctx
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self._flagged: set[tuple[int, int]] = set()  # (segment index, element) reported
        # the walk's state: segments arrive one at a time (feed), the order is built at SE
        self.beg: Segment | None = None
        self.first_beg: Segment | None = None
        self.first_pid: Segment | None = None  # first PID with a description (PID05)
        self.last: Segment | None = None
        self.currency: str | None = None
        self.refs: dict[str, str] = {}
        self.contacts: list[str] = []
        self.dtms: list[tuple[str, date]] = []
        self.td5s: list[Segment] = []
        self.itds: list[Segment] = []
        self.charges: list[Charge] = []
        self.parties: list[_Party] = []
        self.lines: list[_Line] = []
        self.n_lines = 0  # PO1 segments seen (lines past MAX_PO1_LOOPS are only counted)
        self.extra: Segment | None = None  # the first PO1 past MAX_PO1_LOOPS
        self.over_findings: list[Finding] = []  # line findings, made when the limit was passed
        self.element_errors: list[tuple[Segment, list]] = []  # check_segment, in body order
        self.ctt: Segment | None = None
        self.state = "header"
        self.party: _Party | None = None
        self.n9: Segment | None = None
        self._line_now: _Line = None  # type: ignore[assignment]  # the open PO1 loop
        self.change: OrderChange | None = None  # BEG01 01/03 cancel, 04/05 replace
        self.digest: str | None = None  # sha256 of the body, for a change (its reference)

    # -------------------------------------------------------------- findings helpers
    def _finding(
        self,
        seg: Segment,
        code: str,
        message: str,
        *,
        severity: str = "reject",
        element: int | None = None,
        ref: str | None = None,
        syntax: str | None = None,
        value: str | None = None,
        loop: str | None = None,
        ak304: str | None = "8",
        action: str | None = None,
    ) -> None:
        if element is not None and severity != "info":
            self._flagged.add((seg.index, element))
        elements = (
            [ElementNote(position=element, reference=ref, code=syntax, value=value or None)]
            if element is not None and syntax is not None
            else []
        )
        note = SegmentNote(
            segment_id=seg.tag,
            position=self.t.position(seg),
            loop_id=loop,
            # AK304 8 "segment has data element errors" only when an AK4 follows
            code=ak304 if elements or ak304 != "8" else None,
            elements=elements,
        )
        self.findings.append(
            Finding(
                code,
                message,
                where=self.t.where(seg, element),
                action=action or (RESEND if severity == "reject" else None),
                severity=severity,  # type: ignore[arg-type]
                ak5_code="5" if severity != "info" else None,
                segment_note=note if severity != "info" else None,
            )
        )

    def _pos(self, seg: Segment) -> int:
        return self.t.position(seg)

    # -------------------------------------------------------------- values
    def _dtm(self, seg: Segment, loop: str | None) -> tuple[str, date] | None:
        qual = seg.el(1)
        raw = seg.el(2)
        if not raw and seg.el(6) in ("D8", "RD8", "D6") and seg.el(7):
            raw = seg.el(7).split("-")[0]
        d = _date(raw, seg.el(5))
        if d is None:
            self._finding(
                seg,
                "x12.850_bad_date",
                f"DTM {qual} date {raw!r} is not a valid date (CCYYMMDD); it was ignored.",
                severity="note",
                element=2,
                ref="373",
                syntax="8",
                value=raw,
                loop=loop,
                action="Ask the partner to send CCYYMMDD dates; check the order's dates by hand.",
            )
            return None
        return qual, d

    # -------------------------------------------------------------- walk
    def run(self) -> tuple[Order | None, str | None]:
        """Map a set whose segments are all held (``t.segments``)."""
        t = self.t
        body = t.segments[1:-1] if t.se is not None else t.segments[1:]
        for seg in body:
            self.feed(seg)
        return self.finish()

    def feed(self, seg: Segment) -> None:
        """One body segment (between ST and SE), in order."""
        tag = seg.tag
        self.last = seg
        if tag == "BEG" and self.first_beg is None:
            self.first_beg = seg
        elif tag == "PID" and self.first_pid is None and seg.el(5):
            self.first_pid = seg
        if tag == "PO1":
            self.n_lines += 1
            if self.n_lines > MAX_PO1_LOOPS:
                # the set is rejected (too many lines): lines past the limit are counted,
                # never mapped or kept; the ones kept so far are checked and released now
                if self.extra is None:
                    self.extra = seg
                    found, self.findings = self.findings, []
                    self._lines(self.lines, [], keep=False)
                    self.over_findings, self.findings = self.findings, found
                    self.lines = []
                self._line_now = _DROPPED  # its loop's segments go nowhere
            else:
                self._line_now = _Line(seg)
                self.lines.append(self._line_now)
            self.state = "line"
            if self.extra is None:
                self._check(seg)
            return
        if self.extra is None:
            self._check(seg)
        if tag == "CTT":
            self.ctt = seg
            self.state = "summary"
            return
        state = self.state
        if state == "summary":
            return
        if state.startswith("header"):
            if tag == "N1":
                self.party = _Party(seg)
                self.parties.append(self.party)
                self._check_n1(seg, "N1")
                self.state = "header_party"
                return
            if state == "header_party" and tag in _N1_LOOP:
                self._party_add(self.party, seg)  # type: ignore[arg-type]
                return
            if tag == "N9":
                self.n9 = seg
                if seg.el(2):
                    self.refs.setdefault(seg.el(1), seg.el(2))
                self.state = "header_n9"
                return
            if state == "header_n9" and tag in ("DTM", "MSG"):
                if tag == "MSG" and seg.el(1):
                    n9 = self.n9
                    label = n9.el(3) or n9.el(2) or n9.el(1) if n9 else ""
                    self.notes.append(f"{label}: {seg.el(1)}" if label else seg.el(1))
                return
            if tag == "SAC":
                self.charges.append(self._charge(seg, None))
                self.state = "header_sac"
                return
            if state == "header_sac" and tag == "CUR":
                return
            self.state = "header"
            if tag == "BEG":
                self.beg = self.beg or seg
            elif tag == "CUR":
                cur = seg.el(2).upper()
                if self.currency is None and re.fullmatch(r"[A-Z]{3}", cur):
                    self.currency = cur
            elif tag == "REF":
                val = seg.el(2) or seg.el(3)
                refs = self.refs
                if seg.el(1) and val:
                    refs[seg.el(1)] = (
                        val
                        if seg.el(1) not in refs or refs[seg.el(1)] == val
                        else f"{refs[seg.el(1)]}; {val}"
                    )
            elif tag == "PER":
                self.contacts.append(_contact(seg, None))
            elif tag == "DTM":
                got = self._dtm(seg, None)
                if got:
                    self.dtms.append(got)
            elif tag == "TD5":
                self.td5s.append(seg)
            elif tag == "ITD":
                self.itds.append(seg)
            elif tag in ("MSG", "NTE"):
                text = seg.el(2) if tag == "NTE" else seg.el(1)
                if text:
                    self.notes.append(text)
            return
        # ---- detail (inside a PO1 loop)
        line = self._line_now
        if tag == "N1":
            self.party = _Party(seg)
            line.add("parties", self.party)
            self._check_n1(seg, "N1")
            self.state = "line_party"
        elif state == "line_party" and tag in _LINE_N1_LOOP:
            self._party_add(self.party, seg)  # type: ignore[arg-type]
        elif tag == "SLN" or state == "sln":
            self.state = "sln"  # sub-line detail: not part of the canonical line
        else:
            self.state = "line"
            if tag == "PID":
                if seg.el(5):
                    line.add("pids", seg.el(5))
            elif tag == "PO4":
                line.add("po4", seg)
                self._check_po4(seg)
            elif tag == "DTM":
                line.add("dtms", seg)
            elif tag == "SAC":
                line.add("sacs", seg)

    def _check(self, seg: Segment) -> None:
        errs = check_segment(seg.elements, self.ctx.element)
        if errs:
            self.element_errors.append((seg, errs))

    def finish(self) -> tuple[Order | None, str | None]:
        """The order (None when rejected) and the PO number, once every segment was fed."""
        t = self.t
        beg, ctt, lines = self.beg, self.ctt, self.lines
        charges, refs, contacts, dtms = self.charges, self.refs, self.contacts, self.dtms
        currency, parties = self.currency, self.parties
        po_number = beg.el(3) if beg is not None else None
        ok = self._check_beg(beg)
        po_date = _date(beg.el(5)) if beg is not None and ok else None
        if self.extra is not None:
            self.findings += self.over_findings
            order_lines: list[OrderLine] = []
        else:
            order_lines = self._lines(lines, charges)
        kind = CHANGE_PURPOSES.get(beg.el(1)) if beg is not None else None
        if kind is ChangeKind.CANCEL:  # a cancellation needs no lines (sent ones are ignored)
            pass
        elif not self.n_lines:
            anchor = ctt or t.se or self.last or t.st
            self._finding(
                anchor,
                "x12.850_no_lines",
                f"Purchase order {po_number or '?'} has no PO1 line items.",
                ak304=None,
                action=RESEND,
            )
            self.findings[-1].segment_note = SegmentNote(
                segment_id="PO1", position=self._pos(anchor), loop_id="PO1", code="3"
            )
        elif not order_lines and not self._rejected() and lines:
            self._finding(
                lines[0].seg,
                "x12.850_no_lines",
                f"Purchase order {po_number or '?'} has no line with a quantity above 0.",
                severity="reject",
                element=2,
                ref="330",
                syntax="6",
                value="0",
                loop="PO1",
            )
        if ctt is not None:
            self._check_ctt(ctt, self.n_lines)
        self._check_elements()
        if self.extra is not None:
            self._finding(
                self.extra,
                "x12.850_too_many_lines",
                f"Purchase order {po_number or '?'} has {self.n_lines:,} PO1 line items; the "
                f"850's PO1 loop repeats at most {MAX_PO1_LOOPS:,} times.",
                loop="PO1",
                ak304="4",
                action="Ask the partner to split the order. " + RESEND,
            )

        if self._rejected() or beg is None or not po_number:
            return None, po_number
        ctx = self.ctx
        if kind is ChangeKind.CANCEL:
            self.change = OrderChange(
                kind=kind,
                po_number=po_number,
                channel=Channel.EDI,
                partner_id=ctx.partner_id or ctx.sender_id,
                reference=self._reference(beg),
                reason="; ".join(self.notes) or f"850 BEG01 {beg.el(1)} (cancellation)",
            )
            return None, po_number

        buyer = ship_to = bill_to = None
        for p in parties:
            code = p.code
            if code == "ST" and ship_to is None:
                ship_to = p.address()
            elif code == "BT" and bill_to is None:
                bill_to = p.address()
            elif code == "BY" and buyer is None:
                buyer = p.address()
            else:
                ident = f" ({p.seg.el(3)} {p.seg.el(4)})" if p.seg.el(4) else ""
                self.notes.append(f"party {code}: {p.seg.el(2) or '(no name)'}{ident}")
            contacts += [_contact(s, code) for s in p.pers]
        if buyer is None:
            for p in parties:
                if p.code in ("SO", "OB"):
                    buyer = p.address()
                    break
        ship_to = self._line_ship_tos(lines, ship_to, order_lines)
        requested_delivery, requested_ship, cancel_after = header_dates(dtms, self.notes)
        purpose_code = beg.el(1)
        purpose = _PURPOSE.get(purpose_code, "original")
        if purpose_code not in _PURPOSE:
            self.notes.append(f"BEG01 purpose code {purpose_code!r} read as original")
        if beg.el(4):
            refs.setdefault("RE", beg.el(4))
        if beg.el(6):
            refs.setdefault("CT", beg.el(6))
        values = {
            "order_id": order_id_for(
                "edi",
                ctx.partner_id or ctx.sender_id,
                po_number,
                f"{ctx.interchange_control}:{ctx.group_control}:{t.control}",
            ),
            "po_number": po_number,
            "po_date": po_date,
            "purpose": purpose,
            "order_type": beg.el(2) or None,
            "buyer": buyer,
            "ship_to": ship_to,
            "bill_to": bill_to,
            "currency": currency or "USD",
            "requested_ship_date": requested_ship,
            "requested_delivery_date": requested_delivery,
            "cancel_after": cancel_after,
            "carrier_routing": _routing(self.td5s),
            "payment_terms": _terms(self.itds),
            "references": refs,
            "contacts": contacts,
            "charges": charges,
            "notes": self.notes,
            "lines": order_lines,
            "declared_line_count": count_value(ctt.el(1), 6) if ctt else None,
        }
        source = {
            "channel": Channel.EDI,
            "partner_id": ctx.partner_id or ctx.sender_id,
            "source_ref": ctx.source_ref,
            "document_sha256": ctx.document_sha256,
            "interchange_control_number": ctx.interchange_control,
            "group_control_number": ctx.group_control,
            "transaction_control_number": t.control,
            "received_at": ctx.received_at,
        }
        order = _prechecked_order(values, source) if prechecked.ENABLED else None
        try:
            if order is None:
                order = Order(**values, provenance=Provenance(**source))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            self.findings.append(
                Finding(
                    "x12.850_invalid",
                    f"Purchase order {po_number} could not be turned into an order: {loc}: "
                    f"{first['msg']} ({exc.error_count()} problem(s)).",
                    where=t.where(),
                    action="Check the purchase order's values with the partner; " + RESEND,
                    ak5_code="5",
                )
            )
            return None, po_number
        if kind is ChangeKind.REPLACE:  # the whole order again: it replaces the one we have
            self.change = OrderChange(
                kind=kind,
                po_number=po_number,
                channel=Channel.EDI,
                partner_id=ctx.partner_id or ctx.sender_id,
                reference=self._reference(beg),
                reason=f"850 BEG01 {beg.el(1)} (replace)",
                replacement=order,
            )
            return None, po_number
        return order, po_number

    def _reference(self, beg: Segment) -> str:
        """The change's id: the partner's 850 has none, so its purpose code and the digest of
        its body (ST..SE exclusive) stand in: the same change re-sent in a new envelope has
        the same reference (stored once), a different one has another."""
        return f"850-{beg.el(1)}:{(self.digest or '')[:32]}"

    def _rejected(self) -> bool:
        return any(f.severity == "reject" for f in self.findings)

    # -------------------------------------------------------------- segments
    def _party_add(self, party: _Party, seg: Segment) -> None:
        tag = seg.tag
        if tag == "N2":
            party.n2 += [v for v in (seg.el(1), seg.el(2)) if v]
        elif tag == "N3":
            party.lines += [v for v in (seg.el(1), seg.el(2)) if v]
        elif tag == "N4":
            party.n4 = party.n4 or seg
        elif tag == "PER":
            party.pers.append(seg)

    def _check_beg(self, beg: Segment | None) -> bool:
        if beg is None:
            st = self.t.st
            self.findings.append(
                Finding(
                    "x12.850_missing_beg",
                    f"Transaction set {self.t.control} (850) has no BEG segment, so it has no "
                    "purchase order number or date.",
                    where=self.t.where(),
                    action=RESEND,
                    ak5_code="5",
                    segment_note=SegmentNote(
                        segment_id="BEG", position=self._pos(st) + 1, code="3"
                    ),
                )
            )
            return False
        if not beg.el(3):
            self._finding(
                beg,
                "x12.850_missing_po_number",
                "BEG03 (purchase order number) is empty.",
                element=3,
                ref="324",
                syntax="1",
            )
            return False
        value = beg.el(5)
        if not value or _date(value) is None:
            self._finding(
                beg,
                "x12.850_bad_date",
                f"BEG05 purchase order date {value!r} of PO {beg.el(3)} is "
                + ("missing." if not value else "not a valid date (CCYYMMDD)."),
                element=5,
                ref="373",
                syntax="1" if not value else "8",
                value=value,
            )
            return False
        return True

    def _check_n1(self, seg: Segment, loop: str) -> None:
        if bool(seg.el(3)) != bool(seg.el(4)):
            missing = 4 if seg.el(3) else 3
            self._finding(
                seg,
                "x12.syntax_note",
                f"N1*{seg.el(1)} has N10{7 - missing} without N10{missing} (syntax note "
                "P0304: id qualifier and id go together); the party id was not used.",
                severity="note",
                element=missing,
                ref="67" if missing == 4 else "66",
                syntax="2",
                loop=loop,
            )

    def _check_po4(self, seg: Segment) -> None:
        for rule, a, b in (("C0506", 5, 6), ("P0607", 6, 7), ("P0809", 8, 9)):
            va, vb = seg.el(a), seg.el(b)
            broken = (va and not vb) if rule.startswith("C") else (bool(va) != bool(vb))
            if broken:
                missing = b if va else a
                self._finding(
                    seg,
                    "x12.syntax_note",
                    f"PO4{a:02d} {va or '(empty)'} / PO4{b:02d} {vb or '(empty)'} break syntax "
                    f"note {rule}: PO4{missing:02d} is required with it.",
                    severity="note",
                    element=missing,
                    ref={5: "187", 6: "384", 7: "355", 8: "385", 9: "355"}[missing],
                    syntax="2",
                    loop="PO1",
                )

    def _check_ctt(self, ctt: Segment, n_po1: int) -> None:
        declared = ctt.el(1)
        if count_value(declared, 6) == n_po1:
            return
        self.findings.append(
            Finding(
                "x12.ctt_line_count_mismatch",
                f"CTT01 says {declared!r} line items but the purchase order has {n_po1} PO1 "
                f"segment(s) (CTT is segment {self._pos(ctt)} of the set). The order was accepted "
                f"with the {n_po1} lines received (the SE count vouches for them).",
                where=self.t.where(ctt, 1),
                action="Compare the order with the partner's paper/portal copy if in doubt; "
                "ask them to fix their CTT count.",
                severity="note",
                ak5_code="5",
                segment_note=SegmentNote(
                    segment_id="CTT", position=self._pos(ctt), loop_id="CTT", code=None
                ),
            )
        )

    def _charge(self, seg: Segment, line_no: int | None) -> Charge:
        amount: Decimal | None = None
        raw = seg.el(5)
        if raw and _NUMBER.match(raw):
            amount = Decimal(raw) if "." in raw else Decimal(raw) / 100  # N2: 2 implied decimals
        desc = seg.el(15) or None
        if seg.el(7) and not amount:
            desc = f"{desc or ''} {seg.el(7)}%".strip()
        if line_no is not None:
            desc = f"PO1 line {line_no}: {desc or ''}".strip()
        code = seg.el(2) or ":".join(v for v in (seg.el(3), seg.el(4)) if v) or None
        return Charge(indicator=seg.el(1) or "N", code=code, amount=amount, description=desc)

    def _lines(
        self, lines: list[_Line], charges: list[Charge], *, keep: bool = True
    ) -> list[OrderLine]:
        """The order's lines (their findings made); ``keep=False``: the findings only."""
        out: list[OrderLine] = []
        sep = self.ctx.element
        quiet = None if keep or not QUIET_LINES else _quiet_po1(sep)
        for n, line in enumerate(lines, start=1):
            if quiet is not None and line.bare() and quiet.fullmatch(sep.join(line.seg.elements)):
                continue  # provably no finding, and only findings are wanted
            ol = self._line(n, line, keep)
            if ol is not None and keep:
                out.append(ol)
            if line.sacs:
                charges += [self._charge(s, n) for s in line.sacs if s.el(1) in ("A", "C")]
        return out

    def _line(self, n: int, line: _Line, keep: bool = True) -> OrderLine | None:
        """Line ``n``'s order line, or None (its findings made). ``keep=False``: only the
        findings are wanted, so the model is not built when :func:`_line_fits` proves it would
        take the values (the return value is then only not None)."""
        seg = line.seg
        els = seg.elements
        # PO101..PO105 as ``seg.el`` gives them: stripped, "" when absent
        v1, qty_raw, uom, price_raw, basis = ([x.strip() for x in els[1:6]] + _FIVE_EMPTY)[:5]
        label = f"PO1 line {n}" + (f" (PO101 {v1})" if v1 else "")
        ok = True
        quantity: Decimal | None = None
        if not qty_raw or not _NUMBER.match(qty_raw):
            self._finding(
                seg,
                "x12.850_bad_quantity",
                f"{label} has "
                + (f"quantity {qty_raw!r}, not a number." if qty_raw else "no quantity (PO102)."),
                element=2,
                ref="330",
                syntax="6" if qty_raw else "1",
                value=qty_raw,
                loop="PO1",
            )
            ok = False
        else:
            quantity = Decimal(qty_raw)
            if quantity < 0:
                self._finding(
                    seg,
                    "x12.850_bad_quantity",
                    f"{label} has a negative quantity {qty_raw}.",
                    element=2,
                    ref="330",
                    syntax="6",
                    value=qty_raw,
                    loop="PO1",
                )
                ok = False
        if not uom:
            self._finding(
                seg,
                "x12.850_missing_uom",
                f"{label} has no unit of measure (PO103), so its quantity cannot be read.",
                element=3,
                ref="355",
                syntax="1",
                loop="PO1",
            )
            ok = False
        price: Decimal | None = None
        if price_raw:
            if _NUMBER.match(price_raw) and not price_raw.startswith("-"):
                price = Decimal(price_raw)
            else:
                self._finding(
                    seg,
                    "x12.850_bad_price",
                    f"{label} has unit price {price_raw!r}, not a non-negative number.",
                    element=4,
                    ref="212",
                    syntax="6",
                    value=price_raw,
                    loop="PO1",
                )
                ok = False
        if basis and not price_raw:
            self._finding(
                seg,
                "x12.syntax_note",
                f"{label} has a price basis (PO105 {basis}) but no unit price (syntax note C0504).",
                severity="note",
                element=4,
                ref="212",
                syntax="2",
                loop="PO1",
            )
        product_ids: list[dict[str, str]] = []
        n_els = len(els)
        for q in range(6, n_els, 2):
            qual = els[q].strip()
            value = els[q + 1].strip() if q + 1 < n_els else ""
            if qual and value:
                product_ids.append({"qualifier": qual, "value": value})
            elif qual or value:
                missing = q + 1 if qual else q
                self._finding(
                    seg,
                    "x12.syntax_note",
                    f"{label}: product id qualifier PO1{q:02d} {qual or '(empty)'} and id "
                    f"PO1{q + 1:02d} {value or '(empty)'} must come together (syntax note "
                    f"P{q:02d}{q + 1:02d}); the pair was not used.",
                    severity="note",
                    element=missing,
                    ref="234" if missing == q + 1 else "235",
                    syntax="2",
                    loop="PO1",
                )
        if not ok or quantity is None:
            return None
        if quantity == 0:
            self.findings.append(
                Finding(
                    "x12.850_zero_quantity",
                    f"{label} orders quantity 0; it was left out of the order.",
                    where=self.t.where(seg, 2),
                    action="Nothing to ship for it; if the partner meant another quantity, "
                    "ask them for a corrected PO (860).",
                    severity="info",
                )
            )
            self.notes.append(f"{label} with quantity 0 was left out")
            return None
        ship = None
        for q in _LINE_SHIP if line.dtms else ():
            for d in line.dtms:
                if d.el(1) == q:
                    got = self._dtm(d, "PO1")
                    if got:
                        ship = got[1]
                        break
            if ship:
                break
        if prechecked.ENABLED and _line_fits(v1, qty_raw, uom, price_raw, basis, product_ids, line):
            if not keep:
                return _FITS  # type: ignore[return-value]
            # what OrderLine(...) below would build, without validating values proven to fit
            return _LINE(
                line_no=n,
                source_line_id=v1 or None,
                product_ids=[
                    _PRODUCT_ID(qualifier=p["qualifier"], value=p["value"]) for p in product_ids
                ],
                customer_part_number=_part_number(product_ids),
                description=None,
                quantity=quantity,
                uom=uom,
                unit_price=price,
                price_basis=basis or None,
                pack=None,
                requested_ship_date=ship,
            )
        try:
            return OrderLine(
                line_no=n,
                source_line_id=v1 or None,
                product_ids=product_ids,
                customer_part_number=_part_number(product_ids),
                description="; ".join(line.pids) or None,
                quantity=quantity,
                uom=uom,
                unit_price=price,
                price_basis=basis or None,
                pack=_pack(line.po4) if line.po4 else None,
                requested_ship_date=ship,
            )
        except ValidationError as exc:
            self._model_refused(exc, line, label)
            return None

    def _model_refused(self, exc: ValidationError, line: _Line, label: str) -> None:
        """The canonical model (whose bounds are the store's) refused a line: point the 997
        at the element each value came from (AK3/AK4), never a crash or an AK5 A."""
        seg = line.seg
        pairs = [q for q in range(6, len(seg.elements), 2) if seg.el(q) and seg.el(q + 1)]
        for err in exc.errors():
            loc = err["loc"]
            field = str(loc[0]) if loc else ""
            target, element = seg, _LINE_FIELDS.get(field)
            if field == "product_ids" and len(loc) > 2 and isinstance(loc[1], int):
                q = pairs[loc[1]] if loc[1] < len(pairs) else 6
                element = q if loc[2] == "qualifier" else q + 1
            elif field == "customer_part_number":
                element = next((q + 1 for q in pairs if seg.el(q) in ("BP", "IN", "CB")), 7)
            elif field == "description" and line.pids:
                target = self.first_pid or seg
                element = 5
            elif field == "pack" and line.po4:
                target, element = line.po4[0], 1
            ref = _PO1_REF.get(element or 0) if target is seg else None
            value = target.el(element) if element else ""
            shown = value if len(value) <= 40 else f"{value[:40]}… ({len(value):,} characters)"
            name = f"{target.tag}{element:02d} {shown!r}" if element else field
            self._finding(
                target,
                "x12.850_value_out_of_range",
                f"{label}: {name} cannot be taken: {err['msg']}.",
                element=element,
                ref=ref,
                syntax=_AK403_FOR.get(str(err["type"]), "6"),
                value=value,
                loop="PO1",
                action="OrderFlow stores quantities with at most 3 decimals and 11 integer "
                "digits and prices with at most 4 decimals and 10 integer digits; ask the "
                "partner to send the value in a unit that fits. " + RESEND,
            )

    def _check_elements(self) -> None:
        """Every element of every segment the mapper reads, against its X12 definition
        (type, length, code list): AK3/AK4 detail, the set rejected. Elements a more specific
        check already reported are not reported twice. (Checked as the segments arrived;
        segments after a PO1 past the loop limit are only counted.)"""
        for seg, errs in self.element_errors:
            for err in errs:
                if (seg.index, err.position) in self._flagged:
                    continue
                self._finding(
                    seg,
                    "x12.element_invalid",
                    f"{err.message} (element {err.ref}).",
                    element=err.position,
                    ref=err.ref,
                    syntax=err.code,
                    value=err.value,
                    loop=_LOOP_OF.get(seg.tag),
                )

    def _line_ship_tos(
        self, lines: list[_Line], ship_to: Address | None, order_lines: list[OrderLine]
    ) -> Address | None:
        for n, line in enumerate(lines, start=1):
            for p in line.parties:
                if p.code != "ST":
                    continue
                addr = p.address()
                if ship_to is None:
                    ship_to = addr
                elif _addr_key(addr) != _addr_key(ship_to):
                    text = ", ".join(
                        v for v in (addr.name, *addr.address_lines, addr.city, addr.party_id) if v
                    )
                    self.findings.append(
                        Finding(
                            "x12.850_line_ship_to",
                            f"PO1 line {n} asks for its own ship-to ({text}), different from "
                            "the order's.",
                            where=self.t.where(p.seg),
                            action="Split the shipment or confirm the ship-to with the buyer.",
                            severity="info",
                        )
                    )
                    self.notes.append(f"PO1 line {n} ship-to: {text}")
        return ship_to


# ------------------------------------------------------------------------------ helpers
_date = x12_date
_FITS = object()
_LINE = prechecked.Prechecked(OrderLine)
_PRODUCT_ID = prechecked.Prechecked(ProductId)
_ADDRESS = prechecked.Prechecked(Address)
_PROVENANCE = prechecked.Prechecked(Provenance)
_ORDER = prechecked.Prechecked(Order)


#: set to False to check every line of a set over the loop limit in full (the reference the
#: equivalence test compares with)
QUIET_LINES = True
_QUIET: dict[str | None, re.Pattern[str] | None] = {}
# values a PO1 can hold that no check of ``_Mapper._line`` remarks on, well inside the model's
# bounds: letters, digits and ``-./`` inside; quantities above zero that fit numeric(14, 3)
_QUIET_ID = "[A-Za-z0-9](?:[A-Za-z0-9./-]{0,46}[A-Za-z0-9])?"
_QUIET_QTY = r"(?=[0-9.]*[1-9])(?:[0-9]{1,11}(?:\.[0-9]{0,3})?|\.[0-9]{1,3})"
_QUIET_PRICE = r"(?:[0-9]{1,10}(?:\.[0-9]{0,4})?|\.[0-9]{1,4})"


def _quiet_po1(sep: str | None) -> re.Pattern[str] | None:
    """A regex a PO1's text (its elements joined by ``sep``) fully matches only when
    :meth:`_Mapper._line` makes no finding and no note of it as a bare loop (no PID, PO4,
    DTM, SAC or N1): a quantity above zero, a unit, a price basis only after a price,
    product ids in complete pairs, every value of letters and digits (``-./`` inside), short
    enough for the model (``_line_fits``). What it does not match is checked in full. None
    for a separator that could be part of such a value."""
    if sep in _QUIET:
        return _QUIET[sep]
    found = None
    if sep is not None and len(sep) == 1 and not sep.isalnum() and sep not in "-./ \t\r\n":
        e = re.escape(sep)
        found = re.compile(
            f"PO1{e}(?:{_QUIET_ID})?{e}{_QUIET_QTY}{e}[A-Z0-9]{{2}}"
            f"(?:{e}(?P<price>{_QUIET_PRICE})?"
            f"(?:{e}(?(price)(?:[A-Z]{{2}})?|)(?:{e}[A-Z0-9]{{2}}{e}{_QUIET_ID}){{0,10}})?)?"
        )
    if len(_QUIET) < 64:
        _QUIET[sep] = found
    return found


def _line_fits(
    v1: str,
    qty: str,
    uom: str,
    price: str,
    basis: str,
    product_ids: list[dict[str, str]],
    line: _Line,
) -> bool:
    """True only when :class:`OrderLine` would take a line built from these values (stripped,
    quantity above 0 already checked) unchanged — a conservative subset of the model's
    bounds (see ``prechecked``): codes at most MAX_CODE_CHARS, ids at most MAX_ID_CHARS,
    storable, no PID/PO4 text (left to the model). False means "ask the model"."""
    if line.pids or line.po4 or prechecked.FITS_QUANTITY.fullmatch(qty) is None:
        return False
    if price and prechecked.FITS_PRICE.fullmatch(price) is None:
        return False
    if len(v1) > MAX_ID_CHARS or not 0 < len(uom) <= MAX_CODE_CHARS or len(basis) > MAX_CODE_CHARS:
        return False
    texts = [v1, uom, basis]
    for p in product_ids:
        q, v = p["qualifier"], p["value"]
        if len(q) > MAX_CODE_CHARS or len(v) > MAX_ID_CHARS:
            return False
        texts += (q, v)
    return unstorable_char("".join(texts)) is None


def _prechecked_order(values: dict, source: dict) -> Order | None:
    """``Order(**values, provenance=Provenance(**source))`` without validation when every
    value provably passes it unchanged (see ``prechecked``); None: let the model decide."""
    texts = prechecked.Strings()
    texts.add(source["partner_id"], prechecked.ID)
    texts.add(source["source_ref"], prechecked.TEXT)
    for key in (
        "document_sha256",
        "interchange_control_number",
        "group_control_number",
        "transaction_control_number",
    ):
        texts.add(source[key], prechecked.ID)
    received = source["received_at"]
    if received is not None and (type(received) is not datetime or received.utcoffset() is None):
        return None
    texts.add(values["order_id"], prechecked.ID, required=True)
    texts.add(values["po_number"], prechecked.ID, required=True)
    texts.add(values["purpose"], prechecked.CODE)
    texts.add(values["order_type"], prechecked.CODE)
    texts.add(values["carrier_routing"], prechecked.TEXT)
    texts.add(values["payment_terms"], prechecked.TEXT)
    texts.add_all(values["references"], prechecked.TEXT)
    texts.add_all(values["references"].values(), prechecked.TEXT)
    texts.add_all(values["contacts"], prechecked.TEXT)
    texts.add_all(values["notes"], prechecked.TEXT)
    count = values["declared_line_count"]
    if (
        not values["lines"]
        or _CURRENCY.fullmatch(values["currency"]) is None
        or (count is not None and not 0 <= count <= MAX_INT)
        or not texts.ok()
    ):
        return None
    order = _ORDER(
        **values
        | {
            "references": dict(values["references"]),
            "contacts": list(values["contacts"]),
            "charges": list(values["charges"]),
            "notes": list(values["notes"]),
            "lines": list(values["lines"]),
        },
        provenance=_PROVENANCE(**source),
    )
    try:
        Order._fits_the_store(order)  # the model's own whole-order check (line numbers, total)
    except ValueError:
        return None
    return order


_CURRENCY = re.compile(CURRENCY_PATTERN.removeprefix("^").removesuffix("$"))


def _part_number(product_ids: list[dict[str, str]]) -> str | None:
    """The buyer's part number: the first BP id, else IN, else CB."""
    for q in ("BP", "IN", "CB"):
        for p in product_ids:
            if p["qualifier"] == q:
                return p["value"]
    return None


def _first_qual(dtms: list[tuple[str, date]], quals: tuple[str, ...]) -> str | None:
    for q in quals:
        if any(qual == q for qual, _ in dtms):
            return q
    return None


def header_dates(dtms: list, notes: list[str]) -> tuple:
    """(requested delivery, requested ship, cancel after) from the header DTMs; a DTM of
    another qualifier, or a second one of the same, becomes a note."""
    if not dtms:  # most POs have no header DTM: nothing to look for
        return None, None, None
    chosen = {_first_qual(dtms, q) for q in (_DELIVERY, _SHIP, _CANCEL)}
    for qual, d in dtms:
        if qual not in chosen:
            notes.append(f"DTM {qual} ({_DTM_NAMES.get(qual, 'date')}): {d.isoformat()}")
    return _first(dtms, _DELIVERY), _first(dtms, _SHIP), _first(dtms, _CANCEL)


def _first(dtms: list[tuple[str, date]], quals: tuple[str, ...]) -> date | None:
    for q in quals:
        for qual, d in dtms:
            if qual == q:
                return d
    return None


def _first_id(ids: list[ProductId], quals: tuple[str, ...]) -> str | None:
    for q in quals:
        for pid in ids:
            if pid.qualifier == q:
                return pid.value
    return None


def _addr_key(a: Address) -> tuple:
    norm = lambda v: (v or "").strip().upper()  # noqa: E731
    return (
        norm(a.name),
        norm(a.party_id),
        tuple(norm(x) for x in a.address_lines),
        norm(a.city),
        norm(a.postal_code),
    )


def _contact(seg: Segment, party: str | None) -> str:
    head = "/".join(v for v in (party, seg.el(1)) if v)
    parts = [f"{head}: {seg.el(2)}" if seg.el(2) else head]
    for q in range(3, len(seg.elements), 2):
        if seg.el(q) and seg.el(q + 1):
            parts.append(f"{seg.el(q)} {seg.el(q + 1)}")
    return ", ".join(p for p in parts if p)


def _routing(td5s: list[Segment]) -> str | None:
    out = []
    for s in td5s:
        parts = [s.el(3), s.el(5)]
        if s.el(4):
            parts.append(f"({s.el(4)})")
        if s.el(12):
            parts.append(f"service {s.el(12)}")
        text = " ".join(p for p in parts if p)
        if text:
            out.append(text)
    return "; ".join(out) or None


def _fmt(v: str) -> str:
    try:
        return format(Decimal(v).normalize(), "f")
    except InvalidOperation:
        return v


def _terms(itds: list[Segment]) -> str | None:
    out = []
    for s in itds:
        parts = []
        if s.el(3):
            parts.append(f"{_fmt(s.el(3))}%")
            if s.el(5):
                parts.append(s.el(5))
        if s.el(7):
            parts.append(f"NET {s.el(7)}")
        text = " ".join(parts)
        if s.el(12):
            text = f"{text} ({s.el(12)})" if text else s.el(12)
        if not text:
            text = _ITD_TYPES.get(s.el(1), f"terms type {s.el(1)}") if s.el(1) else ""
        if text:
            out.append(text)
    return "; ".join(out) or None


def _pack(po4s: list[Segment]) -> str | None:
    out = []
    for s in po4s:
        parts = []
        if s.el(1):
            parts.append(f"pack {s.el(1)}")
        if s.el(2):
            parts.append(f"size {s.el(2)}" + (f" {s.el(3)}" if s.el(3) else ""))
        if s.el(4):
            parts.append(f"packaging {s.el(4)}")
        if s.el(6):
            parts.append(f"gross weight {s.el(6)}" + (f" {s.el(7)}" if s.el(7) else ""))
        if s.el(14):
            parts.append(f"inner pack {s.el(14)}")
        if parts:
            out.append(", ".join(parts))
    return "; ".join(out) or None


def map_850(t: TxnWork, ctx: MapContext) -> tuple[Order | None, str | None, list[Finding]]:
    """Map one 850 transaction set whose segments are all held. Returns the order (None when
    rejected), the PO number as sent (also when rejected, for duplicate checks) and the
    findings. :class:`Mapper850` does the same for a set streamed segment by segment."""
    m = Mapper850(t, ctx)
    for seg in t.segments[1:-1] if t.se is not None else t.segments[1:]:
        m.feed(seg)
    return m.result()


class Mapper850:
    """An 850 mapped as its segments arrive: ``feed`` each body segment (between ST and SE,
    in order; usable as ``TxnWork.sink``), then ``result()`` once the set is closed. Only
    what the order needs is kept (its PO1 loops up to the X12 maximum; past it lines are
    counted, never mapped)."""

    __slots__ = ("_failed", "_hash", "_m")

    def __init__(self, t: TxnWork, ctx: MapContext) -> None:
        if ctx.received_at is not None and ctx.received_at.tzinfo is None:
            ctx.received_at = ctx.received_at.replace(tzinfo=UTC)
        self._m = _Mapper(t, ctx)
        self._failed: ValidationError | None = None
        self._hash = None  # started at a BEG that is a change (only changes need a digest)

    @property
    def change(self) -> OrderChange | None:
        """The change the set carries (BEG01 01/03 cancel, 04/05 replace), after
        :meth:`result`; None for an original order or a rejected set."""
        return self._m.change

    def feed(self, seg: Segment) -> None:
        if self._hash is None and seg.tag == "BEG" and seg.el(1) in CHANGE_PURPOSES:
            self._hash = hashlib.sha256()
        if self._hash is not None:
            self._hash.update("\x1f".join(e.strip() for e in seg.elements).encode())
            self._hash.update(b"\x1e")
        if self._failed is not None:  # a model refused a value: only the BEG is still looked for
            if seg.tag == "BEG" and self._m.first_beg is None:
                self._m.first_beg = seg
            return
        try:
            self._m.feed(seg)
        except ValidationError as exc:
            self._failed = exc

    def result(self) -> tuple[Order | None, str | None, list[Finding]]:
        m = self._m
        t = m.t
        exc = self._failed
        if self._hash is not None:
            m.digest = self._hash.hexdigest()
        if exc is None:
            try:
                order, po_number = m.finish()
            except ValidationError as e:  # a model refused a value no element check caught
                exc = e
            else:
                return order, po_number, m.findings
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        m.findings.append(
            Finding(
                "x12.850_invalid",
                f"Transaction set {t.control} could not be turned into an order: {loc}: "
                f"{first['msg']} ({exc.error_count()} problem(s)).",
                where=t.where(),
                action="Check the purchase order's values with the partner; " + RESEND,
                ak5_code="5",
            )
        )
        beg = m.first_beg
        return None, (beg.el(3) or None) if beg is not None else None, m.findings
