"""Inventory across days, against the real store: the WMS snapshot is the truth as of its time
and only what the WMS could not know then sits on top of it.

A reservation goes held → released (the WMS takes the release at its own time) → consumed by
what shipped (a short pick gives the rest back). Whatever order the WMS snapshots and our
shipment events arrive in, a shipped quantity is subtracted once; ``allocated`` always equals
its definition (the reconciliation finds nothing); and a WMS count that drops below what we
hold never makes the sync fail.

WMS inventory snapshots are scripted (the WMS hook's ``inventory(changed_since)``, as the
fulfilment tests script feeds); everything else is the code the DAGs run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from test_fulfilment_store import CTX, Feed, qty_lines, released_order, wms
from test_processing_store import shared_master_data  # noqa: F401 (autouse fixture)

from orderflow import fulfilment, masterdata, rules
from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.store import processing as inventory

pytestmark = [pytest.mark.db]

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def book():
    return rules.load()


class Wms:
    """The WMS's inventory extract: what it reports for each position, as of its clock."""

    def __init__(self):
        self.positions: dict[tuple[str, str], dict] = {}

    def report(self, item: str, dc: str, on_hand, reserved, at: datetime) -> None:
        self.positions[(item, dc)] = {
            "item_id": item,
            "dc_id": dc,
            "on_hand": float(on_hand),
            "reserved": float(reserved),
            "available": float(on_hand) - float(reserved),
            "updated_at": at.isoformat(),
        }

    def inventory(self, changed_since=None):
        return [
            p
            for p in self.positions.values()
            if not changed_since or p["updated_at"] > changed_since
        ]


def _sync(store, w: Wms) -> None:
    # full: every test starts its own WMS clock (the incremental cursor is shared by the module)
    masterdata.sync(store, {"wms": w}, entities=["inventory"], run_id="test", full=True)


def _position(store, item: str, dc: str = "DC-EAST") -> dict:
    cur = store.execute(
        "SELECT on_hand, wms_reserved, allocated, available FROM orderflow.inventory_position "
        "WHERE item_id = %s AND dc_id = %s",
        (item, dc),
    )
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def _available(store, item: str) -> Decimal:
    return _position(store, item)["available"]


def _received(store, r, at: datetime) -> None:
    """The WMS answered the release (the outbox's follow-up of a sent release)."""
    with db.transaction(store):
        outbox.AFTER_SENT["wms_release"](
            store,
            {"order_id": r.order_id, "dc_id": "DC-EAST", "shipment_id": r.shipment_id},
            {"release_id": r.release_id, "released_at": at.isoformat()},
        )


def _ship(store, book, r, qty, at_minutes: float) -> None:
    feed = Feed(store, "wms")
    feed.add(wms(r, "shipped", at_minutes, qty_lines(r, 10, qty, qty), f"1Z{r.tag}"))
    feed.pull(store)
    fulfilment.apply_events(store, CTX, book)


def _reservation(store, r) -> tuple:
    return store.execute(
        "SELECT status, quantity, consumed_qty FROM orderflow.reservation WHERE order_id = %s",
        (r.order_id,),
    ).fetchone()


def _at(minutes: float) -> datetime:
    # the fulfilment tests' event clock (test_fulfilment_store.at) starts here
    return datetime(2026, 11, 27, 15, 0, tzinfo=UTC) + timedelta(minutes=minutes)


@pytest.mark.parametrize("snapshot_first", [True, False], ids=["snapshot-first", "event-first"])
def test_a_shipment_is_subtracted_once_whatever_arrives_first(store, book, snapshot_first):
    r = released_order(store, book, link=True)  # one line of 10, released
    item = r.items[0]
    w = Wms()
    w.report(item, "DC-EAST", 1000, 0, _at(-60))
    _sync(store, w)
    assert _reservation(store, r)[:2] == ("released", Decimal(10))
    assert _available(store, item) == 990  # the WMS has not received it: ours on top

    _received(store, r, _at(0))
    assert _available(store, item) == 990  # received after the snapshot: still ours
    w.report(item, "DC-EAST", 1000, 10, _at(5))  # the WMS now holds it itself
    _sync(store, w)
    assert _position(store, item) | {} == {
        "on_hand": 1000,
        "wms_reserved": 10,
        "allocated": 0,
        "available": 990,
    }

    shipped_snapshot = (item, "DC-EAST", 990, 0, _at(200))
    if snapshot_first:
        w.report(*shipped_snapshot)  # the WMS shipped; we have not heard yet
        _sync(store, w)
        assert _available(store, item) == 990
        _ship(store, book, r, 10, 200)
    else:
        _ship(store, book, r, 10, 200)  # we heard of the shipment; the snapshot is older
        assert _available(store, item) == 990
        w.report(*shipped_snapshot)
        _sync(store, w)
    assert _reservation(store, r) == ("consumed", Decimal(10), Decimal(10))
    assert _position(store, item) == {
        "on_hand": 990,
        "wms_reserved": 0,
        "allocated": 0,
        "available": 990,
    }
    assert inventory.allocation_mismatches(store) == []


