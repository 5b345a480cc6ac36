"""Outbound 856 Ship Notice/Manifest (ASN), built from the canonical :class:`Shipment`.

One interchange, one SH group, one 856 set (ST02 ``0001``); ISA13 = GS06 = the control number
the store allocated.

- BSN: ``00`` (original), the shipment id, the date and time the ASN is created (BSN03/04 by
  the standard's semantic notes), hierarchical structure ``0004`` (shipment, order, item: we
  send no pack level; ``0001`` would announce shipment, order, *packaging*, item).
- ``HL*1**S*1`` shipment: TD1 gross weight in KG (when known; we have no carton count, so no
  TD101/TD102), TD5 carrier (TD502 ``2`` + TD503 SCAC when the carrier id has the shape of a
  SCAC, else its id as TD505 routing; TD504 ``U`` private parcel service or ``M`` motor common
  carrier; TD512 service level when ours maps to a code of element 284), REF ``CN`` with the
  tracking/PRO number, DTM ``011`` shipped (date, time, ``UT``), N1 ``ST`` ship-to and N1 ``SF``
  ship-from (the DC), each with N3/N4 when we have an address.
- ``HL*2*1*O*1`` order: PRF with the PO number and PO date.
- per shipped line ``HL*n*2*I*0`` item: LIN (the buyer's line id, the product ids they sent,
  then ours as ``VN``, the item that actually shipped, i.e. the substitute when one did), SN1
  (quantity shipped and unit, SN105/SN106 quantity ordered and unit). A line that shipped
  nothing is still listed with SN102 ``0`` so the buyer sees the short line.
- CTT01: the number of HL segments.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from orderflow.domain.documents import Shipment, ShippedLine
from orderflow.domain.models import Address, ProductId

from . import writer
from .po855 import DEFAULT_DELIMITERS, _date, _isa_version, _number, _text
from .results import Delimiters
from .writer import SegmentValues, functional_group, transaction_set

HIERARCHICAL_STRUCTURE = "0004"
"""BSN05: shipment, order, item (element 1005)."""

TRANSPORT_METHODS = {"parcel": "U", "ltl": "M"}
"""Shipment.mode → TD504 (element 91): U private parcel service, M motor (common carrier)."""

SERVICE_LEVELS = {
    "GND": "CG",  # ground
    "GROUND": "CG",
    "2DA": "SC",  # second day air
    "2DAY": "SC",
    "NDA": "ND",  # next day air
    "1DAY": "ND",
    "3DS": "3D",  # three day service
    "3DAY": "3D",
    "PRI": "PB",  # (USPS) priority mail
}
"""Our service codes → TD512 service level (element 284). A service code that is itself one of
:data:`_SERVICE_LEVEL_CODES` is sent as is; anything else (e.g. LTL-STD) leaves TD512 out."""

_SERVICE_LEVEL_CODES = {"3D", "CG", "G2", "ND", "NH", "PB", "SA", "SC", "SD", "SE", "SG", "ON"}
_SCAC = re.compile(r"[A-Z]{2,4}")
_WEIGHT_PLACES = Decimal("0.001")
_MAX_LIN_IDS = 15  # LIN02/LIN03 … LIN30/LIN31
_MAX_N3 = 2  # N3 repeats at most twice in the N1 loop


def build_856(
    shipment: Shipment,
    *,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    gs_sender: str,
    gs_receiver: str,
    control_number: int,
    now: datetime,
    version: str = "004010",
    delimiters: Delimiters | None = None,
) -> str:
    """Our 856 for ``shipment``, in its own interchange.

    ``sender``/``receiver`` are the ISA (qualifier, id) pairs, ``gs_sender``/``gs_receiver``
    the GS02/GS03 application codes. ``control_number`` (allocated by the store) is ISA13
    and GS06. ``version`` is GS08; ISA12 follows it (``00401`` for 004010, ``00501`` for
    005010).
    """
    check_envelope(control_number, sender, receiver)
    now = now if now.tzinfo is None else now.astimezone(UTC)
    shipped = shipment.shipped_at.astimezone(UTC)

    body: list[SegmentValues] = [
        [
            "BSN",
            "00",
            _text(shipment.shipment_id),
            _date(now.date(), version),
            now.strftime("%H%M"),
            HIERARCHICAL_STRUCTURE,
        ],
        ["HL", "1", "", "S", "1"],
    ]
    if shipment.weight_kg > 0:
        weight = shipment.weight_kg.quantize(_WEIGHT_PLACES, rounding=ROUND_HALF_UP)
        body.append(["TD1", "", "", "", "", "", "G", _number(weight), "KG"])
    td5 = _td5(shipment)
    if td5:
        body.append(td5)
    if shipment.tracking_number:
        body.append(["REF", "CN", _text(shipment.tracking_number)])
    body.append(["DTM", "011", _date(shipped.date(), version), shipped.strftime("%H%M"), "UT"])
    body += party("ST", shipment.ship_to, default_qualifier="92")
    body += party("SF", shipment.ship_from, default_qualifier="91", default_id=shipment.dc_id)

    prf = ["PRF", _text(shipment.po_number)]
    if shipment.po_date:
        prf += ["", "", _date(shipment.po_date, version)]
    body += [["HL", "2", "1", "O", "1"], prf]

    for n, line in enumerate(shipment.lines, start=3):
        body += [["HL", str(n), "2", "I", "0"], _lin(line), _sn1(line)]
    body.append(["CTT", str(2 + len(shipment.lines))])

    return wrap(
        "856",
        "SH",
        body,
        sender=sender,
        receiver=receiver,
        gs_sender=gs_sender,
        gs_receiver=gs_receiver,
        control_number=control_number,
        now=now,
        version=version,
        delimiters=delimiters,
    )


def scac(carrier_id: str | None) -> str:
    """The carrier id when it has the shape of a SCAC (2–4 letters), else ""."""
    carrier = (carrier_id or "").strip().upper()
    return carrier if _SCAC.fullmatch(carrier) else ""


def _td5(shipment: Shipment) -> SegmentValues | None:
    code = scac(shipment.carrier_id)
    seg = [
        "TD5",
        "",
        "2" if code else "",  # C0203: a qualifier only with its id
        code,
        TRANSPORT_METHODS.get(shipment.mode.strip().lower(), ""),
        "" if code else _text(shipment.carrier_id),  # TD505 routing: not a SCAC
    ]
    level = service_level(shipment.service_code)
    if level:
        seg += ["", "", "", "", "", "", level]  # TD506 … TD511 empty, TD512
    # R0204050612: at least one of TD502, TD504, TD505, TD506, TD512
    return seg if any(seg[1:]) else None


def service_level(service_code: str) -> str:
    """TD512 service level (element 284) for our service code, or "" when none fits."""
    code = service_code.strip().upper()
    return SERVICE_LEVELS.get(code) or (code if code in _SERVICE_LEVEL_CODES else "")


def party(
    entity: str,
    address: Address | None,
    *,
    default_qualifier: str,
    default_id: str | None = None,
) -> list[SegmentValues]:
    """An N1 loop: N1 (name, N103/N104 when there is an id), N3 (at most two, two lines
    each), N4. Nothing when the party has neither a name nor an id (N1 R0203)."""
    if address is None:
        return []
    name = _text(address.name or "")
    if address.party_id:
        qualifier, ident = address.party_id_qualifier or default_qualifier, address.party_id
    else:
        qualifier, ident = default_qualifier, default_id or ""
    if not name and not ident:
        return []
    n1 = ["N1", entity, name]
    if ident:
        n1 += [_text(qualifier), _text(ident)]  # P0304: both or neither
    out = [n1]
    lines = [_text(x) for x in address.address_lines if x.strip()][: 2 * _MAX_N3]
    out += [["N3", *lines[i : i + 2]] for i in range(0, len(lines), 2)]
    n4 = [
        _text(v or "") for v in (address.city, address.region, address.postal_code, address.country)
    ]
    if any(n4):
        out.append(["N4", *n4])
    return out


def product_ids(ids: list[ProductId], item_id: str, room: int) -> list[str]:
    """Qualifier/value pairs as the buyer sent them, then ours as ``VN``; a ``VN`` the buyer
    sent is dropped (ours names what shipped), and the buyer's pairs are cut to fit ``room``."""
    pairs = [(p.qualifier, p.value) for p in ids if p.qualifier and p.value and p.qualifier != "VN"]
    out: list[str] = []
    for qualifier, value in [*pairs[: room - 1], ("VN", item_id)]:
        out += [_text(qualifier), _text(value)]
    return out


