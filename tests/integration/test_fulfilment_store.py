"""Fulfilment against the real store, driven through its public steps (``pull_feed`` with feeds
we script, ``apply_events``, ``replay_quarantined``, ``release_withheld_invoice``, the outbox
sender) with nothing of ours patched:

1. milestones and tracking late, twice, re-served and out of order move a shipment forward
   once: first timestamps kept, one order event per step, one invoice, one 856, the feed
   cursors where the pages ended, one stored row per distinct event;
2. an event for an order OrderFlow does not know is quarantined (never dropped) and applies
   after the fix and a replay; an event whose release is not linked yet waits, and is
   quarantined only after the rules' attempts;
3. a quantity mismatch withholds the invoice until billing releases it (audited, once);
4. a short shipment with a substituted line bills what shipped at the validated contract
   price, leaves zero lines off and carries its share of the order's tax;
5. a worker SIGKILLed mid-batch leaves every event pending and nothing queued; the rerun
   applies each event once;
6. invoices sent to the sandbox ERP through 5xx faults are retried by the outbox and posted
   exactly once each.

Orders are created and released as ``test_processing_store`` does it (intake's
``insert_orders``, then the stage functions with the rule book). Every test uses its own ids
(a uuid tag), so the tests share the module's store without seeing each other's rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb
from test_processing_store import (  # noqa: F401 (shared_master_data: an autouse fixture)
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
from orderflow.domain.models import Channel
from orderflow.processing import RunContext
from orderflow.store import cursors, db

pytestmark = [pytest.mark.db]

CTX = RunContext(dag_id="test_fulfilment_store", run_id="manual__t", task_id="fulfilment")
T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def book():
    return rules.load()


# ---------------------------------------------------------------------------- orders


@dataclass
class Released:
    order_id: str
    customer_id: str
    shipment_id: str
    release_id: str
    items: list[str]  # what each line ships (the substitute where one was allocated)
    ordered: list[str]  # what each line ordered
    tag: str


def released_order(
    store,
    book,
    lines=((10, "10.00", "10.00"),),
    *,
    order_id: str | None = None,
    customer_id: str | None = None,
    edi: bool = False,
    substitute: frozenset[int] = frozenset(),
    link: bool = True,
    release_id: str | None = None,
    tag: str | None = None,
) -> Released:
    """An order through validate … release against this store, one shipment from DC-EAST.

    ``lines``: (quantity, typed price, contract price) per line; ``substitute``: line numbers
    whose item is out of stock with an in-stock substitute (the customer accepts substitutes);
    ``link``: set the shipment's WMS release id as the release answer would."""
    tag = tag or _tag()
    cid = customer_id or f"FS{tag}"
    oid = order_id or f"FSO-{tag}"
    ordered = [f"FSI-{tag}-{n}" for n in range(1, len(lines) + 1)]
    shipped = [
        f"FSU-{tag}-{n}" if n in substitute else ordered[n - 1] for n in range(1, len(ordered) + 1)
    ]
    with db.transaction(store):
        if not store.execute(
            "SELECT 1 FROM orderflow.customer WHERE customer_id = %s", (cid,)
        ).fetchone():
            seed_customer(store, cid)
        if substitute:
            store.execute(
                "UPDATE orderflow.customer SET accepts_substitutes = true WHERE customer_id = %s",
                (cid,),
            )
        if edi:
            store.execute(
                "INSERT INTO orderflow.trading_partner (partner_id, customer_id, channel, "
                "isa_qualifier, isa_id, gs_id, x12_version) "
                "VALUES (%s, %s, 'edi', 'ZZ', %s, %s, '004010')",
                (f"P-{cid}", cid, f"ISA{tag}", f"GS{tag}"),
            )
        for n, (item, (_, _, contract)) in enumerate(zip(ordered, lines, strict=True), start=1):
            if n in substitute:
                seed_item(store, item, east=0, west=0)
                seed_item(store, shipped[n - 1], east=1000, west=0)
                store.execute(
                    "UPDATE orderflow.item SET substitute_item_ids = %s WHERE item_id = %s",
                    ([shipped[n - 1]], item),
                )
            else:
                seed_item(store, item, east=1000, west=0)
            seed_contract(store, cid, item, contract)
    order = make_order(
        oid, cid, [(item, qty) for item, (qty, _, _) in zip(ordered, lines, strict=True)]
    )
    for ln, (_, typed, _) in zip(order.lines, lines, strict=True):
        ln.unit_price = Decimal(typed)
    if edi:
        order.provenance.channel = Channel.EDI
        order.po_date = date(2026, 11, 26)
    insert(store, [order])
    to_credit_ok(store, [oid], book)
    assert processing.allocate(store, [oid], CTX, book).passed == 1
    assert processing.plan(store, [oid], CTX, book, None, None).passed == 1
    assert processing.release(store, [oid], CTX, book).passed == 1
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    (sid,) = store.execute(
        "SELECT shipment_id FROM orderflow.shipment WHERE order_id = %s", (oid,)
    ).fetchone()
    rel = release_id or f"REL-{tag}"
    if link:
        store.execute(
            "UPDATE orderflow.shipment SET wms_release_id = %s WHERE shipment_id = %s", (rel, sid)
        )
    return Released(oid, cid, sid, rel, shipped, ordered, tag)


