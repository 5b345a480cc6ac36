"""X12 850 (purchase order) interchanges, written the way real trading partners send them.

Partners differ in exactly the ways that break naive parsers: element / segment / component
separators (``*~>``, ``|`` with a bare newline as terminator, ``^'``…), a repetition separator
in ISA11 only from 00501 on (``U`` before), CRLF or LF or nothing after each segment, whole
files hard-wrapped at 80 columns, a UTF-8 byte-order mark, and six-digit dates in versions
before 004010. Control numbers increase per partner across the run.

A file is ``[interchange, ...]``, an interchange ``[group, ...]``, a group ``[doc, ...]``.
Malformed files (labelled ``malformed_edi``) break exactly one envelope rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from orderflow_sandbox.generator.day import PurchaseOrderDoc
from orderflow_sandbox.generator.world import DISTRIBUTOR_GS_ID, DISTRIBUTOR_ISA_ID

Segment = list[str]


@dataclass
class ControlNumbers:
    """Per-partner running interchange / group / transaction-set control numbers."""

    next_isa: dict[str, int] = field(default_factory=dict)
    next_gs: dict[str, int] = field(default_factory=dict)
    next_st: dict[str, int] = field(default_factory=dict)

    def take(self, table: dict[str, int], partner_id: str, start: int) -> int:
        n = table.get(partner_id, start)
        table[partner_id] = n + 1
        return n


def _clean(text: str, partner: dict[str, Any]) -> str:
    """Element text must not contain any of the partner's delimiters (nor line breaks)."""
    bad = {partner["element_sep"], partner["segment_term"], partner["component_sep"], "\r", "\n"}
    if partner["repetition_sep"]:
        bad.add(partner["repetition_sep"])
    return "".join(ch for ch in text if ch not in bad).strip()[:60]


def _num(x: float) -> str:
    """X12 numeric: no trailing zeros, no exponent."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.4f}".rstrip("0").rstrip(".")


def _price(x: float) -> str:
    return f"{x:.2f}" if round(x, 2) == x else _num(x)


def po850(doc: PurchaseOrderDoc, partner: dict[str, Any], control: int) -> list[Segment]:
    """One 850 transaction set, ST through SE, for ``doc``."""
    modern = partner["gs_version"] >= "004010"
    d = (lambda day: day.strftime("%Y%m%d")) if modern else (lambda day: day.strftime("%y%m%d"))
    t = partial(_clean, partner=partner)
    ctl = f"{control:04d}"
    segs: list[Segment] = [
        ["ST", "850", ctl],
        ["BEG", "00", "SA", t(doc.po_number), "", d(doc.po_date)],
        ["CUR", "BY", doc.currency],
        ["REF", "IA", t(doc.customer_id)],
        ["PER", "BD", t(doc.buyer_name), "TE", doc.buyer_phone, "EM", t(doc.buyer_email)],
    ]
    pct, ddays, net = doc.terms
    segs.append(
        ["ITD", "01", "3", _num(pct) if pct else "", "", str(ddays) if ddays else "", "", str(net)]
    )
    segs.append(["DTM", "002", d(doc.requested_ship_date)])
    if doc.carrier:
        segs.append(["TD5", "O", "2", doc.carrier[0], "M", t(doc.carrier[1])])
    segs.append(["N1", "BY", t(doc.customer_name), "92", t(doc.customer_id)])
    segs += _party("BT", doc.bill_to, doc.customer_id, t)
    ship_to = _party("ST", doc.ship_to, doc.ship_to["ship_to_id"], t)
    if doc.key % 3 == 0:  # some buyers name a receiving contact on the ship-to
        ship_to.insert(1, ["N2", t(f"ATTN {doc.buyer_name}")])
    segs += ship_to
    hash_total = 0.0
    for ln in doc.lines:
        po1 = ["PO1", str(ln.line_no), _num(ln.quantity), ln.uom, _price(ln.unit_price), "PE"]
        for qual, value in ln.ids:
            po1 += [qual, t(value)]
        segs.append(po1)
        segs.append(["PID", "F", "", "", "", t(ln.description)])
        if ln.pack_size > 1:
            segs.append(["PO4", str(ln.pack_size)])
        hash_total += ln.quantity
    segs.append(["CTT", str(len(doc.lines)), _num(round(hash_total, 4))])
    segs.append(["SE", str(len(segs) + 1), ctl])
    return segs


def _party(code: str, addr: dict[str, Any], ident: str, t: Callable[[str], str]) -> list[Segment]:
    out: list[Segment] = [["N1", code, t(addr["name"]), "92", t(ident)]]
    if addr.get("address_line1"):
        n3 = ["N3", t(addr["address_line1"])]
        if addr.get("address_line2"):
            n3.append(t(addr["address_line2"]))
        out.append(n3)
    out.append(
        [
            "N4",
            t(addr["city"]),
            addr["region"],
            addr.get("postal_code") or "",
            addr.get("country") or "US",
        ]
    )
    return out


def _isa(partner: dict[str, Any], control: int, at: datetime) -> Segment:
    rep = partner["repetition_sep"] or "U"
    return [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        partner["isa_qualifier"],
        partner["isa_id"].ljust(15)[:15],
        "ZZ",
        DISTRIBUTOR_ISA_ID.ljust(15),
        at.strftime("%y%m%d"),
        at.strftime("%H%M"),
        rep,
        partner["isa_version"],
        f"{control:09d}",
        "0",
        "P",
        partner["component_sep"],
    ]


def interchange(
    partner: dict[str, Any], groups: list[list[PurchaseOrderDoc]], at: datetime, ctl: ControlNumbers
) -> list[Segment]:
    """ISA … IEA around functional groups of 850s, consuming the partner's control numbers."""
    pid = partner["partner_id"]
    base = 1 + sum(ord(ch) for ch in pid) * 97 % 50000
    isa_no = ctl.take(ctl.next_isa, pid, base * 10)
    segs: list[Segment] = [_isa(partner, isa_no, at)]
    modern = partner["gs_version"] >= "004010"
    for docs in groups:
        gs_no = ctl.take(ctl.next_gs, pid, base)
        segs.append(
            [
                "GS",
                "PO",
                partner["gs_id"].strip(),
                DISTRIBUTOR_GS_ID,
                at.strftime("%Y%m%d" if modern else "%y%m%d"),
                at.strftime("%H%M"),
                str(gs_no),
                "X",
                partner["gs_version"],
            ]
        )
        for doc in docs:
            segs += po850(doc, partner, ctl.take(ctl.next_st, pid, 1))
        segs.append(["GE", str(len(docs)), str(gs_no)])
    segs.append(["IEA", str(len(groups)), f"{isa_no:09d}"])
    return segs


