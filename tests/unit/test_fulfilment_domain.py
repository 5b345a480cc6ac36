"""Fulfilment decisions: events move shipments forward only, orders follow their slowest
shipment, invoices bill what shipped at the validated price and withhold on mismatches."""

from decimal import Decimal as D

import pytest

from orderflow.domain.fulfilment import (
    BillLine,
    apportion_tax,
    bill,
    effect,
    event_key,
    order_target,
)


def test_the_same_event_delivered_twice_has_one_key():
    wms = {"release_id": "REL1", "milestone": "picked", "seq": 4}
    assert event_key("wms", wms) == event_key("wms", {**wms, "seq": 9}) == "REL1:picked"
    a = {"tracking_number": "1Z", "status": "delayed", "occurred_at": "2026-11-28T10:00:00Z"}
    b = {**a, "occurred_at": "2026-11-29T10:00:00Z"}
    assert event_key("carrier", a) != event_key("carrier", b)  # two separate delays


@pytest.mark.parametrize(
    ("kind", "current", "status"),
    [
        ("picked", "released", "picked"),
        ("picked", "shipped", None),  # late: records quantities and time, never moves back
        ("packed", "picked", "packed"),
        ("shipped", "released", "shipped"),  # out of order: jumps forward
        ("shipped", "delivered", None),
        ("short_picked", "released", "picked"),
    ],
)
def test_wms_milestones_only_move_forward(kind, current, status):
    e = effect("wms", kind, current, {})
    assert e.status == status
    assert e.stamp  # the milestone time is always recorded (first occurrence wins)


def test_shipped_confirms_quantities_and_notifies():
    e = effect("wms", "shipped", "packed", {"tracking_number": "1Z"})
    assert (e.quantities, e.notify) == ("shipped", ("shipment_shipped",))


def test_carrier_events():
    assert effect("carrier", "in_transit", "shipped", {}).status == "in_transit"
    assert effect("carrier", "delivered", "shipped", {}).status == "delivered"
    assert effect("carrier", "delivered", "delivered", {}).notify == ()
    delay = effect("carrier", "delayed", "in_transit", {"reason": "weather"})
    assert (delay.status, delay.notify) == (None, ("shipment_delayed",))
    assert not effect("carrier", "delayed", "delivered", {}).changes
    hold = effect(
        "carrier", "exception", "in_transit", {"reason": "damaged", "tracking_number": "1Z"}
    ).hold
    assert hold.category == "delivery_exception" and "damaged" in hold.reason


def test_unknown_event_kinds_change_nothing():
    e = effect("wms", "relabelled", "picked", {})
    assert not e.changes and "not one OrderFlow acts on" in e.note


@pytest.mark.parametrize(
    ("statuses", "invoiced", "target"),
    [
        (["released", "picked"], False, None),
        (["picked", "packed"], False, "PICKED"),
        (["shipped", "in_transit"], False, "SHIPPED"),
        (["delivered", "shipped"], True, "SHIPPED"),  # the slowest shipment decides
        (["delivered", "delivered"], False, "DELIVERED"),
        (["delivered", "cancelled"], True, "INVOICED"),
        (["cancelled"], True, None),
    ],
)
def test_an_order_follows_its_slowest_shipment(statuses, invoiced, target):
    assert order_target(statuses, invoiced) == target


def line(n=1, released="10", picked="10", shipped="10", price="2.50", item="A", ordered="A"):
    return BillLine(
        n,
        item,
        ordered,
        "EA",
        D(released),
        None if picked is None else D(picked),
        None if shipped is None else D(shipped),
        None if price is None else D(price),
    )


def test_bill_charges_shipped_quantities_at_the_validated_price():
    b = bill([line(1), line(2, shipped="6", picked="6"), line(3, shipped="0", picked="0")])
    assert [(ln.line_no, q) for ln, q in b.lines] == [(1, D("10")), (2, D("6"))]
    assert b.mismatches == [] and b.subtotal == D("40.00")


def test_substitute_bills_under_its_own_item_at_the_line_price():
    b = bill([line(item="SUB", ordered="A", price="3.00")])
    assert b.lines[0][0].item_id == "SUB" and b.subtotal == D("30.00")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"shipped": "11", "picked": "11"}, "more than the 10 released"),
        ({"shipped": "9", "picked": "8"}, "picked 8 but shipped 9"),
        ({"shipped": None}, "no shipped quantity"),
        ({"price": None}, "no validated price"),
    ],
)
def test_mismatches_withhold_the_invoice_with_an_actionable_reason(kwargs, words):
    b = bill([line(**kwargs)])
    (m,) = b.mismatches
    assert m.category == "quantity_mismatch" and m.line_no == 1
    assert words in m.reason and "withheld" in m.reason
    assert b.lines == []


def test_overship_within_tolerance_is_billed():
    assert bill([line(shipped="10.5", picked="10.5")], overship_pct=D("5")).mismatches == []


def test_lines_the_release_never_had_are_mismatches():
    b = bill([line()], extra=["line 9 item Z (2)"])
    assert len(b.lines) == 1 and "line 9 item Z" in b.mismatches[0].reason


def test_tax_is_apportioned_to_the_billed_share():
    assert apportion_tax(D("8.00"), D("100"), D("25")) == D("2.00")
    assert apportion_tax(None, D("100"), D("25")) == 0
    assert apportion_tax(D("8.00"), D("0"), D("0")) == 0
