"""Order processing against the real store: parallel partitions never oversell shared stock,
claims never hand one order to two runs, a rerun of every stage changes nothing, fixed
master data releases its holds, and partitions keep a customer together.

Master data is seeded with plain INSERTs; orders are created through intake's
``insert_orders`` (order, lines and the RECEIVED event) and moved by the stage functions.
Every test uses its own ids (customers, items, orders), so tests share the module's store
without seeing each other's data.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from orderflow import processing, rules
from orderflow.domain.lifecycle import transition
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.processing import RunContext
from orderflow.store import db, events, intake
from orderflow.store import processing as repo

pytestmark = [pytest.mark.db]

CTX = RunContext(dag_id="test_processing_store", run_id="manual__t", task_id="stage")


# ---------------------------------------------------------------------------- seeding


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture(scope="module", autouse=True)
def shared_master_data(store_url):
    """DCs and carrier services every test plans against."""
    conn = db.connect()
    with db.transaction(conn):
        conn.execute(
            """
            INSERT INTO orderflow.distribution_center
                (dc_id, name, region, timezone, zones, postal_code, country)
            VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', '{Z1,Z2,Z3}', '08817', 'US'),
                   ('DC-WEST', 'West DC', 'CA', 'America/Los_Angeles', '{Z6,Z7,Z8}', '91761', 'US')
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            """
            INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, transit_days,
                max_weight_kg, hazmat_allowed, active, base_rate, per_kg)
            VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.8500),
                   ('UPSN', '2DA', 'parcel', 2, 68, false, true, 19.00, 1.4000),
                   ('ODFL', 'LTL', 'ltl', 4, 9000, true, true, 120.00, 0.2200)
            ON CONFLICT DO NOTHING
            """
        )
    conn.close()


def _tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def seed_customer(conn, cid: str, *, ship_complete: bool = False, limit: str = "1000000"):
    conn.execute(
        "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
        "ship_complete, accepts_substitutes, dq_passed) "
        "VALUES (%s, %s, 'standard', 'NET30', true, %s, false, true)",
        (cid, f"Customer {cid}", ship_complete),
    )
    conn.execute(
        "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
        "region, postal_code, country, zone, dq_passed) "
        "VALUES (%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)",
        (f"{cid}-ST1", cid, f"{cid} Albany"),
    )
    conn.execute(
        "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
        "VALUES (%s, %s, 0, false)",
        (cid, Decimal(limit)),
    )


def seed_item(conn, item_id: str, *, east: int, west: int, weight: str = "1.0"):
    conn.execute(
        "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
        "list_price, unit_cost, dq_passed) VALUES (%s, %s, 'EA', 1, %s, 12.00, 6.00, true)",
        (item_id, f"Widget {item_id}", Decimal(weight)),
    )
    conn.execute(
        "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
        "VALUES (%s, 'DC-EAST', %s), (%s, 'DC-WEST', %s)",
        (item_id, east, item_id, west),
    )


def seed_contract(conn, cid: str, item_id: str, price: str = "10.00"):
    conn.execute(
        "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, unit_price, "
        "uom, effective_from, expires_on, tolerance_pct) "
        "VALUES (%s, %s, %s, %s, 'EA', '2025-01-01', NULL, 1.0)",
        (f"K-{cid}-{item_id}", cid, item_id, Decimal(price)),
    )


def make_order(
    order_id: str,
    cid: str,
    lines: list[tuple[str, int]],
    *,
    received_at: datetime | None = None,
    price: str = "10.00",
) -> Order:
    return Order(
        order_id=order_id,
        po_number=f"PO-{order_id}",
        customer_id=cid,
        ship_to=Address(
            name=f"{cid} Albany",
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country="US",
        ),
        lines=[
            OrderLine(line_no=n, item_id=item, quantity=Decimal(qty), uom="EA", unit_price=price)
            for n, (item, qty) in enumerate(lines, start=1)
        ],
        provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}", received_at=received_at),
    )


def insert(conn, orders: list[Order]) -> list[str]:
    with db.transaction(conn):
        ids = intake.insert_orders(conn, orders, message_id=None, actor_id="test.intake")
    assert ids == [o.order_id for o in orders]
    return ids


def statuses(conn, ids) -> dict[str, str]:
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)', (list(ids),)
        ).fetchall()
    )


def to_credit_ok(conn, ids, book):
    v = processing.validate(conn, ids, CTX, book)
    assert (v.orders, v.passed, v.held) == (len(ids), len(ids), {}), v
    c = processing.check_credit(conn, ids, CTX, book, credit_service=None)
    assert (c.orders, c.passed, c.held) == (len(ids), len(ids), {}), c
    assert set(statuses(conn, ids).values()) == {"CREDIT_OK"}


# ---------------------------------------------------------------------------- 1. no oversell


ROUNDS = 3
ORDERS_PER_ROUND = 40
QTY = 7
ON_HAND = 100
WORKERS = 6


