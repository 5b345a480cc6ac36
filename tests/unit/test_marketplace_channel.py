"""Marketplace feed items → canonical orders and cancel changes; every defect an error naming
the field, never an exception; the generated feed is deterministic and clean."""

import json
from datetime import date

import pytest

from orderflow.channels import marketplace as mp
from orderflow.domain.changes import ChangeKind

ORDER = {
    "type": "order",
    "marketplace_order_id": "MKP-20261127-000001",
    "created_at": "2026-11-27T05:32:56Z",
    "acknowledge_by": "2026-11-27T09:32:56Z",
    "ship_by": "2026-11-30T05:32:56Z",
    "buyer": {"account_id": "C00094", "ship_to_id": "C00094-ST01", "name": "Canyon"},
    "currency": "usd",
    "lines": [
        {
            "line_no": 1,
            "sku": "SAF-707-00184",
            "title": "FACE SHIELD",
            "quantity": 6,
            "uom": "bx",
            "unit_price": 10.57,
        },
    ],
}
CANCEL = {
    "type": "cancellation",
    "cancellation_id": "MKC-000001",
    "marketplace_order_id": "MKP-20261127-000001",
    "account_id": "C00094",
    "requested_at": "2026-11-27T06:00:00Z",
    "respond_by": "2026-11-28T06:00:00Z",
    "reason": "ordered by mistake",
}


def test_an_order_item_is_a_canonical_marketplace_order():
    order, errors = mp.parse_item(mp.item_bytes(ORDER), message_id=7, sha="abc")
    assert errors == []
    assert order.order_id == mp.order_id("MKP-20261127-000001")
    assert order.provenance.channel == "marketplace"
    assert order.provenance.client_request_id == "MKP-20261127-000001"
    assert (order.customer_id, order.po_number, order.currency) == (
        "C00094",
        "MKP-20261127-000001",
        "USD",
    )
    assert order.ship_to.party_id == "C00094-ST01"
    ln = order.lines[0]
    assert (ln.product_ids[0].qualifier, ln.product_ids[0].value, ln.uom) == (
        "VP",
        "SAF-707-00184",
        "BX",
    )
    assert order.requested_ship_date == date(2026, 11, 30)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"buyer": {}}, "buyer.account_id"),
        ({"lines": []}, "lines"),
        ({"acknowledge_by": "tomorrow"}, "acknowledge_by"),
        ({"lines": [{"line_no": 1, "sku": "X", "quantity": -1, "unit_price": 1}]}, "lines[0]"),
    ],
)
def test_a_defective_order_item_is_an_error_naming_the_field(change, where):
    order, errors = mp.parse_item(mp.item_bytes({**ORDER, **change}))
    assert order is None
    assert errors and all(e.code == "marketplace.invalid" for e in errors)
    assert any(e.where.startswith(where) for e in errors), [e.where for e in errors]


def test_not_json_is_an_error_not_an_exception():
    order, errors = mp.parse_item(b"\xff{not json")
    assert order is None and errors[0].code == "marketplace.not_json"
    change, errors = mp.parse_cancellation(b"[1, 2")
    assert change is None and errors[0].code == "marketplace.not_json"


def test_a_cancellation_request_is_a_cancel_change_of_its_order():
    assert mp.is_cancellation(CANCEL) and not mp.is_cancellation(ORDER)
    assert mp.request_id(CANCEL) == "cancel:MKC-000001"
    assert mp.request_id(ORDER) == "MKP-20261127-000001"
    change, errors = mp.parse_cancellation(mp.item_bytes(CANCEL))
    assert errors == []
    assert change.kind is ChangeKind.CANCEL
    assert (change.po_number, change.customer_id, change.reference, change.channel) == (
        "MKP-20261127-000001",
        "C00094",
        "MKC-000001",
        "marketplace",
    )


def test_terms_are_read_whatever_the_lines_say():
    terms = mp.terms(mp.item_bytes(ORDER))
    assert terms["acknowledge_by"].isoformat() == "2026-11-27T09:32:56+00:00"
    assert mp.terms(mp.item_bytes(CANCEL))["respond_by"].day == 28
    assert mp.terms(b"nope") is None


@pytest.mark.slow
def test_the_generated_feed_is_deterministic_and_carries_its_cancellations(tmp_path):
    from orderflow_sandbox.generator import generate

    args = {
        "orders_per_day": 200,
        "customers": 100,
        "items": 500,
        "business_date": date(2025, 3, 3),
    }
    a, b = tmp_path / "a", tmp_path / "b"
    manifest = generate(a, seed=5, **args)
    generate(b, seed=5, **args)
    feed = (a / "marketplace_orders.jsonl").read_text()
    assert feed == (b / "marketplace_orders.jsonl").read_text()
    rows = [json.loads(x) for x in feed.splitlines()]
    orders = [r for r in rows if r["type"] == "order"]
    cancels = [r for r in rows if r["type"] == "cancellation"]
    assert manifest.marketplace_orders == len(orders) == 10
    assert cancels and {c["marketplace_order_id"] for c in cancels} <= {
        o["marketplace_order_id"] for o in orders
    }
    assert [r["arrival_at"] for r in rows] == sorted(r["arrival_at"] for r in rows)
    world = json.loads((a / "world.json").read_text())
    customers = {c["customer_id"] for c in world["customers"]}
    vendor_parts = {i["vendor_part"] for i in world["items"]}
    assert {o["customer_id"] for o in orders} <= customers
    assert {ln["sku"] for o in orders for ln in o["lines"]} <= vendor_parts