def malform(segs: list[Segment], kind: str) -> list[Segment]:
    """Break exactly one envelope rule, the way real broken files arrive."""
    out = [list(s) for s in segs]
    if kind == "wrong_se_count":
        se = next(s for s in out if s[0] == "SE")
        se[1] = str(int(se[1]) + (2 if int(se[1]) % 2 else -1))
    elif kind == "missing_iea":
        out = [s for s in out if s[0] != "IEA"]
    elif kind == "ge_count_mismatch":
        ge = next(s for s in out if s[0] == "GE")
        ge[1] = str(int(ge[1]) + 1)
    elif kind == "truncated_isa":
        out[0] = out[0][:14]  # ISA14-16 lost: no component separator, not 106 characters
    elif kind == "control_number_mismatch":
        iea = next(s for s in out if s[0] == "IEA")
        iea[2] = f"{int(iea[2]) + 1:09d}"
    else:
        raise ValueError(kind)
    return out


def serialise(partner: dict[str, Any], interchanges: list[list[Segment]]) -> bytes:
    """Join segments with the partner's delimiters, line endings, wrapping and BOM."""
    el, term, eol = partner["element_sep"], partner["segment_term"], partner["line_ending"]
    segments = [el.join(s) + term for ic in interchanges for s in ic]
    if partner["wrap80"]:
        stream = "".join(segments)
        text = "".join(stream[i : i + 80] + eol for i in range(0, len(stream), 80))
    else:
        text = "".join(s + eol for s in segments)
    data = text.encode("ascii", "replace")
    return (b"\xef\xbb\xbf" + data) if partner["bom"] else data


def render_file(
    partner: dict[str, Any],
    structure: list[list[list[PurchaseOrderDoc]]],
    at: datetime,
    ctl: ControlNumbers,
    malformed: str | None = None,
) -> bytes:
    """A whole EDI file: one or more interchanges; ``malformed`` breaks the first one."""
    ics = [interchange(partner, groups, at, ctl) for groups in structure]
    if malformed:
        ics[0] = malform(ics[0], malformed)
    return serialise(partner, ics)