# ---------------------------------------------------------------------------- feeds


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def wms(r: Released, milestone: str, minutes: float, lines=None, tracking=None) -> dict:
    e = {
        "release_id": r.release_id,
        "order_id": r.order_id,
        "dc_id": "DC-EAST",
        "milestone": milestone,
        "occurred_at": at(minutes),
    }
    if lines is not None:
        e["lines"] = lines
    if tracking:
        e["tracking_number"] = tracking
    return e


def carrier(r: Released, status: str, minutes: float, tracking: str, **extra) -> dict:
    return {
        "tracking_number": tracking,
        "order_id": r.order_id,
        "release_id": r.release_id,
        "status": status,
        "occurred_at": at(minutes),
        **extra,
    }


def qty_lines(r: Released, ordered, picked, shipped=None) -> list[dict]:
    """Event lines: one quantity for every line, or a list per line."""
    n = len(r.items)

    def per_line(v):
        return list(v) if isinstance(v, list | tuple) else [v] * n

    out = []
    for i, (o, p) in enumerate(zip(per_line(ordered), per_line(picked), strict=True)):
        ln = {"line_no": i + 1, "item_id": r.items[i], "ordered": o, "picked": p}
        if shipped is not None:
            ln["shipped"] = per_line(shipped)[i]
        out.append(ln)
    return out


#: The items each scripted feed has served, per store database and feed: like a partner's
#: feed, it only grows, and every test of the module reads on from where the last one left.
_SERVED: dict[tuple[str, str], list[dict]] = {}


class Feed:
    """A feed we script, served like the WMS / carrier feeds: ``fetch(cursor, limit)`` answers
    the items from position ``cursor`` (``{items, next_cursor, has_more}``). Items are added as
    the partner produces them; an item may repeat one already served (a flaky feed)."""

    def __init__(self, store, source: str):
        self.name = fulfilment.FEEDS[source]
        self.source = source
        self.items = _SERVED.setdefault((store.info.dbname, self.name), [])
        self.start = len(self.items)  # where this test's items begin

    @property
    def end(self) -> int:
        return len(self.items)

    def add(self, *items: dict) -> None:
        for item in items:
            self.items.append({"seq": len(self.items) + 1, **item})

    def __call__(self, cursor: int, limit: int) -> dict:
        assert 0 <= cursor <= len(self.items)
        items = self.items[cursor : cursor + limit]
        return {
            "items": [dict(i) for i in items],
            "next_cursor": cursor + len(items),
            "has_more": cursor + len(items) < len(self.items),
        }

    def pull(self, store) -> dict:
        return fulfilment.pull_feed(store, self.source, self, page_size=50, run_id="test")


# ---------------------------------------------------------------------------- queries


def one(store, sql: str, *params):
    return store.execute(sql, params).fetchone()


def scalar(store, sql: str, *params):
    return store.execute(sql, params).fetchone()[0]


def outbox_actions(store, order_id: str) -> dict[str, int]:
    return dict(
        store.execute(
            "SELECT action, count(*) FROM orderflow.outbox WHERE order_id = %s GROUP BY 1",
            (order_id,),
        ).fetchall()
    )


def fulfilment_moves(store, order_id: str) -> list[tuple[str, str]]:
    return store.execute(
        "SELECT from_status, to_status FROM orderflow.order_event WHERE order_id = %s "
        "AND details->>'stage' = 'fulfilment' ORDER BY event_id",
        (order_id,),
    ).fetchall()


def event_rows(store, order_id: str) -> list[tuple]:
    return store.execute(
        "SELECT source, event_key, kind, status, attempts, error FROM orderflow.fulfilment_event "
        "WHERE order_id = %s ORDER BY event_id",
        (order_id,),
    ).fetchall()


def shipment_stamps(store, sid: str) -> dict:
    cur = store.execute(
        "SELECT status, released_at, picked_at, packed_at, shipped_at, in_transit_at, "
        "delivered_at, tracking_number, short_picked FROM orderflow.shipment "
        "WHERE shipment_id = %s",
        (sid,),
    )
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def line_quantities(store, sid: str) -> list[tuple]:
    return store.execute(
        "SELECT line_no, item_id, quantity_released, quantity_picked, quantity_shipped "
        "FROM orderflow.shipment_line WHERE shipment_id = %s ORDER BY line_no",
        (sid,),
    ).fetchall()


# ---------------------------------------------------------------------------- 1. late, twice