def test_a_short_pick_gives_the_rest_back_and_a_release_never_received_stays_ours(store, book):
    short = released_order(store, book, link=True)
    item = short.items[0]
    w = Wms()
    w.report(item, "DC-EAST", 1000, 0, _at(-60))
    _sync(store, w)
    # the WMS never answered: nothing tells us it has the release; it stays on top of the count
    w.report(item, "DC-EAST", 1000, 0, _at(100))
    _sync(store, w)
    assert _available(store, item) == 990

    _received(store, short, _at(120))
    w.report(item, "DC-EAST", 1000, 10, _at(130))
    _sync(store, w)
    _ship(store, book, short, 6, 300)  # 6 of 10 found
    assert _reservation(store, short) == ("consumed", Decimal(10), Decimal(6))
    w.report(item, "DC-EAST", 994, 0, _at(310))
    _sync(store, w)
    assert _position(store, item)["available"] == 994  # the 4 not shipped are free again
    assert inventory.allocation_mismatches(store) == []


def test_a_wms_count_below_our_reservations_never_fails_the_sync(store, book):
    r = released_order(store, book, link=False)  # released, not yet received by the WMS
    item = r.items[0]
    w = Wms()
    w.report(item, "DC-EAST", 4, 0, _at(400))  # a cycle count found only 4
    _sync(store, w)  # used to violate inventory_no_oversell and fail every hour
    pos = _position(store, item)
    assert (pos["on_hand"], pos["allocated"], pos["available"]) == (4, 10, -6)
    with db.transaction(store):  # allocation sees nothing to promise, not a negative
        assert inventory.lock_inventory(store, [item])[(item, "DC-EAST")] == 0
    assert inventory.allocation_mismatches(store) == []


def test_a_receipt_the_snapshot_already_counts_is_taken_off_and_others_lock_nothing(store, book):
    """The WMS's receipt of a release changes ``allocated`` only where the WMS's snapshot is
    as new as the receipt (it counts the units itself); only those positions are derived and
    locked again. A receipt after the snapshot — the usual case — takes no position lock: an
    allocation holding the position (another connection here) does not hold up the sender."""
    import psycopg

    counted = released_order(store, book, link=True)
    item = counted.items[0]
    w = Wms()
    w.report(item, "DC-EAST", 1000, 10, _at(30))  # the WMS has the release already
    _sync(store, w)
    assert _available(store, item) == 980  # ours on top until its receipt is recorded
    _received(store, counted, _at(0))
    assert _position(store, item)["allocated"] == 0
    assert _available(store, item) == 990

    later = released_order(store, book, link=True)
    item = later.items[0]
    w.report(item, "DC-EAST", 1000, 0, _at(-60))
    _sync(store, w)
    with psycopg.connect(store.info.dsn) as allocation:
        allocation.execute(
            "SELECT 1 FROM orderflow.inventory_position WHERE item_id = %s FOR UPDATE", (item,)
        )
        store.execute("SET lock_timeout = '2s'")
        try:
            _received(store, later, _at(0))  # would wait for the lock (and time out) before
        finally:
            store.execute("RESET lock_timeout")
        allocation.rollback()
    assert _available(store, item) == 990
    assert inventory.allocation_mismatches(store) == []


def test_reserving_adds_to_allocated_what_its_definition_adds(store, book):
    """A reservation adds its quantity to the position's ``allocated`` (not a new sum over
    every reservation of the position): the definition and the stored value stay equal with
    released, received and held reservations already on the position."""
    r = released_order(store, book, link=True)  # 10 released on the position
    item = r.items[0]
    w = Wms()
    w.report(item, "DC-EAST", 1000, 0, _at(-60))
    _sync(store, w)
    before = _position(store, item)["allocated"]
    with db.transaction(store):
        inventory.reserve(store, [(r.order_id, 99, item, "DC-EAST", Decimal("7.5"), False)], "t")
    assert _position(store, item)["allocated"] == before + Decimal("7.5")
    assert inventory.allocation_mismatches(store) == []
    with db.transaction(store), pytest.raises(inventory.Oversell):
        inventory.reserve(store, [(r.order_id, 98, item, "DC-EAST", Decimal(1000), False)], "t")
    assert _position(store, item)["allocated"] == before + Decimal("7.5")
