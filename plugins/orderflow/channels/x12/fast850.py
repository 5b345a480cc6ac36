"""The whole-set fast path of the 850 reader (issue #13 D5): a well-formed, ordinary 850
recognised by one compiled regex over the decoded text, its order built from the regex's
groups without the segment-at-a-time walk.

A segment-at-a-time reader costs ~140 µs per 5-line PO in Python (Segment objects, element
checks, the mapper's state machine, model assembly). Here the reader, at an ``ST*850``
segment, tries :func:`set_pattern`'s regex at that offset. The regex encodes, for the
segments it accepts, exactly the X12 element definitions :func:`elements.check_segment`
enforces (types, lengths, code lists; no control character, no character the store cannot
hold, no space at either end of a value) and the mapper's own conditions for a clean order:

    ST*850*<ctrl>  BEG*00*…  (CUR|REF|PER|ITD|DTM|TD5)*  (N1 [N2] [N3] [N4])*
    (PO1 [PID*F****<desc>] [PO4])+  CTT  SE*<n>*<ctrl>

with nothing between segments but the terminator and line ends. :func:`build` then proves
the rest in Python (SE01 = the segments counted, CTT01 = the PO1 count, every quantity above
zero, no price basis without a price, at most one N1 of each kind, the total far from the
store's bound…) and builds the models directly (as :mod:`prechecked` does, without
validation: every value is proven valid and unchanged by it), with the mapper's own helpers
for the texts it composes. Whatever is not accepted in full — any other segment or element,
any doubtful value, an envelope the walk would remark on — is read by the slow path,
unchanged, so every finding and every hostile-input behaviour stays exactly as it was.

``tests/unit/test_x12_fast850.py`` proves, for generated and mutated files, that both paths
give equal results (orders field by field, findings, 997 text).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel

from orderflow.domain.models import (
    Address,
    Channel,
    Order,
    OrderLine,
    ProductId,
    Provenance,
    order_id_for,
)

from . import prechecked
from .elements import MAX_PO1_LOOPS
from .po850 import (
    MapContext,
    _contact,
    _pack,
    _routing,
    _terms,
    header_dates,
)
from .reader import FastSet, Segment
from .results import Delimiters, TransactionResult

#: set to False to read every 850 segment by segment (the equivalence test's reference)
ENABLED = True
#: sets this process has read whole (a test and benchmark figure: which path was taken)
sets_read = 0

_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])"
    "|(?:0[13-9]|1[0-2])(?:29|30)"
    "|(?:0[13578]|1[02])31)"
)  # February 29 is left to the slow path
# CCYYMMDD, or YYMMDD (versions before 004010; read with the slow path's 50-year window)
_DATE = f"(?:(?:19|20)[0-9]{{2}}|[0-9]{{2}}){_MONTH_DAY}"
_ID = "[A-Za-z0-9]"
# fits numeric(14, 3) / numeric(14, 4) as written, no sign (prechecked.FITS_*), and X12 R
_QTY = r"(?:[0-9]{1,11}(?:\.[0-9]{0,3})?|\.[0-9]{1,3})"
_PRICE = r"(?:[0-9]{1,10}(?:\.[0-9]{0,4})?|\.[0-9]{1,4})"

_PATTERNS: dict[tuple[str, str, str, str | None], tuple[re.Pattern[str], ...] | None] = {}
_SAFE = re.compile(r"[^\sA-Za-z0-9.\-\x00-\x1f\x7f]")


def set_pattern(d: Delimiters) -> tuple[re.Pattern[str], ...] | None:
    """(set, parties, line) regexes for the interchange's delimiters, or None when they are
    unusual (a line end as terminator, a delimiter that could be part of a value)."""
    key = (d.element, d.segment, d.component, d.repetition)
    if key in _PATTERNS:
        return _PATTERNS[key]
    found = None
    delims = [d.element, d.segment, d.component] + ([d.repetition] if d.repetition else [])
    if (
        not d.newline_terminated
        and all(len(x) == 1 and _SAFE.fullmatch(x) for x in delims)
        and len(set(delims)) == len(delims)
    ):
        found = _compile(d.element, d.segment, "".join(delims))
    if len(_PATTERNS) < 64:
        _PATTERNS[key] = found
    return found


def _compile(sep: str, term: str, delims: str) -> tuple[re.Pattern[str], ...]:
    e, t = re.escape(sep), re.escape(term)
    bad = re.escape(delims)
    # a value character: no control, nothing the store cannot hold, no delimiter; at either
    # end of a value also no whitespace (``Segment.el`` and the models strip it)
    a = f"[^\\x00-\\x1f\\x7f\\ud800-\\udfff{bad}]"
    edge = f"[^\\s\\x00-\\x1f\\x7f\\ud800-\\udfff{bad}]"

    def an(lo: int, hi: int) -> str:
        if lo <= 1:
            return f"{edge}(?:{a}{{0,{hi - 2}}}{edge})?"
        return f"{edge}{a}{{{lo - 2},{hi - 2}}}{edge}"

    def r(most: int) -> str:  # an X12 R value of at most ``most`` digits, no sign
        return f"(?=[0-9.]{{1,{most}}}(?:{e}|{t}|$))(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)"

    def elements(tag: str, *slots: tuple[str, bool]) -> str:
        """``tag`` and its elements (pattern, required), trailing optional ones omissible."""
        rest, required_after = "", False
        for pattern, required in reversed(slots):
            slot = pattern if required else f"(?:{pattern})?"
            required_after = required_after or required
            rest = f"{e}{slot}{rest}" if required_after else f"(?:{e}{slot}{rest})?"
        return tag + rest

    end = f"{t}[\\r\\n]*"
    code = lambda lo, hi: f"{_ID}{{{lo},{hi}}}"  # noqa: E731
    # the repeated parts are matched loosely (segment by tag) in the set's regex, then
    # strictly, one match per party / line, by ``findall`` over their block (whose matches
    # must cover the block: see ``build``); the strict patterns capture their whole text
    party = (
        f"(N1{e}(ST|BT|BY)(?:{e}({an(1, 60)})?(?:{e}({_ID}{{1,2}}){e}({an(2, 80)}))?)?{end}"
        f"(?:N2{e}({an(1, 60)})(?:{e}({an(1, 60)}))?{end})?"
        f"(?:N3{e}({an(1, 55)})(?:{e}({an(1, 55)}))?{end})?"
        f"(?:(N4)(?:{e}({an(2, 30)})?(?:{e}({_ID}{{2}})?(?:{e}({_ID}{{3,15}})?"
        f"(?:{e}({_ID}{{2,3}}))?)?)?)?{end})?)"
    )
    po4 = elements(
        "PO4", ("[0-9]{1,6}", False), (r(8), False), (code(2, 2), False), (an(3, 5), False)
    )
    line = (
        f"(PO1{e}({an(1, 20)})?{e}({_QTY}){e}({_ID}{{2}})"
        f"(?:{e}({_PRICE})?(?:{e}({_ID}{{2}})?((?:{e}{_ID}{{2}}{e}{an(1, 48)}){{0,10}}))?)?{end}"
        f"(?:PID{e}F{e}{e}{e}{e}({an(1, 80)}){end})?"
        f"(?:({po4}){end})?)"
    )
    # header segments (between BEG and the first N1), each matched whole by its tag's
    # pattern: only the elements the mapper reads, none it would remark on
    header = {
        "CUR": elements("CUR", (code(2, 3), True), ("[A-Z]{3}", True)),
        "REF": elements("REF", (code(2, 3), True), (an(1, 50), True)),
        "PER": elements(
            "PER",
            (code(2, 2), True),
            (an(1, 60), False),
            *[(code(2, 2), False), (an(1, 256), False)] * 3,
        ),
        "ITD": elements(
            "ITD",
            (code(2, 2), False),
            (code(1, 2), False),
            (r(6), False),
            (_DATE, False),
            ("[0-9]{1,3}", False),
            (_DATE, False),
            ("[0-9]{1,3}", False),
        ),
        "DTM": elements("DTM", (code(3, 3), True), (_DATE, True)),
        "TD5": elements(
            "TD5",
            (code(1, 2), False),
            (code(1, 2), False),
            (an(2, 80), False),
            (code(1, 2), False),
            (an(1, 35), False),
        ),
    }
    seg = f"(?:{e}[^{t}]*)?{end}"
    whole = (
        f"ST{e}850{e}(?P<ctrl>{_ID}{{4,9}}){end}"
        f"BEG{e}00{e}(?P<type>{_ID}{{2}}){e}(?P<po>{an(1, 22)}){e}(?P<rel>{an(1, 30)})?"
        f"{e}(?P<date>{_DATE})(?:{e}(?P<ct>{an(1, 30)})?)?{end}"
        f"(?P<header>(?:(?:CUR|REF|PER|ITD|DTM|TD5){seg})*+)"
        f"(?P<parties>(?:N[1-4]{seg})*+)"
        f"(?P<lines>(?:PO1{seg}(?:PID{seg})?(?:PO4{seg})?){{1,{MAX_PO1_LOOPS}}}+)"
        f"CTT{e}(?P<ctt>[0-9]{{1,6}})(?:{e}{r(10)})?"
        f"{end}SE{e}(?P<se>[0-9]{{1,10}}){e}(?P=ctrl){t}"
    )
    return (
        re.compile(whole),
        re.compile(party),
        re.compile(line),
        {tag: re.compile(p) for tag, p in header.items()},
        sep,
        term,
    )


def context_fits(ctx: MapContext) -> bool:
    """The provenance values every order of a group shares pass the models unchanged (the
    checks of ``po850._prechecked_order`` that do not depend on the set)."""
    texts = prechecked.Strings()
    texts.add(ctx.partner_id or ctx.sender_id, prechecked.ID)
    texts.add(ctx.source_ref, prechecked.TEXT)
    for v in (ctx.document_sha256, ctx.interchange_control, ctx.group_control):
        texts.add(v, prechecked.ID)
    received = ctx.received_at
    if received is not None and (type(received) is not datetime or received.utcoffset() is None):
        return False
    return texts.ok()


def build(m: re.Match[str], st_index: int, patterns: tuple, ctx: MapContext) -> FastSet | None:
    """The set's result from the regex's match, or None when anything is in doubt (then the
    slow path reads it). ``ctx`` passed :func:`context_fits`."""
    _, party_re, line_re, header_res, sep, term = patterns
    block = m["lines"]
    lines_raw = line_re.findall(block)
    n = len(lines_raw)
    if int(m["ctt"]) != n:
        return None  # CTT01 ≠ the PO1 count: noted by the slow path
    covered = 0
    dec = _decimal
    order_lines = []
    n_extra = 0  # PIDs and PO4s
    priced = True
    total = _ZERO
    for line_no, (whole, v1, qty, uom, price, basis, ids, desc, po4) in enumerate(lines_raw, 1):
        covered += len(whole)
        quantity = dec.get(qty) or _number(qty)
        if not quantity or (basis and not price):
            return None  # quantity 0 (left out, noted) or syntax note C0504: the slow path
        if desc:
            n_extra += 1
        pack = None
        if po4:
            n_extra += 1
            pack = _pack([Segment("PO4", po4.split(sep), 0)])
        part = None
        if ids:
            parts = ids.split(sep)
            if len(parts) == 3:  # one pair: the usual
                product_ids = [_make_product_id({"qualifier": parts[1], "value": parts[2]}, _PIDS)]
                if parts[1] in _PART_QUALIFIERS:
                    part = parts[2]
            else:
                pairs = list(zip(parts[1::2], parts[2::2], strict=True))
                product_ids = [
                    _make_product_id({"qualifier": q, "value": v}, _PIDS) for q, v in pairs
                ]
                for want in _PART_QUALIFIERS:  # po850._part_number: BP, else IN, else CB
                    part = next((v for q, v in pairs if q == want), None)
                    if part is not None:
                        break
        else:
            product_ids = []
        if price:
            unit_price = dec.get(price) or _number(price)
            if priced:
                total += quantity * unit_price
        else:
            unit_price = None
            priced = False
        order_lines.append(
            _make_line(
                {
                    "line_no": line_no,
                    "source_line_id": v1 or None,
                    "product_ids": product_ids,
                    "customer_part_number": part,
                    "item_id": None,
                    "description": desc or None,
                    "quantity": quantity,
                    "uom": uom,
                    "unit_price": unit_price,
                    "price_basis": basis or None,
                    "pack": pack,
                    "requested_ship_date": None,
                    "confidence": {},
                },
                _LINE_SET,
            )
        )
    if covered != len(block):
        return None  # a line the strict pattern does not take whole
    count = 4 + n + n_extra  # ST BEG CTT SE, PO1s, PIDs, PO4s
    # the header segments, as po850._Mapper.feed reads them (state "header": before any N1)
    dtms: list[tuple[str, date]] = []
    refs: dict[str, str] = {}
    contacts: list[str] = []
    currency = None
    td5s: list[Segment] = []
    itds: list[Segment] = []
    header = m["header"]
    if header:
        for raw in header.split(term)[:-1]:
            text = raw.lstrip("\r\n")
            tag = text[:3]
            pattern = header_res.get(tag)
            if pattern is None or pattern.fullmatch(text) is None:
                return None  # (no tag of three letters has a shorter tag as prefix here)
            count += 1
            els = text.split(sep)
            if tag == "DTM":
                dtms.append((els[1], _date(els[2])))
            elif tag == "REF":
                key, val = els[1], els[2]
                refs[key] = val if key not in refs or refs[key] == val else f"{refs[key]}; {val}"
            elif tag == "PER":
                contacts.append(_contact(Segment(tag, els, 0), None))
            elif tag == "CUR":
                currency = currency or els[2]
            elif tag == "TD5":
                td5s.append(Segment(tag, els, 0))
            else:
                itds.append(Segment(tag, els, 0))
    parties_raw = m["parties"]
    addresses: dict[str, Address] = {}
    if parties_raw:
        covered = 0
        for (
            whole,
            code,
            name,
            qual,
            ident,
            n2a,
            n2b,
            l1,
            l2,
            n4,
            city,
            region,
            postal,
            country,
        ) in party_re.findall(parties_raw):
            covered += len(whole)
            if code in addresses:
                return None  # a second ST/BT/BY becomes a note: the slow path
            count += 1 + (n2a != "") + (l1 != "") + (n4 != "")  # N1, N2, N3, N4
            n2 = [v for v in (n2a, n2b) if v]  # as po850._Party.address
            addresses[code] = _make_address(
                {
                    "name": name or (n2[0] if n2 else None) or None,
                    "party_id": ident or None,
                    "party_id_qualifier": qual or None,
                    "address_lines": [*(n2[1:] if not name else n2), *(v for v in (l1, l2) if v)],
                    "city": city or None,
                    "region": region or None,
                    "postal_code": postal or None,
                    "country": country or None,
                },
                _ADDRESS_SET,
            )
        if covered != len(parties_raw):
            return None
    se01 = m["se"]
    if int(se01) != count:
        return None  # SE01 ≠ the segments counted: the slow path rejects the set
    if priced and total >= _FAR_BELOW_TOTAL_BOUND:
        return None  # near numeric(14, 2): Order._fits_the_store decides, on the slow path
    notes: list[str] = []
    requested_delivery, requested_ship, cancel_after = header_dates(dtms, notes)
    if m["rel"]:
        refs.setdefault("RE", m["rel"])
    if m["ct"]:
        refs.setdefault("CT", m["ct"])
    ctrl = m["ctrl"]
    po_number = m["po"]
    partner = ctx.partner_id or ctx.sender_id
    provenance = _make_provenance(
        {
            "channel": Channel.EDI,
            "partner_id": partner,
            "message_id": None,
            "source_ref": ctx.source_ref,
            "document_sha256": ctx.document_sha256,
            "interchange_control_number": ctx.interchange_control,
            "group_control_number": ctx.group_control,
            "transaction_control_number": ctrl,
            "client_request_id": None,
            "received_at": ctx.received_at,
            "extraction_model": None,
        },
        _PROVENANCE_SET,
    )
    order = _make_order(
        {
            "order_id": order_id_for(
                "edi", partner, po_number, f"{ctx.interchange_control}:{ctx.group_control}:{ctrl}"
            ),
            "po_number": po_number,
            "po_date": _date(m["date"]),
            "purpose": "original",
            "order_type": m["type"],
            "customer_id": None,
            "buyer": addresses.get("BY"),
            "ship_to": addresses.get("ST"),
            "bill_to": addresses.get("BT"),
            "currency": currency or "USD",
            "requested_ship_date": requested_ship,
            "requested_delivery_date": requested_delivery,
            "cancel_after": cancel_after,
            "carrier_routing": _routing(td5s) if td5s else None,
            "payment_terms": _terms(itds) if itds else None,
            "references": refs,
            "contacts": contacts,
            "charges": [],
            "notes": notes,
            "lines": order_lines,
            "declared_line_count": n,
            "provenance": provenance,
            "confidence": {},
        },
        _ORDER_SET,
    )
    result = _make_result(
        {
            "set_id": "850",
            "control_number": ctrl,
            "implementation_ref": None,
            "segment_count": count,
            "declared_segment_count": se01,
            "segment_index": st_index,
            "accepted": True,
            "ack_code": "A",
            "ak5_codes": [],
            "segment_notes": [],
            "errors": [],
            "po_number": po_number,
            "order": order,
            "change": None,
            "acknowledgment": None,
        },
        _RESULT_SET,
    )
    global sets_read
    sets_read += 1
    return FastSet(result, count, st_index, ctrl, se01)


# ------------------------------------------------------------------------------ helpers
_ZERO = Decimal(0)
#: totals below this cannot reach numeric(14, 2) (12 integer digits) even rounded
_FAR_BELOW_TOTAL_BOUND = Decimal(10) ** 11
_decimal: dict[str, Decimal] = {}  # quantities and prices repeat: Decimal is immutable
_dates: dict[str, date] = {}


def _number(text: str) -> Decimal:
    value = Decimal(text)
    if len(_decimal) < 4096:
        _decimal[text] = value
    return value


def _date(text: str) -> date:
    """A CCYYMMDD or YYMMDD the regex proved to be a date (``elements.x12_date``: YY below
    50 is 20YY, else 19YY)."""
    got = _dates.get(text)
    if got is None:
        if len(text) == 6:
            yy = int(text[:2])
            got = date((2000 if yy < 50 else 1900) + yy, int(text[2:4]), int(text[4:]))
        else:
            got = date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if len(_dates) < 4096:
            _dates[text] = got
    return got


def _maker(model: type, fields: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """``make(values, fields_set)``: the instance validation would build from ``values``
    (every field, in the model's order) with ``fields_set`` the fields the slow path passes
    — as ``prechecked.Prechecked``, without its per-call bookkeeping."""
    if tuple(model.model_fields) != fields:  # pragma: no cover - the model changed
        raise TypeError(f"{model.__name__}'s fields changed: update fast850")
    prechecked.Prechecked(model)  # the same "no post-init, no private attributes" guard
    new = model.__new__
    put = object.__setattr__
    slots = BaseModel.__dict__  # pydantic's own slots, set through their descriptors
    put_fields_set = slots["__pydantic_fields_set__"].__set__
    put_extra = slots["__pydantic_extra__"].__set__
    put_private = slots["__pydantic_private__"].__set__

    def make(values: dict, fields_set: frozenset[str]):  # type: ignore[no-untyped-def]
        obj = new(model)
        put(obj, "__dict__", values)
        put_fields_set(obj, set(fields_set))
        put_extra(obj, None)
        put_private(obj, None)
        return obj

    return make


_make_product_id = _maker(ProductId, ("qualifier", "value"))
_PIDS = frozenset(("qualifier", "value"))
_PART_QUALIFIERS = ("BP", "IN", "CB")
_LINE_FIELDS = (
    "line_no",
    "source_line_id",
    "product_ids",
    "customer_part_number",
    "item_id",
    "description",
    "quantity",
    "uom",
    "unit_price",
    "price_basis",
    "pack",
    "requested_ship_date",
    "confidence",
)
_make_line = _maker(OrderLine, _LINE_FIELDS)
_LINE_SET = frozenset(_LINE_FIELDS) - {"item_id", "confidence"}
_ADDRESS_FIELDS = (
    "name",
    "party_id",
    "party_id_qualifier",
    "address_lines",
    "city",
    "region",
    "postal_code",
    "country",
)
_make_address = _maker(Address, _ADDRESS_FIELDS)
_ADDRESS_SET = frozenset(_ADDRESS_FIELDS)
_PROVENANCE_FIELDS = (
    "channel",
    "partner_id",
    "message_id",
    "source_ref",
    "document_sha256",
    "interchange_control_number",
    "group_control_number",
    "transaction_control_number",
    "client_request_id",
    "received_at",
    "extraction_model",
)
_make_provenance = _maker(Provenance, _PROVENANCE_FIELDS)
_PROVENANCE_SET = frozenset(_PROVENANCE_FIELDS) - {
    "message_id",
    "client_request_id",
    "extraction_model",
}
_ORDER_FIELDS = (
    "order_id",
    "po_number",
    "po_date",
    "purpose",
    "order_type",
    "customer_id",
    "buyer",
    "ship_to",
    "bill_to",
    "currency",
    "requested_ship_date",
    "requested_delivery_date",
    "cancel_after",
    "carrier_routing",
    "payment_terms",
    "references",
    "contacts",
    "charges",
    "notes",
    "lines",
    "declared_line_count",
    "provenance",
    "confidence",
)
_make_order = _maker(Order, _ORDER_FIELDS)
_ORDER_SET = frozenset(_ORDER_FIELDS) - {"customer_id", "confidence"}
_RESULT_FIELDS = tuple(TransactionResult.model_fields)
_make_result = _maker(TransactionResult, _RESULT_FIELDS)
_RESULT_SET = frozenset(_RESULT_FIELDS)


def usable() -> bool:
    return ENABLED and prechecked.ENABLED