def test_events_late_twice_and_out_of_order_move_the_shipment_forward_once(store, book):
    r = released_order(store, book, [(10, "10.00", "10.00"), (4, "25.00", "25.00")], edi=True)
    track = f"1Z{r.tag}"
    full = qty_lines(r, [10, 4], [10, 4], [10, 4])
    picked = wms(r, "picked", 60, qty_lines(r, [10, 4], [10, 4]))
    packed = wms(r, "packed", 90)
    released = wms(r, "released", 0)
    shipped = wms(r, "shipped", 200, full, track)
    in_transit = carrier(r, "in_transit", 400, track)
    delivered = carrier(r, "delivered", 3000, track)
    feed_w, feed_c = Feed(store, "wms"), Feed(store, "carrier")

    # Round 1: the dock's shipped comes before any pick; the carrier's delivered before its scan.
    feed_w.add(shipped)
    feed_c.add(delivered)
    assert {k: v for k, v in feed_w.pull(store).items() if k != "cursor"} == {
        "pages": 1,
        "received": 1,
        "stored": 1,
        "duplicates": 0,
    }
    feed_c.pull(store)
    fulfilment.apply_events(store, CTX, book)
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["shipped_at"], ship["delivered_at"], ship["picked_at"]) == (
        "delivered",
        T0 + timedelta(minutes=200),
        T0 + timedelta(minutes=3000),
        None,
    )
    assert statuses(store, [r.order_id]) == {r.order_id: "DELIVERED"}
    after_round_1 = outbox_actions(store, r.order_id)

    # Round 2: the feeds catch up. The WMS re-serves the shipped page (once as it was, once
    # re-stamped later), then sends each earlier milestone twice; the carrier's in_transit
    # comes after its delivered, twice, with the delivered page re-served and a later
    # re-scan of the delivery (a distinct event: its own time).
    feed_w.add(shipped)
    feed_w.add({**shipped, "occurred_at": at(250), "tracking_number": track + "X"})
    feed_w.add(picked, picked, packed, packed, released, released)
    feed_c.add(in_transit, in_transit)
    feed_c.add(delivered)
    feed_c.add(carrier(r, "delivered", 3100, track))
    w2, c2 = feed_w.pull(store), feed_c.pull(store)
    assert (w2["received"], w2["stored"], w2["duplicates"]) == (8, 3, 5)
    assert (c2["received"], c2["stored"], c2["duplicates"]) == (4, 2, 2)
    fulfilment.apply_events(store, CTX, book)

    # Round 3: a feed re-served from the start (a restored cursor): nothing new at all.
    before = scalar(store, "SELECT count(*) FROM orderflow.outbox")
    for feed in (feed_w, feed_c):
        with db.transaction(store):
            cursors.put(store, feed.name, str(feed.start))
        again = feed.pull(store)
        assert again["stored"] == 0 and again["received"] == again["duplicates"] > 0
    out = fulfilment.apply_events(store, CTX, book)
    assert out.events == 0
    assert scalar(store, "SELECT count(*) FROM orderflow.outbox") == before

    # The shipment: delivered, each milestone at its first occurrence, forward only.
    assert shipment_stamps(store, r.shipment_id) == {
        "status": "delivered",
        "released_at": T0,
        "picked_at": T0 + timedelta(minutes=60),
        "packed_at": T0 + timedelta(minutes=90),
        "shipped_at": T0 + timedelta(minutes=200),
        "in_transit_at": T0 + timedelta(minutes=400),
        "delivered_at": T0 + timedelta(minutes=3000),
        "tracking_number": track,
        "short_picked": False,
    }
    assert line_quantities(store, r.shipment_id) == [
        (1, r.items[0], 10, 10, 10),
        (2, r.items[1], 4, 4, 4),
    ]
    # The order: one lifecycle event per step, in order, none twice.
    assert fulfilment_moves(store, r.order_id) == [
        ("RELEASED", "PICKED"),
        ("PICKED", "SHIPPED"),
        ("SHIPPED", "DELIVERED"),
    ]
    assert statuses(store, [r.order_id]) == {r.order_id: "DELIVERED"}
    # Documents: one invoice, one ERP invoice, one 856 and one 810 (an EDI customer), all
    # queued in round 1 (the release and the carrier tender at release); the later rounds
    # queued nothing.
    assert outbox_actions(store, r.order_id) == after_round_1
    assert after_round_1 == {
        "wms_release": 1,
        "carrier_tender": 1,
        "edi_855": 1,
        "edi_856": 1,
        "edi_810": 1,
        "erp_invoice": 1,
    }
    invoice = store.execute(
        "SELECT status, subtotal FROM orderflow.invoice WHERE order_id = %s", (r.order_id,)
    ).fetchall()
    assert invoice == [("queued", Decimal("200.00"))]
    body = scalar(
        store,
        "SELECT payload->>'body' FROM orderflow.outbox WHERE order_id = %s AND action = 'edi_856'",
        r.order_id,
    )
    assert "ST*856*" in body and track in body and f"ISA{r.tag}" in body
    assert scalar(
        store,
        "SELECT array_agg(document_type ORDER BY document_type) "
        "FROM orderflow.outbound_document WHERE order_id = %s",
        r.order_id,
    ) == ["810", "855", "856"]
    # The cursors stand where the pages ended.
    assert cursors.get(store, "wms_milestones") == str(feed_w.end)
    assert cursors.get(store, "carrier_tracking") == str(feed_c.end)
    # One stored row per distinct event, each applied once.
    rows = event_rows(store, r.order_id)
    assert sorted((s, k) for s, k, *_ in rows) == sorted(
        [
            ("wms", f"{r.release_id}:shipped"),
            ("wms", f"{r.release_id}:picked"),
            ("wms", f"{r.release_id}:packed"),
            ("wms", f"{r.release_id}:released"),
            ("carrier", f"{track}:delivered:{at(3000)}"),
            ("carrier", f"{track}:in_transit:{at(400)}"),
            ("carrier", f"{track}:delivered:{at(3100)}"),
        ]
    )
    assert {(st, attempts, err) for *_, st, attempts, err in rows} <= {
        ("applied", 1, None),
        ("no_op", 1, None),
    }
    # the shipped event stored is the first one served, not the re-stamped re-delivery
    assert (
        scalar(
            store,
            "SELECT payload->>'tracking_number' FROM orderflow.fulfilment_event "
            "WHERE source = 'wms' AND event_key = %s",
            f"{r.release_id}:shipped",
        )
        == track
    )


# ---------------------------------------------------------------------------- 2. quarantine


