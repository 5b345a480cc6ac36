"""850 purchase order → canonical Order: field mapping and the 850-level errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orderflow.channels.x12 import parse
from orderflow.domain.models import order_id_for

RECEIVED = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)

ISA = (
    "ISA*00*          *00*          *ZZ*ACMEBUY        *ZZ*DISTRIB        "
    "*261128*0930*U*00401*000000123*0*P*>~\n"
)
GS = "GS*PO*ACMEAPP*DISTAPP*20261128*0930*77*X*004010~\n"


def interchange(body: str, *, st02: str = "0001", gs: str = GS, isa: str = ISA) -> bytes:
    """Wrap 850 body segments (one per line, '~'-terminated) in ST/SE, GS/GE, ISA/IEA."""
    segments = [s for s in body.strip().splitlines() if s.strip()]
    st = f"ST*850*{st02}~\n" + "\n".join(s.strip() for s in segments) + "\n"
    st += f"SE*{len(segments) + 2}*{st02}~\n"
    group_ctrl = gs.split("*")[6]
    return (isa + gs + st + f"GE*1*{group_ctrl}~\nIEA*1*000000123~\n").encode()


FULL = """
BEG*00*SA*PO-4711*REL9*20261127*CN-55~
CUR*BY*cad~
REF*DP*042~
REF*IA*V-778~
REF*DP*043~
PER*BD*Jane Buyer*TE*555-0100*EM*jane@acme.example~
FOB*PP~
SAC*C*D240***1250**********Freight~
ITD*01*3*2**10**30~
DTM*002*20261210~
DTM*010*20261205~
DTM*001*20261220~
DTM*038*20261208~
TD5**2*UPSN*M*UPS GROUND~
N9*L1**BUYER NOTE~
MSG*Deliver to dock 4~
N1*BY*ACME STORES*92*BUY01~
N1*ST*ACME STORE 12*92*0012~
N2*Receiving~
N3*1 Main St*Suite 5~
N4*Springfield*IL*62701*US~
PER*RE*Dock Manager*TE*555-0199~
N1*BT*ACME HQ*9*0012345670000~
N3*PO Box 9~
N4*Chicago*IL*60601*US~
PO1*1*10*EA*2.50*PE*BP*CUST-1*VP*VEND-1*UP*012345678905*EN*4006381333931*IN*BUY-1~
PID*F****Blue widget~
PID*F*75***Navy~
PO4*12*1*EA~
DTM*010*20261203~
PO1*2*3.5*CA***IN*BUY-2*SK*SKU-2*VN*VN-2~
SAC*A*C310***500**********Promo~
PO1**1*DZ*0.75**CB*CAT-3~
DTM*037*20261202~
CTT*3*14.5~
"""


def parsed(body: str = FULL, **kw):
    result = parse(
        interchange(body, **kw), partner_id="acme", source_ref="drop/po.edi", received_at=RECEIVED
    )
    return result, result.transactions[0]


def codes(t) -> list[str]:
    return [e.code for e in t.errors]


def test_header_mapping():
    result, t = parsed()
    assert result.accepted, result.error_list
    assert t.errors == []
    order = t.order

    assert order.po_number == "PO-4711"
    assert order.po_date == date(2026, 11, 27)
    assert (order.purpose, order.order_type) == ("original", "SA")
    assert order.customer_id is None
    assert order.currency == "CAD"
    assert order.requested_delivery_date == date(2026, 12, 10)
    assert order.requested_ship_date == date(2026, 12, 5)
    assert order.cancel_after == date(2026, 12, 20)
    assert order.carrier_routing == "UPSN UPS GROUND (M)"
    assert order.payment_terms == "2% 10 NET 30"
    assert order.references == {"DP": "042; 043", "IA": "V-778", "RE": "REL9", "CT": "CN-55"}
    assert order.contacts == [
        "BD: Jane Buyer, TE 555-0100, EM jane@acme.example",
        "ST/RE: Dock Manager, TE 555-0199",
    ]
    assert "BUYER NOTE: Deliver to dock 4" in order.notes
    assert "DTM 038 (ship no later): 2026-12-08" in order.notes
    assert order.declared_line_count == 3


def test_parties():
    _, t = parsed()
    order = t.order

    assert order.buyer.name == "ACME STORES"
    assert (order.buyer.party_id_qualifier, order.buyer.party_id) == ("92", "BUY01")
    st = order.ship_to
    assert (st.name, st.party_id_qualifier, st.party_id) == ("ACME STORE 12", "92", "0012")
    assert st.address_lines == ["Receiving", "1 Main St", "Suite 5"]
    assert (st.city, st.region, st.postal_code, st.country) == ("Springfield", "IL", "62701", "US")
    assert order.bill_to.party_id == "0012345670000"
    assert order.bill_to.address_lines == ["PO Box 9"]


def test_charges_with_implied_decimals():
    _, t = parsed()

    freight, promo = t.order.charges
    assert (freight.indicator, freight.code, freight.amount) == ("C", "D240", Decimal("12.50"))
    assert freight.description == "Freight"
    assert (promo.indicator, promo.amount) == ("A", Decimal("5.00"))
    assert promo.description == "PO1 line 2: Promo"


def test_lines():
    _, t = parsed()
    one, two, three = t.order.lines

    assert [(p.qualifier, p.value) for p in one.product_ids] == [
        ("BP", "CUST-1"),
        ("VP", "VEND-1"),
        ("UP", "012345678905"),
        ("EN", "4006381333931"),
        ("IN", "BUY-1"),
    ]
    assert one.customer_part_number == "CUST-1"
    assert one.product_id("UP") == "012345678905"
    assert (one.line_no, one.source_line_id) == (1, "1")
    assert one.quantity == Decimal("10")
    assert isinstance(one.quantity, Decimal)
    assert (one.uom, one.unit_price, one.price_basis) == ("EA", Decimal("2.50"), "PE")
    assert one.description == "Blue widget; Navy"
    assert one.pack == "pack 12, size 1 EA"
    assert one.requested_ship_date == date(2026, 12, 3)

    assert two.customer_part_number == "BUY-2"  # IN when there is no BP
    assert (two.quantity, two.uom, two.unit_price) == (Decimal("3.5"), "CA", None)
    assert three.customer_part_number == "CAT-3"  # CB when neither BP nor IN
    assert three.source_line_id is None  # PO101 may be empty
    assert three.requested_ship_date == date(2026, 12, 2)  # 037 ship not before


def test_order_id_and_provenance():
    result, t = parsed()
    order = t.order

    assert order.order_id == order_id_for("edi", "acme", "PO-4711", "000000123:77:0001")
    p = order.provenance
    assert (p.channel, p.partner_id, p.source_ref) == ("edi", "acme", "drop/po.edi")
    assert (p.interchange_control_number, p.group_control_number) == ("000000123", "77")
    assert p.transaction_control_number == "0001"
    assert p.received_at == RECEIVED
    assert p.document_sha256 == result.document_sha256


def test_order_id_falls_back_to_isa_sender():
    result = parse(interchange(FULL))

    assert result.orders[0].order_id == order_id_for(
        "edi", "ACMEBUY", "PO-4711", "000000123:77:0001"
    )


def test_same_document_same_order_id():
    assert parsed()[1].order.order_id == parsed()[1].order.order_id


@pytest.mark.parametrize(
    ("code", "purpose"),
    [("00", "original"), ("06", "confirmation"), ("07", "original")],
)
def test_purpose(code, purpose):
    _, t = parsed(FULL.replace("BEG*00*", f"BEG*{code}*"))

    assert t.order.purpose == purpose and t.change is None


@pytest.mark.parametrize(("code", "kind"), [("01", "cancel"), ("03", "cancel"), ("05", "replace")])
def test_change_purposes_are_changes_not_orders(code, kind):
    _, t = parsed(FULL.replace("BEG*00*", f"BEG*{code}*"))

    assert t.order is None and t.change.kind == kind
    if kind == "replace":
        assert t.change.replacement.purpose == "replace"


def test_six_digit_dates_in_version_003010():
    gs = GS.replace("*004010~", "*003010~").replace("20261128", "261128")
    body = "BEG*00*NE*S1*1017760*040317~\nPO1*1*150*EA***IN*02006~\nCTT*1~"
    _, t = parsed(body, gs=gs)

    assert t.order.po_date == date(2004, 3, 17)
    assert t.order.references["RE"] == "1017760"


# ------------------------------------------------------------------ rejected sets
@pytest.mark.parametrize(
    ("body", "code", "ak3", "ak4"),
    [
        pytest.param("REF*DP*1~\nPO1*1*1*EA~", "x12.850_missing_beg", ("BEG", 2, "3"), None),
        pytest.param(
            "BEG*00*SA***20261127~\nPO1*1*1*EA~",
            "x12.850_missing_po_number",
            ("BEG", 2, "8"),
            (3, "1"),
        ),
        pytest.param(
            "BEG*00*SA*P1**20261332~\nPO1*1*1*EA~", "x12.850_bad_date", ("BEG", 2, "8"), (5, "8")
        ),
        pytest.param("BEG*00*SA*P1**20261127~\nCTT*0~", "x12.850_no_lines", ("PO1", 3, "3"), None),
        pytest.param(
            "BEG*00*SA*P1**20261127~\nPO1*1*TEN*EA~",
            "x12.850_bad_quantity",
            ("PO1", 3, "8"),
            (2, "6"),
        ),
        pytest.param(
            "BEG*00*SA*P1**20261127~\nPO1*1**EA~",
            "x12.850_bad_quantity",
            ("PO1", 3, "8"),
            (2, "1"),
        ),
        pytest.param(
            "BEG*00*SA*P1**20261127~\nPO1*1*-2*EA~",
            "x12.850_bad_quantity",
            ("PO1", 3, "8"),
            (2, "6"),
        ),
        pytest.param(
            "BEG*00*SA*P1**20261127~\nPO1*1*2~", "x12.850_missing_uom", ("PO1", 3, "8"), (3, "1")
        ),
        pytest.param(
            "BEG*00*SA*P1**20261127~\nPO1*1*2*EA*1,50*PE~",
            "x12.850_bad_price",
            ("PO1", 3, "8"),
            (4, "6"),
        ),
    ],
)
def test_rejected_purchase_orders(body, code, ak3, ak4):
    result, t = parsed(body)

    assert code in codes(t)
    assert (t.accepted, t.ack_code, t.order) == (False, "R", None)
    assert not result.accepted
    note = t.segment_notes[0]
    assert (note.segment_id, note.position, note.code) == ak3
    if ak4:
        assert (note.elements[0].position, note.elements[0].code) == ak4
    assert "AK5*R*5" in result.interchanges[0].groups[0].ack_997
    err = t.errors[codes(t).index(code)]
    assert err.where.startswith("ST 0001 (850)")


def test_po_number_is_exposed_even_when_rejected():
    _, t = parsed("BEG*00*SA*PO-9**20261127~\nPO1*1*X*EA~")

    assert (t.po_number, t.order) == ("PO-9", None)


# ------------------------------------------------------------------ accepted with errors noted
def test_ctt_mismatch_is_accepted_with_errors():
    result, t = parsed(FULL.replace("CTT*3*", "CTT*4*"))

    assert codes(t) == ["x12.ctt_line_count_mismatch"]
    assert (t.accepted, t.ack_code, t.ak5_codes) == (True, "E", ["5"])
    assert len(t.order.lines) == 3
    assert t.order.declared_line_count == 4
    assert "CTT01 says '4' line items but the purchase order has 3" in t.errors[0].message
    assert result.accepted  # accepted, with errors noted
    ack = result.interchanges[0].groups[0].ack_997
    assert "AK3*CTT*36*CTT~" in ack
    assert "AK5*E*5~" in ack
    assert "AK9*E*1*1*1~" in ack


def test_syntax_note_product_id_pair():
    _, t = parsed("BEG*00*SA*P1**20261127~\nPO1*1*2*EA*1**CB**VN*V1~\nCTT*1~")

    assert codes(t) == ["x12.syntax_note"]
    assert t.ack_code == "E"
    assert [(p.qualifier, p.value) for p in t.order.lines[0].product_ids] == [("VN", "V1")]
    (note,) = t.segment_notes
    assert (note.segment_id, note.position, note.elements[0].position) == ("PO1", 3, 7)


def test_syntax_notes_po4_and_n1():
    body = (
        "BEG*00*SA*P1**20261127~\nN1*ST*STORE*92~\nPO1*1*2*EA~\n"
        "PO4*6*6*EA*PLT94*X**LR*10*CT~\nCTT*1~"
    )
    _, t = parsed(body)

    assert codes(t) == ["x12.syntax_note"] * 3  # N1 P0304, PO4 C0506, PO4 P0607
    assert t.order.ship_to.party_id_qualifier is None
    assert [(n.segment_id, n.position) for n in t.segment_notes] == [("N1", 3), ("PO4", 5)]


def test_bad_line_date_is_noted_and_ignored():
    _, t = parsed(FULL.replace("DTM*010*20261203~", "DTM*010*20261303~"))

    assert codes(t) == ["x12.850_bad_date"]
    assert t.ack_code == "E"
    assert t.order.lines[0].requested_ship_date is None


# ------------------------------------------------------------------ accepted, recorded for people
def test_zero_quantity_line_is_left_out_and_recorded():
    body = "BEG*00*SA*P1**20261127~\nPO1*1*2*EA~\nPO1*2*0*EA~\nPO1*3*1*EA~\nCTT*3~"
    result, t = parsed(body)

    assert codes(t) == ["x12.850_zero_quantity"]
    assert (t.accepted, t.ack_code) == (True, "A")  # valid X12: the 997 accepts it
    assert [ln.line_no for ln in t.order.lines] == [1, 3]
    assert "PO1 line 2 (PO101 2) with quantity 0 was left out" in t.order.notes
    assert result.accepted


def test_only_zero_quantity_lines_is_rejected():
    _, t = parsed("BEG*00*SA*P1**20261127~\nPO1*1*0*EA~\nCTT*1~")

    assert "x12.850_no_lines" in codes(t)
    assert t.ack_code == "R"


def test_line_level_ship_to_that_differs_is_recorded():
    body = (
        "BEG*00*SA*P1**20261127~\nN1*ST*STORE 1*92*01~\nPO1*1*2*EA~\nN1*ST*STORE 2*92*02~\n"
        "PO1*2*2*EA~\nN1*ST*store 1*92*01~\nCTT*2~"
    )
    _, t = parsed(body)

    assert codes(t) == ["x12.850_line_ship_to"]
    assert t.ack_code == "A"
    assert t.order.ship_to.name == "STORE 1"
    assert "PO1 line 1 ship-to: STORE 2, 02" in t.order.notes


def test_line_level_ship_to_fills_a_missing_header_ship_to():
    _, t = parsed("BEG*00*SA*P1**20261127~\nPO1*1*2*EA~\nN1*ST*STORE 9*92*09~\nCTT*1~")

    assert t.order.ship_to.party_id == "09"
    assert t.errors == []


def test_sub_line_segments_do_not_leak_into_the_line():
    body = (
        "BEG*00*SA*P1**20261127~\nPO1*1*120*EA*9.25*TE*CB*065322-117~\nPID*F****SMALL WIDGET~\n"
        "SLN*1.1**I*10000*PC>11.1>12.2>EA*1.56*TP~\nPID*F****SUBLINE TEXT~\nCTT*1~"
    )
    _, t = parsed(body)

    assert t.order.lines[0].description == "SMALL WIDGET"