@pytest.mark.slow
def test_parallel_allocate_partitions_never_oversell_a_shared_item(store, book):
    for _ in range(ROUNDS):
        tag = _tag()
        item = f"ITM-RACE-{tag}"
        with db.transaction(store):
            seed_item(store, item, east=ON_HAND, west=0)
            for n in range(ORDERS_PER_ROUND):
                cid = f"C-RACE-{tag}-{n:02d}"
                seed_customer(store, cid)
                seed_contract(store, cid, item)
        orders = [
            make_order(f"O-RACE-{tag}-{n:02d}", f"C-RACE-{tag}-{n:02d}", [(item, QTY)])
            for n in range(ORDERS_PER_ROUND)
        ]
        ids = insert(store, orders)
        to_credit_ok(store, ids, book)

        parts = repo.partitions([(o.order_id, o.customer_id) for o in orders], WORKERS, 1)
        assert len(parts) == WORKERS
        conns = [db.connect() for _ in parts]
        for c in conns:
            c.execute("SET statement_timeout = '60s'")
        start = threading.Barrier(len(parts), timeout=30)
        ctx = RunContext(dag_id="test_processing_store", task_id="allocate", claimed_by=None)

        def run(conn, part, _start=start, _ctx=ctx):
            _start.wait()
            return processing.allocate(conn, part, _ctx, book)

        try:
            with ThreadPoolExecutor(max_workers=len(parts)) as pool:
                futures = [pool.submit(run, c, p) for c, p in zip(conns, parts, strict=True)]
                results = [f.result(timeout=120) for f in futures]  # re-raises any error
        finally:
            for c in conns:
                c.close()

        fillable = ON_HAND // QTY  # 14
        assert sum(r.orders for r in results) == ORDERS_PER_ROUND
        assert sum(r.passed for r in results) == fillable
        assert sum(r.held.get("short_stock", 0) for r in results) == ORDERS_PER_ROUND - fillable
        assert all(set(r.held) <= {"short_stock"} for r in results)

        held_sum, held_n = store.execute(
            "SELECT coalesce(sum(quantity), 0), count(*) FROM orderflow.reservation "
            "WHERE item_id = %s AND status = 'held'",
            (item,),
        ).fetchone()
        assert held_sum <= ON_HAND
        assert held_sum == fillable * QTY and held_n == fillable
        positions = {
            r[0]: (r[1], r[2])
            for r in store.execute(
                "SELECT dc_id, on_hand, allocated FROM orderflow.inventory_position "
                "WHERE item_id = %s",
                (item,),
            )
        }
        assert positions["DC-EAST"] == (ON_HAND, held_sum)
        assert positions["DC-WEST"] == (0, 0)

        by_status = Counter(statuses(store, ids).values())
        assert by_status == {"ALLOCATED": fillable, "ON_HOLD": ORDERS_PER_ROUND - fillable}
        # every allocated order has exactly its quantity reserved; no held order has any
        per_order = dict(
            store.execute(
                "SELECT o.order_id, coalesce(sum(r.quantity) FILTER (WHERE r.status = 'held'), 0) "
                'FROM orderflow."order" o LEFT JOIN orderflow.reservation r USING (order_id) '
                "WHERE o.order_id = ANY(%s) GROUP BY o.order_id",
                (ids,),
            ).fetchall()
        )
        for oid, status in statuses(store, ids).items():
            assert per_order[oid] == (QTY if status == "ALLOCATED" else 0), oid
        short = store.execute(
            "SELECT count(DISTINCT order_id) FROM orderflow.order_exception "
            "WHERE order_id = ANY(%s) AND status = 'open' AND category = 'short_stock' "
            "AND stage = 'allocate'",
            (ids,),
        ).fetchone()[0]
        assert short == ORDERS_PER_ROUND - fillable
        hold_events = store.execute(
            "SELECT count(*) FROM orderflow.order_event WHERE order_id = ANY(%s) "
            "AND from_status = 'CREDIT_OK' AND to_status = 'ON_HOLD' "
            "AND reason_codes = '{short_stock}'",
            (ids,),
        ).fetchone()[0]
        assert hold_events == ORDERS_PER_ROUND - fillable


def _race(fn, args_per_thread):
    """Run ``fn(conn, *args)`` in one thread per entry, each on its own connection, started
    together; returns (result or exception) per thread."""
    conns = [db.connect() for _ in args_per_thread]
    for c in conns:
        c.execute("SET statement_timeout = '60s'")
    start = threading.Barrier(len(conns), timeout=30)

    def run(conn, args):
        start.wait()
        try:
            return fn(conn, *args)
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            return list(pool.map(run, conns, args_per_thread, timeout=120))
    finally:
        for c in conns:
            c.close()


def test_a_zombie_and_its_retry_allocating_one_partition_reserve_once(store, book):
    """Two workers on the SAME partition (a task retried while its first attempt still runs):
    one wins; the other finds nothing left to do, or is refused and rolled back."""
    from orderflow.store.events import StaleOrderState

    for _ in range(3):
        tag = _tag()
        item = f"ITM-ZMB-{tag}"
        cids = [f"C-ZMB-{tag}-{n}" for n in range(8)]
        with db.transaction(store):
            seed_item(store, item, east=30, west=0)
            for cid in cids:
                seed_customer(store, cid)
                seed_contract(store, cid, item)
        ids = insert(
            store, [make_order(f"O-ZMB-{tag}-{n}", c, [(item, 5)]) for n, c in enumerate(cids)]
        )
        to_credit_ok(store, ids, book)
        outcomes = _race(lambda c, ids_: processing.allocate(c, ids_, CTX, book), [(ids,), (ids,)])
        done = [o for o in outcomes if not isinstance(o, Exception)]
        refused = [o for o in outcomes if isinstance(o, Exception)]
        assert all(
            isinstance(e, StaleOrderState | psycopg.errors.UniqueViolation) for e in refused
        ), refused
        assert sum(r.passed for r in done) == 6  # 30 // 5, once
        assert sum(r.held.get("short_stock", 0) for r in done) == 2
        n, qty = store.execute(
            "SELECT count(*), sum(quantity) FROM orderflow.reservation "
            "WHERE item_id = %s AND status = 'held'",
            (item,),
        ).fetchone()
        allocated = store.execute(
            "SELECT allocated FROM orderflow.inventory_position "
            "WHERE item_id = %s AND dc_id = 'DC-EAST'",
            (item,),
        ).fetchone()[0]
        assert (n, qty, allocated) == (6, 30, 30)
        assert Counter(statuses(store, ids).values()) == {"ALLOCATED": 6, "ON_HOLD": 2}
        events_per_order = store.execute(
            "SELECT max(c) FROM (SELECT count(*) AS c FROM orderflow.order_event "
            "WHERE order_id = ANY(%s) AND from_status = 'CREDIT_OK' GROUP BY order_id) x",
            (ids,),
        ).fetchone()[0]
        assert events_per_order == 1