def test_an_event_for_an_unknown_order_is_quarantined_and_applies_after_the_fix(store, book):
    tag = _tag()
    oid, rel = f"FSQ-{tag}", f"REL-Q-{tag}"
    ghost = {
        "release_id": rel,
        "order_id": oid,
        "dc_id": "DC-EAST",
        "milestone": "picked",
        "lines": [{"line_no": 1, "item_id": f"FSI-{tag}-1", "ordered": 10, "picked": 10}],
        "occurred_at": at(30),
    }
    feed = Feed(store, "wms")
    feed.add(ghost)
    feed.pull(store)
    fulfilment.apply_events(store, CTX, book)
    eid, status, attempts, error, payload = one(
        store,
        "SELECT event_id, status, attempts, error, payload FROM orderflow.fulfilment_event "
        "WHERE source = 'wms' AND event_key = %s",
        f"{rel}:picked",
    )
    assert (status, attempts) == ("quarantined", 1)
    assert oid in error and "no such order" in error and "replay" in error
    assert payload == feed.items[-1]  # kept as it came, for the replay
    letter = one(
        store,
        "SELECT payload, error, replayed_at FROM orderflow.dead_letter "
        "WHERE source = 'fulfilment_event' AND source_ref = %s",
        f"wms:{rel}:picked",
    )
    assert letter == ({"event_id": eid}, error, None)
    # a quarantined event is not retried by the next runs
    fulfilment.apply_events(store, CTX, book)
    assert one(
        store, "SELECT status, attempts FROM orderflow.fulfilment_event WHERE event_id = %s", eid
    ) == ("quarantined", 1)

    # The fix: the order arrives, is released and the WMS release is ours. Replay, apply.
    r = released_order(store, book, order_id=oid, release_id=rel, tag=tag)
    assert r.items == [ghost["lines"][0]["item_id"]]
    assert fulfilment.replay_quarantined(store, "ops.lee", [eid]) == 1
    assert one(
        store,
        "SELECT status, attempts, error FROM orderflow.fulfilment_event WHERE event_id = %s",
        eid,
    ) == ("pending", 0, None)
    assert one(
        store,
        "SELECT replayed_by, replayed_at IS NOT NULL FROM orderflow.dead_letter "
        "WHERE source = 'fulfilment_event' AND source_ref = %s",
        f"wms:{rel}:picked",
    ) == ("ops.lee", True)
    assert fulfilment.replay_quarantined(store, "ops.lee", [eid]) == 0  # nothing left to replay
    fulfilment.apply_events(store, CTX, book)
    assert one(
        store,
        "SELECT status, shipment_id, error FROM orderflow.fulfilment_event WHERE event_id = %s",
        eid,
    ) == ("applied", r.shipment_id, None)
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["picked_at"]) == ("picked", T0 + timedelta(minutes=30))
    assert line_quantities(store, r.shipment_id) == [(1, r.items[0], 10, 10, None)]
    assert fulfilment_moves(store, oid) == [("RELEASED", "PICKED")]


def test_an_event_whose_release_is_not_linked_yet_waits_then_is_quarantined(store, book):
    attempts_allowed = book.fulfilment.unmatched_event_attempts
    assert attempts_allowed >= 2
    # Released, but the WMS's answer (its release id) is not on the shipment yet.
    r = released_order(store, book, link=False)
    feed = Feed(store, "wms")
    feed.add(wms(r, "packed", 45))
    feed.pull(store)
    key = f"{r.release_id}:packed"

    def row():
        return one(
            store,
            "SELECT event_id, status, attempts, error FROM orderflow.fulfilment_event "
            "WHERE source = 'wms' AND event_key = %s",
            key,
        )

    def letters():
        return scalar(
            store,
            "SELECT count(*) FROM orderflow.dead_letter WHERE source = 'fulfilment_event' "
            "AND source_ref = %s",
            f"wms:{key}",
        )

    # One try per run, however small the batch (the run does not spin on a waiting event).
    out = fulfilment.apply_events(store, CTX, book, batch=1)
    assert out.waiting == 1
    eid, *rest = row()
    assert rest == ["pending", 1, "release not linked yet"]
    for n in range(2, attempts_allowed):
        fulfilment.apply_events(store, CTX, book)
        assert row()[1:] == ("pending", n, "release not linked yet")
        assert letters() == 0
    fulfilment.apply_events(store, CTX, book)
    _, status, attempts, error = row()
    assert (status, attempts) == ("quarantined", attempts_allowed)
    assert r.release_id in error and r.order_id in error and f"{attempts_allowed} times" in error
    assert letters() == 1
    assert shipment_stamps(store, r.shipment_id)["status"] == "released"

    # The fix: the release answer is recorded on the shipment. Replay, apply.
    store.execute(
        "UPDATE orderflow.shipment SET wms_release_id = %s WHERE shipment_id = %s",
        (r.release_id, r.shipment_id),
    )
    assert fulfilment.replay_quarantined(store, "ops.lee", [eid]) == 1
    fulfilment.apply_events(store, CTX, book)
    assert row()[1:] == ("applied", 1, None)
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["packed_at"]) == ("packed", T0 + timedelta(minutes=45))


