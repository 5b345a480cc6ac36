"""856 ship notice and 810 invoice: content, codes, numbers, envelopes read back through our own
X12 reader and envelope checks (other delimiters, 005010)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orderflow.channels.x12 import Delimiters, parse
from orderflow.channels.x12.asn856 import build_856
from orderflow.channels.x12.inv810 import build_810
from orderflow.channels.x12.reader import read_interchanges
from orderflow.channels.x12.validate import InterchangeWork, check_envelopes
from orderflow.domain.documents import Invoice, InvoiceLine, Shipment, ShippedLine
from orderflow.domain.models import Address, ProductId

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)

SHIP_TO = Address(
    name="ACME STORE 12",
    party_id="0012",
    party_id_qualifier="92",
    address_lines=["100 Main St", "Dock 4"],
    city="Springfield",
    region="IL",
    postal_code="62701",
    country="US",
)
DC_EAST = Address(
    name="OrderFlow East DC",
    address_lines=["1 Depot Rd"],
    city="Columbus",
    region="OH",
    postal_code="43004",
    country="US",
)
BILL_TO = Address(name="ACME Corp AP", party_id="ACME-HQ", city="Chicago", region="IL")


def make_shipment(**changes) -> Shipment:
    fields = {
        "shipment_id": "SHP-0001",
        "order_id": "EDI-0123456789ab",
        "po_number": "PO-4711",
        "po_date": date(2026, 11, 27),
        "customer_id": "ACME",
        "dc_id": "DC-EAST",
        "ship_from": DC_EAST,
        "ship_to": SHIP_TO,
        "carrier_id": "UPSN",
        "service_code": "GND",
        "mode": "parcel",
        "tracking_number": "1Z999AA10123456784",
        "weight_kg": Decimal("12.500"),
        "shipped_at": datetime(2026, 11, 28, 14, 5, tzinfo=UTC),
        "lines": [
            ShippedLine(
                line_no=1,
                source_line_id="10",
                product_ids=[
                    ProductId(qualifier="BP", value="CUST-1"),
                    ProductId(qualifier="VP", value="VEND-1"),
                    ProductId(qualifier="UP", value="012345678905"),
                ],
                item_id="ITEM-1",
                ordered_item_id="ITEM-1",
                quantity_ordered=Decimal("10.000"),
                quantity_shipped=Decimal("10"),
                uom="EA",
            ),
            ShippedLine(  # short: nothing shipped
                line_no=2,
                source_line_id="20",
                product_ids=[ProductId(qualifier="BP", value="CUST-2")],
                item_id="ITEM-2",
                ordered_item_id="ITEM-2",
                quantity_ordered=Decimal("4"),
                quantity_shipped=Decimal("0"),
                uom="CA",
            ),
            ShippedLine(  # substituted, and partly short
                line_no=3,
                product_ids=[ProductId(qualifier="VP", value="VEND-3")],
                item_id="ITEM-99",
                ordered_item_id="ITEM-3",
                quantity_ordered=Decimal("2.50"),
                quantity_shipped=Decimal("2"),
                uom="LB",
            ),
        ],
    }
    return Shipment(**(fields | changes))


def make_invoice(**changes) -> Invoice:
    fields = {
        "invoice_id": "INV-SHP-0001-1",
        "order_id": "EDI-0123456789ab",
        "shipment_id": "SHP-0001",
        "customer_id": "ACME",
        "po_number": "PO-4711",
        "po_date": date(2026, 11, 27),
        "invoice_date": date(2026, 11, 28),
        "bill_to": BILL_TO,
        "ship_to": SHIP_TO,
        "payment_terms": "Net 30",
        "carrier_id": "UPSN",
        "tracking_number": "1Z999AA10123456784",
        "lines": [
            InvoiceLine(
                line_no=1,
                source_line_id="10",
                product_ids=[
                    ProductId(qualifier="BP", value="CUST-1"),
                    ProductId(qualifier="UP", value="012345678905"),
                ],
                item_id="ITEM-1",
                quantity=Decimal("10"),
                uom="EA",
                unit_price=Decimal("2.5000"),
            ),
            InvoiceLine(
                line_no=3,
                product_ids=[ProductId(qualifier="VP", value="VEND-3")],
                item_id="ITEM-99",
                quantity=Decimal("2"),
                uom="LB",
                unit_price=Decimal("3.12345"),
            ),
        ],
        "tax": Decimal("2.35"),
        "freight": Decimal("9.50"),
    }
    return Invoice(**(fields | changes))


ARGS = {
    "sender": ("ZZ", "DISTRIB"),
    "receiver": ("ZZ", "ACMEBUY"),
    "gs_sender": "DISTAPP",
    "gs_receiver": "ACMEAPP",
    "control_number": 123,
    "now": NOW,
}


def asn(shipment: Shipment | None = None, **kw) -> str:
    return build_856(shipment or make_shipment(), **(ARGS | kw))


def inv(invoice: Invoice | None = None, **kw) -> str:
    return build_810(invoice or make_invoice(), **(ARGS | kw))


BUILDERS = [pytest.param(asn, "SH", "856", id="856"), pytest.param(inv, "IN", "810", id="810")]


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
    """The set's segments (ST … SE) as element lists, whitespace-trimmed."""
    (group,) = read(text).groups
    (txn,) = group.txns
    return [[s.el(0), *[s.el(k) for k in range(1, len(s.elements))]] for s in txn.segments]


