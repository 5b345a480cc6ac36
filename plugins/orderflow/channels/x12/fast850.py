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
from json.encoder import encode_basestring
from operator import itemgetter

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
    _CANCEL,
    _DELIVERY,
    _SHIP,
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
    # end of a value also no whitespace (``Segment.el`` and the models strip it): ``an``
    a = f"[^\\x00-\\x1f\\x7f\\ud800-\\udfff{bad}]"

    def an(lo: int, hi: int) -> str:  # ``lo``..``hi`` value characters, no space at the ends
        return f"(?!\\s){a}{{{max(lo, 1)},{hi}}}(?<!\\s)"

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
        # a quantity above zero (a nonzero digit), a price basis only after a price (else
        # the slow path: the line left out and noted, or syntax note C0504)
        f"(PO1{e}({an(1, 20)})?{e}((?=[0-9.]*[1-9]){_QTY}){e}({_ID}{{2}})"
        f"(?:{e}(?P<price>{_PRICE})?(?:{e}(?(price)({_ID}{{2}})?|)"
        f"((?:{e}{_ID}{{2}}{e}{an(1, 48)}){{0,10}}))?)?{end}"
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
        _possessive(whole),
        _possessive(party),
        _possessive(line),
        {tag: _possessive(p) for tag, p in header.items()},
        sep,
        term,
    )