def test_a_release_the_wms_answered_is_found_through_the_outbox_answer(store, book):
    """The WMS answered the release (the outbox row is sent with the answer) but the
    shipment does not carry the release id: the event still finds its shipment."""
    r = released_order(store, book, link=False)
    store.execute(
        "UPDATE orderflow.outbox SET status = 'sent', sent_at = now(), response = %s "
        "WHERE order_id = %s AND action = 'wms_release'",
        (Jsonb({"release_id": r.release_id, "status": "released"}), r.order_id),
    )
    feed = Feed(store, "wms")
    feed.add(wms(r, "picked", 20, qty_lines(r, 10, 10)))
    feed.pull(store)
    fulfilment.apply_events(store, CTX, book)
    assert [row[3] for row in event_rows(store, r.order_id)] == ["applied"]
    assert (
        scalar(
            store,
            "SELECT wms_release_id FROM orderflow.shipment WHERE shipment_id = %s",
            r.shipment_id,
        )
        == r.release_id
    )
    assert shipment_stamps(store, r.shipment_id)["status"] == "picked"


# ---------------------------------------------------------------------------- 3. withheld


def test_a_quantity_mismatch_withholds_the_invoice_until_billing_releases_it(store, book):
    r = released_order(store, book, [(10, "10.00", "10.00"), (10, "5.00", "5.00")])
    store.execute(
        'UPDATE orderflow."order" SET tax_amount = 15.00 WHERE order_id = %s', (r.order_id,)
    )
    feed = Feed(store, "wms")
    # line 1: one unit more left the dock than was released; line 2: the dock counted 9 of
    # the 10 picked
    feed.add(
        wms(r, "picked", 60, qty_lines(r, 10, 10)),
        wms(r, "shipped", 200, qty_lines(r, 10, 10, [11, 9]), f"1Z{r.tag}"),
    )
    feed.pull(store)
    out = fulfilment.apply_events(store, CTX, book)
    assert (out.invoices_withheld, out.invoices) == (1, 0)
    invoice_id, status = one(
        store,
        "SELECT invoice_id, status FROM orderflow.invoice WHERE shipment_id = %s",
        r.shipment_id,
    )
    assert status == "withheld"
    assert "erp_invoice" not in outbox_actions(store, r.order_id)
    exceptions = store.execute(
        "SELECT line_no, owner_role, stage, reason, details FROM orderflow.order_exception "
        "WHERE order_id = %s AND category = 'quantity_mismatch' AND status = 'open' "
        "ORDER BY line_no",
        (r.order_id,),
    ).fetchall()
    assert [(ln, owner, stage) for ln, owner, stage, *_ in exceptions] == [
        (1, "billing", "invoice"),
        (2, "billing", "invoice"),
    ]
    (_, _, _, over, over_d), (_, _, _, count, count_d) = exceptions
    # what, where, and what to do
    assert (
        f"line 1 ({r.items[0]})" in over
        and "shipped 11.000 EA" in over
        and "10.000 released" in over
    )
    assert f"line 2 ({r.items[1]})" in count and "picked 10" in count and "shipped 9" in count
    assert all("withheld until billing confirms" in x for x in (over, count))
    assert over_d == {"shipment_id": r.shipment_id, "released": "10.000", "shipped": "11.000"}
    assert count_d == {"shipment_id": r.shipment_id, "picked": "10.000", "shipped": "9.000"}
    # the order still moves with its shipment (SHIPPED); only the bill waits
    assert statuses(store, [r.order_id]) == {r.order_id: "SHIPPED"}

    got = fulfilment.release_withheld_invoice(
        store, r.shipment_id, actor="billing.jane", reason="dock recount confirmed", book=book
    )
    assert got == invoice_id
    status, doc, subtotal, tax = one(
        store,
        "SELECT status, document, subtotal, tax FROM orderflow.invoice WHERE invoice_id = %s",
        invoice_id,
    )
    assert status == "queued"
    assert [(ln["line_no"], ln["quantity"]) for ln in doc["lines"]] == [(1, "11.000"), (2, "9.000")]
    assert subtotal == Decimal("155.00")  # 11 × 10 + 9 × 5
    assert tax == Decimal("15.50")  # 15.00 × 155 / 150 released
    (payload,) = [
        p
        for (p,) in store.execute(
            "SELECT payload FROM orderflow.outbox WHERE order_id = %s AND action = 'erp_invoice'",
            (r.order_id,),
        )
    ]
    assert payload["invoice_id"] == invoice_id and payload["tax"] == 15.5
    assert [(ln["item_id"], ln["quantity"], ln["unit_price"]) for ln in payload["lines"]] == [
        (r.items[0], 11.0, 10.0),
        (r.items[1], 9.0, 5.0),
    ]
    resolved = store.execute(
        "SELECT status, resolution, resolved_by, resolution_note FROM orderflow.order_exception "
        "WHERE order_id = %s AND category = 'quantity_mismatch' ORDER BY line_no",
        (r.order_id,),
    ).fetchall()
    assert resolved == [("resolved", "approved", "billing.jane", "dock recount confirmed")] * 2
    audit = store.execute(
        "SELECT actor, actor_role, action, reason, before->'lines' IS NOT NULL, "
        "after->>'invoice_id' FROM orderflow.audit_log WHERE object_type = 'invoice' "
        "AND object_id = %s",
        (invoice_id,),
    ).fetchall()
    assert audit == [
        (
            "billing.jane",
            "billing",
            "release_withheld_invoice",
            "dock recount confirmed",
            True,
            invoice_id,
        )
    ]
    assert (
        scalar(
            store, 'SELECT manual_touches FROM orderflow."order" WHERE order_id = %s', r.order_id
        )
        == 1
    )
    with pytest.raises(ValueError, match="no withheld invoice"):
        fulfilment.release_withheld_invoice(
            store, r.shipment_id, actor="billing.jane", reason="again", book=book
        )
    assert outbox_actions(store, r.order_id)["erp_invoice"] == 1
    assert (
        scalar(store, "SELECT count(*) FROM orderflow.audit_log WHERE object_id = %s", invoice_id)
        == 1
    )