def tagged(text: str, *tags: str) -> list[list[str]]:
    return [s for s in body(text) if s[0] in tags]


# ------------------------------------------------------------------ envelopes
@pytest.mark.parametrize(("build", "functional_id", "set_id"), BUILDERS)
def test_envelope_control_numbers_and_counts(build, functional_id, set_id):
    work = read(build(control_number=123))
    isa, iea = work.raw.isa, work.raw.iea
    (group,) = work.groups
    (txn,) = group.txns

    assert isa.el(13) == "000000123"
    assert iea is not None
    assert (iea.el(1), iea.el(2)) == ("1", "000000123")
    assert group.el(1) == functional_id
    assert group.el(6) == "123"
    assert group.ge is not None
    assert (group.ge.el(1), group.ge.el(2)) == ("1", "123")
    assert (txn.set_id, txn.control) == (set_id, "0001")
    assert txn.se is not None
    assert txn.se.el(2) == "0001"
    assert txn.se.el(1) == str(len(txn.segments))


def test_856_segment_count():
    (txn,) = read(asn()).groups[0].txns
    # ST BSN | HL TD1 TD5 REF DTM N1 N3 N4 N1 N3 N4 | HL PRF | 3 × (HL LIN SN1) | CTT SE
    assert len(txn.segments) == 2 + 11 + 2 + 9 + 2
    assert txn.se is not None
    assert txn.se.el(1) == "26"


def test_810_segment_count():
    (txn,) = read(inv()).groups[0].txns
    # ST BIG | N1 N4 (BT) N1 N3 N4 (ST) ITD | 2 × IT1 | TDS TXI CAD SAC CTT SE
    assert len(txn.segments) == 2 + 6 + 2 + 6
    assert txn.se is not None
    assert txn.se.el(1) == "16"


@pytest.mark.parametrize(("build", "functional_id", "set_id"), BUILDERS)
def test_isa_and_gs_header_for_004010(build, functional_id, set_id):
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
    assert (isa.el(9), isa.el(10), isa.el(11), isa.el(12)) == ("261128", "0930", "U", "00401")
    assert [gs.el(k) for k in range(1, 9)] == [
        functional_id,
        "DISTAPP",
        "ACMEAPP",
        "20261128",
        "0930",
        "123",
        "X",
        "004010",
    ]
    assert text.splitlines()[2] == f"ST*{set_id}*0001~"
    assert text.endswith("IEA*1*000000123~\n")


@pytest.mark.parametrize(("build", "functional_id", "set_id"), BUILDERS)
def test_version_005010(build, functional_id, set_id):
    work = read(build(version="005010", control_number=987654321))
    isa = work.raw.isa
    gs = work.groups[0].gs
    assert gs is not None

    assert isa.el(12) == "00501"
    assert isa.el(11) == "^"  # repetition separator from 00402 on
    assert isa.delimiters.repetition == "^"
    assert isa.el(13) == "987654321"
    assert (gs.el(1), gs.el(6), gs.el(8)) == (functional_id, "987654321", "005010")


