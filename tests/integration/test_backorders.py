"""Backorders filled as stock arrives, against the real store: the part that was available
is released; when stock arrives, waiting lines take it best priority first as backorder
releases (orders of their own, linked to the customer's order) that plan and release like
any other; the customer's order keeps what still waits. Plus the pure rule itself."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from test_processing_store import (  # noqa: F401 (shared_master_data: an autouse fixture)
    CTX,
    _tag,
    insert,
    make_order,
    seed_contract,
    seed_customer,
    seed_item,
    shared_master_data,
    statuses,
    to_credit_ok,
)

from orderflow import backorders, processing, rules
from orderflow.domain.backorders import Waiting, fill
from orderflow.store import db
from orderflow.store import processing as inventory

T = datetime(2026, 12, 1, tzinfo=UTC)


def _w(order, line, qty, priority, *, dc="DC-EAST", minute=0, complete=False, item="I"):
    return Waiting(
        order, line, item, Decimal(qty), Decimal(priority), T.replace(minute=minute), dc, complete
    )


def test_the_best_priority_takes_stock_first_then_who_came_first():
    waiting = [
        _w("LOW", 1, 5, 1),
        _w("HIGH", 1, 4, 9, minute=30),
        _w("EARLY", 1, 3, 5, minute=1),
        _w("LATE", 1, 3, 5, minute=2),
    ]
    got = fill(waiting, {("I", "DC-EAST"): Decimal(9)}, ("DC-EAST", "DC-WEST"))
    assert [(f.order_id, f.quantity) for f in got] == [
        ("HIGH", 4),
        ("EARLY", 3),
        ("LATE", 2),
    ]


def test_a_line_takes_its_preferred_dc_then_others_within_the_split_limit_or_waits_whole():
    stock = {("I", "DC-EAST"): Decimal(2), ("I", "DC-WEST"): Decimal(5), ("I", "DC-C"): Decimal(9)}
    dcs = ("DC-EAST", "DC-WEST", "DC-C")
    got = fill([_w("A", 1, 6, 1, dc="DC-WEST")], stock, dcs, max_split_dcs=2)
    assert [(f.dc_id, f.quantity) for f in got] == [("DC-WEST", 5), ("DC-EAST", 1)]
    assert fill([_w("B", 1, 20, 1, complete=True)], stock, dcs) == []  # all or nothing
    assert stock[("I", "DC-EAST")] == 2  # the caller's numbers are not changed


def _released_with_backorder(store, book, scarce: str, qty: int, priority: str) -> str:
    """An order whose first line ships and whose second (``scarce``, none in stock) waits."""
    tag = _tag()
    plenty, cid = f"ITM-OK-{tag}", f"C-BO-{tag}"
    with db.transaction(store):
        seed_customer(store, cid)
        seed_item(store, plenty, east=100, west=0)
        seed_contract(store, cid, plenty, "10.00")
        seed_contract(store, cid, scarce, "10.00")
    (oid,) = insert(store, [make_order(f"O-BO-{tag}", cid, [(plenty, 2), (scarce, qty)])])
    to_credit_ok(store, [oid], book)
    assert processing.allocate(store, [oid], CTX, book).passed == 1
    store.execute('UPDATE orderflow."order" SET priority = %s WHERE order_id = %s', (priority, oid))
    assert processing.plan(store, [oid], CTX, book, None, None).passed == 1
    assert processing.release(store, [oid], CTX, book).passed == 1
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    assert _line(store, oid) == (Decimal(qty), "BACKORDERED")
    return oid


def _line(store, oid, line_no=2):
    return store.execute(
        "SELECT backordered_qty, status FROM orderflow.order_line "
        "WHERE order_id = %s AND line_no = %s",
        (oid, line_no),
    ).fetchone()


def _stock_arrives(store, item, on_hand):
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.inventory_position SET on_hand = %s "
            "WHERE item_id = %s AND dc_id = 'DC-EAST'",
            (on_hand, item),
        )
        inventory.refresh_allocated(store, [(item, "DC-EAST")])


def test_stock_that_arrives_fills_waiting_lines_as_backorder_releases(store):
    book = rules.load()
    scarce = f"ITM-SCARCE-{_tag()}"
    with db.transaction(store):
        seed_item(store, scarce, east=0, west=0)
    low = _released_with_backorder(store, book, scarce, 6, priority="1")
    high = _released_with_backorder(store, book, scarce, 4, priority="9")
    assert backorders.fill(store, book)["releases"] == 0  # nothing arrived yet

    # 7 arrive: the high-priority order takes its 4 first, the other gets the 3 left
    _stock_arrives(store, scarce, 7)
    out = backorders.fill(store, book)
    assert out == {"waiting": 2, "filled": 2, "releases": 2}
    kids = dict(
        store.execute(
            'SELECT parent_order_id, order_id FROM orderflow."order" WHERE parent_order_id = '
            "ANY(%s)",
            ([low, high],),
        ).fetchall()
    )
    assert kids == {high: f"{high}-B1", low: f"{low}-B1"}
    qty = dict(
        store.execute(
            "SELECT order_id, quantity FROM orderflow.reservation WHERE order_id = ANY(%s) "
            "AND status = 'held'",
            (list(kids.values()),),
        ).fetchall()
    )
    assert qty == {f"{high}-B1": Decimal(4), f"{low}-B1": Decimal(3)}
    assert _line(store, high) == (Decimal(0), "BACKORDER_FILLED")
    assert _line(store, low) == (Decimal(3), "BACKORDERED")
    lines = store.execute(
        "SELECT order_id, line_no, item_id, quantity FROM orderflow.order_line "
        "WHERE order_id = ANY(%s) ORDER BY 1",
        (list(kids.values()),),
    ).fetchall()
    assert sorted(lines) == sorted(
        [(f"{high}-B1", 2, scarce, Decimal(4)), (f"{low}-B1", 2, scarce, Decimal(3))]
    )
    assert statuses(store, kids.values()) == dict.fromkeys(kids.values(), "ALLOCATED")
    event = store.execute(
        "SELECT from_status, to_status, reason_codes, details->>'parent_order_id' "
        "FROM orderflow.order_event WHERE order_id = %s",
        (f"{low}-B1",),
    ).fetchall()
    assert event == [(None, "ALLOCATED", ["backorder_filled"], low)]
    assert inventory.allocation_mismatches(store) == []
    assert backorders.fill(store, book)["releases"] == 0  # nothing left to give

    # the backorder releases go through planning and release like any order
    ids = list(kids.values())
    assert processing.plan(store, ids, CTX, book, None, None).passed == 2
    assert processing.release(store, ids, CTX, book).passed == 2
    assert statuses(store, ids) == dict.fromkeys(ids, "RELEASED")
    keys = [
        k
        for (k,) in store.execute(
            "SELECT idempotency_key FROM orderflow.outbox WHERE action = 'wms_release' "
            "AND order_id = ANY(%s) ORDER BY 1",
            (ids,),
        )
    ]
    assert keys == sorted(f"wms_release:{oid}:DC-EAST:r1" for oid in ids)