def test_parallel_credit_checks_of_one_customer_never_spend_the_same_headroom(store, book):
    """Two orders of one customer in two partitions (overlapping runs, a reprocess) decided at
    the same moment: the headroom covers one of them, so exactly one is approved."""
    for _ in range(5):
        tag = _tag()
        item, cid = f"ITM-CRD-{tag}", f"C-CRD-{tag}"
        with db.transaction(store):
            seed_item(store, item, east=1000, west=0)
            seed_customer(store, cid, limit="150")  # one order of 100 fits, two do not
            seed_contract(store, cid, item)
        ids = insert(store, [make_order(f"O-CRD-{tag}-{n}", cid, [(item, 10)]) for n in range(2)])
        v = processing.validate(store, ids, CTX, book)
        assert v.passed == 2
        outcomes = _race(
            lambda c, part: processing.check_credit(c, part, CTX, book, credit_service=None),
            [([ids[0]],), ([ids[1]],)],
        )
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        assert sum(o.passed for o in outcomes) == 1
        assert sum(o.held.get("credit_limit", 0) for o in outcomes) == 1
        assert sorted(statuses(store, ids).values()) == ["CREDIT_OK", "ON_HOLD"]


def test_the_store_refuses_an_oversell_and_cancelled_reservations_give_stock_back(store, book):
    tag = _tag()
    item, cid = f"ITM-CHK-{tag}", f"C-CHK-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=10, west=0)
        seed_customer(store, cid)
    ids = insert(store, [make_order(f"O-CHK-{tag}-{n}", cid, [(item, 6)]) for n in range(2)])
    # A writer that skipped the lock and the availability check: the store still refuses.
    with (
        pytest.raises(repo.Oversell, match="reserving more than available"),
        db.transaction(store),
    ):
        repo.reserve(
            store,
            [(oid, 1, item, "DC-EAST", Decimal(6), False) for oid in ids],
            "test",
        )
    left = store.execute("SELECT count(*) FROM orderflow.reservation WHERE item_id = %s", (item,))
    assert left.fetchone()[0] == 0
    with db.transaction(store):
        assert repo.lock_inventory(store, [item]) == {
            (item, "DC-EAST"): Decimal(10),
            (item, "DC-WEST"): Decimal(0),
        }
        repo.reserve(store, [(ids[0], 1, item, "DC-EAST", Decimal(6), False)], "test")
    assert repo.lock_inventory(store, [item])[(item, "DC-EAST")] == Decimal(4)
    with db.transaction(store):
        assert repo.cancel_reservations(store, ids) == 1
    with db.transaction(store):
        assert repo.cancel_reservations(store, ids) == 0  # nothing held any more
    row = store.execute(
        "SELECT allocated FROM orderflow.inventory_position WHERE item_id = %s AND dc_id = 'DC-EAST'",
        (item,),
    ).fetchone()
    assert row[0] == 0
    assert store.execute(
        "SELECT status FROM orderflow.reservation WHERE item_id = %s", (item,)
    ).fetchall() == [("cancelled",)]


# ---------------------------------------------------------------------------- 2. claims


@pytest.fixture
def claimable(store):
    """30 RECEIVED orders of 10 customers, received long ago (the oldest in the store, so a
    claim takes them before any other test's orders)."""
    tag = _tag()
    item = f"ITM-CLM-{tag}"
    base = datetime(2020, 1, 1, tzinfo=UTC)
    orders = []
    with db.transaction(store):
        seed_item(store, item, east=1000, west=0)
        for c in range(10):
            seed_customer(store, f"C-CLM-{tag}-{c}")
    for n in range(30):
        orders.append(
            make_order(
                f"O-CLM-{tag}-{n:02d}",
                f"C-CLM-{tag}-{n % 10}",
                [(item, 1)],
                received_at=base + timedelta(minutes=n),
            )
        )
    ids = insert(store, orders)
    yield ids
    # leave nothing claimable behind for the other tests: cancel what is still open
    with db.transaction(store):
        events.append(
            store,
            [
                transition(oid, status, "CANCELLED", actor_type="user", actor_id="test.cleanup")
                for oid, status in statuses(store, ids).items()
                if status in repo.PROCESSABLE or status == "ON_HOLD"
            ],
        )
        store.execute(
            'UPDATE orderflow."order" SET claimed_by_run = NULL, claimed_at = NULL '
            "WHERE order_id = ANY(%s)",
            (ids,),
        )


def _claimed_by(conn, ids) -> dict[str, str | None]:
    return dict(
        conn.execute(
            'SELECT order_id, claimed_by_run FROM orderflow."order" WHERE order_id = ANY(%s)',
            (list(ids),),
        ).fetchall()
    )


def test_concurrent_claims_never_hand_one_order_to_two_runs(store, claimable):
    ids = set(claimable)
    conns = [db.connect(), db.connect()]
    try:
        for attempt in range(5):
            runs = [f"run-a-{attempt}", f"run-b-{attempt}"]
            start = threading.Barrier(2, timeout=30)

            def take(conn, run_id, _start=start):
                _start.wait()
                return repo.claim(conn, run_id, 15)

            with ThreadPoolExecutor(max_workers=2) as pool:
                got = list(pool.map(take, conns, runs))
            a = {oid for oid, _ in got[0]}
            b = {oid for oid, _ in got[1]}
            assert not a & b, f"attempt {attempt}: both runs claimed {sorted(a & b)}"
            # between them they took exactly the 30 oldest orders (ours), 15 each
            assert len(a) == len(b) == 15
            assert a | b == ids
            held = _claimed_by(store, a | b)
            assert all(held[o] == runs[0] for o in a)
            assert all(held[o] == runs[1] for o in b)
            for c, run_id in zip(conns, runs, strict=True):
                assert repo.unclaim(c, run_id) == 15
    finally:
        for c in conns:
            c.close()
    assert set(_claimed_by(store, ids).values()) == {None}


