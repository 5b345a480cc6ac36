"""Outbound 855 Purchase Order Acknowledgment, built from the canonical :class:`Order`.

One interchange, one PR group, one 855 set (ST02 ``0001``); ISA13 = GS06 = the control number
the store allocated.

- BAK: ``00`` (original), the acknowledgment type (``AT`` accepted when every line is plainly
  accepted, else ``AC`` acknowledge with detail and change; ``acknowledgment_type``
  overrides), the PO number, the PO date (or today when the order has none).
- Per canonical line, in order: PO1 echoing what the customer sent (PO101 their line id, or
  our line number; quantity ordered; unit; unit price and price basis; every product id
  qualifier/value pair in their order), then one ACK per :class:`AckLine` for that line:
  ACK01 status (IA accepted, IB backordered, IS substituted, IR rejected, IQ quantity
  changed), ACK02/03 quantity and unit, ACK04/05 ``068`` (current schedule ship) and the
  ship date when known, and for IS the substitute as ``SK`` in ACK07/08. A line without an
  :class:`AckLine` is acknowledged IA with its own quantity and unit. Several
  :class:`AckLine` for one line (e.g. IA for what ships now, IB for the rest) give several
  ACKs under its PO1.
- CTT01: the number of PO1 segments.

X12 has no price element in ACK, so :attr:`AckLine.unit_price` is not written: PO104 echoes
the customer's price. Telling the customer about a price change needs a CTP segment (or
ACK01 ``IP``), which this builder does not send yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from orderflow.domain.models import Order, OrderLine

from . import writer
from .results import Delimiters
from .writer import SegmentValues, functional_group, transaction_set

ACK_CODES = {
    "accepted": "IA",
    "backordered": "IB",
    "substituted": "IS",
    "rejected": "IR",
    "quantity_changed": "IQ",
}
"""AckLine.status → ACK01 line item status code."""

DEFAULT_DELIMITERS = Delimiters(
    element="*", component=">", repetition="^", segment="~", suffix="\n"
)
"""``*`` elements, ``>`` components, ``^`` repetitions (ISA11 from 00402 on), ``~`` + line end."""

_MAX_PO1_IDS = 10  # PO106/PO107 … PO124/PO125
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_PRICE_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class AckLine:
    """How we acknowledge (part of) one canonical order line."""

    line_no: int  # our canonical line_no
    status: str  # "accepted" | "backordered" | "substituted" | "rejected" | "quantity_changed"
    quantity: Decimal  # quantity acknowledged (for backordered: the backordered qty)
    uom: str
    unit_price: Decimal | None  # price we will charge (not written: see the module docstring)
    item_id: str | None = None  # our item (for substituted: the substitute's id)
    ship_date: date | None = None

    def __post_init__(self) -> None:
        if self.status not in ACK_CODES:
            raise ValueError(
                f"AckLine for line {self.line_no}: status {self.status!r} is not one of "
                f"{', '.join(ACK_CODES)}"
            )
        if self.quantity < 0:
            raise ValueError(f"AckLine for line {self.line_no}: quantity {self.quantity} < 0")
        if self.status == "substituted" and not (self.item_id or "").strip():
            raise ValueError(
                f"AckLine for line {self.line_no}: a substitution needs the substitute's item_id"
            )


def build_855(
    order: Order,
    lines: list[AckLine],
    *,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    gs_sender: str,
    gs_receiver: str,
    control_number: int,
    now: datetime,
    version: str = "004010",
    delimiters: Delimiters | None = None,
    acknowledgment_type: str | None = None,
) -> str:
    """Our 855 for ``order``, in its own interchange.

    ``sender``/``receiver`` are the ISA (qualifier, id) pairs, ``gs_sender``/``gs_receiver``
    the GS02/GS03 application codes. ``control_number`` (allocated by the store) is ISA13
    and GS06. ``version`` is GS08; ISA12 follows it (``00401`` for 004010, ``00501`` for
    005010). ``lines`` may leave out lines (they are accepted as ordered) and name one line
    more than once; naming a line the order does not have raises ``ValueError``.
    """
    if not 1 <= control_number <= 999_999_999:
        raise ValueError(f"control number {control_number} is not 1…999999999 (ISA13/GS06)")
    for qualifier, ident in (sender, receiver):
        if not 1 <= len(qualifier) <= 2 or not 1 <= len(ident) <= 15:
            raise ValueError(f"ISA party ({qualifier!r}, {ident!r}): qualifier 2, id 1–15 chars")
    by_line: dict[int, list[AckLine]] = {ln.line_no: [] for ln in order.lines}
    for ack in lines:
        if ack.line_no not in by_line:
            raise ValueError(
                f"AckLine for line {ack.line_no}: order {order.po_number} has no such line"
            )
        by_line[ack.line_no].append(ack)

    now = now if now.tzinfo is None else now.astimezone(UTC)
    plain = all(ack.status == "accepted" for ack in lines)
    body: list[SegmentValues] = [
        [
            "BAK",
            "00",
            acknowledgment_type or ("AT" if plain else "AC"),
            _text(order.po_number),
            _date(order.po_date or now.date(), version),
        ]
    ]
    for line in order.lines:
        body.append(_po1(line))
        acks = by_line[line.line_no] or [
            AckLine(line.line_no, "accepted", line.quantity, line.uom, line.unit_price)
        ]
        body += [_ack(ack, version) for ack in acks]
    body.append(["CTT", str(len(order.lines))])

    st = transaction_set("855", "0001", body)
    gs = functional_group(
        "PR",
        sender=_text(gs_sender),
        receiver=_text(gs_receiver),
        control_number=control_number,
        now=now,
        version=version,
        sets=[st],
    )
    return writer.interchange(
        [gs],
        d=delimiters or DEFAULT_DELIMITERS,
        sender=sender,
        receiver=receiver,
        control_number=control_number,
        now=now,
        version=_isa_version(version),
    )


def _po1(line: OrderLine) -> SegmentValues:
    price = _price(line.unit_price)
    seg = [
        "PO1",
        _text(line.source_line_id or str(line.line_no)),
        _number(line.quantity),
        _text(line.uom),
        price,
        _text(line.price_basis or "") if price else "",  # C0504: no basis without a price
    ]
    pairs = [(p.qualifier, p.value) for p in line.product_ids if p.qualifier and p.value]
    for qualifier, value in pairs[:_MAX_PO1_IDS]:
        seg += [_text(qualifier), _text(value)]
    return seg


def _ack(ack: AckLine, version: str) -> SegmentValues:
    seg = [
        "ACK",
        ACK_CODES[ack.status],
        _number(ack.quantity),
        _text(ack.uom),
        "068" if ack.ship_date else "",
        _date(ack.ship_date, version) if ack.ship_date else "",
    ]
    if ack.status == "substituted":
        seg += ["", "SK", _text(ack.item_id or "")]  # ACK06 request reference: none
    return seg


def _isa_version(version: str) -> str:
    """ISA12 for GS08 ``version``: 004010 → 00401, 005010 → 00501, 004010VICS → 00401."""
    head = version[:5]
    return head if re.fullmatch(r"00[2-9]\d\d", head) else "00401"


def _date(d: date, version: str) -> str:
    """CCYYMMDD, or YYMMDD before 004010 (as in GS04)."""
    return d.strftime("%y%m%d") if version[:6] < "004010" else d.strftime("%Y%m%d")


def _number(q: Decimal) -> str:
    """A quantity without trailing zeros or exponent: 10, 2.5, 0."""
    text = format(q.normalize(), "f")
    return "0" if text == "-0" else text


def _price(p: Decimal | None) -> str:
    """A price rounded to 4 decimals, without trailing zeros; "" when unknown."""
    return "" if p is None else _number(p.quantize(_PRICE_PLACES, rounding=ROUND_HALF_UP))


def _text(value: str) -> str:
    """Control characters (CR/LF, tabs) become spaces. The writer replaces the delimiters
    only: a CR in a value would split the segment for a reader of newline-terminated X12,
    and our reader drops CR/LF inside values of ``~``-terminated X12."""
    return _CONTROL_CHARS.sub(" ", value)
