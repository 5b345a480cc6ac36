"""Carrier tendering through the real outbox sender and the sandbox carrier over HTTP:

1. a released shipment's tender books it: booking id, PRO, label and tracking number on the
   shipment, the cost quoted (the plan's rate) and booked (the carrier's, with its surcharge);
2. a refused tender re-plans the shipment with the next-best service the carrier rules permit,
   tenders it under that service's key and books it; the change is audited;
3. nothing left to tender: the shipment is ``refused`` and logistics gets an exception; the
   order stays released;
4. reruns and retries book nothing twice: the release stage queues no second tender, and a
   tender re-sent after a crash is answered by key with the first booking;
5. the WMS prints the booked label: the shipped milestone carries the carrier's tracking
   number.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb
from test_fulfilment_store import released_order
from test_processing_store import CTX, shared_master_data  # noqa: F401 (autouse)

from orderflow import processing, rules, tendering
from orderflow.integrations import outbox
from orderflow.store import db

pytestmark = [pytest.mark.db, pytest.mark.sandbox]

ACTIONS = ["carrier_tender"]

#: the sandbox carrier's services (its rate table), as the master-data sync would copy them
SANDBOX_SERVICES = (
    ("UPS", "GND", "parcel", 4, 68, True, "9.50", "0.8500"),
    ("FEDEX", "GND", "parcel", 4, 68, True, "9.20", "0.8800"),
    ("UPS", "2DA", "parcel", 2, 68, False, "19.00", "1.9000"),
)


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture(scope="module", autouse=True)
def sandbox_carriers(shared_master_data):  # noqa: F811 (the fixture it builds on)
    """This module plans against the sandbox carrier's own services."""
    conn = db.connect()
    with db.transaction(conn):
        conn.execute("UPDATE orderflow.carrier_service SET active = false")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, "
                "transit_days, max_weight_kg, hazmat_allowed, active, base_rate, per_kg) "
                "VALUES (%s, %s, %s, %s, %s, %s, true, %s, %s) "
                "ON CONFLICT (carrier_id, service_code) DO UPDATE SET active = true",
                SANDBOX_SERVICES,
            )
    conn.close()


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/carrier/tendering", json={"refuse": []}).raise_for_status()
    yield
    sandbox.client.put("/admin/carrier/tendering", json={"refuse": []}).raise_for_status()


def _released(store, book):
    r = released_order(store, book, link=False)
    # Rows of earlier tests (other orders) wait: this test's run sees only its own.
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() + interval '1 day' "
        "WHERE status IN ('pending', 'failed') AND (order_id IS NULL OR order_id <> %s)",
        (r.order_id,),
    )
    return r