def test_a_rerun_gets_its_orders_back_and_unclaimed_or_expired_orders_move_on(store, claimable):
    ids = claimable
    first = repo.claim(store, "run-1", 10)
    assert [oid for oid, _ in first] == ids[:10]  # the oldest first
    assert {cid for _, cid in first} == {f"C-CLM-{ids[0].split('-')[2]}-{n}" for n in range(10)}

    # the same run again (a retry of the claim task): the same orders, nothing new
    again = repo.claim(store, "run-1", 10)
    assert sorted(again) == sorted(first)
    # another run cannot take them while the lease is fresh
    other = repo.claim(store, "run-2", 10)
    assert {o for o, _ in other}.isdisjoint({o for o, _ in first})
    assert [o for o, _ in other] == ids[10:20]
    assert repo.unclaim(store, "run-2") == 10

    # given back: the next run takes them
    assert repo.unclaim(store, "run-1") == 10
    assert repo.unclaim(store, "run-1") == 0
    taken = repo.claim(store, "run-2", 10)
    assert [o for o, _ in taken] == ids[:10]
    assert set(_claimed_by(store, ids[:10]).values()) == {"run-2"}

    # a run that died: its lease (30 min) has expired after 2 hours, another run takes over
    store.execute(
        "UPDATE orderflow.\"order\" SET claimed_at = now() - interval '2 hours' "
        "WHERE claimed_by_run = 'run-2'"
    )
    rescued = repo.claim(store, "run-3", 10)
    assert [o for o, _ in rescued] == ids[:10]
    assert set(_claimed_by(store, ids[:10]).values()) == {"run-3"}
    assert repo.unclaim(store, "run-2") == 0
    assert repo.unclaim(store, "run-3") == 10


def test_a_retried_claim_gets_its_own_orders_back_even_when_older_ones_became_free(
    store, claimable
):
    ids = claimable
    # another run holds the oldest five; run-1 takes the next five
    assert [o for o, _ in repo.claim(store, "run-0", 5)] == ids[:5]
    first = repo.claim(store, "run-1", 5)
    assert [o for o, _ in first] == ids[5:10]
    # run-0 gives its (still processable) orders back — or an older hold is released
    assert repo.unclaim(store, "run-0") == 5
    # run-1's claim task is retried: "a rerun gets the same orders back"
    again = repo.claim(store, "run-1", 5)
    held_by_run_1 = sorted(o for o, run in _claimed_by(store, ids).items() if run == "run-1")
    assert sorted(o for o, _ in again) == held_by_run_1  # every order the run holds
    assert sorted(again) == sorted(first)


def test_claims_take_only_processable_orders(store, claimable):
    ids = claimable
    with db.transaction(store):
        events.append(
            store,
            [
                transition(ids[0], "RECEIVED", "ON_HOLD", actor_type="user", actor_id="t"),
                transition(ids[1], "RECEIVED", "CANCELLED", actor_type="user", actor_id="t"),
            ],
        )
    got = [o for o, _ in repo.claim(store, "run-p", 5)]
    assert got == ids[2:7]
    assert repo.unclaim(store, "run-p") == 5


# ---------------------------------------------------------------------------- 3. reruns


def _snapshot(conn, ids):
    q = conn.execute
    return {
        "status": statuses(conn, ids),
        "order": q(
            'SELECT order_id, version, release_version, priority, tax_amount FROM orderflow."order" '
            "WHERE order_id = ANY(%s) ORDER BY order_id",
            (ids,),
        ).fetchall(),
        "reservations": q(
            "SELECT reservation_id, order_id, line_no, item_id, dc_id, quantity, status "
            "FROM orderflow.reservation WHERE order_id = ANY(%s) ORDER BY reservation_id",
            (ids,),
        ).fetchall(),
        "shipments": q(
            "SELECT shipment_id, dc_id, release_version, carrier_id, service_code, freight_rate, "
            "status FROM orderflow.shipment WHERE order_id = ANY(%s) ORDER BY shipment_id",
            (ids,),
        ).fetchall(),
        "outbox": q(
            "SELECT outbox_id, idempotency_key, action, version, payload FROM orderflow.outbox "
            "WHERE order_id = ANY(%s) ORDER BY outbox_id",
            (ids,),
        ).fetchall(),
        "events": q(
            "SELECT order_id, count(*), max(event_id) FROM orderflow.order_event "
            "WHERE order_id = ANY(%s) GROUP BY order_id ORDER BY order_id",
            (ids,),
        ).fetchall(),
        "exceptions": q(
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = ANY(%s)", (ids,)
        ).fetchone()[0],
        "inventory": q(
            "SELECT item_id, dc_id, allocated FROM orderflow.inventory_position "
            "WHERE item_id IN (SELECT item_id FROM orderflow.reservation WHERE order_id = ANY(%s)) "
            "ORDER BY 1, 2",
            (ids,),
        ).fetchall(),
    }


def _all_stages(conn, ids, book):
    return [
        processing.validate(conn, ids, CTX, book),
        processing.check_credit(conn, ids, CTX, book, credit_service=None),
        processing.allocate(conn, ids, CTX, book),
        processing.plan(conn, ids, CTX, book, tax_service=None, screening_service=None),
        processing.release(conn, ids, CTX, book),
    ]