def test_other_delimiters_856():
    d = Delimiters(element="|", component=":", segment="\n")
    text = asn(make_shipment(shipment_id="SHP|0001", po_number="PO*4711"), delimiters=d)
    work = read(text)

    assert "~" not in text
    assert work.raw.isa.delimiters.element == "|"
    assert work.raw.isa.delimiters.segment == "\n"
    assert work.raw.isa.el(16) == ":"
    assert text.splitlines()[3] == "BSN|00|SHP 0001|20261128|0930|0004"  # "|" in data → space
    assert tagged(text, "PRF") == [["PRF", "PO*4711", "", "", "20261127"]]  # "*" is data here
    (txn,) = work.groups[0].txns
    assert txn.se is not None
    assert txn.se.el(1) == str(len(txn.segments)) == "26"
    assert tagged(text, "CTT") == [["CTT", "5"]]


def test_other_delimiters_810():
    d = Delimiters(element="|", component=":", segment="\n")
    text = inv(make_invoice(invoice_id="INV|1", po_number="PO*4711"), delimiters=d)
    work = read(text)

    assert "~" not in text
    assert work.raw.isa.delimiters.element == "|"
    assert text.splitlines()[3] == "BIG|20261128|INV 1|20261127|PO*4711"
    (txn,) = work.groups[0].txns
    assert txn.se is not None
    assert txn.se.el(1) == str(len(txn.segments)) == "16"
    assert tagged(text, "TDS") == [["TDS", "4310"]]


def test_control_characters_in_values_do_not_split_segments():
    d = Delimiters(element="|", segment="\n")
    work = read(asn(make_shipment(shipment_id="SHP\r0001"), delimiters=d))
    (txn,) = work.groups[0].txns
    assert txn.segments[1].elements[:3] == ["BSN", "00", "SHP 0001"]
    assert txn.se is not None
    assert txn.se.el(1) == "26"


@pytest.mark.parametrize("build", [asn, inv], ids=["856", "810"])
@pytest.mark.parametrize("control_number", [0, 1_000_000_000])
def test_control_number_must_fit_isa13(build, control_number):
    with pytest.raises(ValueError, match="control number"):
        build(control_number=control_number)


@pytest.mark.parametrize("build", [asn, inv], ids=["856", "810"])
@pytest.mark.parametrize(
    "party",
    [
        {"sender": ("ZZ", "A" * 16)},
        {"receiver": ("ZZ", "")},
        {"sender": ("ZZZ", "DISTRIB")},
    ],
)
def test_isa_party_must_fit(build, party):
    with pytest.raises(ValueError, match="ISA party"):
        build(**party)


@pytest.mark.parametrize(("build", "functional_id", "set_id"), BUILDERS)
def test_full_reader_only_refuses_the_set_type(build, functional_id, set_id):
    """Our inbound reader takes 850s (and 997s) only: it rejects an 856/810 as an unsupported
    transaction set (parser._transaction, AK5 1), and finds nothing else wrong with it."""
    result = parse(build().encode())

    assert [e.code for e in result.error_list] == ["x12.unsupported_transaction"]
    (ic,) = result.interchanges
    (group,) = ic.groups
    (txn,) = group.transactions
    assert (group.functional_id, txn.set_id, txn.ak5_codes) == (functional_id, set_id, ["1"])


# ------------------------------------------------------------------ 856 content
def test_bsn():
    assert tagged(asn(), "BSN") == [["BSN", "00", "SHP-0001", "20261128", "0930", "0004"]]


def test_hl_hierarchy_shipment_order_items():
    segs = body(asn())
    hls = [s for s in segs if s[0] == "HL"]

    assert hls == [
        ["HL", "1", "", "S", "1"],
        ["HL", "2", "1", "O", "1"],
        ["HL", "3", "2", "I", "0"],
        ["HL", "4", "2", "I", "0"],
        ["HL", "5", "2", "I", "0"],
    ]
    seen: set[str] = set()
    for hl in hls:  # ids count up from 1; every parent comes before its children
        assert hl[1] == str(len(seen) + 1)
        assert hl[2] == "" or hl[2] in seen
        seen.add(hl[1])
    assert tagged(asn(), "CTT") == [["CTT", str(len(hls))]]
    # each item level holds exactly its LIN and SN1
    starts = [i for i, s in enumerate(segs) if s[0] == "HL"]
    for i in starts[2:]:
        assert [s[0] for s in segs[i + 1 : i + 3]] == ["LIN", "SN1"]