def _shipment(store, sid: str) -> dict:
    cur = store.execute(
        "SELECT carrier_id, service_code, freight_rate, quoted_rate, booked_rate, tender_status, "
        "carrier_booking_id, pro_number, label_url, tracking_number, tender_refusals, status "
        "FROM orderflow.shipment WHERE shipment_id = %s",
        (sid,),
    )
    names = [c.name for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def _tenders(store, order_id: str) -> list[tuple]:
    return store.execute(
        "SELECT idempotency_key, status FROM orderflow.outbox WHERE order_id = %s "
        "AND action = 'carrier_tender' ORDER BY outbox_id",
        (order_id,),
    ).fetchall()


def _refuse(sandbox, *services: str) -> None:
    sandbox.client.put(
        "/admin/carrier/tendering", json={"refuse": list(services)}
    ).raise_for_status()


def test_a_tender_books_and_records_booked_vs_quoted_cost_and_tracking(store, book, sandbox):
    r = _released(store, book)
    planned = _shipment(store, r.shipment_id)
    assert (planned["carrier_id"], planned["service_code"]) == ("UPS", "GND")
    assert planned["tender_status"] == "tendering"
    assert _tenders(store, r.order_id) == [(f"carrier_tender:{r.shipment_id}:UPS/GND", "pending")]
    res = outbox.send(store, ACTIONS)
    assert (res.sent, res.dead, res.followup_done + res.followup_retry) == (1, 0, 0)
    s = _shipment(store, r.shipment_id)
    assert s["tender_status"] == "booked" and s["status"] == "released"
    assert s["carrier_booking_id"].startswith("BK") and s["pro_number"].startswith("PRO")
    assert s["label_url"] and s["tracking_number"].startswith("TRK")
    # quoted: what the plan's rate table said; booked: the carrier's price with its surcharge
    assert s["quoted_rate"] == s["freight_rate"] == planned["freight_rate"]
    assert abs(s["booked_rate"] - s["quoted_rate"] * Decimal("1.045")) <= Decimal("0.01")
    (answer,) = store.execute(
        "SELECT response FROM orderflow.outbox WHERE order_id = %s AND action = 'carrier_tender'",
        (r.order_id,),
    ).fetchone()
    assert Decimal(str(answer["table_amount"])) == s["quoted_rate"]  # the same rate table
    assert answer["reference"] == r.shipment_id


def test_a_refused_tender_replans_to_the_next_best_service_and_books_it(store, book, sandbox):
    r = _released(store, book)
    _refuse(sandbox, "UPS/GND")
    res = outbox.send(store, ACTIONS)
    # the refused row is dead (an answer, not a failure) and its re-plan booked in the same run
    assert (res.sent, res.dead, res.rejected) == (1, 1, 1)
    assert _tenders(store, r.order_id) == [
        (f"carrier_tender:{r.shipment_id}:UPS/GND", "dead"),
        (f"carrier_tender:{r.shipment_id}:FEDEX/GND", "sent"),
    ]
    s = _shipment(store, r.shipment_id)
    assert (s["carrier_id"], s["service_code"], s["tender_status"]) == ("FEDEX", "GND", "booked")
    assert s["freight_rate"] == s["quoted_rate"] == Decimal("20.11")  # 9.20 + 0.88 × 10 × 1.24
    assert [(x["carrier_id"], x["service_code"]) for x in s["tender_refusals"]] == [("UPS", "GND")]
    assert "409" in s["tender_refusals"][0]["error"]
    audit = store.execute(
        "SELECT actor, before, after FROM orderflow.audit_log WHERE object_id = %s "
        "AND action = 'carrier_tender_replanned'",
        (r.order_id,),
    ).fetchall()
    assert [(a, b["service_code"], c["carrier_id"], c["service_code"]) for a, b, c in audit] == [
        ("orderflow.carrier_tender", "GND", "FEDEX", "GND")
    ]
    handled = store.execute(
        "SELECT replayed_by FROM orderflow.dead_letter WHERE source = 'outbox' AND source_ref = %s",
        (f"carrier_tender:{r.shipment_id}:UPS/GND",),
    ).fetchone()
    assert handled == ("orderflow.carrier_tender (replanned)",)
    assert processing_status(store, r.order_id) == "RELEASED"


def test_nothing_left_to_tender_is_an_exception_for_logistics(store, book, sandbox):
    r = _released(store, book)
    _refuse(sandbox, "UPS/GND", "FEDEX/GND@DC-EAST", "UPS/2DA")
    res = outbox.send(store, ACTIONS)
    assert (res.sent, res.dead) == (0, 3)  # GND, then the next best, then the last one
    s = _shipment(store, r.shipment_id)
    assert s["tender_status"] == "refused" and s["carrier_booking_id"] is None
    assert [x["service_code"] for x in s["tender_refusals"]] == ["GND", "GND", "2DA"]
    exc = store.execute(
        "SELECT category, owner_role, details->>'kind', status FROM orderflow.order_exception "
        "WHERE order_id = %s",
        (r.order_id,),
    ).fetchall()
    assert exc == [("no_carrier_service", "logistics", "carrier_refused", "open")]
    assert processing_status(store, r.order_id) == "RELEASED"  # the WMS picks meanwhile


def test_a_rerun_or_a_retry_books_nothing_twice(store, book, sandbox):
    r = _released(store, book)
    # a rerun of the release stage finds the order RELEASED: nothing queued again
    assert processing.release(store, [r.order_id], CTX, book).orders == 0
    with db.transaction(store):
        assert tendering.queue(store, [r.shipment_id], carrier_conn_id="carrier_default") == 0
    assert len(_tenders(store, r.order_id)) == 1
    assert outbox.send(store, ACTIONS).sent == 1
    first = _shipment(store, r.shipment_id)
    booked = sandbox.client.get("/admin/state").json()["shipments"]
    # the sender died after the carrier booked it and before the answer was recorded: the
    # lease expires and the row goes out again under its key
    key = f"carrier_tender:{r.shipment_id}:UPS/GND"
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET status = 'sending', response = NULL, "
            "followup_status = NULL, next_attempt_at = now() - interval '1 minute' "
            "WHERE idempotency_key = %s",
            (key,),
        )
        store.execute(
            "UPDATE orderflow.shipment SET tender_status = 'tendering', carrier_booking_id = NULL "
            "WHERE shipment_id = %s",
            (r.shipment_id,),
        )
    res = outbox.send(store, ACTIONS)
    assert res.sent == 1
    again = _shipment(store, r.shipment_id)
    assert again["carrier_booking_id"] == first["carrier_booking_id"]  # the first answer
    assert again["tracking_number"] == first["tracking_number"]
    assert sandbox.client.get("/admin/state").json()["shipments"] == booked  # booked once
    keys = sandbox.client.get("/admin/idempotency/shipment").json()["keys"]
    assert keys.count(key) == 1