def _possessive(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled with every optional group and counted repeat possessive (``?+``,
    ``{m,n}+``, ``*+``): a third fewer steps in ``re``, which otherwise keeps every choice
    to come back to. A possessive match explores a prefix, in the same order, of what the
    backtracking match explores, so it finds the very same match or none (then the set goes
    to the slow path: never a different reading). Here none is lost: a value ends only at a
    delimiter, so no shorter choice could have let the rest match."""
    pattern = pattern.replace(")?", ")?+")
    pattern = re.sub(r"(\{\d+,\d+\})(?!\+)", r"\1+", pattern)
    return re.compile(pattern.replace("[\\r\\n]*", "[\\r\\n]*+"))


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


class Group:
    """What every order of one GS group shares (its context passed :func:`context_fits`):
    the provenance values, and the JSON the store keeps of them (worked out by the model's
    own serializer, once per group, when first asked)."""

    __slots__ = ("ctx", "discriminator", "json", "parties", "partner")

    def __init__(self, ctx: MapContext) -> None:
        self.ctx = ctx
        self.parties: dict[str, tuple[dict[str, LightAddress], int]] = {}  # see ``_parties``
        self.partner = ctx.partner_id or ctx.sender_id
        self.discriminator = f"{ctx.interchange_control}:{ctx.group_control}:"
        self.json: tuple[str, str, str] | None = None

    def provenance(self, control: str, message_id: int | None) -> Provenance:
        ctx = self.ctx
        return _make_provenance(
            {
                "channel": Channel.EDI,
                "partner_id": self.partner,
                "message_id": message_id,
                "source_ref": ctx.source_ref,
                "document_sha256": ctx.document_sha256,
                "interchange_control_number": ctx.interchange_control,
                "group_control_number": ctx.group_control,
                "transaction_control_number": control,
                "client_request_id": None,
                "received_at": ctx.received_at,
                "extraction_model": None,
            },
            _PROVENANCE_SET,
        )

    def provenance_json(self) -> tuple[str, str, str]:
        """The provenance's JSON around its two per-order values: (… up to ``message_id``'s
        value, … up to ``transaction_control_number``'s, the rest)."""
        if self.json is None:
            p = self.provenance("", None)
            dump = p.model_dump_json
            head = dump(include={"channel", "partner_id"})[:-1]
            mid = dump(
                include={
                    "source_ref",
                    "document_sha256",
                    "interchange_control_number",
                    "group_control_number",
                }
            )[1:-1]
            tail = dump(include={"client_request_id", "received_at", "extraction_model"})[1:]
            self.json = (
                f'{head},"message_id":',
                f',{mid},"transaction_control_number":',
                f",{tail}",
            )
        return self.json


def build(m: re.Match[str], st_index: int, patterns: tuple, group: Group) -> FastSet | None:
    """The set read whole from the regex's match, or None when anything is in doubt (then
    the slow path reads it). Its order is a :class:`LightOrder` (plain values, no model
    instances): the set's ``TransactionResult`` and canonical ``Order`` are built from it
    when asked (``FastSet.result``)."""
    _, party_re, line_re, header_res, sep, term = patterns
    block, ctt, header, parties_raw, se01, rel, ct, ctrl, po_number, po_date, po_type = m.group(
        "lines", "ctt", "header", "parties", "se", "rel", "ct", "ctrl", "po", "date", "type"
    )
    lines_raw = line_re.findall(block)
    n = len(lines_raw)
    if int(ctt) != n:
        return None  # CTT01 ≠ the PO1 count: noted by the slow path
    # what decides whether the set is read whole; the lines' values are worked out once,
    # when asked (``LightOrder.lines``): a quantity is above zero and a price basis follows
    # a price (the line pattern), every line is taken whole, the total is far from the
    # store's bound
    covered = 0
    n_extra = 0  # PIDs and PO4s
    priced = True
    digits = 0  # the most characters of a quantity and a price of one line
    for whole, _v1, qty, _uom, price, _basis, _ids, desc, po4 in lines_raw:
        covered += len(whole)
        if desc:
            n_extra += 1
        if po4:
            n_extra += 1
        if price:
            if len(qty) + len(price) > digits:
                digits = len(qty) + len(price)
        else:
            priced = False
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
    if parties_raw:
        # a partner repeats its ship-tos: each different N1 loop text is read once per group
        got = group.parties.get(parties_raw)
        if got is None:
            got = _parties(parties_raw, party_re)
            if got is None:
                return None
            if len(group.parties) < _MAX_PARTIES:
                group.parties[parties_raw] = got
        addresses, n_party = got
        count += n_party
    else:
        addresses = _NO_ADDRESSES
    if int(se01) != count:
        return None  # SE01 ≠ the segments counted: the slow path rejects the set
    # each line's quantity × price is below 10 ** digits (their integer digits, at most)
    if priced and (digits > 8 or n > 999) and _total(lines_raw) >= _FAR_BELOW_TOTAL_BOUND:
        return None  # near numeric(14, 2): Order._fits_the_store decides, on the slow path
    notes: list[str] = []
    if not dtms:
        requested_delivery = requested_ship = cancel_after = None
    elif len(dtms) == 1:  # header_dates for one DTM (its three qualifier lists are disjoint)
        qual, d = dtms[0]
        requested_delivery = d if qual in _DELIVERY else None
        requested_ship = d if qual in _SHIP else None
        cancel_after = d if qual in _CANCEL else None
        if requested_delivery is None and requested_ship is None and cancel_after is None:
            requested_delivery, requested_ship, cancel_after = header_dates(dtms, notes)
    else:
        requested_delivery, requested_ship, cancel_after = header_dates(dtms, notes)
    if rel:
        refs.setdefault("RE", rel)
    if ct:
        refs.setdefault("CT", ct)
    text = m.string
    order = LightOrder(
        (
            order_id_for("edi", group.partner, po_number, group.discriminator + ctrl),
            po_number,
            _date(po_date),
            po_type,
            addresses.get("BY"),
            addresses.get("ST"),
            addresses.get("BT"),
            currency or "USD",
            requested_ship,
            requested_delivery,
            cancel_after,
            _routing(td5s) if td5s else None,
            _terms(itds) if itds else None,
            refs,
            contacts,
            notes,
            lines_raw,
            priced,
            # no value of the set needs a JSON escape (no control character: the patterns)
            text.find('"', m.start(), m.end()) < 0 and text.find("\\", m.start(), m.end()) < 0,
        ),
        LightProvenance(group, ctrl),
        sep,
    )
    global sets_read
    sets_read += 1
    return FastSet(order, count, st_index, ctrl, se01)


# ------------------------------------------------------------------------------ light records
# The orders of sets read whole, as plain values: what EDI intake stores of them (its rows,
# the canonical JSON) is read from these without a pydantic instance per order, line,
# product id and address (~14 per 5-line PO, most of the fast path's time). Each record
# answers the attributes intake reads of an ``Order``, gives the JSON ``Order.model_dump_json``
# gives (``tests/unit/test_x12_light.py`` proves both, value by value and byte for byte), and
# builds the model itself (``to_model``) for anything else.
_js = encode_basestring  # JSON string as pydantic writes it (serde_json's escapes)


def _jo(v: str | None) -> str:
    return "null" if v is None else _js(v)


def _jd(v: date | None) -> str:
    return "null" if v is None else f'"{v.isoformat()}"'


_new_line = tuple.__new__
_new_address = tuple.__new__


class LightLine(tuple):
    """One line: (line_no, source_line_id, product_ids as (qualifier, value) pairs,
    customer_part_number, description, quantity, uom, unit_price, price_basis, pack), then
    whether its values need no JSON escape, and a cell for its JSON once written."""

    __slots__ = ()
    line_no = property(itemgetter(0))
    source_line_id = property(itemgetter(1))
    product_pairs = property(itemgetter(2))
    customer_part_number = property(itemgetter(3))
    description = property(itemgetter(4))
    quantity = property(itemgetter(5))
    uom = property(itemgetter(6))
    unit_price = property(itemgetter(7))
    price_basis = property(itemgetter(8))
    pack = property(itemgetter(9))
    item_id = None  # mapped later, never at intake
    requested_ship_date = None

    def model_dump_json(self) -> str:
        """``OrderLine.model_dump_json()`` of :meth:`to_model`, without building it."""
        no, v1, pids, part, desc, qty, uom, price, basis, pack, plain, cell = self
        if cell:
            return cell[0]
        if plain:  # every value as it is between quotes (the set holds no " or \)
            ids = ",".join([f'{{"qualifier":"{q}","value":"{v}"}}' for q, v in pids])
            v1 = "null" if v1 is None else f'"{v1}"'
            part = "null" if part is None else f'"{part}"'
            desc = "null" if desc is None else f'"{desc}"'
            uom = f'"{uom}"'
            basis = "null" if basis is None else f'"{basis}"'
        else:
            ids = ",".join([f'{{"qualifier":{_js(q)},"value":{_js(v)}}}' for q, v in pids])
            v1, part, desc, uom, basis = _jo(v1), _jo(part), _jo(desc), _js(uom), _jo(basis)
        price = "null" if price is None else f'"{price}"'
        pack = "null" if pack is None else _js(pack)
        text = (
            f'{{"line_no":{no},"source_line_id":{v1},"product_ids":[{ids}],'
            f'"customer_part_number":{part},"item_id":null,"description":{desc},'
            f'"quantity":"{qty}","uom":{uom},"unit_price":{price},"price_basis":{basis},'
            f'"pack":{pack},"requested_ship_date":null,"confidence":{{}}}}'
        )
        cell.append(text)
        return text

    def to_model(self) -> OrderLine:
        no, v1, pids, part, desc, qty, uom, price, basis, pack, _, _ = self
        return _make_line(
            {
                "line_no": no,
                "source_line_id": v1,
                "product_ids": [
                    _make_product_id({"qualifier": q, "value": v}, _PIDS) for q, v in pids
                ],
                "customer_part_number": part,
                "item_id": None,
                "description": desc,
                "quantity": qty,
                "uom": uom,
                "unit_price": price,
                "price_basis": basis,
                "pack": pack,
                "requested_ship_date": None,
                "confidence": {},
            },
            _LINE_SET,
        )


class LightAddress(tuple):
    """(name, party_id, party_id_qualifier, address_lines, city, region, postal_code,
    country)."""

    __slots__ = ()
    name = property(itemgetter(0))
    party_id = property(itemgetter(1))
    party_id_qualifier = property(itemgetter(2))
    address_lines = property(itemgetter(3))
    city = property(itemgetter(4))
    region = property(itemgetter(5))
    postal_code = property(itemgetter(6))
    country = property(itemgetter(7))

    def model_dump_json(self, plain: bool = False) -> str:
        name, pid, qual, lines, city, region, postal, country = self
        if plain:
            joined = ",".join(map(_jp, lines))
            return (
                f'{{"name":{_jp(name)},"party_id":{_jp(pid)},"party_id_qualifier":{_jp(qual)},'
                f'"address_lines":[{joined}],"city":{_jp(city)},'
                f'"region":{_jp(region)},"postal_code":{_jp(postal)},"country":{_jp(country)}}}'
            )
        return (
            f'{{"name":{_jo(name)},"party_id":{_jo(pid)},"party_id_qualifier":{_jo(qual)},'
            f'"address_lines":[{",".join(map(_js, lines))}],"city":{_jo(city)},'
            f'"region":{_jo(region)},"postal_code":{_jo(postal)},"country":{_jo(country)}}}'
        )

    def to_model(self) -> Address:
        name, pid, qual, lines, city, region, postal, country = self
        return _make_address(
            {
                "name": name,
                "party_id": pid,
                "party_id_qualifier": qual,
                "address_lines": list(lines),
                "city": city,
                "region": region,
                "postal_code": postal,
                "country": country,
            },
            _ADDRESS_SET,
        )


def _light_lines(lines_raw: list[tuple[str, ...]], sep: str, plain: bool) -> list[LightLine]:
    """The lines' values from their pattern's groups, as ``po850`` maps them."""
    out = []
    add = out.append
    dec = _decimal
    for line_no, (_whole, v1, qty, uom, price, basis, ids, desc, po4) in enumerate(lines_raw, 1):
        part = None
        if ids:
            parts = ids.split(sep)
            if len(parts) == 3:  # one pair: the usual
                product_ids: tuple[tuple[str, str], ...] = ((parts[1], parts[2]),)
                if parts[1] in _PART_QUALIFIERS:
                    part = parts[2]
            else:
                product_ids = tuple(zip(parts[1::2], parts[2::2], strict=True))
                for want in _PART_QUALIFIERS:  # po850._part_number: BP, else IN, else CB
                    part = next((v for q, v in product_ids if q == want), None)
                    if part is not None:
                        break
        else:
            product_ids = ()
        add(
            _new_line(
                LightLine,
                (
                    line_no,
                    v1 or None,
                    product_ids,
                    part,
                    desc or None,
                    dec.get(qty) or _number(qty),
                    uom,
                    (dec.get(price) or _number(price)) if price else None,
                    basis or None,
                    _pack([Segment("PO4", po4.split(sep), 0)]) if po4 else None,
                    plain,
                    [],
                ),
            )
        )
    return out


def _jp(v: str | None) -> str:  # a value known to need no escape
    return "null" if v is None else f'"{v}"'


def _ja(a: LightAddress | None, plain: bool) -> str:
    return "null" if a is None else a.model_dump_json(plain)


class LightProvenance:
    """The order's provenance: its group's values, its ST02, and ``message_id`` (set by
    intake once the message is stored)."""

    __slots__ = ("_message_id", "group", "transaction_control_number")
    channel = Channel.EDI
    client_request_id = None
    extraction_model = None

    def __init__(self, group: Group, control: str) -> None:
        self.group = group
        self.transaction_control_number = control

    @property
    def message_id(self) -> int | None:
        return getattr(self, "_message_id", None)

    @message_id.setter
    def message_id(self, value: int | None) -> None:
        self._message_id = value

    partner_id = property(lambda self: self.group.partner)
    source_ref = property(lambda self: self.group.ctx.source_ref)
    document_sha256 = property(lambda self: self.group.ctx.document_sha256)
    interchange_control_number = property(lambda self: self.group.ctx.interchange_control)
    group_control_number = property(lambda self: self.group.ctx.group_control)
    received_at = property(lambda self: self.group.ctx.received_at)

    def model_dump_json(self) -> str:
        head, mid, tail = self.group.provenance_json()
        message_id = self.message_id
        return (
            f"{head}{'null' if message_id is None else int(message_id)}"
            f"{mid}{_js(self.transaction_control_number)}{tail}"
        )

    def to_model(self) -> Provenance:
        p = self.group.provenance(self.transaction_control_number, self.message_id)
        if hasattr(self, "_message_id"):
            p.__pydantic_fields_set__.add("message_id")  # set, as on the model
        return p


def _model_of(party):  # type: ignore[no-untyped-def]
    return party.to_model() if party is not None else None


class LightOrder:
    """An accepted 850's order as plain values. ``customer_id`` (and the provenance's
    ``message_id``) may be set, as intake does on the model. Its lines (and ``total``) are
    worked out from the set's text when first asked: intake asks once, to store them."""

    __slots__ = ("_customer", "_lines", "provenance", "sep", "values")
    purpose = "original"

    def __init__(self, values: tuple, provenance: LightProvenance, sep: str) -> None:
        self.values = values
        self.provenance = provenance
        self.sep = sep

    @property
    def customer_id(self) -> str | None:
        return getattr(self, "_customer", None)

    @customer_id.setter
    def customer_id(self, value: str | None) -> None:
        self._customer = value  # set: one of the model's fields set, as on the model

    @property
    def lines(self) -> list[LightLine]:
        try:
            return self._lines
        except AttributeError:
            self._lines = _light_lines(self.values[16], self.sep, self.values[18])
            return self._lines

    @property
    def total(self) -> Decimal | None:
        """As ``Order.total``: Σ quantity × price, None when a line has no price."""
        if not self.values[17]:
            return None
        return sum((ln.quantity * ln.unit_price for ln in self.lines), Decimal("0"))

    order_id = property(lambda self: self.values[0])
    po_number = property(lambda self: self.values[1])
    po_date = property(lambda self: self.values[2])
    order_type = property(lambda self: self.values[3])
    buyer = property(lambda self: self.values[4])
    ship_to = property(lambda self: self.values[5])
    bill_to = property(lambda self: self.values[6])
    currency = property(lambda self: self.values[7])
    requested_ship_date = property(lambda self: self.values[8])
    requested_delivery_date = property(lambda self: self.values[9])
    cancel_after = property(lambda self: self.values[10])
    carrier_routing = property(lambda self: self.values[11])
    payment_terms = property(lambda self: self.values[12])
    references = property(lambda self: self.values[13])
    contacts = property(lambda self: self.values[14])
    notes = property(lambda self: self.values[15])
    declared_line_count = property(lambda self: len(self.values[16]))

    def model_dump_json(self) -> str:
        """``Order.model_dump_json()`` of :meth:`to_model`, without building it."""
        (
            order_id,
            po,
            po_date,
            order_type,
            buyer,
            ship_to,
            bill_to,
            currency,
            ship,
            delivery,
            cancel,
            routing,
            terms,
            refs,
            contacts,
            notes,
            _,
            _,
            plain,
        ) = self.values
        if plain:
            q = _jp
            references = ",".join([f'"{k}":"{v}"' for k, v in refs.items()])
        else:
            q = _jo
            references = ",".join([f"{_js(k)}:{_js(v)}" for k, v in refs.items()])
        lines = ",".join([ln.model_dump_json() for ln in self.lines])
        return (
            f'{{"order_id":{q(order_id)},"po_number":{q(po)},"po_date":{_jd(po_date)},'
            f'"purpose":"original","order_type":{q(order_type)},'
            f'"customer_id":{_jo(self.customer_id)},"buyer":{_ja(buyer, plain)},'
            f'"ship_to":{_ja(ship_to, plain)},"bill_to":{_ja(bill_to, plain)},'
            f'"currency":{q(currency)},"requested_ship_date":{_jd(ship)},'
            f'"requested_delivery_date":{_jd(delivery)},"cancel_after":{_jd(cancel)},'
            f'"carrier_routing":{_jo(routing)},"payment_terms":{_jo(terms)},'
            f'"references":{{{references}}},"contacts":[{",".join(map(_js, contacts))}],'
            f'"charges":[],"notes":[{",".join(map(_js, notes))}],"lines":[{lines}],'
            f'"declared_line_count":{len(self.values[16])},'
            f'"provenance":{self.provenance.model_dump_json()},"confidence":{{}}}}'
        )

    def to_model(self) -> Order:
        """The canonical order, built as validation would build it (every value proven)."""
        lines = self.lines
        return _make_order(
            {
                "order_id": self.order_id,
                "po_number": self.po_number,
                "po_date": self.po_date,
                "purpose": "original",
                "order_type": self.order_type,
                "customer_id": self.customer_id,
                "buyer": _model_of(self.buyer),
                "ship_to": _model_of(self.ship_to),
                "bill_to": _model_of(self.bill_to),
                "currency": self.currency,
                "requested_ship_date": self.requested_ship_date,
                "requested_delivery_date": self.requested_delivery_date,
                "cancel_after": self.cancel_after,
                "carrier_routing": self.carrier_routing,
                "payment_terms": self.payment_terms,
                "references": dict(self.references),
                "contacts": list(self.contacts),
                "charges": [],
                "notes": list(self.notes),
                "lines": [ln.to_model() for ln in lines],
                "declared_line_count": len(lines),
                "provenance": self.provenance.to_model(),
                "confidence": {},
            },
            _ORDER_SET if not hasattr(self, "_customer") else _ORDER_SET_CUSTOMER,
        )

    def set_result(self, fast: FastSet) -> TransactionResult:
        """The set's ``TransactionResult`` (AK5 A, nothing to note), with :meth:`to_model`."""
        return _make_result(
            {
                "set_id": "850",
                "control_number": fast.control,
                "implementation_ref": None,
                "segment_count": fast.count,
                "declared_segment_count": fast.se01,
                "segment_index": fast.st_index,
                "accepted": True,
                "ack_code": "A",
                "ak5_codes": [],
                "segment_notes": [],
                "errors": [],
                "po_number": self.values[1],
                "order": self.to_model(),
                "change": None,
                "acknowledgment": None,
            },
            _RESULT_SET,
        )


# ------------------------------------------------------------------------------ helpers
_ZERO = Decimal(0)
#: totals below this cannot reach numeric(14, 2) (12 integer digits) even rounded
_FAR_BELOW_TOTAL_BOUND = Decimal(10) ** 11
_decimal: dict[str, Decimal] = {}  # quantities and prices repeat: Decimal is immutable
_dates: dict[str, date] = {}


_MAX_PARTIES = 4096  # distinct N1 loops remembered per group
_NO_ADDRESSES: dict[str, LightAddress] = {}


def _parties(
    parties_raw: str, party_re: re.Pattern[str]
) -> tuple[dict[str, LightAddress], int] | None:
    """The N1 loops' addresses by party code and their segment count, or None when the slow
    path must read them. The result is shared by every set with the same loops' text: it is
    never changed (the addresses are tuples)."""
    addresses: dict[str, LightAddress] = {}
    count = 0
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
        # as po850._Party.address (N202 only after N201, N302 only after N301)
        street = (l1, l2) if l2 else (l1,) if l1 else ()
        if n2a:
            n2 = (n2a, n2b) if n2b else (n2a,)
            if not name:
                name, n2 = n2[0], n2[1:]
            street = n2 + street
        addresses[code] = _new_address(
            LightAddress,
            (
                name or None,
                ident or None,
                qual or None,
                street,
                city or None,
                region or None,
                postal or None,
                country or None,
            ),
        )
    if covered != len(parties_raw):
        return None
    return addresses, count


def _total(lines_raw: list[tuple[str, ...]]) -> Decimal:
    """Σ quantity × price of the lines, as ``Order.total`` (every line priced)."""
    total = _ZERO
    for line in lines_raw:
        total += Decimal(line[2]) * Decimal(line[4])
    return total


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
_ORDER_SET_CUSTOMER = _ORDER_SET | {"customer_id"}
_RESULT_FIELDS = tuple(TransactionResult.model_fields)
_make_result = _maker(TransactionResult, _RESULT_FIELDS)
_RESULT_SET = frozenset(_RESULT_FIELDS)


def usable() -> bool:
    return ENABLED and prechecked.ENABLED