def test_rerunning_every_stage_of_a_released_partition_changes_nothing(store, book):
    tag = _tag()
    plenty, split = f"ITM-RR-{tag}", f"ITM-RRS-{tag}"
    c1, c2 = f"C-RR-{tag}-1", f"C-RR-{tag}-2"
    with db.transaction(store):
        seed_item(store, plenty, east=500, west=500)
        seed_item(store, split, east=5, west=5)  # an order of 8 ships from both DCs
        for cid in (c1, c2):
            seed_customer(store, cid)
            seed_contract(store, cid, plenty)
            seed_contract(store, cid, split)
    ids = insert(
        store,
        [
            make_order(f"O-RR-{tag}-1", c1, [(plenty, 3)]),
            make_order(f"O-RR-{tag}-2", c1, [(plenty, 2), (split, 8)]),
            make_order(f"O-RR-{tag}-3", c2, [(plenty, 40)]),
            make_order(f"O-RR-{tag}-4", c2, [(plenty, 1)]),
        ],
    )
    first = _all_stages(store, ids, book)
    for r in first:
        assert (r.orders, r.passed, r.held, r.skipped) == (4, 4, {}, 0), r
    before = _snapshot(store, ids)
    assert set(before["status"].values()) == {"RELEASED"}
    assert {r[6] for r in before["reservations"]} == {"released"}
    assert {r[6] for r in before["shipments"]} == {"released"}
    # the split order has a shipment per DC, everything else one
    assert len(before["shipments"]) == 5
    wms = [r for r in before["outbox"] if r[2] == "wms_release"]
    assert len(wms) == len(before["shipments"]) == 5
    assert {r[4]["shipment_id"] for r in wms} == {s[0] for s in before["shipments"]}
    keys = [r[1] for r in before["outbox"]]
    assert len(keys) == len(set(keys))
    assert before["exceptions"] == 0
    # every order has RECEIVED + the five stage moves
    assert [r[1] for r in before["events"]] == [6, 6, 6, 6]

    second = _all_stages(store, ids, book)
    for r in second:
        assert (r.orders, r.passed, r.held, r.skipped) == (0, 0, {}, 4), r
    assert _snapshot(store, ids) == before


def test_a_rerun_after_a_partial_pass_only_finishes_what_is_left(store, book):
    """A task retried after the first attempt got half-way: the orders it already moved are
    skipped, the rest go through once."""
    tag = _tag()
    item, cid = f"ITM-HALF-{tag}", f"C-HALF-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=100, west=0)
        seed_customer(store, cid)
        seed_contract(store, cid, item)
    ids = insert(store, [make_order(f"O-HALF-{tag}-{n}", cid, [(item, 5)]) for n in range(4)])
    to_credit_ok(store, ids, book)
    done = processing.allocate(store, ids[:2], CTX, book)
    assert (done.orders, done.passed) == (2, 2)
    retry = processing.allocate(store, ids, CTX, book)
    assert (retry.orders, retry.passed, retry.skipped) == (2, 2, 2)
    n, total = store.execute(
        "SELECT count(*), sum(quantity) FROM orderflow.reservation WHERE item_id = %s "
        "AND status = 'held'",
        (item,),
    ).fetchone()
    assert (n, total) == (4, 20)
    assert (
        store.execute(
            "SELECT allocated FROM orderflow.inventory_position WHERE item_id = %s AND dc_id = 'DC-EAST'",
            (item,),
        ).fetchone()[0]
        == 20
    )


# ---------------------------------------------------------------------------- 4. master data


def _open_entity_exception(conn, entity_type, entity_id, reason="weight missing"):
    return conn.execute(
        "INSERT INTO orderflow.order_exception (order_id, entity_type, entity_id, category, "
        "owner_role, reason, sla_due_at) "
        "VALUES (NULL, %s, %s, 'master_data_quality', 'master_data', %s, "
        "now() + interval '8 hours') RETURNING exception_id",
        (entity_type, entity_id, reason),
    ).fetchone()[0]


def _fix(conn, exception_id):
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = 'fixed', "
        "resolved_at = now(), resolved_by = 'mdm' WHERE exception_id = %s",
        (exception_id,),
    )


def _exceptions(conn, order_id):
    return conn.execute(
        "SELECT category, line_no, status, resolution, details->>'entity_type', "
        "details->>'entity_id' FROM orderflow.order_exception WHERE order_id = %s "
        "ORDER BY exception_id",
        (order_id,),
    ).fetchall()


def test_fixed_master_data_releases_the_hold_and_the_order_validates(store, book):
    tag = _tag()
    item, cid = f"ITM-MDQ-{tag}", f"C-MDQ-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=100, west=0)
        seed_customer(store, cid)
        seed_contract(store, cid, item)
        entity_exc = _open_entity_exception(store, "item", item)
    (oid,) = insert(store, [make_order(f"O-MDQ-{tag}", cid, [(item, 4)])])

    v = processing.validate(store, [oid], CTX, book)
    assert v.held == {"master_data_quality": 1}
    assert statuses(store, [oid]) == {oid: "ON_HOLD"}
    assert _exceptions(store, oid) == [("master_data_quality", 1, "open", None, "item", item)]

    # not fixed yet: nothing moves
    assert processing.release_fixed_master_data_holds(store, CTX) == 0
    assert statuses(store, [oid]) == {oid: "ON_HOLD"}

    with db.transaction(store):
        _fix(store, entity_exc)
    assert processing.release_fixed_master_data_holds(store, CTX) == 1
    assert statuses(store, [oid]) == {oid: "RECEIVED"}
    assert _exceptions(store, oid) == [
        ("master_data_quality", 1, "resolved", "auto_resolved", "item", item)
    ]
    last = store.execute(
        "SELECT from_status, to_status, reason_codes, actor_id, run_id FROM orderflow.order_event "
        "WHERE order_id = %s ORDER BY event_id DESC LIMIT 1",
        (oid,),
    ).fetchone()
    assert last == ("ON_HOLD", "RECEIVED", ["master_data_fixed"], CTX.actor, CTX.run_id)
    assert processing.release_fixed_master_data_holds(store, CTX) == 0  # once only

    again = processing.validate(store, [oid], CTX, book)
    assert (again.orders, again.passed, again.held) == (1, 1, {})
    assert statuses(store, [oid]) == {oid: "VALIDATED"}