# ---------------------------------------------------------------------------- 4. short, sub


def test_a_short_shipment_with_a_substitute_bills_what_shipped_at_the_contract_price(store, book):
    # line 1 ships 6 of 10; line 2 ships nothing; line 3 ships a substitute in full. The
    # customer typed prices a little off the contracts (within tolerance): the contract bills.
    r = released_order(
        store,
        book,
        [(10, "10.05", "10.00"), (4, "7.52", "7.50"), (5, "20.10", "20.00")],
        substitute=frozenset({3}),
    )
    assert r.items[2] != r.ordered[2]
    assert store.execute(
        "SELECT line_no, item_id, substitute_item_id, unit_price, contract_price "
        "FROM orderflow.order_line WHERE order_id = %s ORDER BY line_no",
        (r.order_id,),
    ).fetchall() == [
        (1, r.ordered[0], None, Decimal("10.0500"), Decimal("10.0000")),
        (2, r.ordered[1], None, Decimal("7.5200"), Decimal("7.5000")),
        (3, r.ordered[2], r.items[2], Decimal("20.1000"), Decimal("20.0000")),
    ]
    assert [(ln, item) for ln, item, *_ in line_quantities(store, r.shipment_id)] == [
        (1, r.items[0]),
        (2, r.items[1]),
        (3, r.items[2]),
    ]
    # the released subtotal at contract prices: 100 + 30 + 100 = 230
    store.execute(
        'UPDATE orderflow."order" SET tax_amount = 17.25 WHERE order_id = %s', (r.order_id,)
    )
    picks = qty_lines(r, [10, 4, 5], [6, 0, 5])
    feed = Feed(store, "wms")
    feed.add(
        wms(r, "short_picked", 60, picks),
        wms(r, "picked", 60, picks),
        wms(r, "shipped", 200, qty_lines(r, [10, 4, 5], [6, 0, 5], [6, 0, 5]), f"1Z{r.tag}"),
    )
    feed.pull(store)
    out = fulfilment.apply_events(store, CTX, book)
    assert out.invoices >= 1
    status, doc, subtotal, tax, total = one(
        store,
        "SELECT status, document, subtotal, tax, total FROM orderflow.invoice "
        "WHERE shipment_id = %s",
        r.shipment_id,
    )
    assert status == "queued"
    assert [
        (ln["line_no"], ln["item_id"], ln["quantity"], ln["unit_price"]) for ln in doc["lines"]
    ] == [
        (1, r.items[0], "6.000", "10.0000"),
        (3, r.items[2], "5.000", "20.0000"),
    ]
    assert subtotal == Decimal("160.00")  # 6 × 10.00 + 5 × 20.00
    assert tax == Decimal("12.00")  # 17.25 × 160 / 230
    assert total == Decimal("172.00")
    (payload,) = [
        p
        for (p,) in store.execute(
            "SELECT payload FROM orderflow.outbox WHERE order_id = %s AND action = 'erp_invoice'",
            (r.order_id,),
        )
    ]
    assert [
        (ln["line_no"], ln["item_id"], ln["quantity"], ln["unit_price"]) for ln in payload["lines"]
    ] == [(1, r.items[0], 6.0, 10.0), (3, r.items[2], 5.0, 20.0)]
    assert payload["tax"] == 12.0
    assert "edi_856" not in outbox_actions(store, r.order_id)  # an API order: no 856
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["short_picked"]) == ("shipped", True)
    assert statuses(store, [r.order_id]) == {r.order_id: "SHIPPED"}
    assert (
        scalar(
            store,
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s "
            "AND category = 'quantity_mismatch'",
            r.order_id,
        )
        == 0
    )


# ---------------------------------------------------------------------------- 5. SIGKILL


