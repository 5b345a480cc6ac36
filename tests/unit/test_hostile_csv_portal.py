"""Hostile input to the CSV and portal parsers (issue #13: D1, D4, D7, D13, D14).

Property tests: any bytes, and any CSV / portal item built from hostile values, give a
specific outcome (orders the canonical model accepts, or errors with a code) and never an
unhandled exception. Fixed cases: one per defect, asserting its specific outcome.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests_support import examples

from orderflow.channels import csv_orders, portal
from orderflow.domain.models import (
    Channel,
    Order,
    OrderLine,
    Provenance,
    looks_like_formula,
    spreadsheet_safe,
)

HEADER = "po;cust;ln;item;qty;uom;price;rep\n"
PROPS = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return (header + "".join(r + "\n" for r in rows)).encode()


def _codes(errors) -> list[str]:
    return [e.code for e in errors]


def _assert_outcome(orders, errors) -> None:
    """A specific outcome: every order is valid for the canonical model (so for the store),
    every error has a code, a message and a place; something is said about the input."""
    for o in orders:
        Order.model_validate(o.model_dump())
    for e in errors:
        assert e.code and "." in e.code and e.message
        assert "\x00" not in e.message


# ---------------------------------------------------------------- property tests: CSV

NUMBERISH = st.one_of(
    st.sampled_from(
        [
            "1",
            "1,5",
            "12,50",
            "1.5",
            "1,234",
            "1.234",
            "1.234,56",
            "1,234.56",
            "1 234,5",
            "0.0001",
            "1e308",
            "NaN",
            "sNaN",
            "-Infinity",
            "100000000000",
            "-2",
            "+-5",
            "١٢",
            "５",
            "$3.50",
            "€ 2,5",
            "",
            "0",
            "1,2,3",
            "9" * 5000,
        ]
    ),
    st.text(alphabet="0123456789.,-+ $'eE", max_size=20),
)
CELL = st.one_of(
    NUMBERISH,
    st.text(max_size=30),
    st.sampled_from(["=1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tX", "a\x00b", "＝1"]),
)


@st.composite
def csv_files(draw) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        cells = [
            draw(st.sampled_from(["P1", "P2", "P3", "", "=P"])),
            draw(st.sampled_from(["C1", "C2", ""])),
            draw(st.one_of(st.sampled_from(["", "1", "2", "0", "-1", "x", "99999999999"]), CELL)),
            draw(CELL),
            draw(NUMBERISH),
            draw(st.sampled_from(["EA", "KG", "", "=X", "E" * 40])),
            draw(NUMBERISH),
            draw(CELL),
        ]
        rows.append(";".join(c.replace(";", "").replace("\n", " ").replace('"', "") for c in cells))
    text = HEADER + "".join(r + "\n" for r in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252"]))
    return text.encode(encoding, errors="replace")


@PROPS
@given(st.binary(max_size=2000))
def test_csv_any_bytes_have_a_specific_outcome(raw):
    res = csv_orders.parse(raw)
    _assert_outcome(res.orders, res.errors)


@PROPS
@given(csv_files())
def test_csv_hostile_values_have_a_specific_outcome(raw):
    res = csv_orders.parse(raw)
    _assert_outcome(res.orders, res.errors)
    # one outcome per order: every PO of the file is either an order or named in an error
    for o in res.orders:
        named = f"PO {o.po_number[:40]} (customer {o.customer_id[:40]}):"
        assert not any(e.message.startswith(named) for e in res.errors)


# ---------------------------------------------------------------- property tests: portal

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "1e308", "0.0001", "\x00", "EURO", "usd", "-1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def portal_items(draw) -> dict:
    def value(good):
        return draw(st.one_of(st.just(good), JSONISH))

    lines = [
        {
            "line_no": value(i + 1),
            "customer_part_number": value(f"CPN-{i}"),
            "description": value("Blue widget"),
            "quantity": value("2"),
            "uom": value("EA"),
            "unit_price": value("9.5"),
        }
        for i in range(draw(st.integers(0, 3)))
    ]
    return {
        "client_request_id": value("req-1"),
        "submitted_at": value("2026-11-27T10:00:00Z"),
        "order": {
            "customer_id": value("C1"),
            "po_number": value("PO-1"),
            "currency": value("USD"),
            "po_date": value("2026-11-27"),
            "lines": value(lines),
        },
    }


@PROPS
@given(st.binary(max_size=2000))
def test_portal_any_bytes_have_a_specific_outcome(raw):
    order, errors = portal.parse_item(raw)
    assert (order is None) != (not errors) or (order is not None and not errors)
    _assert_outcome([order] if order else [], errors)


@PROPS
@given(portal_items())
def test_portal_hostile_values_have_a_specific_outcome(item):
    raw = json.dumps(item, allow_nan=True).encode()
    order, errors = portal.parse_item(raw)
    assert (order is None) == bool(errors)
    _assert_outcome([order] if order else [], errors)


# ---------------------------------------------------------------- D1: the model refuses what the store would

PROV = Provenance(channel=Channel.CSV)


@pytest.mark.parametrize(
    ("quantity", "price"),
    [("0.0001", None), ("100000000000", None), ("1", "10000000000"), ("1", "0.00001")],
)
def test_d1_model_refuses_numbers_the_store_cannot_hold(quantity, price):
    with pytest.raises(ValidationError):
        OrderLine(line_no=1, quantity=Decimal(quantity), uom="EA", unit_price=price)


def test_d1_model_refuses_nul_repeated_line_numbers_and_a_total_too_large():
    line = {"quantity": Decimal("99999999999"), "uom": "EA", "unit_price": Decimal("99")}
    with pytest.raises(ValidationError, match="cannot hold"):
        Order(
            order_id="X", po_number="P\x001", lines=[OrderLine(line_no=1, **line)], provenance=PROV
        )
    with pytest.raises(ValidationError, match="more than once"):
        Order(
            order_id="X",
            po_number="P1",
            lines=[OrderLine(line_no=1, **line), OrderLine(line_no=1, **line)],
            provenance=PROV,
        )
    with pytest.raises(ValidationError, match="order total"):
        Order(order_id="X", po_number="P1", lines=[OrderLine(line_no=1, **line)], provenance=PROV)


# ---------------------------------------------------------------- D4: decimal commas


def test_d4_decimal_commas_are_detected_per_file():
    res = csv_orders.parse(_csv("P1;C1;1;I1;1,5;KG;12,50;"))
    assert res.errors == [] and res.decimal_separator == ","
    (line,) = res.orders[0].lines
    assert (line.quantity, line.unit_price) == (Decimal("1.5"), Decimal("12.50"))


def test_d4_grouping_follows_the_files_convention():
    res = csv_orders.parse(_csv("P1;C1;1;I1;1.234;EA;2,5;", "P2;C1;1;I1;1 234,5;EA;1;"))
    assert res.errors == []
    assert [o.lines[0].quantity for o in res.orders] == [Decimal(1234), Decimal("1234.5")]
    res = csv_orders.parse(_csv("P1;C1;1;I1;1,234;EA;2.50;"))
    assert res.orders[0].lines[0].quantity == 1234 and res.decimal_separator == "."


def test_d4_an_ambiguous_number_is_refused_not_guessed():
    res = csv_orders.parse(_csv("P1;C1;1;I1;1,500;EA;12;", "P2;C1;1;I1;3;EA;4;"))
    assert _codes(res.errors) == ["csv.ambiguous_number"]
    assert "row 2, column quantity" in res.errors[0].where
    assert [o.po_number for o in res.orders] == ["P2"]


def test_d4_a_file_mixing_separators_is_refused_per_value():
    res = csv_orders.parse(
        _csv("P1;C1;1;I1;1,5;EA;2;", "P2;C1;1;I1;2.5;EA;2;", "P3;C1;1;I1;7;EA;;")
    )
    assert _codes(res.errors) == ["csv.mixed_decimal_separators"] * 2
    assert [o.po_number for o in res.orders] == ["P3"]


# ---------------------------------------------------------------- D7: one outcome per order


def test_d7_bad_values_are_per_order_inside_a_multi_order_file():
    res = csv_orders.parse(
        _csv(
            "P1;C1;1;I1;NaN;EA;1;",
            "P2;C1;1;I1;sNaN;EA;1;",
            "P3;C1;1;I1;Infinity;EA;1;",
            "P4;C1;0;I1;1;EA;1;",
            "P5;C1;-3;I1;1;EA;1;",
            "P6;C1;1;I1;1e308;EA;1;",
            "P7;C1;1;I1;0.0001;EA;1;",
            "P8;C1;1;I1;100000000000;EA;1;",
            "P9;C1;1;I1;1;EA;1;",
            "P9;C1;1;I2;1;EA;1;",
            "P10;C1;1;I1;2;EA;3.5;",
        )
    )
    assert [o.po_number for o in res.orders] == ["P10"]
    by_po = {e.message.split(" ")[1]: e.code for e in res.errors}
    assert by_po == {
        "P1": "csv.bad_quantity",
        "P2": "csv.bad_quantity",
        "P3": "csv.bad_quantity",
        "P4": "csv.bad_line_no",
        "P5": "csv.bad_line_no",
        "P6": "csv.bad_quantity",
        "P7": "csv.quantity_out_of_range",
        "P8": "csv.quantity_out_of_range",
        "P9": "csv.duplicate_line_no",
    }


def test_d7_portal_currency_must_be_three_letters():
    item = {
        "client_request_id": "r1",
        "order": {
            "customer_id": "C1",
            "po_number": "P1",
            "currency": "EURO",
            "lines": [{"line_no": 1, "quantity": 1, "uom": "EA"}],
        },
    }
    order, errors = portal.parse_item(json.dumps(item).encode())
    assert order is None
    assert [(e.code, e.where) for e in errors] == [("portal.invalid", "order.currency")]
    item["order"]["currency"] = "cad"
    order, errors = portal.parse_item(json.dumps(item).encode())
    assert errors == [] and order.currency == "CAD"


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ({"line_no": 1, "quantity": "0.0001", "uom": "EA"}, "order.lines[0].quantity"),
        ({"line_no": 1, "quantity": 1e12, "uom": "EA"}, "order.lines[0].quantity"),
        ({"line_no": 0, "quantity": 1, "uom": "EA"}, "order.lines[0].line_no"),
        (
            {"line_no": 1, "quantity": 1, "uom": "EA", "description": "a\x00b"},
            "order.lines[0].description",
        ),
        (
            {"line_no": 1, "quantity": 1, "uom": "EA", "unit_price": "1e308"},
            "order.lines[0].unit_price",
        ),
    ],
)
def test_d1_d7_portal_values_the_store_cannot_hold_name_their_field(line, where):
    item = {
        "client_request_id": "r1",
        "order": {"customer_id": "C1", "po_number": "P1", "lines": [line]},
    }
    order, errors = portal.parse_item(json.dumps(item).encode())
    assert order is None and errors[0].code == "portal.invalid" and errors[0].where == where


def test_d1_portal_repeated_line_number():
    line = {"line_no": 2, "quantity": 1, "uom": "EA"}
    item = {
        "client_request_id": "r1",
        "order": {"customer_id": "C1", "po_number": "P1", "lines": [line, line]},
    }
    order, errors = portal.parse_item(json.dumps(item).encode())
    assert order is None and "appears more than once" in errors[0].message


# ---------------------------------------------------------------- D13: UTF-16 and NULs


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_d13_unicode_text_exports_are_read(encoding):
    text = "po\tcust\titem\tqty\tuom\tdescription\nP1\tC1\tI1\t3\tEA\tGrüße — 5 µm\n"
    res = csv_orders.parse(text.encode(encoding))
    assert res.errors == []
    assert res.orders[0].lines[0].description == "Grüße — 5 µm"
    assert res.encoding in (encoding, "utf-16-le", "utf-16-be")


def test_d13_nul_after_the_first_4kb_is_found_on_its_row():
    good = "".join(f"P{i};C1;1;I1;1;EA;1;\n" for i in range(400))
    raw = (HEADER + good + "PX;C1;1;I\x001;1;EA;1;\n").encode()
    assert raw.index(b"\x00") > 4096
    res = csv_orders.parse(raw)
    assert len(res.orders) == 400
    (err,) = res.errors
    assert err.code == "csv.nul_character" and err.where == "row 402, column item"


def test_d13_binary_file_is_still_refused():
    res = csv_orders.parse(b"PK\x03\x04\x00\x00\x01" + bytes(range(256)) * 4)
    assert _codes(res.errors) == ["csv.binary"]


# ---------------------------------------------------------------- D14: CSV injection


@pytest.mark.parametrize(
    "value", ["-2+3+cmd|' /C calc'!A0", "=1+1", "+1", "@SUM(1)", "-A1", "＝1+1", "\t=1"]
)
def test_d14_formulas_are_recognised(value):
    assert looks_like_formula(value)
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize("value", ["-2", "-2.5", "ABC-1", "10-4", ""])
def test_d14_plain_values_are_left_alone(value):
    assert not looks_like_formula(value)
    assert spreadsheet_safe(value) == value


def test_d14_formula_part_number_is_refused_and_rep_is_neutralised():
    res = csv_orders.parse(
        _csv(
            "P1;C1;1;-2+3+cmd|' /C calc'!A0;1;EA;1;Ann",
            'P2;C1;1;I1;1;EA;1;=HYPERLINK("http://x")',
        )
    )
    assert [(e.code, e.where) for e in res.errors] == [("csv.formula_value", "row 2, column item")]
    (order,) = res.orders
    assert order.references["rep"] == '\'=HYPERLINK("http://x")'


def test_d14_portal_description_is_neutralised():
    item = {
        "client_request_id": "r1",
        "order": {
            "customer_id": "C1",
            "po_number": "P1",
            "lines": [
                {"line_no": 1, "quantity": 1, "uom": "EA", "description": "=cmd|'/C calc'!A0"}
            ],
        },
    }
    order, errors = portal.parse_item(json.dumps(item).encode())
    assert errors == [] and order.lines[0].description == "'=cmd|'/C calc'!A0"


def test_an_identifier_past_the_models_bound_is_its_rows_error_not_a_crashed_file():
    """Found by the property test above: a 1,000-digit item number raised out of the parser."""
    res = csv_orders.parse(_csv(f"P1;C1;1;{'9' * 1000};1;EA;1;\nP2;C1;1;I1;2;EA;3;"))
    assert [o.po_number for o in res.orders] == ["P2"]
    assert len(res.errors) == 1 and res.errors[0].message.startswith("PO P1 (customer C1):")
