"""855 purchase order acknowledgment: content, codes, numbers, envelopes read back through
our own X12 reader and envelope checks (other delimiters, 005010)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orderflow.channels.x12 import Delimiters
from orderflow.channels.x12.po855 import AckLine, build_855
from orderflow.channels.x12.reader import read_interchanges
from orderflow.channels.x12.validate import InterchangeWork, check_envelopes
from orderflow.domain.models import Channel, Order, OrderLine, ProductId, Provenance

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def make_order(**changes) -> Order:
    fields = {
        "order_id": "EDI-0123456789ab",
        "po_number": "PO-4711",
        "po_date": date(2026, 11, 27),
        "lines": [
            OrderLine(
                line_no=1,
                source_line_id="10",
                product_ids=[
                    ProductId(qualifier="BP", value="CUST-1"),
                    ProductId(qualifier="VP", value="VEND-1"),
                    ProductId(qualifier="UP", value="012345678905"),
                ],
                quantity=Decimal("10.000"),
                uom="EA",
                unit_price=Decimal("2.5000"),
                price_basis="PE",
            ),
            OrderLine(
                line_no=2,
                source_line_id="20",
                product_ids=[ProductId(qualifier="BP", value="CUST-2")],
                quantity=Decimal("4"),
                uom="CA",
                unit_price=Decimal("12.3457"),
            ),
            OrderLine(
                line_no=3,
                product_ids=[ProductId(qualifier="VP", value="VEND-3")],
                quantity=Decimal("2.50"),
                uom="LB",
                unit_price=Decimal("3.0"),
            ),
        ],
        "provenance": Provenance(channel=Channel.EDI, partner_id="ACME"),
    }
    return Order(**(fields | changes))


ACKS = [
    AckLine(1, "accepted", Decimal("10"), "EA", Decimal("2.50"), ship_date=date(2026, 12, 1)),
    AckLine(2, "backordered", Decimal("4"), "CA", Decimal("12.35"), ship_date=date(2026, 12, 15)),
    AckLine(3, "substituted", Decimal("2.5"), "LB", Decimal("3"), item_id="ITEM-99"),
]


def build(order: Order | None = None, acks: list[AckLine] | None = None, **kw) -> str:
    args = {
        "sender": ("ZZ", "DISTRIB"),
        "receiver": ("ZZ", "ACMEBUY"),
        "gs_sender": "DISTAPP",
        "gs_receiver": "ACMEAPP",
        "control_number": 123,
        "now": NOW,
    }
    return build_855(order or make_order(), ACKS if acks is None else acks, **(args | kw))


def read(text: str) -> InterchangeWork:
    """One interchange through our reader and envelope checks, which must find nothing."""
    raws, file_findings = read_interchanges(text)
    assert file_findings == []
    assert len(raws) == 1
    work = check_envelopes(raws[0])
    assert work.findings == []
    assert [f for g in work.groups for f in g.findings] == []
    assert [f for g in work.groups for t in g.txns for f in t.findings] == []
    return work


def body(text: str) -> list[list[str]]:
    """The 855's segments (ST … SE) as element lists, whitespace-trimmed."""
    (group,) = read(text).groups
    (txn,) = group.txns
    return [[s.el(0), *[s.el(k) for k in range(1, len(s.elements))]] for s in txn.segments]


def tagged(text: str, *tags: str) -> list[list[str]]:
    return [s for s in body(text) if s[0] in tags]


# ------------------------------------------------------------------ envelopes
def test_envelope_control_numbers_and_counts():
    work = read(build(control_number=123))
    isa, iea = work.raw.isa, work.raw.iea
    (group,) = work.groups
    (txn,) = group.txns

    assert isa.el(13) == "000000123"
    assert iea is not None
    assert iea.el(2) == "000000123"
    assert iea.el(1) == "1"
    assert group.el(1) == "PR"
    assert group.el(6) == "123"
    assert group.ge is not None
    assert group.ge.el(2) == "123"
    assert group.ge.el(1) == "1"
    assert txn.set_id == "855"
    assert txn.control == "0001"
    assert txn.se is not None
    assert txn.se.el(2) == "0001"
    # ST, BAK, 3 × (PO1, ACK), CTT, SE
    assert len(txn.segments) == 10
    assert txn.se.el(1) == "10"