@pytest.mark.parametrize("blocked_on", ["invoice", "order_event"])
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(store, store_url, book, blocked_on):
    """SIGKILL the process applying events while its batch transaction is half written
    (shipment, quantities, 856 done; blocked on the invoice insert, or on the order events at
    the very end): nothing of it survives, and the rerun applies every event exactly once."""
    from sqlalchemy.engine import make_url

    r = released_order(store, book, [(10, "10.00", "10.00"), (3, "4.00", "4.00")], edi=True)
    track = f"1Z{r.tag}"
    w, c = Feed(store, "wms"), Feed(store, "carrier")
    w.add(
        wms(r, "released", 0),
        wms(r, "picked", 60, qty_lines(r, [10, 3], [10, 3])),
        wms(r, "packed", 90),
        wms(r, "shipped", 200, qty_lines(r, [10, 3], [10, 3], [10, 3]), track),
    )
    c.add(carrier(r, "in_transit", 400, track))
    w.pull(store)
    c.pull(store)
    outbox_before = outbox_actions(store, r.order_id)
    events_before = scalar(
        store, "SELECT count(*) FROM orderflow.order_event WHERE order_id = %s", r.order_id
    )

    locker = db.connect()
    tx = locker.transaction()
    tx.__enter__()
    locker.execute(f"LOCK TABLE orderflow.{blocked_on} IN EXCLUSIVE MODE")
    # The worker connects with psycopg directly (db.connect() would import Airflow for its
    # PostgresHook: seconds of start-up, the same connection in the end).
    url = make_url(store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    code = (
        "import psycopg\n"
        "from orderflow import fulfilment, processing, rules\n"
        f"conn = psycopg.connect({url!r}, autocommit=True)\n"
        "ctx = processing.RunContext(dag_id='t', run_id='worker', task_id='apply')\n"
        "fulfilment.apply_events(conn, ctx, rules.load())\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    backend = None
    try:
        deadline = time.monotonic() + 60
        while backend is None and time.monotonic() < deadline and worker.poll() is None:
            row = store.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE d.datname = current_database() AND l.relation = %s::regclass "
                "AND NOT l.granted",
                (f"orderflow.{blocked_on}",),
            ).fetchone()
            backend = row[0] if row else None
            if backend is None:
                time.sleep(0.05)
        assert backend, f"the worker never reached {blocked_on} (exit {worker.poll()})"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        tx.__exit__(None, None, None)
        locker.close()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    # The orphaned backend gets the lock, finds its client gone and rolls back: wait for it,
    # or its row locks would make the rerun skip the events.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and scalar(
        store, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", backend
    ):
        time.sleep(0.05)

    # Nothing of the killed batch survived.
    rows = event_rows(store, r.order_id)
    assert len(rows) == 5
    assert {(st, attempts, err) for *_, st, attempts, err in rows} == {("pending", 0, None)}
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["picked_at"], ship["shipped_at"], ship["tracking_number"]) == (
        "released",
        None,
        None,
        None,
    )
    assert [q[3:] for q in line_quantities(store, r.shipment_id)] == [(None, None)] * 2
    assert outbox_actions(store, r.order_id) == outbox_before  # no 856, invoice or notice
    assert (
        scalar(store, "SELECT count(*) FROM orderflow.invoice WHERE order_id = %s", r.order_id) == 0
    )
    assert (
        scalar(
            store,
            "SELECT count(*) FROM orderflow.outbound_document WHERE shipment_id = %s",
            r.shipment_id,
        )
        == 0
    )
    assert (
        scalar(store, "SELECT count(*) FROM orderflow.order_event WHERE order_id = %s", r.order_id)
        == events_before
    )
    assert statuses(store, [r.order_id]) == {r.order_id: "RELEASED"}

    # The rerun applies every event once.
    fulfilment.apply_events(store, CTX, book)
    rows = event_rows(store, r.order_id)
    assert Counter((st, attempts) for *_, st, attempts, _ in rows) == {("applied", 1): 5}
    assert shipment_stamps(store, r.shipment_id)["status"] == "in_transit"
    assert fulfilment_moves(store, r.order_id) == [("RELEASED", "PICKED"), ("PICKED", "SHIPPED")]
    assert outbox_actions(store, r.order_id) == {
        **outbox_before,
        "edi_856": 1,
        "edi_810": 1,
        "erp_invoice": 1,
    }
    assert store.execute(
        "SELECT status, subtotal FROM orderflow.invoice WHERE order_id = %s", (r.order_id,)
    ).fetchall() == [("queued", Decimal("112.00"))]


# ---------------------------------------------------------------------------- 6. ERP faults


def _one_try_erp(conn_id: str, payload: dict, key: str) -> dict:
    """The ERP invoice sender with a single HTTP attempt (the hook's own retries would ride
    out most 50% faults; the outbox's retry is what this test watches)."""
    from orderflow.integrations.systems import ErpHook

    return ErpHook(conn_id, retries=1).post_invoice(payload, idempotency_key=key)