def test_an_order_held_for_two_entities_waits_for_both(store, book):
    tag = _tag()
    item, cid = f"ITM-MDQ2-{tag}", f"C-MDQ2-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=100, west=0)
        seed_customer(store, cid)
        seed_contract(store, cid, item)
        item_exc = _open_entity_exception(store, "item", item)
        st_exc = _open_entity_exception(store, "ship_to", f"{cid}-ST1", "postal code invalid")
    (oid,) = insert(store, [make_order(f"O-MDQ2-{tag}", cid, [(item, 4)])])
    processing.validate(store, [oid], CTX, book)
    assert sorted(_exceptions(store, oid), key=lambda r: r[1] or 0) == [
        ("master_data_quality", None, "open", None, "ship_to", f"{cid}-ST1"),
        ("master_data_quality", 1, "open", None, "item", item),
    ]
    with db.transaction(store):
        _fix(store, item_exc)
    assert processing.release_fixed_master_data_holds(store, CTX) == 0
    assert statuses(store, [oid]) == {oid: "ON_HOLD"}
    assert {r[4]: r[2] for r in _exceptions(store, oid)} == {
        "item": "resolved",
        "ship_to": "open",
    }
    with db.transaction(store):
        _fix(store, st_exc)
    assert processing.release_fixed_master_data_holds(store, CTX) == 1
    assert statuses(store, [oid]) == {oid: "RECEIVED"}
    assert processing.validate(store, [oid], CTX, book).passed == 1


def test_a_master_data_fix_does_not_release_an_order_with_another_open_hold(store, book):
    tag = _tag()
    item, cid = f"ITM-MDQ3-{tag}", f"C-MDQ3-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=100, west=0)
        seed_customer(store, cid)
        seed_contract(store, cid, item)
        exc = _open_entity_exception(store, "item", item)
    # line 2 names an item nobody knows: unknown_item, independent of the master data fix
    (oid,) = insert(store, [make_order(f"O-MDQ3-{tag}", cid, [(item, 4), (f"NOPE-{tag}", 1)])])
    v = processing.validate(store, [oid], CTX, book)
    assert v.held == {"master_data_quality": 1, "unknown_item": 1}
    with db.transaction(store):
        _fix(store, exc)
    assert processing.release_fixed_master_data_holds(store, CTX) == 0
    assert statuses(store, [oid]) == {oid: "ON_HOLD"}
    assert {r[0]: r[2] for r in _exceptions(store, oid)} == {
        "master_data_quality": "resolved",
        "unknown_item": "open",
    }


# ---------------------------------------------------------------------------- 5. partitions


def _check_partitions(claimed, max_partitions, min_orders=1):
    parts = repo.partitions(claimed, max_partitions, min_orders)
    flat = [o for p in parts for o in p]
    assert sorted(flat) == sorted(o for o, _ in claimed)  # every order exactly once
    assert 1 <= len(parts) <= max_partitions
    assert all(p for p in parts)
    owner = {o: c or f"?{o}" for o, c in claimed}
    where = {}
    for n, p in enumerate(parts):
        for o in p:
            assert where.setdefault(owner[o], n) == n, f"customer {owner[o]} split"
    return parts


def test_partitions_keep_customers_together_and_stay_bounded(store):
    # 200 orders over 23 customers of very different sizes, some without a customer
    claimed = []
    counter = itertools.count()
    for c in range(23):
        for _ in range(1 + (c * 7) % 19):
            claimed.append((f"O-{next(counter):04d}", f"C-{c:02d}"))
    claimed += [(f"O-{next(counter):04d}", None) for _ in range(5)]
    for max_p in (1, 2, 4, 8, 16, 64):
        parts = _check_partitions(claimed, max_p)
        assert len(parts) == min(max_p, 23 + 5)
    # greedy largest-first: with 8 bins no partition is bigger than the mean plus one
    # customer's orders
    parts = repo.partitions(claimed, 8, 1)
    biggest_customer = max(Counter(c for _, c in claimed if c).values())
    assert max(map(len, parts)) <= len(claimed) / 8 + biggest_customer


def test_a_small_batch_is_one_partition_and_a_large_one_is_cut_by_size(store):
    claimed = [("O-3", "C-B"), ("O-1", "C-A"), ("O-2", None)]
    assert repo.partitions(claimed, 16) == [["O-1", "O-2", "O-3"]]
    assert repo.partitions([], 16) == []
    # 1,000 orders of 100 customers: one partition per 250 orders, bounded by max_partitions
    many = [(f"O-{n:04d}", f"C-{n % 100:02d}") for n in range(1000)]
    assert len(_check_partitions(many, 16, 250)) == 4
    assert len(_check_partitions(many, 3, 250)) == 3
    # one order per partition when asked (min_orders=1), a customer's orders still together
    parts = repo.partitions([("O-1", "C-A"), ("O-2", "C-A"), ("O-3", "C-B")], 16, 1)
    assert sorted(parts) == [["O-1", "O-2"], ["O-3"]]


def test_partitions_of_a_real_claim(store, claimable):
    claimed = repo.claim(store, "run-part", 30)
    try:
        ours = [(o, c) for o, c in claimed if o in set(claimable)]
        assert len(ours) == 30
        parts = _check_partitions(ours, 4)
        assert len(parts) == 4
        # 10 customers x 3 orders in 4 bins: 3 + 3 + 2 + 2 customers
        assert sorted(map(len, parts)) == [6, 6, 9, 9]
    finally:
        repo.unclaim(store, "run-part")


# ---------------------------------------------------------------------------- worker killed


