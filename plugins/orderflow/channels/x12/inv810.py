"""Outbound 810 Invoice, built from the canonical :class:`Invoice`.

One interchange, one IN group, one 810 set (ST02 ``0001``); ISA13 = GS06 = the control number
the store allocated.

- BIG: invoice date, invoice number, PO date (when known), PO number.
- CUR ``SE`` with the currency, only when it is not USD.
- N1 ``BT`` bill-to and N1 ``ST`` ship-to (with N3/N4) when the invoice has them.
- ITD when there are payment terms: the text in ITD12; plain "Net N" terms also as ITD01
  ``05`` (discount not applicable), ITD02 ``3`` (from the invoice date), ITD07 N net days.
- Per line IT1: the buyer's line id (or our line number), quantity invoiced, unit, unit price,
  ``PE`` price per each, the product ids the buyer sent, then our item as ``VN``.
- TDS01: the invoice total (lines + tax + freight) in cents (N2: implied two decimals).
- TXI ``ST`` sales tax when there is tax.
- CAD with the carrier (CAD04 SCAC, or CAD05 routing when the id is not a SCAC) and the
  tracking/PRO number as ``CN`` (carrier's reference number) in CAD07/08. Up to 004060 only:
  from 005010 CAD01 (transport method) is mandatory, and the invoice does not say how it
  shipped, so CAD is left out rather than sent invalid.
- SAC ``C`` ``D240`` freight, amount in cents, when there is freight.
- CTT01: the number of IT1 segments.

Segments follow the standard's order: BIG, CUR, N1 loops, ITD; IT1s; TDS, TXI, CAD, SAC, CTT.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from orderflow.domain.documents import CENTS, Invoice, InvoiceLine

from .asn856 import check_envelope, party, product_ids, scac, wrap
from .po855 import _date, _number, _price, _text
from .results import Delimiters
from .writer import SegmentValues

_MAX_IT1_IDS = 10  # IT106/IT107 … IT124/IT125
_NET_TERMS = re.compile(r"(?i)\s*net\s*(\d{1,3})(?:\s*days?)?\s*")
_CAD01_MANDATORY_FROM = "005010"


def build_810(
    invoice: Invoice,
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
    """Our 810 for ``invoice``, in its own interchange.

    ``sender``/``receiver`` are the ISA (qualifier, id) pairs, ``gs_sender``/``gs_receiver``
    the GS02/GS03 application codes. ``control_number`` (allocated by the store) is ISA13
    and GS06. ``version`` is GS08; ISA12 follows it (``00401`` for 004010, ``00501`` for
    005010).
    """
    check_envelope(control_number, sender, receiver)
    now = now if now.tzinfo is None else now.astimezone(UTC)

    body: list[SegmentValues] = [
        [
            "BIG",
            _date(invoice.invoice_date, version),
            _text(invoice.invoice_id),
            _date(invoice.po_date, version) if invoice.po_date else "",
            _text(invoice.po_number),
        ]
    ]
    currency = invoice.currency.upper()
    if currency != "USD":
        body.append(["CUR", "SE", _text(currency)])
    body += party("BT", invoice.bill_to, default_qualifier="92")
    body += party("ST", invoice.ship_to, default_qualifier="92")
    if invoice.payment_terms and invoice.payment_terms.strip():
        body.append(_itd(invoice.payment_terms))

    body += [_it1(line) for line in invoice.lines]

    body.append(["TDS", str(_cents(invoice.total))])
    if invoice.tax > 0:
        body.append(["TXI", "ST", _number(_money(invoice.tax))])
    cad = _cad(invoice, version)
    if cad:
        body.append(cad)
    if invoice.freight > 0:
        body.append(["SAC", "C", "D240", "", "", str(_cents(invoice.freight))])
    body.append(["CTT", str(len(invoice.lines))])

    return wrap(
        "810",
        "IN",
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


def _itd(terms: str) -> SegmentValues:
    text = _text(terms.strip())
    net = _NET_TERMS.fullmatch(terms)
    head = ["05", "3", "", "", "", "", net.group(1)] if net else [""] * 7  # ITD01 … ITD07
    return ["ITD", *head, "", "", "", "", text]  # ITD08 … ITD11 empty, ITD12


def _it1(line: InvoiceLine) -> SegmentValues:
    return [
        "IT1",
        _text(line.source_line_id or str(line.line_no)),
        _number(line.quantity),
        _text(line.uom),
        _price(line.unit_price),
        "PE",
        *product_ids(line.product_ids, line.item_id, _MAX_IT1_IDS),
    ]


def _cad(invoice: Invoice, version: str) -> SegmentValues | None:
    if version[:6] >= _CAD01_MANDATORY_FROM or not (invoice.carrier_id or "").strip():
        return None  # R0504: CAD04 or CAD05 is required
    code = scac(invoice.carrier_id)
    seg = ["CAD", "", "", "", code, "" if code else _text(invoice.carrier_id or "")]
    if invoice.tracking_number:
        seg += ["", "CN", _text(invoice.tracking_number)]  # C0708
    return seg


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(CENTS, rounding=ROUND_HALF_UP)


def _cents(amount: Decimal) -> int:
    """An amount as N2 (implied two decimals): 1234.5 → 123450."""
    return int(_money(amount) * 100)
