"""Customer changes over X12: an 850 with BEG01 01/03 (cancel) or 04/05 (replace) and the
860 purchase order change request map to an ``OrderChange`` — never to a second order —
and are acknowledged like any set (997 AK5 A when the syntax is right). Hostile input
(any bytes, mutated 860s) gets a specific outcome, never an unhandled exception."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import examples

from orderflow.channels.x12 import Delimiters, parse
from orderflow.channels.x12.validate import envelope_findings
from orderflow.channels.x12.writer import functional_group, interchange, transaction_set
from orderflow.domain.changes import ChangeKind, LineChangeKind, OrderChange

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def edi(sets, gs01: str = "PO", control: int = 1) -> str:
    g = functional_group(
        gs01,
        sender="BUYERAPP",
        receiver="SELLERAPP",
        control_number=control,
        now=NOW,
        version="004010",
        sets=sets,
    )
    return interchange(
        [g],
        d=Delimiters(),
        sender=("ZZ", "BUYER"),
        receiver=("ZZ", "SELLER"),
        control_number=control,
        now=NOW,
        version="00401",
    )


def po850(purpose: str, po: str = "PO1001", lines: int = 2, control: str = "0001"):
    body = [["BEG", purpose, "SA", po, "", "20261128"], ["N1", "ST", "STORE 12", "92", "0012"]]
    body += [["PO1", str(i + 1), "2", "EA", "1.50", "PE", "BP", f"P{i}"] for i in range(lines)]
    if lines:
        body.append(["CTT", str(lines)])
    return transaction_set("850", control, body)


def po860(purpose: str = "04", pocs=None, po: str = "PO1001", seq: str = "3", control="0001"):
    body = [["BCH", purpose, "SA", po, "", seq, "20261128"], ["MSG", "customer asked"]]
    body += pocs if pocs is not None else [["POC", "1", "QD", "5", "", "EA", "", "", "BP", "P0"]]
    body.append(["CTT", str(len(pocs if pocs is not None else [1]))])
    return transaction_set("860", control, body)


def one(text: str):
    result = parse(text.encode(), partner_id="ACME", received_at=NOW, our_id="DISTRIB")
    (t,) = result.transactions
    return result, t


def codes(result) -> list[str]:
    return sorted(e.code for e in result.error_list)


# ------------------------------------------------------------------ 850 BEG01
def test_850_original_is_an_order_not_a_change():
    result, t = one(edi([po850("00")]))
    assert t.order is not None and t.change is None and result.changes == []


@pytest.mark.parametrize("purpose", ["01", "03"])
def test_850_cancellation_is_a_cancel_change_and_needs_no_lines(purpose):
    for lines in (0, 2):
        result, t = one(edi([po850(purpose, lines=lines)]))
        assert (t.ack_code, t.order, result.orders) == ("A", None, []), t.errors
        c = t.change
        assert c.kind is ChangeKind.CANCEL and c.po_number == "PO1001"
        assert c.partner_id == "ACME" and c.channel == "edi" and c.reference
        assert "AK5*A" in result.acknowledgments[0]


@pytest.mark.parametrize("purpose", ["04", "05"])
def test_850_replace_carries_the_whole_new_order(purpose):
    _result, t = one(edi([po850(purpose, lines=3)]))
    assert (t.ack_code, t.order) == ("A", None)
    c = t.change
    assert c.kind is ChangeKind.REPLACE and c.replacement is not None
    assert c.replacement.po_number == "PO1001" and len(c.replacement.lines) == 3
    OrderChange.model_validate_json(c.model_dump_json())  # what the store keeps reads back


def test_850_replace_without_lines_is_rejected_like_an_original():
    result, t = one(edi([po850("05", lines=0)]))
    assert t.ack_code == "R" and t.change is None and "x12.850_no_lines" in codes(result)


def test_850_change_reference_is_the_body_not_the_envelope():
    a = one(edi([po850("01")], control=1))[1].change.reference
    b = one(edi([po850("01", control="0077")], control=9))[1].change.reference
    c = one(edi([po850("01", po="PO1002")], control=1))[1].change.reference
    assert a == b and a != c


# ------------------------------------------------------------------ 860
def test_860_change_maps_every_supported_poc_type():
    pocs = [
        ["POC", "1", "QD", "5", "", "EA"],
        ["POC", "2", "QI", "12", "3", "EA"],
        ["POC", "3", "PC", "", "", "", "2.25"],
        ["POC", "4", "DI", "", "", "", "", "", "BP", "P3"],
        ["POC", "5", "AI", "7", "", "CA", "9.5", "PE", "BP", "NEW-1", "VN", "V9"],
        ["POC", "6", "CA", "4", "", "EA", "1.10"],
        ["POC", "7", "RZ", "0"],
        ["POC", "8", "PQ", "", "", "", "3"],
    ]
    result, t = one(edi([po860("04", pocs)], gs01="PC"))
    assert (t.ack_code, result.errors, t.errors) == ("A", [], [])
    c = t.change
    assert (c.kind, c.po_number, c.reference, c.reason) == (
        ChangeKind.CHANGE,
        "PO1001",
        "860-04:3",
        "customer asked",
    )
    got = [(lc.line_no, lc.kind, lc.quantity, lc.unit_price) for lc in c.lines]
    assert got == [
        (1, LineChangeKind.QUANTITY, Decimal("5"), None),
        (2, LineChangeKind.QUANTITY, Decimal("12"), None),
        (3, LineChangeKind.PRICE, None, Decimal("2.25")),
        (4, LineChangeKind.DELETE, None, None),
        (5, LineChangeKind.ADD, Decimal("7"), Decimal("9.5")),
        (6, LineChangeKind.QUANTITY_AND_PRICE, Decimal("4"), Decimal("1.10")),
        (7, LineChangeKind.DELETE, None, None),
        (8, LineChangeKind.PRICE, None, Decimal("3")),
    ]
    added = c.lines[4]
    assert (added.uom, added.customer_part_number, added.source_line_id) == ("CA", "NEW-1", "5")
    assert [(p.qualifier, p.value) for p in added.product_ids] == [("BP", "NEW-1"), ("VN", "V9")]
    ack = result.acknowledgments[0]
    assert "GS*FA" in ack and "AK1*PC*1" in ack and "AK2*860*0001" in ack and "AK5*A" in ack


def test_860_cancellation_needs_no_poc():
    _result, t = one(edi([po860("01", pocs=[])], gs01="PC"))
    assert t.ack_code == "A" and t.change.kind is ChangeKind.CANCEL and t.change.lines == []


def test_860_without_seq_number_gets_a_body_digest_reference():
    a = one(edi([po860("01", pocs=[], seq="")], gs01="PC"))[1].change.reference
    b = one(edi([po860("01", pocs=[], seq="", control="0042")], gs01="PC", control=5))[1]
    assert a.startswith("860-01:#") and a == b.change.reference


@pytest.mark.parametrize(
    ("pocs", "bch01", "code", "ak4"),
    [
        ([["POC", "1", "RS", "5"]], "04", "x12.element_invalid", ("POC", 2, "7")),  # not applied
        ([["POC", "1", "QD", "abc"]], "04", "x12.element_invalid", ("POC", 3, "6")),
        ([["POC", "1", "QD"]], "04", "x12.860_incomplete_line", ("POC", 3, "1")),
        ([["POC", "1", "PC", "", "", "", "-1"]], "04", "x12.860_bad_price", ("POC", 6, "6")),
        ([["POC", "X", "QD", "1"]], "04", "x12.860_bad_line_number", ("POC", 1, "6")),
        (
            [["POC", "1", "QD", "1"], ["POC", "1", "QI", "3"]],
            "04",
            "x12.860_repeated_line",
            ("POC", 1, "6"),
        ),
        ([], "04", "x12.860_no_lines", ("POC", None, "3")),
        ([["POC", "1", "QD", "1"]], "05", "x12.element_invalid", ("BCH", 1, "7")),
    ],
)
def test_860_what_cannot_be_applied_is_rejected_with_ak3_ak4(pocs, bch01, code, ak4):
    result, t = one(edi([po860(bch01, pocs)], gs01="PC"))
    assert (t.ack_code, t.change) == ("R", None)
    assert code in codes(result)
    seg, pos, syntax = ak4
    note = next(n for n in t.segment_notes if n.segment_id == seg)
    if pos is None:
        assert note.code == syntax
    else:
        assert any((e.position, e.code) == (pos, syntax) for e in note.elements)
    assert "AK5*R" in result.acknowledgments[0]


def test_860_missing_bch_and_bad_date_are_rejected():
    body = [["POC", "1", "QD", "1"]]
    result, t = one(edi([transaction_set("860", "0001", body)], gs01="PC"))
    assert t.ack_code == "R" and "x12.860_missing_bch" in codes(result)
    bad = [["BCH", "04", "SA", "PO1", "", "", "PO DATE"], *body]
    result, t = one(edi([transaction_set("860", "0001", bad)], gs01="PC"))
    assert t.ack_code == "R" and any(
        (n.segment_id, e.position, e.code) == ("BCH", 6, "8")
        for n in t.segment_notes
        for e in n.elements
    )


def test_860_ctt_mismatch_is_noted_and_the_change_taken():
    body = [["BCH", "04", "SA", "PO1", "", "1", "20261128"], ["POC", "1", "QD", "1"], ["CTT", "5"]]
    _result, t = one(edi([transaction_set("860", "0001", body)], gs01="PC"))
    assert t.ack_code == "E" and t.change is not None and len(t.change.lines) == 1


def test_860_in_a_po_group_is_not_read_as_a_change():
    result, t = one(edi([po860()], gs01="PO"))
    assert t.ack_code == "R" and t.change is None
    assert "x12.functional_group_mismatch" in codes(result)


def test_860_price_beyond_the_model_is_rejected_not_raised():
    result, t = one(edi([po860("04", [["POC", "1", "PC", "", "", "", "1.123456"]])], gs01="PC"))
    assert t.ack_code == "R" and t.change is None and "x12.860_invalid" in codes(result)


# ------------------------------------------------------------------ hostile input
SETTINGS = settings(
    max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
GOOD_860 = edi(
    [
        po860(
            "04",
            [
                ["POC", "1", "QD", "5", "", "EA", "", "", "BP", "P0"],
                ["POC", "2", "AI", "3", "", "EA", "1.25", "PE", "BP", "P9"],
                ["POC", "3", "DI"],
            ],
        )
    ],
    gs01="PC",
)


def _specific(data: bytes) -> None:
    result = parse(data, received_at=NOW, our_id="DISTRIB")
    assert "x12.internal_error" not in [e.code for e in result.error_list]
    for e in result.error_list:
        assert e.code.startswith("x12.") and e.message
    for t in result.transactions:
        if t.set_id == "860":
            assert t.order is None
            if t.accepted:  # a change the model accepts, for the PO it names
                assert t.change is not None and t.change.po_number == t.po_number
                OrderChange.model_validate_json(t.change.model_dump_json())
            else:  # rejected itself (with its reasons) or in a rejected group/interchange
                assert t.change is None
            if t.ack_code == "R":
                assert t.ak5_codes
    for ack in result.acknowledgments:
        assert envelope_findings(ack) == [], ack


def test_the_good_860_is_accepted():
    result = parse(GOOD_860.encode(), received_at=NOW)
    assert result.accepted and len(result.changes) == 1


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_after_an_860_envelope(tail):
    _specific(GOOD_860.encode()[:200] + tail)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(GOOD_860) - 1),
            st.sampled_from(["replace", "insert", "delete"]),
            st.text(alphabet="*~>0123456789.-AZ QDPCIRST\x00é٣", max_size=6),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_860(edits):
    text = GOOD_860
    for pos, op, s in edits:
        pos %= max(len(text), 1)
        if op == "replace":
            text = text[:pos] + s + text[pos + len(s) :]
        elif op == "insert":
            text = text[:pos] + s + text[pos:]
        else:
            text = text[:pos] + text[pos + len(s) + 1 :]
    _specific(text.encode())


@SETTINGS
@given(
    st.lists(
        st.lists(st.text(alphabet="0123456789.-ABCDEPQRSTZ ", max_size=20), max_size=12),
        max_size=6,
    ),
    st.sampled_from(["01", "04", "05", ""]),
)
def test_arbitrary_poc_elements(rows, bch01):
    pocs = [["POC", *r] for r in rows]
    _specific(edi([po860(bch01, pocs)], gs01="PC").encode())
