"""860 Purchase Order Change Request — Buyer Initiated (004010) → canonical
:class:`~orderflow.domain.changes.OrderChange`.

What is read:

- BCH (mandatory, once): BCH01 purpose ``01`` cancellation (the whole order, POC lines are
  not needed) or ``04`` change (the POC lines say what changes); BCH02 PO type; BCH03 the PO
  number the change is for; BCH04 release number; BCH05 change order sequence number (the
  sender's id for this change: the change's ``reference``); BCH06 PO date.
- POC (one per changed line): POC01 the line's assigned id (the 850's PO101); POC02 the
  change type; POC03 the new quantity ordered; POC04 quantity left to receive; POC05 unit
  of measure (first component of C001); POC06 unit price; POC07 price basis; POC08/09 …
  POC26/27 product id qualifier/value pairs.
- MSG / NTE → the change's reason; CTT01 against the number of POC segments.

POC02 change types OrderFlow applies (any other code is rejected, AK4 7, so the partner
knows the line was not taken — never silently dropped):

====  =========================  ===============================================
AI    add additional item(s)      add: POC03 quantity, POC05 UoM required
DI    delete items                delete the line
QD    quantity decrease           new quantity POC03 (0 deletes the line)
QI    quantity increase           new quantity POC03
PC    price change                new unit price POC06
CA    changes to line items       quantity and/or price, whichever is sent
PQ    unit price/quantity change  quantity and/or price, whichever is sent
RZ    replace all values          quantity and/or price (and UoM, product ids)
====  =========================  ===============================================

Severity as for the 850: a value that breaks its X12 element definition (type, length, code
list, mandatory), no BCH, no PO number or date, a change (BCH01 04) without POC lines, or a
POC that does not say what it changes rejects the set (AK5 R, AK3/AK4 detail); CTT01 ≠ the
number of POC segments is noted (AK5 E). Syntax accepted is AK5 A: whether the change can
still be applied to the order is decided later (``orderflow.changes``), not in the 997.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC

from pydantic import ValidationError

from orderflow.domain.changes import ChangeKind, LineChange, LineChangeKind, OrderChange
from orderflow.domain.models import MAX_INT, Channel, ProductId

from .elements import (
    SEGMENTS,
    El,
    ElementError,
    check_segment,
    check_value,
    count_value,
    decimal_value,
)
from .findings import RESEND, Finding
from .po850 import MapContext
from .reader import Segment
from .results import ElementNote, SegmentNote
from .validate import TxnWork


def _e(ref: str, type_: str, mn: int, mx: int, req: str = "O", codes: str | None = None) -> El:
    return El(ref, type_, mn, mx, req == "M", frozenset(codes.split()) if codes else None)


#: POC02 codes OrderFlow applies (see the module docstring)
CHANGE_TYPES = "AI CA DI PC PQ QD QI RZ"
CANCEL, CHANGE = "01", "04"

_SEGMENTS_860: dict[str, tuple[El | None, ...]] = {
    "BCH": (
        _e("353", "ID", 2, 2, "M", f"{CANCEL} {CHANGE}"),
        _e("92", "ID", 2, 2, "M"),
        _e("324", "AN", 1, 22, "M"),
        _e("328", "AN", 1, 30),
        _e("327", "AN", 1, 8),
        _e("373", "DT", 6, 8, "M"),
        _e("326", "AN", 1, 45),
        _e("367", "AN", 1, 30),
        _e("373", "DT", 6, 8),
        _e("373", "DT", 6, 8),
        _e("373", "DT", 6, 8),
        _e("640", "ID", 2, 2),
    ),
    "POC": (
        _e("350", "AN", 1, 20),
        _e("670", "ID", 2, 2, "M", CHANGE_TYPES),
        _e("330", "R", 1, 15),
        _e("671", "R", 1, 9),
        _e("355", "ID", 2, 2),
        _e("212", "R", 1, 17),
        _e("639", "ID", 2, 2),
        *(_e("235", "ID", 2, 2), _e("234", "AN", 1, 48)) * 10,
    ),
}
_LOOP_OF = {"POC": "POC", "CTT": "CTT", "N1": "N1", "N9": "N9"}


def _check(elements: list[str]) -> list:
    """Element errors of one segment: the 860's own definitions (BCH, POC), else the
    shared ones (REF, DTM, N1, PER, CTT, …)."""
    defs = _SEGMENTS_860.get(elements[0])
    if defs is None:
        return check_segment(elements) if elements[0] in SEGMENTS else []

    tag, out = elements[0], []
    for i, el in enumerate(defs, start=1):
        v = elements[i].strip(" ") if i < len(elements) else ""
        if el is None:
            continue
        if not v:
            if el.required:
                out.append(ElementError(i, el.ref, "1", "", f"{tag}{i:02d} is required"))
            continue
        bad = check_value(el, v)
        if bad is not None:
            code, what = bad
            shown = v if len(v) <= 40 else f"{v[:40]}… ({len(v):,} characters)"
            out.append(ElementError(i, el.ref, code, v[:99], f"{tag}{i:02d} {shown!r} {what}"))
    return out


@dataclass(slots=True)
class _Poc:
    seg: Segment
    n: int  # 1-based among the set's POC segments


class Mapper860:
    """An 860 mapped as its segments arrive (``feed`` each body segment, then ``result()``),
    the interface of :class:`~orderflow.channels.x12.po850.Mapper850`; ``change`` is the
    :class:`OrderChange` of an accepted set."""

    MAX_POC = 100_000  # the POC loop repeats at most 100,000 times (X12 004010)

    def __init__(self, t: TxnWork, ctx: MapContext) -> None:
        if ctx.received_at is not None and ctx.received_at.tzinfo is None:
            ctx.received_at = ctx.received_at.replace(tzinfo=UTC)
        self.t = t
        self.ctx = ctx
        self.findings: list[Finding] = []
        self.change: OrderChange | None = None
        self._flagged: set[tuple[int, int]] = set()
        self._bch: Segment | None = None
        self._ctt: Segment | None = None
        self._pocs: list[_Poc] = []
        self._n_poc = 0
        self._notes: list[str] = []
        self._errors: list[tuple[Segment, list]] = []
        self._last: Segment | None = None
        self._hash = hashlib.sha256()

    # ------------------------------------------------------------------ reading
    def feed(self, seg: Segment) -> None:
        tag = seg.tag
        self._last = seg
        self._hash.update("\x1f".join(e.strip() for e in seg.elements).encode())
        self._hash.update(b"\x1e")
        if tag == "POC":
            self._n_poc += 1
            if self._n_poc > self.MAX_POC:
                return  # counted, never kept (the set is rejected in result())
            self._pocs.append(_Poc(seg, self._n_poc))
        elif tag == "BCH" and self._bch is None:
            self._bch = seg
        elif tag == "CTT":
            self._ctt = seg
        elif tag in ("MSG", "NTE") and len(self._notes) < 20:
            text = seg.el(2) if tag == "NTE" else seg.el(1)
            if text:
                self._notes.append(text)
        if self._n_poc <= self.MAX_POC:
            errs = _check(seg.elements)
            if errs:
                self._errors.append((seg, errs))

    # ------------------------------------------------------------------ findings
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
        ak304: str | None = "8",
        action: str | None = None,
    ) -> None:
        if element is not None:
            self._flagged.add((seg.index, element))
        elements = (
            [ElementNote(position=element, reference=ref, code=syntax, value=value or None)]
            if element is not None and syntax is not None
            else []
        )
        self.findings.append(
            Finding(
                code,
                message,
                where=self.t.where(seg, element),
                action=action or (RESEND if severity == "reject" else None),
                severity=severity,  # type: ignore[arg-type]
                ak5_code="5",
                segment_note=SegmentNote(
                    segment_id=seg.tag,
                    position=self.t.position(seg),
                    loop_id=_LOOP_OF.get(seg.tag),
                    code=ak304 if elements or ak304 != "8" else None,
                    elements=elements,
                ),
            )
        )

    def _rejected(self) -> bool:
        return any(f.severity == "reject" for f in self.findings)

    # ------------------------------------------------------------------ result
    def result(self) -> tuple[None, str | None, list[Finding]]:
        """(None — an 860 never makes an order —, BCH03 as sent, findings); ``change`` is
        set when the set is accepted."""
        try:
            self._finish()
        except ValidationError as exc:  # a model refused a value no element check caught
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            self.findings.append(
                Finding(
                    "x12.860_invalid",
                    f"Transaction set {self.t.control} (860) could not be read as a change: "
                    f"{loc}: {first['msg']} ({exc.error_count()} problem(s)).",
                    where=self.t.where(),
                    action="Check the change's values with the partner; " + RESEND,
                    ak5_code="5",
                )
            )
            self.change = None
        bch = self._bch
        return None, (bch.el(3) or None) if bch is not None else None, self.findings

    def _finish(self) -> None:
        t, bch = self.t, self._bch
        if bch is None:
            self.findings.append(
                Finding(
                    "x12.860_missing_bch",
                    f"Transaction set {t.control} (860) has no BCH segment, so it names no "
                    "purchase order.",
                    where=t.where(),
                    action=RESEND,
                    ak5_code="5",
                    segment_note=SegmentNote(
                        segment_id="BCH", position=t.position(t.st) + 1, code="3"
                    ),
                )
            )
        purpose = bch.el(1) if bch is not None else ""
        if self._n_poc > self.MAX_POC:
            anchor = self._last or t.st
            self._finding(
                anchor,
                "x12.860_too_many_lines",
                f"The change has {self._n_poc:,} POC segments; the 860's POC loop repeats at "
                f"most {self.MAX_POC:,} times.",
                ak304="4",
                action="Ask the partner to split the change. " + RESEND,
            )
        elif purpose == CHANGE and not self._pocs:
            anchor = self._ctt or t.se or self._last or t.st
            self._finding(
                anchor,
                "x12.860_no_lines",
                f"Change request for PO {bch.el(3) or '?'} (BCH01 04) has no POC line, so "  # type: ignore[union-attr]
                "it says nothing to change.",
                ak304=None,
                action=RESEND,
            )
            self.findings[-1].segment_note = SegmentNote(
                segment_id="POC", position=t.position(anchor), loop_id="POC", code="3"
            )
        lines = self._lines() if purpose == CHANGE and self._n_poc <= self.MAX_POC else []
        if self._ctt is not None and count_value(self._ctt.el(1), 6) != self._n_poc:
            ctt = self._ctt
            self.findings.append(
                Finding(
                    "x12.ctt_line_count_mismatch",
                    f"CTT01 says {ctt.el(1)!r} line items but the change has {self._n_poc} "
                    "POC segment(s); the POC segments received were used.",
                    where=t.where(ctt, 1),
                    action="Ask the partner to fix their CTT count.",
                    severity="note",
                    ak5_code="5",
                    segment_note=SegmentNote(
                        segment_id="CTT", position=t.position(ctt), loop_id="CTT"
                    ),
                )
            )
        for seg, errs in self._errors:
            for err in errs:
                if (seg.index, err.position) in self._flagged:
                    continue
                what = (
                    f" (OrderFlow applies POC02 {', '.join(CHANGE_TYPES.split())})"
                    if seg.tag == "POC" and err.position == 2 and err.code == "7"
                    else " (860 BCH01: 01 cancellation or 04 change)"
                    if seg.tag == "BCH" and err.position == 1 and err.code == "7"
                    else ""
                )
                self._finding(
                    seg,
                    "x12.element_invalid",
                    f"{err.message} (element {err.ref}){what}.",
                    element=err.position,
                    ref=err.ref,
                    syntax=err.code,
                    value=err.value,
                )
        if self._rejected() or bch is None or not bch.el(3):
            return
        ctx = self.ctx
        reason = "; ".join(self._notes) or None
        self.change = OrderChange(
            kind=ChangeKind.CANCEL if purpose == CANCEL else ChangeKind.CHANGE,
            po_number=bch.el(3),
            channel=Channel.EDI,
            partner_id=ctx.partner_id or ctx.sender_id,
            # BCH05 (change order sequence number) is the sender's id for the change; without
            # it the digest of the set's body stands in (a re-sent change is stored once)
            reference=f"860-{purpose}:{bch.el(5)}"
            if bch.el(5)
            else f"860-{purpose}:#{self._hash.hexdigest()[:32]}",
            reason=(reason[:10_000] if reason else None)
            or ("860 cancellation" if purpose == CANCEL else "860 change"),
            lines=lines,
        )

    def _lines(self) -> list[LineChange]:
        out: list[LineChange] = []
        seen: dict[int, Segment] = {}
        for p in self._pocs:
            seg = p.seg
            if any(s.index == seg.index for s, _ in self._errors):
                continue  # its element errors reject the set (reported once, below)
            lc = self._line(p)
            if lc is None:
                continue
            if lc.line_no in seen:
                self._finding(
                    seg,
                    "x12.860_repeated_line",
                    f"POC {p.n} changes line {seg.el(1) or lc.line_no} again (already changed "
                    f"by segment {self.t.position(seen[lc.line_no])}); one change per line.",
                    element=1,
                    ref="350",
                    syntax="6",
                    value=seg.el(1),
                )
                continue
            seen[lc.line_no] = seg
            out.append(lc)
        return out

    def _line(self, p: _Poc) -> LineChange | None:
        seg = p.seg
        code = seg.el(2)
        line_id = seg.el(1)
        no = count_value(line_id, 10) if line_id else None
        if line_id == "" or no is None or not 0 < no <= MAX_INT:
            if code != "AI":  # which line? only an added line may go without its number
                self._finding(
                    seg,
                    "x12.860_bad_line_number",
                    f"POC {p.n} ({code}) does not name the line it changes: POC01 "
                    f"{line_id!r} is not the line number (PO101) of the order's line.",
                    element=1,
                    ref="350",
                    syntax="1" if not line_id else "6",
                    value=line_id,
                )
                return None
            no = None
        qty = decimal_value(seg.el(3)) if seg.el(3) else None
        price = decimal_value(seg.el(6)) if seg.el(6) else None
        uom = seg.el(5).upper() or None
        pids = [(seg.el(i), seg.el(i + 1)) for i in range(8, 28, 2) if seg.el(i) and seg.el(i + 1)]
        cpn = next((v for q, v in pids if q in ("BP", "IN", "CB")), None)
        if qty is not None and qty < 0:
            self._finding(
                seg,
                "x12.860_bad_quantity",
                f"POC {p.n} has a negative quantity {seg.el(3)}.",
                element=3,
                ref="330",
                syntax="6",
                value=seg.el(3),
            )
            return None
        if price is not None and price < 0:
            self._finding(
                seg,
                "x12.860_bad_price",
                f"POC {p.n} has a negative unit price {seg.el(6)}.",
                element=6,
                ref="212",
                syntax="6",
                value=seg.el(6),
            )
            return None

        def needs(element: int, ref: str, what: str) -> None:
            self._finding(
                seg,
                "x12.860_incomplete_line",
                f"POC {p.n} ({code}) for line {line_id or '?'} has no {what} (POC{element:02d}).",
                element=element,
                ref=ref,
                syntax="1",
            )

        kind: LineChangeKind
        if code == "DI":
            kind = LineChangeKind.DELETE
        elif code == "AI":
            if not qty:
                needs(3, "330", "quantity above 0")
                return None
            if uom is None:
                needs(5, "355", "unit of measure")
                return None
            kind = LineChangeKind.ADD
        elif code in ("QD", "QI"):
            if qty is None:
                needs(3, "330", "new quantity")
                return None
            kind = LineChangeKind.DELETE if qty == 0 else LineChangeKind.QUANTITY
        elif code == "PC":
            if price is None:
                needs(6, "212", "new unit price")
                return None
            kind = LineChangeKind.PRICE
        else:  # CA, PQ, RZ: whatever they send
            if qty is None and price is None:
                needs(3, "330", "new quantity or unit price (POC06)")
                return None
            if qty == 0:
                kind = LineChangeKind.DELETE
            elif qty is not None and price is not None:
                kind = LineChangeKind.QUANTITY_AND_PRICE
            else:
                kind = LineChangeKind.QUANTITY if qty is not None else LineChangeKind.PRICE
        if no is None:  # an added line without its own number: after every numbered one
            no = max((count_value(q.seg.el(1), 10) or 0 for q in self._pocs), default=0)
            no = min(MAX_INT, no + p.n)
        keep_qty = kind in (LineChangeKind.ADD, LineChangeKind.QUANTITY)
        keep_qty |= kind is LineChangeKind.QUANTITY_AND_PRICE
        keep_price = kind in (LineChangeKind.ADD, LineChangeKind.PRICE)
        keep_price |= kind is LineChangeKind.QUANTITY_AND_PRICE
        return LineChange(
            line_no=no,
            kind=kind,
            quantity=qty if keep_qty else None,
            unit_price=price if keep_price else None,
            uom=uom if kind is not LineChangeKind.DELETE else None,
            customer_part_number=cpn,
            source_line_id=line_id or None,
            product_ids=[ProductId(qualifier=q, value=v) for q, v in pids],
        )