def _lin(line: ShippedLine) -> SegmentValues:
    return [
        "LIN",
        _text(line.source_line_id or str(line.line_no)),
        *product_ids(line.product_ids, line.item_id, _MAX_LIN_IDS),
    ]


def _sn1(line: ShippedLine) -> SegmentValues:
    uom = _text(line.uom)
    return ["SN1", "", _number(line.quantity_shipped), uom, "", _number(line.quantity_ordered), uom]


def check_envelope(control_number: int, sender: tuple[str, str], receiver: tuple[str, str]) -> None:
    """ISA13/GS06 must be 1…999999999, ISA qualifiers 1–2 and ids 1–15 characters."""
    if not 1 <= control_number <= 999_999_999:
        raise ValueError(f"control number {control_number} is not 1…999999999 (ISA13/GS06)")
    for qualifier, ident in (sender, receiver):
        if not 1 <= len(qualifier) <= 2 or not 1 <= len(ident) <= 15:
            raise ValueError(f"ISA party ({qualifier!r}, {ident!r}): qualifier 2, id 1–15 chars")


def wrap(
    set_id: str,
    functional_id: str,
    body: list[SegmentValues],
    *,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    gs_sender: str,
    gs_receiver: str,
    control_number: int,
    now: datetime,
    version: str,
    delimiters: Delimiters | None,
) -> str:
    """``body`` as set ``0001`` in one group in one interchange, as the 855 is sent."""
    st = transaction_set(set_id, "0001", body)
    gs = functional_group(
        functional_id,
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