def test_shipment_level():
    segs = body(asn())
    start = segs.index(["HL", "1", "", "S", "1"])
    end = segs.index(["HL", "2", "1", "O", "1"])

    assert segs[start + 1 : end] == [
        ["TD1", "", "", "", "", "", "G", "12.5", "KG"],
        ["TD5", "", "2", "UPSN", "U", "", "", "", "", "", "", "", "CG"],
        ["REF", "CN", "1Z999AA10123456784"],
        ["DTM", "011", "20261128", "1405", "UT"],
        ["N1", "ST", "ACME STORE 12", "92", "0012"],
        ["N3", "100 Main St", "Dock 4"],
        ["N4", "Springfield", "IL", "62701", "US"],
        ["N1", "SF", "OrderFlow East DC", "91", "DC-EAST"],
        ["N3", "1 Depot Rd"],
        ["N4", "Columbus", "OH", "43004", "US"],
    ]


def test_order_level_prf():
    assert tagged(asn(), "PRF") == [["PRF", "PO-4711", "", "", "20261127"]]
    assert tagged(asn(make_shipment(po_date=None)), "PRF") == [["PRF", "PO-4711"]]


def test_items_lin_and_sn1_with_short_line_and_substitute():
    segs = tagged(asn(), "LIN", "SN1")

    assert segs == [
        ["LIN", "10", "BP", "CUST-1", "VP", "VEND-1", "UP", "012345678905", "VN", "ITEM-1"],
        ["SN1", "", "10", "EA", "", "10", "EA"],
        ["LIN", "20", "BP", "CUST-2", "VN", "ITEM-2"],
        ["SN1", "", "0", "CA", "", "4", "CA"],  # short line still listed
        ["LIN", "3", "VP", "VEND-3", "VN", "ITEM-99"],  # substitute named as VN
        ["SN1", "", "2", "LB", "", "2.5", "LB"],
    ]


def test_buyers_vn_is_replaced_by_what_shipped_and_lin_ids_are_capped():
    ids = [ProductId(qualifier="VN", value="ITEM-3")]
    ids += [ProductId(qualifier="BP", value=f"B{k}") for k in range(20)]
    line = ShippedLine(
        line_no=1,
        product_ids=ids,
        item_id="ITEM-99",
        ordered_item_id="ITEM-3",
        quantity_ordered=Decimal("1"),
        quantity_shipped=Decimal("1"),
        uom="EA",
    )
    (lin,) = tagged(asn(make_shipment(lines=[line])), "LIN")

    assert len(lin) == 2 + 2 * 15  # LIN, LIN01, 15 pairs (LIN02 … LIN31)
    assert lin[-2:] == ["VN", "ITEM-99"]
    assert lin[1:4] == ["1", "BP", "B0"]
    assert lin.count("VN") == 1


def test_ltl_carrier_without_scac_tracking_or_service_level():
    shipment = make_shipment(
        carrier_id="ESTES",  # not a SCAC: sent as TD505 routing
        service_code="LTL-STD",  # no service level code: TD512 left out
        mode="ltl",
        tracking_number=None,
        weight_kg=Decimal("0"),
    )
    text = asn(shipment)

    assert tagged(text, "TD5") == [["TD5", "", "", "", "M", "ESTES"]]
    assert tagged(text, "REF", "TD1") == []


def test_parties_without_name_or_id_or_address():
    shipment = make_shipment(
        ship_to=Address(city="Springfield"),  # neither name nor id: no N1 loop (R0203)
        ship_from=Address(),
        dc_id="DC-WEST",
    )
    assert tagged(asn(shipment), "N1", "N3", "N4") == [["N1", "SF", "", "91", "DC-WEST"]]