@pytest.mark.sandbox
def test_invoices_sent_through_erp_faults_are_retried_and_posted_once(
    store, book, sandbox, monkeypatch
):
    from orderflow.integrations import outbox

    for name, value in sandbox.connection_env().items():
        monkeypatch.setenv(name, value)
    # Customers the sandbox ERP knows (it posts invoices to their accounts).
    known = [
        a["customer_id"]
        for a in sandbox.client.get("/erp/credit_accounts", params={"limit": 200}).json()["items"]
    ]
    taken = {
        c
        for (c,) in store.execute(
            "SELECT customer_id FROM orderflow.customer WHERE customer_id = ANY(%s)", (known,)
        )
    }
    customers = [c for c in known if c not in taken][:6]
    assert len(customers) == 6
    orders = [
        released_order(store, book, [(n + 1, "10.00", "10.00")], customer_id=cid)
        for n, cid in enumerate(customers)
    ]
    w, c = Feed(store, "wms"), Feed(store, "carrier")
    for n, r in enumerate(orders):
        qty = n + 1
        w.add(wms(r, "shipped", 100 + n, qty_lines(r, qty, qty, qty), f"1Z{r.tag}"))
        c.add(carrier(r, "delivered", 2000 + n, f"1Z{r.tag}"))
    w.pull(store)
    c.pull(store)
    fulfilment.apply_events(store, CTX, book)
    ids = [r.order_id for r in orders]
    assert set(statuses(store, ids).values()) == {"DELIVERED"}
    assert (
        scalar(
            store,
            "SELECT count(*) FROM orderflow.invoice WHERE order_id = ANY(%s) AND status = 'queued'",
            ids,
        )
        == 6
    )
    # Only this test's ERP invoices are due (earlier tests' are for customers the sandbox
    # does not know: they would be rejected, and draw from the fault sequence).
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() + interval '1 day' "
        "WHERE action = 'erp_invoice' AND status IN ('pending', 'failed') "
        "AND NOT (order_id = ANY(%s))",
        (ids,),
    )

    def rows():
        return dict(
            store.execute(
                "SELECT order_id, status FROM orderflow.outbox "
                "WHERE action = 'erp_invoice' AND order_id = ANY(%s)",
                (ids,),
            ).fetchall()
        )

    before = sandbox.client.get("/admin/state").json()["invoices"]
    sandbox.client.put(
        "/admin/faults", json={"seed": 3, "rules": [{"prefix": "/erp/invoices", "error_rate": 0.5}]}
    ).raise_for_status()
    try:
        first = outbox.send_due(store, ["erp_invoice"], senders={"erp_invoice": _one_try_erp})
        assert first.get("sent", 0) >= 1 and first.get("retry", 0) >= 1, first
        assert "dead" not in first
        by_status = Counter(rows().values())
        assert by_status == {"sent": first["sent"], "failed": first["retry"]}
        failed = store.execute(
            "SELECT attempts, last_error, next_attempt_at > now() FROM orderflow.outbox "
            "WHERE action = 'erp_invoice' AND order_id = ANY(%s) AND status = 'failed'",
            (ids,),
        ).fetchall()
        assert all(a == 1 and "503" in e and later for a, e, later in failed), failed
        # not due yet: a send now leaves them alone
        assert outbox.send_due(store, ["erp_invoice"]) == {}
        posted_now = sandbox.client.get("/admin/state").json()["invoices"]
        assert posted_now - before == first["sent"]
    finally:
        sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() "
        "WHERE action = 'erp_invoice' AND status = 'failed' AND order_id = ANY(%s)",
        (ids,),
    )
    second = outbox.send_due(store, ["erp_invoice"])  # the production sender this time
    assert second == {"sent": first["retry"]}
    assert set(rows().values()) == {"sent"}
    assert sandbox.client.get("/admin/state").json()["invoices"] - before == len(orders)
    posted = store.execute(
        "SELECT status, erp_invoice_number, posted_at IS NOT NULL FROM orderflow.invoice "
        "WHERE order_id = ANY(%s)",
        (ids,),
    ).fetchall()
    assert len(posted) == 6 and {(s, p) for s, _, p in posted} == {("posted", True)}
    numbers = [n for _, n, _ in posted]
    assert len(set(numbers)) == 6 and all(n and n.startswith("INV") for n in numbers)
    # Delivered and every invoice posted: the orders close as INVOICED, once.
    moves = fulfilment.advance_orders(store, CTX, book)
    assert moves.get("INVOICED", 0) >= 6
    assert set(statuses(store, ids).values()) == {"INVOICED"}
    assert fulfilment.advance_orders(store, CTX, book).get("INVOICED", 0) == 0
    for r in orders:
        assert fulfilment_moves(store, r.order_id)[-1] == ("DELIVERED", "INVOICED")


def test_two_overlapping_runs_read_each_feed_and_apply_events_one_at_a_time(store, book):
    """Two fulfilment runs may overlap (a task stuck in one must not hold the next run's
    notices). The second run's feed reader and applier wait for the first's instead of
    failing, then go on from where it left: the events apply once, in the order they
    happened."""
    import threading

    r = released_order(store, book, [(5, "10.00", "10.00")], edi=True)
    track = f"1Z{r.tag}"
    feed = Feed(store, "wms")
    feed.add(
        wms(r, "picked", 60, qty_lines(r, [5], [5])),
        wms(r, "shipped", 200, qty_lines(r, [5], [5], [5]), track),
    )

    def in_a_thread(work):
        conn = db.connect()
        done: dict = {}

        def run():
            try:
                done["out"] = work(conn)
            except Exception as e:  # the test reads it
                done["error"] = e
            finally:
                conn.close()

        t = threading.Thread(target=run)
        t.start()
        return t, done

    first = db.connect()
    try:
        # the first run is reading the feed: the second's reader waits, then reads it all
        with cursors.exclusive(first, f"feed:{feed.name}"):
            t, done = in_a_thread(feed.pull)
            time.sleep(1.5)
            assert t.is_alive() and not done
        t.join(30)
        assert "error" not in done and done["out"]["stored"] == 2
        # the first run is applying events: the second's applier waits for it
        with cursors.exclusive(first, fulfilment.APPLY_LOCK):
            t, done = in_a_thread(lambda c: fulfilment.apply_events(c, CTX, book))
            time.sleep(1.5)
            assert t.is_alive() and not done
            assert (
                scalar(
                    store,
                    "SELECT count(*) FROM orderflow.fulfilment_event "
                    "WHERE order_id = %s AND status = 'pending'",
                    r.order_id,
                )
                == 2
            )
        t.join(30)
        assert "error" not in done and done["out"].applied == 2
    finally:
        first.close()
    ship = shipment_stamps(store, r.shipment_id)
    assert (ship["status"], ship["picked_at"], ship["shipped_at"]) == (
        "shipped",
        T0 + timedelta(minutes=60),
        T0 + timedelta(minutes=200),
    )
    assert (
        scalar(
            store,
            "SELECT count(*) FROM orderflow.invoice i JOIN orderflow.shipment s "
            "USING (shipment_id) WHERE s.order_id = %s",
            r.order_id,
        )
        == 1
    )