@pytest.mark.parametrize(
    "batches",
    [[["wms_release", *ACTIONS]], [ACTIONS, ["wms_release"]]],
    ids=["together", "tender-first"],
)
def test_the_wms_prints_the_booked_label(store, book, sandbox, batches):
    """The WMS release and the tender go out together, in either order (the senders run
    concurrently); the release's shipped milestone carries the carrier's tracking number,
    so fulfilment records one number."""
    sandbox.client.put(
        "/admin/carrier/tendering", json={"label_from_booking": True}
    ).raise_for_status()
    r = _released(store, book)
    item = sandbox.client.get("/wms/inventory").json()["items"]
    good = next(p for p in item if p["on_hand"] - p.get("reserved", 0) > 50)
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET payload = payload || %s "
            "WHERE order_id = %s AND action = 'wms_release'",
            (
                Jsonb(
                    {
                        "dc_id": good["dc_id"],
                        "lines": [{"line_no": 1, "item_id": good["item_id"], "quantity": 1}],
                    }
                ),
                r.order_id,
            ),
        )
        store.execute(
            "UPDATE orderflow.outbox SET payload = jsonb_set(payload, '{request,dc_id}', %s) "
            "WHERE order_id = %s AND action = 'carrier_tender'",
            (Jsonb(good["dc_id"]), r.order_id),
        )
    assert sum(outbox.send(store, actions).sent for actions in batches) == 2
    tracking = _shipment(store, r.shipment_id)["tracking_number"]
    assert tracking.startswith("TRK")
    sandbox.client.put("/admin/clock", json={"advance_minutes": 60 * 24 * 2}).raise_for_status()
    cursor, shipped = 0, []
    while True:
        page = sandbox.client.get("/wms/milestones", params={"cursor": cursor}).json()
        shipped += [
            e for e in page["items"] if e["order_id"] == r.order_id and e["milestone"] == "shipped"
        ]
        if page["next_cursor"] == cursor:
            break
        cursor = page["next_cursor"]
    assert [e["tracking_number"] for e in shipped] == [tracking]


def processing_status(store, order_id: str) -> str:
    return store.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


_BOOKING_COLS = (
    "tender_status, carrier_booking_id, pro_number, label_url, booked_at, booked_rate, "
    "quoted_rate, tracking_number, expedite_cost, baseline_rate"
)


def _bookings(store, sids: list[str]) -> list[tuple]:
    return store.execute(
        f"SELECT shipment_id, {_BOOKING_COLS} FROM orderflow.shipment "
        "WHERE shipment_id = ANY(%s) ORDER BY shipment_id",
        (sids,),
    ).fetchall()


def test_tenders_sent_together_are_recorded_as_one_at_a_time_records_them(store, book, sandbox):
    """A slice's bookings are recorded in one statement (``tendering.booked_many``): the
    shipments end exactly as :func:`tendering.booked` leaves them, row by row — booked money,
    an expedited shipment's cost re-stated, the booking time included."""
    rs = [_released(store, book) for _ in range(3)]
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() WHERE status = 'pending' "
        "AND action = 'carrier_tender' AND order_id = ANY(%s)",
        ([r.order_id for r in rs],),
    )
    sids = [r.shipment_id for r in rs]
    # one of them expedited: its baseline service quoted 80 % of the plan's rate
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.shipment SET baseline_rate = round(quoted_rate * 0.8, 2), "
            "expedite_cost = quoted_rate - round(quoted_rate * 0.8, 2) WHERE shipment_id = %s",
            (sids[0],),
        )
    before = _bookings(store, sids)
    res = outbox.send(store, ACTIONS)
    assert (res.sent, res.followup_retry, res.followup_dead) == (3, 0, 0)
    together = _bookings(store, sids)
    assert {row[1] for row in together} == {"booked"}
    expedited = {row[0]: row[9] for row in before}[sids[0]]
    assert expedited > 0
    # the expedite cost re-stated in booked money
    assert {row[0]: row[9] for row in together}[sids[0]] not in (expedited, None)
    # the same answers recorded one at a time, from the state before the send
    sent = store.execute(
        "SELECT payload, response FROM orderflow.outbox WHERE action = 'carrier_tender' "
        "AND order_id = ANY(%s)",
        ([r.order_id for r in rs],),
    ).fetchall()
    cols = _BOOKING_COLS.split(", ")
    with db.transaction(store):
        for row in before:
            store.execute(
                "UPDATE orderflow.shipment SET "
                + ", ".join(f"{c} = %s" for c in cols)
                + " WHERE shipment_id = %s",
                (*row[1:], row[0]),
            )
        for payload, answer in sent:
            tendering.booked(store, payload, answer)
    assert _bookings(store, sids) == together