def test_a_worker_killed_mid_partition_loses_and_duplicates_nothing(store, book):
    """SIGKILL the process running a stage while its transaction is half written (its
    reservations are in, its events are blocked on a lock we hold): nothing of it survives,
    and the retry does the whole partition exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tag = _tag()
    item = f"KILL-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=500, west=0)
        for n in range(4):
            seed_customer(store, f"K{tag}{n}")
            seed_contract(store, f"K{tag}{n}", item)
    ids = insert(
        store, [make_order(f"K-{tag}-{n}", f"K{tag}{n % 4}", [(item, 5)]) for n in range(10)]
    )
    to_credit_ok(store, ids, book)

    locker = db.connect()
    tx = locker.transaction()
    tx.__enter__()
    locker.execute("LOCK TABLE orderflow.order_event IN EXCLUSIVE MODE")
    code = (
        "from orderflow import processing, rules\n"
        "from orderflow.store import db\n"
        f"ids = {ids!r}\n"
        "ctx = processing.RunContext(dag_id='t', run_id='worker', task_id='allocate')\n"
        "processing.allocate(db.connect(), ids, ctx, rules.load())\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = store.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%order_event%%' AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.1)
        assert waiting, "the worker never reached the event insert"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        tx.__exit__(None, None, None)
        locker.close()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL

    assert set(statuses(store, ids).values()) == {"CREDIT_OK"}
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.reservation WHERE order_id = ANY(%s)", (ids,)
        ).fetchone()[0]
        == 0
    )
    assert (
        store.execute(
            "SELECT allocated FROM orderflow.inventory_position WHERE item_id = %s AND dc_id = 'DC-EAST'",
            (item,),
        ).fetchone()[0]
        == 0
    )

    retry = processing.allocate(store, ids, CTX, book)
    assert (retry.orders, retry.passed) == (10, 10)
    assert set(statuses(store, ids).values()) == {"ALLOCATED"}
    reserved = store.execute(
        "SELECT count(*), sum(quantity) FROM orderflow.reservation WHERE order_id = ANY(%s)",
        (ids,),
    ).fetchone()
    assert reserved == (10, Decimal(50))
    assert (
        store.execute(
            "SELECT allocated FROM orderflow.inventory_position WHERE item_id = %s AND dc_id = 'DC-EAST'",
            (item,),
        ).fetchone()[0]
        == 50
    )


# ---------------------------------------------------------------------------- transient failures


@pytest.mark.sandbox
def test_a_dead_credit_service_holds_the_partition_after_the_retry_budget(store, book, sandbox):
    """The credit service answers 503 to everything: while retries remain the task fails (for
    Airflow to retry with backoff); on the last try the orders are held integration_failure
    with a dead letter — the run does not fail and no order is lost."""
    import os
    from types import SimpleNamespace

    from orderflow.integrations.http import ExternalUnavailable
    from orderflow.operators.processing import CheckCreditOperator

    tag = _tag()
    item = f"TF-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=50, west=0)
        seed_customer(store, f"T{tag}")
        seed_contract(store, f"T{tag}", item)
    ids = insert(store, [make_order(f"T-{tag}-{n}", f"T{tag}", [(item, 1)]) for n in range(3)])
    v = processing.validate(store, ids, CTX, book)
    assert v.passed == 3
    os.environ.update(sandbox.connection_env())
    sandbox.client.put(
        "/admin/faults", json={"seed": 1, "rules": [{"prefix": "/credit", "error_rate": 1.0}]}
    ).raise_for_status()
    try:
        op = CheckCreditOperator(
            task_id="check_credit",
            partition={"label": "t", "order_ids": ids},
            retries=1,
            only_claimed=False,
        )

        pushed: dict = {}

        def context(try_number):
            ti = SimpleNamespace(
                try_number=try_number,
                dag_id="t",
                run_id=f"run-{tag}",
                task_id="check_credit",
                map_index=0,
                xcom_push=lambda key, value: pushed.__setitem__(key, value),
            )
            return {"ti": ti, "dag_run": SimpleNamespace(run_after=None, logical_date=None)}

        with pytest.raises(ExternalUnavailable):
            op.execute(context(1))
        assert set(statuses(store, ids).values()) == {"VALIDATED"}
        passed_on = op.execute(context(2))  # the last try
    finally:
        sandbox.client.put("/admin/faults", json={"rules": []}).raise_for_status()
    assert passed_on == {"label": "t", "order_ids": ids}  # the next stage finds them held
    assert pushed["counts"]["held"] == {"integration_failure": 3}
    assert set(statuses(store, ids).values()) == {"ON_HOLD"}
    owners = store.execute(
        "SELECT DISTINCT owner_role, reason LIKE 'credit: credit service%%' "
        "FROM orderflow.order_exception WHERE order_id = ANY(%s)",
        (ids,),
    ).fetchall()
    assert owners == [("integration", True)]
    letter = store.execute(
        "SELECT payload->'order_ids' FROM orderflow.dead_letter WHERE source = 'processing' "
        "AND source_ref = %s",
        (f"credit:run-{tag}:0",),
    ).fetchone()
    assert sorted(letter[0]) == sorted(ids)


def test_an_order_from_a_partner_synced_after_intake_finds_its_customer(store, book):
    """EDI orders can land before the trading partners are synced: validation holds them
    unknown_customer; once the partner is on file the hold resolves itself and the order
    validates with the partner's customer."""
    tag = _tag()
    cid, item = f"E{tag}", f"EDI-{tag}"
    with db.transaction(store):
        seed_item(store, item, east=10, west=0)
        seed_customer(store, cid)
        seed_contract(store, cid, item)
    order = make_order(f"E-{tag}", cid, [(item, 1)])
    order.customer_id = None
    (order_id,) = insert(store, [order])
    held = processing.validate(store, [order_id], CTX, book)
    assert held.held == {"unknown_customer": 1}
    assert processing.release_fixed_master_data_holds(store, CTX) == 0  # still unknown
    store.execute(
        "INSERT INTO orderflow.trading_partner (partner_id, customer_id) VALUES (%s, %s)",
        (f"P-{cid}", cid),
    )
    assert processing.release_fixed_master_data_holds(store, CTX) == 1
    passed = processing.validate(store, [order_id], CTX, book)
    assert passed.passed == 1
    assert (
        store.execute(
            'SELECT customer_id FROM orderflow."order" WHERE order_id = %s', (order_id,)
        ).fetchone()[0]
        == cid
    )


# ---------------------------------------------------------------------------- batched credit