def test_isa_and_gs_header_for_004010():
    text = build()
    work = read(text)
    isa = work.raw.isa
    gs = work.groups[0].gs
    assert gs is not None

    assert [isa.elements[k] for k in (5, 6, 7, 8)] == [
        "ZZ",
        "DISTRIB        ",
        "ZZ",
        "ACMEBUY        ",
    ]
    assert isa.el(9) == "261128"
    assert isa.el(10) == "0930"
    assert isa.el(11) == "U"  # no repetition separator before 00402
    assert isa.el(12) == "00401"
    assert isa.el(15) == "P"
    assert isa.el(16) == ">"
    assert [gs.el(k) for k in range(1, 9)] == [
        "PR",
        "DISTAPP",
        "ACMEAPP",
        "20261128",
        "0930",
        "123",
        "X",
        "004010",
    ]
    # default delimiters: "*" elements, "~" and a line end after every segment
    assert text.splitlines()[2] == "ST*855*0001~"
    assert text.endswith("IEA*1*000000123~\n")
    assert len(text.splitlines()) == 14  # ISA, GS, 10 set segments, GE, IEA


def test_version_005010():
    text = build(version="005010", control_number=987654321)
    work = read(text)
    isa = work.raw.isa
    gs = work.groups[0].gs
    assert gs is not None

    assert isa.el(12) == "00501"
    assert isa.el(11) == "^"  # repetition separator from 00402 on
    assert isa.delimiters.repetition == "^"
    assert isa.el(13) == "987654321"
    assert gs.el(6) == "987654321"
    assert gs.el(8) == "005010"
    assert tagged(text, "BAK") == [["BAK", "00", "AC", "PO-4711", "20261127"]]
    assert [s[1] for s in tagged(text, "ACK")] == ["IA", "IB", "IS"]


def test_other_delimiters_still_read():
    d = Delimiters(element="|", component=":", segment="\n")
    order = make_order(po_number="PO|47*11")
    text = build(order, delimiters=d)
    work = read(text)

    assert "~" not in text
    assert "*" not in text.replace("PO 47*11", "")  # "*" is data here, not a separator
    assert work.raw.isa.delimiters.element == "|"
    assert work.raw.isa.delimiters.segment == "\n"
    assert work.raw.isa.el(16) == ":"
    assert text.splitlines()[3] == "BAK|00|AC|PO 47*11|20261127"  # "|" in data → space
    (txn,) = work.groups[0].txns
    assert txn.se is not None
    assert txn.se.el(1) == str(len(txn.segments)) == "10"
    assert [s[1] for s in tagged(text, "ACK")] == ["IA", "IB", "IS"]
    assert tagged(text, "CTT") == [["CTT", "3"]]


def test_control_characters_in_values_do_not_split_segments():
    d = Delimiters(element="|", segment="\n")
    order = make_order(po_number="PO\r4711")
    work = read(build(order, delimiters=d))
    (txn,) = work.groups[0].txns

    assert txn.segments[1].elements == ["BAK", "00", "AC", "PO 4711", "20261127"]
    assert txn.se is not None
    assert txn.se.el(1) == "10"


# ------------------------------------------------------------------ content
def test_bak():
    assert tagged(build(), "BAK") == [["BAK", "00", "AC", "PO-4711", "20261127"]]


def test_bak_all_accepted_is_at_and_po_date_defaults_to_today():
    acks = [AckLine(1, "accepted", Decimal("10"), "EA", Decimal("2.5"))]
    text = build(make_order(po_date=None), acks)

    assert tagged(text, "BAK") == [["BAK", "00", "AT", "PO-4711", "20261128"]]


def test_bak_type_override():
    assert tagged(build(acknowledgment_type="AD"), "BAK")[0][2] == "AD"


def test_lines_po1_then_ack():
    segs = tagged(build(), "PO1", "ACK", "CTT")

    assert segs == [
        [
            "PO1",
            "10",
            "10",
            "EA",
            "2.5",
            "PE",
            "BP",
            "CUST-1",
            "VP",
            "VEND-1",
            "UP",
            "012345678905",
        ],
        ["ACK", "IA", "10", "EA", "068", "20261201"],
        ["PO1", "20", "4", "CA", "12.3457", "", "BP", "CUST-2"],
        ["ACK", "IB", "4", "CA", "068", "20261215"],
        ["PO1", "3", "2.5", "LB", "3", "", "VP", "VEND-3"],
        ["ACK", "IS", "2.5", "LB", "", "", "", "SK", "ITEM-99"],
        ["CTT", "3"],
    ]


