"""Fulfilment against the real store, with feeds we script: events late, twice and out of
order move shipments forward only and change nothing the second time; an event for an
unknown order is quarantined and applies after a fix; a quantity mismatch withholds the
invoice until billing confirms; a short, priced-by-contract shipment bills correctly; a
worker killed mid-batch leaves every event to the retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
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

from orderflow import fulfilment, processing, rules
from orderflow.store import db

pytestmark = [pytest.mark.db]


@pytest.fixture(scope="module")
def book():
    return rules.load()


T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def released_order(store, book, qty=10, price="10.00", contract="10.00", lines=1):
    """One order released to the WMS (its shipment linked to a WMS release id)."""
    tag = _tag()
    cid, items = f"F{tag}", [f"FI-{tag}-{n}" for n in range(lines)]
    with db.transaction(store):
        seed_customer(store, cid)
        for item in items:
            seed_item(store, item, east=1000, west=0)
            seed_contract(store, cid, item, contract)
    (oid,) = insert(store, [make_order(f"FO-{tag}", cid, [(i, qty) for i in items], price=price)])
    to_credit_ok(store, [oid], book)
    for stage in (
        processing.allocate,
        lambda c, ids, ctx, b: processing.plan(c, ids, ctx, b, None, None),
        processing.release,
    ):
        stage(store, [oid], CTX, book)
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    (sid,) = store.execute(
        "SELECT shipment_id FROM orderflow.shipment WHERE order_id = %s", (oid,)
    ).fetchone()
    rel = f"REL-{tag}"
    store.execute(
        "UPDATE orderflow.shipment SET wms_release_id = %s WHERE shipment_id = %s", (rel, sid)
    )
    return oid, sid, rel, items


def wms(rel, oid, milestone, minutes, lines=None, tracking=None):
    e = {
        "release_id": rel,
        "order_id": oid,
        "dc_id": "DC-EAST",
        "milestone": milestone,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
    }
    if lines is not None:
        e["lines"] = lines
    if tracking:
        e["tracking_number"] = tracking
    return e


def carrier(rel, oid, status, minutes, tracking, **extra):
    return {
        "release_id": rel,
        "order_id": oid,
        "tracking_number": tracking,
        "status": status,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
        **extra,
    }


def pull_and_apply(store, book, wms_items=(), carrier_items=()):
    """Deliver each feed's items as one page at cursor 0 (duplicates and order as given, as
    a feed that re-serves a page would), then apply everything pending."""
    from orderflow.store import cursors

    stats = {}
    for source, items in (("wms", list(wms_items)), ("carrier", list(carrier_items))):
        if not items:
            continue

        def fetch(cursor, limit, items=items):
            return {"items": items if cursor == 0 else [], "next_cursor": cursor + len(items)}

        with db.transaction(store):
            cursors.put(store, fulfilment.FEEDS[source], "0")
        stats[source] = fulfilment.pull_feed(store, source, fetch)
    return stats, fulfilment.apply_events(store, CTX, book)


def picks(items, ordered, picked, shipped=None):
    return [
        {
            "line_no": n + 1,
            "item_id": item,
            "ordered": ordered,
            "picked": picked,
            **({"shipped": shipped} if shipped is not None else {}),
        }
        for n, item in enumerate(items)
    ]


def test_late_repeated_and_reordered_events_move_forward_once(store, book):
    oid, sid, rel, items = released_order(store, book)
    full = picks(items, 10, 10, 10)
    milestones = [
        wms(rel, oid, "shipped", 200, full, "1Z1"),
        wms(rel, oid, "picked", 60, picks(items, 10, 10)),
        wms(rel, oid, "released", 0),
        wms(rel, oid, "packed", 90),
    ]
    tracking = [
        carrier(rel, oid, "delivered", 3000, "1Z1"),
        carrier(rel, oid, "in_transit", 400, "1Z1"),
    ]
    stats, _out = pull_and_apply(store, book, milestones + milestones[:2], tracking * 2)
    got = {k: (v["received"], v["stored"], v["duplicates"]) for k, v in stats.items()}
    assert got == {"wms": (6, 4, 2), "carrier": (4, 2, 2)}
    ship = store.execute(
        "SELECT status, picked_at, shipped_at, delivered_at, tracking_number "
        "FROM orderflow.shipment WHERE shipment_id = %s",
        (sid,),
    ).fetchone()
    assert ship == (
        "delivered",
        T0 + timedelta(minutes=60),
        T0 + timedelta(minutes=200),
        T0 + timedelta(minutes=3000),
        "1Z1",
    )
    moves = [
        r[0]
        for r in store.execute(
            "SELECT to_status FROM orderflow.order_event WHERE order_id = %s "
            "AND details->>'stage' = 'fulfilment' ORDER BY event_id",
            (oid,),
        )
    ]
    assert moves == ["PICKED", "SHIPPED", "DELIVERED"]
    counts = dict(
        store.execute(
            "SELECT action, count(*) FROM orderflow.outbox WHERE order_id = %s GROUP BY 1", (oid,)
        ).fetchall()
    )
    assert counts["erp_invoice"] == 1 and "edi_856" not in counts  # an API order: no 856
    # the same page again, and the same events delivered one by one: nothing changes
    before = store.execute("SELECT count(*) FROM orderflow.outbox").fetchone()[0]
    _, again = pull_and_apply(store, book, milestones, tracking)
    assert again.events == 0
    assert store.execute("SELECT count(*) FROM orderflow.outbox").fetchone()[0] == before
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.invoice WHERE order_id = %s", (oid,)
        ).fetchone()[0]
        == 1
    )


def test_an_event_for_an_unknown_order_is_quarantined_and_applies_after_the_fix(store, book):
    oid, sid, rel, _items = released_order(store, book)
    ghost = wms("REL-GHOST", "FO-NOSUCH", "picked", 10, [])
    waiting = wms(f"{rel}-LATE", oid, "packed", 20)  # a release OrderFlow has not linked yet
    _, out = pull_and_apply(store, book, [ghost, waiting])
    assert (out.quarantined, out.waiting) == (1, 1)
    row = store.execute(
        "SELECT status, error FROM orderflow.fulfilment_event WHERE release_id = 'REL-GHOST'"
    ).fetchone()
    assert row[0] == "quarantined" and "FO-NOSUCH" in row[1] and "replay" in row[1]
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.dead_letter WHERE source = 'fulfilment_event' "
            "AND source_ref LIKE 'wms:REL-GHOST:%%'"
        ).fetchone()[0]
        == 1
    )
    # the unlinked release waits, and is quarantined only after the rules' attempts
    for _ in range(book.fulfilment.unmatched_event_attempts - 1):
        fulfilment.apply_events(store, CTX, book)
    assert (
        store.execute(
            "SELECT status FROM orderflow.fulfilment_event WHERE release_id = %s", (f"{rel}-LATE",)
        ).fetchone()[0]
        == "quarantined"
    )
    # the fix: the release is ours after all (the WMS re-keyed it); replay applies it
    store.execute(
        "UPDATE orderflow.shipment SET wms_release_id = %s WHERE shipment_id = %s",
        (f"{rel}-LATE", sid),
    )
    ids = [
        r[0]
        for r in store.execute(
            "SELECT event_id FROM orderflow.fulfilment_event WHERE release_id = %s",
            (f"{rel}-LATE",),
        )
    ]
    assert fulfilment.replay_quarantined(store, "ops.lee", ids) == 1
    out = fulfilment.apply_events(store, CTX, book)
    assert out.applied >= 1
    assert (
        store.execute(
            "SELECT status FROM orderflow.shipment WHERE shipment_id = %s", (sid,)
        ).fetchone()[0]
        == "packed"
    )


def test_a_quantity_mismatch_withholds_the_invoice_until_billing_confirms(store, book):
    oid, sid, rel, items = released_order(store, book)
    _, out = pull_and_apply(
        store,
        book,
        [
            wms(rel, oid, "picked", 60, picks(items, 10, 10)),
            wms(rel, oid, "shipped", 200, picks(items, 10, 10, shipped=11), "1Z2"),
        ],
    )
    assert out.invoices_withheld == 1
    inv = store.execute(
        "SELECT status FROM orderflow.invoice WHERE shipment_id = %s", (sid,)
    ).fetchone()
    assert inv == ("withheld",)
    reason, details = store.execute(
        "SELECT reason, details FROM orderflow.order_exception WHERE order_id = %s "
        "AND category = 'quantity_mismatch' AND status = 'open'",
        (oid,),
    ).fetchone()
    assert "shipped 11" in reason and "withheld" in reason and details["shipment_id"] == sid
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.outbox WHERE order_id = %s AND action = 'erp_invoice'",
            (oid,),
        ).fetchone()[0]
        == 0
    )
    invoice_id = fulfilment.release_withheld_invoice(
        store, sid, actor="billing.jane", reason="dock recount confirmed 11", book=book
    )
    doc = store.execute(
        "SELECT status, document FROM orderflow.invoice WHERE invoice_id = %s", (invoice_id,)
    ).fetchone()
    assert doc[0] == "queued" and [ln["quantity"] for ln in doc[1]["lines"]] == ["11.000"]
    resolved = store.execute(
        "SELECT resolution, resolved_by FROM orderflow.order_exception WHERE order_id = %s "
        "AND category = 'quantity_mismatch'",
        (oid,),
    ).fetchone()
    assert resolved == ("approved", "billing.jane")
    assert store.execute(
        "SELECT actor, action FROM orderflow.audit_log WHERE object_type = 'invoice' "
        "AND object_id = %s",
        (invoice_id,),
    ).fetchall() == [("billing.jane", "release_withheld_invoice")]
    with pytest.raises(ValueError, match="no withheld invoice"):
        fulfilment.release_withheld_invoice(store, sid, actor="x", reason="again", book=book)


def test_a_short_shipment_bills_what_shipped_at_the_contract_price(store, book):
    # the customer typed 10.05 (within tolerance of the 10.00 contract): we bill 10.00
    oid, sid, rel, items = released_order(store, book, price="10.05", contract="10.00", lines=2)
    store.execute('UPDATE orderflow."order" SET tax_amount = 8.00 WHERE order_id = %s', (oid,))
    lines = [
        {"line_no": 1, "item_id": items[0], "ordered": 10, "picked": 6, "shipped": 6},
        {"line_no": 2, "item_id": items[1], "ordered": 10, "picked": 0, "shipped": 0},
    ]
    pull_and_apply(
        store,
        book,
        [
            wms(
                rel,
                oid,
                "short_picked",
                60,
                [{k: v for k, v in ln.items() if k != "shipped"} for ln in lines],
            ),
            wms(rel, oid, "shipped", 200, lines, "1Z3"),
        ],
    )
    status, doc, subtotal, tax = store.execute(
        "SELECT status, document, subtotal, tax FROM orderflow.invoice WHERE shipment_id = %s",
        (sid,),
    ).fetchone()
    assert status == "queued"
    assert [(ln["line_no"], ln["quantity"], ln["unit_price"]) for ln in doc["lines"]] == [
        (1, "6.000", "10.0000")
    ]
    assert subtotal == Decimal("60.00")
    assert tax == Decimal("2.40")  # 8.00 × 60 / 200 released
    assert store.execute(
        "SELECT short_picked FROM orderflow.shipment WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]


def test_a_worker_killed_mid_batch_leaves_every_event_to_the_retry(store, book):
    import os
    import signal
    import subprocess
    import sys
    import time

    oid, sid, rel, items = released_order(store, book)
    from orderflow.store import fulfilment as frepo

    with db.transaction(store):
        frepo.store_events(
            store,
            [
                {
                    "source": "wms",
                    "event_key": f"{rel}:{m}",
                    "feed_seq": n,
                    "kind": m,
                    "order_id": oid,
                    "release_id": rel,
                    "tracking_number": None,
                    "occurred_at": (T0 + timedelta(minutes=n * 10)).isoformat(),
                    "payload": wms(rel, oid, m, n * 10, picks(items, 10, 10, 10), "1Z4"),
                }
                for n, m in enumerate(("released", "picked", "packed", "shipped"))
            ],
        )
    locker = db.connect()
    tx = locker.transaction()
    tx.__enter__()
    locker.execute("LOCK TABLE orderflow.invoice IN EXCLUSIVE MODE")  # the worker blocks here
    code = (
        "from orderflow import fulfilment, processing, rules\n"
        "from orderflow.store import db\n"
        "ctx = processing.RunContext(dag_id='t', run_id='worker', task_id='apply')\n"
        "fulfilment.apply_events(db.connect(), ctx, rules.load())\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = store.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'orderflow.invoice'::regclass "
                "AND NOT granted"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.2)
        assert waiting, "the worker never reached the invoice"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        tx.__exit__(None, None, None)
        locker.close()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    pending = store.execute(
        "SELECT count(*) FROM orderflow.fulfilment_event WHERE release_id = %s "
        "AND status = 'pending'",
        (rel,),
    ).fetchone()[0]
    assert pending == 4
    assert (
        store.execute(
            "SELECT status FROM orderflow.shipment WHERE shipment_id = %s", (sid,)
        ).fetchone()[0]
        == "released"
    )
    out = fulfilment.apply_events(store, CTX, book)
    assert out.applied >= 4
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.invoice WHERE shipment_id = %s", (sid,)
        ).fetchone()[0]
        == 1
    )
    assert statuses(store, [oid]) == {oid: "SHIPPED"}