def test_credit_asks_the_service_once_per_partition_or_each_customer_without_a_batch(store, book):
    """``credit_batch`` (``CreditHook.check_many``) answers for every customer of the partition
    in one call and its answers decide as single calls' would; when the service has no batch
    endpoint (``credit_batch`` returns None) each customer is asked on its own."""
    tag = _tag()
    item = f"CB-{tag}"
    a, b, c, d = (f"CB{tag}{n}" for n in "ABCD")
    with db.transaction(store):
        seed_item(store, item, east=100, west=0)
        for cid in (a, b, c, d):
            seed_customer(store, cid)
            seed_contract(store, cid, item)
    first = insert(
        store,
        [make_order(f"CB-{tag}-{n}", cid, [(item, 1)]) for n, cid in enumerate((a, a, b))],
    )
    assert processing.validate(store, first, CTX, book).passed == 3

    batches: list[list[tuple[str, float]]] = []

    def batch(asked):
        batches.append(list(asked))
        return [
            {"decision": "decline", "reason": "batch says no"}
            if cid == a
            else {"decision": "approve"}
            for cid, _ in asked
        ]

    def one_by_one(cid, amount):
        raise AssertionError(f"{cid} asked on its own although the batch answered")

    out = processing.check_credit(store, first, CTX, book, one_by_one, credit_batch=batch)
    assert [sorted(cid for cid, _ in asked) for asked in batches] == [[a, b]]
    assert dict(batches[0])[a] == 20.0  # the total of the customer's orders in the partition
    assert (out.passed, out.held) == (1, {"credit_hold": 2})
    assert statuses(store, first) == {
        first[0]: "ON_HOLD",
        first[1]: "ON_HOLD",
        first[2]: "CREDIT_OK",
    }

    second = insert(
        store, [make_order(f"CB-{tag}-{n}", cid, [(item, 1)]) for n, cid in ((3, c), (4, d))]
    )
    assert processing.validate(store, second, CTX, book).passed == 2
    asked_alone: list[str] = []

    def single(cid, amount):
        asked_alone.append(cid)
        return (
            {"decision": "refer", "reason": "asked alone"} if cid == d else {"decision": "approve"}
        )

    out = processing.check_credit(store, second, CTX, book, single, credit_batch=lambda asked: None)
    assert sorted(asked_alone) == [c, d]
    assert (out.passed, out.held) == (1, {"credit_limit": 1})


def test_credit_and_plan_ask_the_services_about_the_values_the_loaded_orders_give(store, book):
    """Credit asks the service about each customer's total, and plan the tax engine about
    each line's value, before their transactions — read in one statement each
    (``partition_totals``, ``line_amounts``) instead of loading the partition twice: the
    same customers and orders, in the same order, with the values the loaded orders give
    (contract prices where validation set them, typed prices elsewhere), for the orders
    still in the stage's input status (and claimed by the run when one is given) only."""
    from orderflow.store import processing as repo

    tag = _tag()
    c1, c2, item, other = f"C-TOT1-{tag}", f"C-TOT2-{tag}", f"I-TOT-{tag}", f"I-TOT2-{tag}"
    conn = store
    with db.transaction(conn):
        seed_customer(conn, c1)
        seed_customer(conn, c2)
        seed_item(conn, item, east=100, west=100)
        seed_item(conn, other, east=100, west=100)
        seed_contract(conn, c1, item, price="9.55")  # within tolerance of the typed 9.50
    orders = [
        make_order(f"O-TOT-{tag}-3", c2, [(item, 3), (other, 7)], price="12.00"),
        make_order(f"O-TOT-{tag}-1", c1, [(item, 2)], price="9.50"),
        make_order(f"O-TOT-{tag}-2", c1, [(item, 5)], price="9.50"),
        make_order(f"O-TOT-{tag}-4", c2, [(other, 4)], price="12.00"),
    ]
    ids = insert(conn, orders)
    v = processing.validate(conn, ids, CTX, book)
    assert v.passed == len(ids), v
    loaded = repo.load_orders(conn, ids, ["VALIDATED"])
    assert any(
        ln.contract_price is not None and ln.contract_price != ln.unit_price
        for o in loaded
        for ln in o.lines
    )
    expected: dict[str, Decimal] = {}
    for o in loaded:
        expected[o.customer_id or ""] = expected.get(o.customer_id or "", 0) + o.amount()
    got = repo.partition_totals(conn, ids, "VALIDATED", None)
    assert list(got) == list(expected) == [c1, c2]
    assert got == expected
    # plan's tax quotes: each line's value, per order in order id order (``line_amounts``)
    per_line = {
        o.order_id: (
            o.customer_id,
            [
                ln.quantity
                * (ln.contract_price if ln.contract_price is not None else ln.unit_price)
                for ln in o.lines
            ],
        )
        for o in loaded
    }
    lines = repo.line_amounts(conn, ids, "VALIDATED", None)
    assert list(lines) == sorted(ids) and lines == per_line
    # an order moved on is not counted again; claims narrow it to the run's orders
    with db.transaction(conn):
        conn.execute(
            "UPDATE orderflow.\"order\" SET status = 'CREDIT_OK' WHERE order_id = %s",
            (ids[1],),
        )
        conn.execute(
            'UPDATE orderflow."order" SET claimed_by_run = %s WHERE order_id = ANY(%s)',
            ("run-x", [ids[0], ids[1], ids[3]]),
        )
    later = repo.partition_totals(conn, ids, "VALIDATED", None)
    assert later[c1] == expected[c1] - loaded[0].amount()
    assert ids[1] not in repo.line_amounts(conn, ids, "VALIDATED", None)
    claimed = repo.partition_totals(conn, ids, "VALIDATED", "run-x")
    assert list(claimed) == [c2] and claimed[c2] == expected[c2]
    assert list(repo.line_amounts(conn, ids, "VALIDATED", "run-x")) == sorted([ids[0], ids[3]])