def test_line_without_ackline_is_accepted_as_ordered():
    acks = [AckLine(2, "rejected", Decimal("0"), "CA", None)]
    segs = tagged(build(acks=acks), "PO1", "ACK", "BAK")

    assert segs[0][2] == "AC"
    assert [s[:4] for s in segs[1:]] == [
        ["PO1", "10", "10", "EA"],
        ["ACK", "IA", "10", "EA"],
        ["PO1", "20", "4", "CA"],
        ["ACK", "IR", "0", "CA"],
        ["PO1", "3", "2.5", "LB"],
        ["ACK", "IA", "2.5", "LB"],
    ]
    assert segs[2] == ["ACK", "IA", "10", "EA"]  # no date: ACK04/05 left out


def test_no_acklines_at_all_is_at_with_every_line_ia():
    text = build(acks=[])

    assert tagged(text, "BAK")[0][2] == "AT"
    assert [s[1] for s in tagged(text, "ACK")] == ["IA", "IA", "IA"]


def test_partial_backorder_gives_two_acks_under_one_po1():
    acks = [
        AckLine(1, "accepted", Decimal("6"), "EA", Decimal("2.5")),
        AckLine(1, "backordered", Decimal("4"), "EA", Decimal("2.5"), ship_date=date(2027, 1, 5)),
        AckLine(2, "quantity_changed", Decimal("3"), "CA", Decimal("12.35")),
    ]
    text = build(acks=acks)
    segs = tagged(text, "PO1", "ACK", "CTT")

    assert [s[0] + ":" + s[1] for s in segs] == [
        "PO1:10",
        "ACK:IA",
        "ACK:IB",
        "PO1:20",
        "ACK:IQ",
        "PO1:3",
        "ACK:IA",
        "CTT:3",
    ]
    assert segs[2] == ["ACK", "IB", "4", "EA", "068", "20270105"]
    assert segs[4] == ["ACK", "IQ", "3", "CA"]
    (txn,) = read(text).groups[0].txns
    assert txn.se is not None
    assert txn.se.el(1) == "11"


def test_numbers_have_no_trailing_zeros():
    order = make_order(
        lines=[
            OrderLine(line_no=1, quantity=Decimal("100"), uom="EA", unit_price=Decimal("0.10")),
            OrderLine(line_no=2, quantity=Decimal("1E+2"), uom="EA", unit_price=Decimal("7.00")),
            OrderLine(line_no=3, quantity=Decimal("0.125"), uom="KG", unit_price=Decimal("2.0000")),
        ]
    )
    segs = tagged(build(order, []), "PO1")

    assert [s[1:5] for s in segs] == [
        ["1", "100", "EA", "0.1"],
        ["2", "100", "EA", "7"],
        ["3", "0.125", "KG", "2"],
    ]


def test_line_without_price_has_no_price_basis():
    order = make_order(
        lines=[OrderLine(line_no=1, quantity=Decimal("1"), uom="EA", price_basis="PE")]
    )
    assert tagged(build(order, []), "PO1") == [["PO1", "1", "1", "EA"]]


def test_timezone_aware_now_is_utc():
    later = datetime.fromisoformat("2026-11-28T23:30:00-05:00")  # 04:30 UTC on the 29th
    work = read(build(make_order(po_date=None), now=later))
    assert work.raw.isa.el(9) == "261129"
    assert work.raw.isa.el(10) == "0430"
    assert tagged(build(make_order(po_date=None), now=later), "BAK")[0][4] == "20261129"


# ------------------------------------------------------------------ refusals
def test_ackline_for_unknown_line_is_refused():
    with pytest.raises(ValueError, match="no such line"):
        build(acks=[AckLine(9, "accepted", Decimal("1"), "EA", None)])


def test_ackline_validates_status_quantity_and_substitute():
    with pytest.raises(ValueError, match="status"):
        AckLine(1, "shipped", Decimal("1"), "EA", None)
    with pytest.raises(ValueError, match="quantity"):
        AckLine(1, "accepted", Decimal("-1"), "EA", None)
    with pytest.raises(ValueError, match="substitute"):
        AckLine(1, "substituted", Decimal("1"), "EA", None)


@pytest.mark.parametrize("control_number", [0, 1_000_000_000])
def test_control_number_must_fit_isa13(control_number):
    with pytest.raises(ValueError, match="control number"):
        build(control_number=control_number)


def test_isa_id_longer_than_15_is_refused():
    with pytest.raises(ValueError, match="ISA party"):
        build(sender=("ZZ", "A" * 16))