def test_timezone_aware_times_are_utc():
    later = datetime.fromisoformat("2026-11-28T23:30:00-05:00")  # 04:30 UTC on the 29th
    shipped = datetime.fromisoformat("2026-11-28T20:15:00-05:00")  # 01:15 UTC on the 29th
    text = asn(make_shipment(shipped_at=shipped), now=later)

    assert tagged(text, "BSN")[0][3:5] == ["20261129", "0430"]
    assert tagged(text, "DTM") == [["DTM", "011", "20261129", "0115", "UT"]]


# ------------------------------------------------------------------ 810 content
def test_810_heading():
    assert tagged(inv(), "BIG", "CUR", "N1", "N3", "N4", "ITD") == [
        ["BIG", "20261128", "INV-SHP-0001-1", "20261127", "PO-4711"],
        ["N1", "BT", "ACME Corp AP", "92", "ACME-HQ"],
        ["N4", "Chicago", "IL"],
        ["N1", "ST", "ACME STORE 12", "92", "0012"],
        ["N3", "100 Main St", "Dock 4"],
        ["N4", "Springfield", "IL", "62701", "US"],
        ["ITD", "05", "3", "", "", "", "", "30", "", "", "", "", "Net 30"],
    ]


def test_810_currency_po_date_parties_and_terms_optional():
    invoice = make_invoice(
        currency="cad", po_date=None, bill_to=None, ship_to=None, payment_terms="2% 10, net 45"
    )
    assert tagged(inv(invoice), "BIG", "CUR", "N1", "ITD") == [
        ["BIG", "20261128", "INV-SHP-0001-1", "", "PO-4711"],
        ["CUR", "SE", "CAD"],
        ["ITD", "", "", "", "", "", "", "", "", "", "", "", "2% 10, net 45"],  # text only
    ]
    assert tagged(inv(make_invoice(payment_terms=None)), "ITD") == []


def test_810_lines_and_ctt():
    assert tagged(inv(), "IT1", "CTT") == [
        [
            "IT1",
            "10",
            "10",
            "EA",
            "2.5",
            "PE",
            "BP",
            "CUST-1",
            "UP",
            "012345678905",
            "VN",
            "ITEM-1",
        ],
        ["IT1", "3", "2", "LB", "3.1235", "PE", "VP", "VEND-3", "VN", "ITEM-99"],
        ["CTT", "2"],
    ]


def test_810_summary():
    invoice = make_invoice()
    # 10 × 2.50 + 2 × 3.12345 (6.25 rounded) + 2.35 tax + 9.50 freight
    assert invoice.total == Decimal("43.10")
    assert tagged(inv(invoice), "TDS", "TXI", "CAD", "SAC") == [
        ["TDS", "4310"],
        ["TXI", "ST", "2.35"],
        ["CAD", "", "", "", "UPSN", "", "", "CN", "1Z999AA10123456784"],
        ["SAC", "C", "D240", "", "", "950"],
    ]
    # the summary follows the standard's order: TDS, TXI, CAD, SAC, CTT, SE
    assert [s[0] for s in body(inv(invoice))[-6:]] == ["TDS", "TXI", "CAD", "SAC", "CTT", "SE"]


@pytest.mark.parametrize(
    ("tax", "freight", "tags"),
    [
        ("0", "0", []),
        ("1.10", "0", ["TXI"]),
        ("0", "7", ["SAC"]),
        ("0.5", "12.25", ["TXI", "SAC"]),
    ],
)
def test_810_tax_and_freight_only_when_not_zero(tax, freight, tags):
    invoice = make_invoice(tax=Decimal(tax), freight=Decimal(freight))
    text = inv(invoice)

    assert [s[0] for s in tagged(text, "TXI", "SAC")] == tags
    assert tagged(text, "TDS") == [["TDS", str(int(invoice.total * 100))]]


def test_810_cad_variants():
    no_scac = make_invoice(carrier_id="FEDEX", tracking_number=None)
    assert tagged(inv(no_scac), "CAD") == [["CAD", "", "", "", "", "FEDEX"]]  # CAD05 routing
    assert tagged(inv(make_invoice(carrier_id=None)), "CAD") == []  # R0504 needs CAD04/05
    # CAD01 (transport method) is mandatory from 005010, and the invoice does not carry it
    assert tagged(inv(version="005010"), "CAD") == []
