"""Customer cancels, replaces and line changes applied by the order's state, against the real
store and the real sandbox (its WMS withdraws releases, or refuses once picking started).

A generated day is landed (master data and every channel); each test takes orders of that
day that process cleanly, moves them with the stage functions the DAG runs, stores an
``order_change`` as the intake side does (``OrderChange(...).model_dump(mode="json")``) and
applies it with ``changes.apply_pending`` — what each ``order_processing`` run starts with.
The outbox is sent with the real senders (WMS release cancels, 855s). After every test the
inventory reconciliation finds nothing.
"""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb

from orderflow import changes, fulfilment, processing, rules
from orderflow.domain.changes import ChangeKind, LineChange, LineChangeKind, OrderChange
from orderflow.domain.models import Order
from orderflow.integrations import outbox
from orderflow.processing import RunContext
from orderflow.store import db, exceptions
from orderflow.store import processing as repo

pytestmark = [pytest.mark.db, pytest.mark.sandbox, pytest.mark.day_snapshot("landed")]

CTX = RunContext(dag_id="test_order_changes", run_id="manual__changes", task_id="stage")
SEND = ["wms_release", "wms_release_cancel", "edi_855", "email", "webhook"]


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture(scope="module")
def landed(store_url, sandbox):
    os.environ.update(sandbox.connection_env())
    conn = db.connect()  # the day is landed (day_snapshot)
    # changes the day's own messages carried (850 cancel/replace, 860, portal) apply at once
    # to orders still RECEIVED; the tests below count only their own
    changes.apply_pending(conn, CTX, rules.load())
    assert not conn.execute(
        "SELECT count(*) FROM orderflow.order_change WHERE status IN ('pending', 'waiting_wms')"
    ).fetchone()[0]
    yield conn
    conn.close()


@pytest.fixture
def store(landed):
    yield landed
    assert repo.allocation_mismatches(landed) == []


_taken: set[str] = set()


def clean_orders(conn, book, n: int, *, edi: bool, upto: str = "READY") -> list[str]:
    """``n`` orders of the day (EDI or not) that pass every stage up to ``upto``."""
    found: list[str] = []
    candidates = [
        r[0]
        for r in conn.execute(
            "SELECT order_id FROM orderflow.\"order\" o WHERE status = 'RECEIVED' "
            "AND (channel = 'edi') = %s AND parent_order_id IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM orderflow.order_change c WHERE c.order_id = o.order_id) "
            "ORDER BY order_id",
            (edi,),
        )
        if r[0] not in _taken
    ]
    for i in range(0, len(candidates), 10):
        batch = candidates[i : i + 10]
        _taken.update(batch)
        advance(conn, batch, book, upto)
        found += [o for o, s in statuses(conn, batch).items() if s == upto]
        if len(found) >= n:
            return found[:n]
    pytest.fail(f"not {n} clean {'EDI' if edi else 'non-EDI'} orders in the day")


STAGES = ("VALIDATED", "CREDIT_OK", "ALLOCATED", "READY", "RELEASED")


def advance(conn, ids, book, upto: str = "RELEASED") -> None:
    """The stages the DAG runs, in order, up to ``upto`` (RELEASED: and the outbox sent)."""
    steps = {
        "VALIDATED": lambda: processing.validate(conn, ids, CTX, book),
        "CREDIT_OK": lambda: processing.check_credit(conn, ids, CTX, book, None),
        "ALLOCATED": lambda: processing.allocate(conn, ids, CTX, book),
        "READY": lambda: processing.plan(conn, ids, CTX, book, None, None),
        "RELEASED": lambda: processing.release(conn, ids, CTX, book),
    }
    for stage in STAGES[: STAGES.index(upto) + 1]:
        steps[stage]()
    if upto == "RELEASED":
        send(conn)


def send(conn) -> dict:
    return outbox.send_due(conn, SEND)


def statuses(conn, ids) -> dict[str, str]:
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)',
            (list(ids),),
        ).fetchall()
    )


def canonical(conn, order_id) -> Order:
    return Order.model_validate(
        conn.execute(
            'SELECT canonical FROM orderflow."order" WHERE order_id = %s', (order_id,)
        ).fetchone()[0]
    )


def store_change(conn, order_id: str, change: OrderChange, source: str = "x12_860") -> int:
    with db.transaction(conn):
        return conn.execute(
            "INSERT INTO orderflow.order_change (order_id, kind, source, reference, payload) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING change_id",
            (
                order_id,
                change.kind.value,
                source,
                change.reference,
                Jsonb(change.model_dump(mode="json")),
            ),
        ).fetchone()[0]


def make_change(conn, order_id, kind, ref, **kw) -> OrderChange:
    o = canonical(conn, order_id)
    return OrderChange(
        kind=kind,
        po_number=o.po_number,
        channel=o.provenance.channel,
        partner_id=o.provenance.partner_id,
        reference=ref,
        **kw,
    )


def change_row(conn, change_id) -> tuple[str, str]:
    return conn.execute(
        "SELECT status, outcome FROM orderflow.order_change WHERE change_id = %s", (change_id,)
    ).fetchone()


def apply(conn, book) -> dict:
    return changes.apply_pending(conn, CTX, book)


def live_reservations(conn, order_id) -> list[tuple]:
    return conn.execute(
        "SELECT line_no, item_id, dc_id, quantity, status FROM orderflow.reservation "
        "WHERE order_id = %s AND status IN ('held', 'released') ORDER BY line_no",
        (order_id,),
    ).fetchall()


def told(conn, order_id, change_id) -> list[tuple]:
    """What the customer was sent about this change: (action, key)."""
    return conn.execute(
        "SELECT action, idempotency_key FROM orderflow.outbox WHERE order_id = %s "
        "AND idempotency_key LIKE %s ORDER BY 1",
        (order_id, f"%:chg{change_id}"),
    ).fetchall()


def events_of(conn, order_id) -> list[tuple]:
    return conn.execute(
        "SELECT from_status, to_status, reason_codes FROM orderflow.order_event "
        "WHERE order_id = %s ORDER BY event_id",
        (order_id,),
    ).fetchall()


def shipments(conn, order_id) -> list[tuple]:
    return conn.execute(
        "SELECT shipment_id, status, wms_release_id, release_version FROM orderflow.shipment "
        "WHERE order_id = %s ORDER BY shipment_id",
        (order_id,),
    ).fetchall()


def wms_reserved(sandbox, item_id, dc_id) -> float:
    items = sandbox.client.get("/wms/inventory", params={"item_id": item_id, "dc_id": dc_id})
    return items.json()["items"][0]["reserved"]


# ---------------------------------------------------------------------------- before release


def test_cancel_before_release_gives_stock_back_and_tells_the_customer_once(store, book):
    oid = clean_orders(store, book, 1, edi=False, upto="READY")[0]
    assert live_reservations(store, oid)
    with db.transaction(store):  # an open exception on the order is closed with the cancel
        assert exceptions.open_for_order(
            store, order_id=oid, category="duplicate_suspect", reason="test"
        )
    cid = store_change(store, oid, make_change(store, oid, ChangeKind.CANCEL, "C1"))
    assert apply(store, book) == {"applied": 1}
    assert statuses(store, [oid]) == {oid: "CANCELLED"}
    assert change_row(store, cid)[0] == "applied"
    assert live_reservations(store, oid) == []
    assert {s[1] for s in shipments(store, oid)} == {"cancelled"}
    assert events_of(store, oid)[-1] == ("READY", "CANCELLED", ["customer_cancel"])
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s AND status = 'open'",
            (oid,),
        ).fetchone()[0]
        == 0
    )
    sent = told(store, oid, cid)
    assert sent and all(
        k.startswith(("email:order_cancelled:", "webhook:order_cancelled:")) for _, k in sent
    )
    # applied twice (a rerun, a retry): nothing happens twice
    assert apply(store, book) == {}
    assert told(store, oid, cid) == sent
    assert [e for e in events_of(store, oid) if e[1] == "CANCELLED"] == [
        ("READY", "CANCELLED", ["customer_cancel"])
    ]


def test_line_change_before_release_amends_the_order_and_runs_every_stage_again(store, book):
    oid = clean_orders(store, book, 1, edi=True, upto="ALLOCATED")[0]
    before = canonical(store, oid)
    first = before.lines[0]
    new_qty = first.quantity + 1
    lines = [LineChange(line_no=first.line_no, kind=LineChangeKind.QUANTITY, quantity=new_qty)]
    if len(before.lines) > 1:
        lines.append(LineChange(line_no=before.lines[-1].line_no, kind=LineChangeKind.DELETE))
    cid = store_change(store, oid, make_change(store, oid, ChangeKind.CHANGE, "860-1", lines=lines))
    assert apply(store, book) == {"applied": 1}
    assert statuses(store, [oid]) == {oid: "RECEIVED"}
    assert live_reservations(store, oid) == []
    after = canonical(store, oid)
    assert after.lines[0].quantity == new_qty
    assert len(after.lines) == max(1, len(before.lines) - 1)
    assert (
        store.execute(
            "SELECT quantity FROM orderflow.order_line WHERE order_id = %s AND line_no = %s",
            (oid, first.line_no),
        ).fetchone()[0]
        == new_qty
    )
    assert events_of(store, oid)[-1] == ("ALLOCATED", "RECEIVED", ["customer_change"])
    # the customer's 855 re-acknowledgment: BAK01 04 (change), queued once
    assert told(store, oid, cid) == [("edi_855", f"edi_855:{oid}:chg{cid}")]
    body = store.execute(
        "SELECT payload->>'body' FROM orderflow.outbox WHERE idempotency_key = %s",
        (f"edi_855:{oid}:chg{cid}",),
    ).fetchone()[0]
    assert "BAK*04*AC*" in body
    assert apply(store, book) == {}
    # the next run processes it through every stage, with the new quantity
    advance(store, [oid], book)
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    reserved = (
        sum(r[3] for r in live_reservations(store, oid) if r[0] == first.line_no)
        + store.execute(
            "SELECT backordered_qty FROM orderflow.order_line WHERE order_id = %s AND line_no = %s",
            (oid, first.line_no),
        ).fetchone()[0]
    )
    assert reserved == new_qty


def test_replace_before_release_takes_the_new_version(store, book):
    oid = clean_orders(store, book, 1, edi=False, upto="READY")[0]
    before = canonical(store, oid)
    new = before.model_copy(
        update={
            "order_id": "ignored",
            "lines": [before.lines[0].model_copy(update={"quantity": Decimal("1")})],
        }
    )
    cid = store_change(
        store,
        oid,
        make_change(store, oid, ChangeKind.REPLACE, "R1", replacement=new),
        source="x12_850_replace",
    )
    assert apply(store, book) == {"applied": 1}
    assert statuses(store, [oid]) == {oid: "RECEIVED"}
    after = canonical(store, oid)
    assert after.order_id == oid and [ln.quantity for ln in after.lines] == [Decimal("1")]
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_line WHERE order_id = %s", (oid,)
        ).fetchone()[0]
        == 1
    )
    # never a second order for the PO
    assert (
        store.execute(
            'SELECT count(*) FROM orderflow."order" WHERE po_number = %s AND customer_id = '
            '(SELECT customer_id FROM orderflow."order" WHERE order_id = %s)',
            (before.po_number, oid),
        ).fetchone()[0]
        == 1
    )
    assert any(k.startswith("email:order_changed:") for _, k in told(store, oid, cid)) or any(
        k.startswith("webhook:order_changed:") for _, k in told(store, oid, cid)
    )
    advance(store, [oid], book)
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    assert [r[3] for r in live_reservations(store, oid)] == [Decimal("1")]


def test_a_change_that_cannot_apply_is_refused_and_the_customer_told(store, book):
    oid = clean_orders(store, book, 1, edi=False, upto="VALIDATED")[0]
    lines = [LineChange(line_no=999, kind=LineChangeKind.DELETE)]
    cid = store_change(store, oid, make_change(store, oid, ChangeKind.CHANGE, "X1", lines=lines))
    assert apply(store, book) == {"refused": 1}
    status, outcome = change_row(store, cid)
    assert status == "refused" and "no line 999" in outcome
    assert statuses(store, [oid]) == {oid: "VALIDATED"}
    assert any("change_refused" in k for _, k in told(store, oid, cid))


# ---------------------------------------------------------------------------- released


def test_cancel_while_released_goes_through_the_wms_cancel(store, book, sandbox):
    oid = clean_orders(store, book, 1, edi=True, upto="READY")[0]
    advance(store, [oid], book)
    ships = shipments(store, oid)
    assert ships and all(s[1] == "released" and s[2] for s in ships)
    res = live_reservations(store, oid)
    item, dc = res[0][1], res[0][2]
    held_before = wms_reserved(sandbox, item, dc)
    cid = store_change(store, oid, make_change(store, oid, ChangeKind.CANCEL, "C2"))
    assert apply(store, book) == {"waiting": 1}
    assert change_row(store, cid)[0] == "waiting_wms"
    assert apply(store, book) == {"waiting": 1}  # nothing sent yet: still waiting
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    assert send(store).get("sent", 0) >= len(ships)
    # the sandbox WMS: release cancelled, its stock back
    assert wms_reserved(sandbox, item, dc) == pytest.approx(
        held_before - float(sum(r[3] for r in res if (r[1], r[2]) == (item, dc)))
    )
    assert apply(store, book) == {"applied": 1}
    assert statuses(store, [oid]) == {oid: "CANCELLED"}
    assert {s[1] for s in shipments(store, oid)} == {"cancelled"}
    assert live_reservations(store, oid) == []
    assert events_of(store, oid)[-1] == ("RELEASED", "CANCELLED", ["customer_cancel"])
    body = store.execute(
        "SELECT payload->>'body' FROM orderflow.outbox WHERE idempotency_key = %s",
        (f"edi_855:{oid}:chg{cid}",),
    ).fetchone()[0]
    assert "BAK*01*AC*" in body
    assert apply(store, book) == {}
    # a day later: no milestone of the cancelled releases after the cancel
    sandbox.client.put("/admin/clock", json={"advance_minutes": 1440}).raise_for_status()
    feed = sandbox.client.get("/wms/milestones", params={"cursor": 0, "limit": 1000}).json()
    releases = {s[2] for s in ships}
    kinds = {e["milestone"] for e in feed["items"] if e["release_id"] in releases}
    assert kinds <= {"released"}


def test_change_while_released_withdraws_the_release_and_releases_the_new_version(
    store, book, sandbox
):
    oid = clean_orders(store, book, 1, edi=False, upto="READY")[0]
    advance(store, [oid], book)
    first = canonical(store, oid).lines[0]
    lines = [LineChange(line_no=first.line_no, kind=LineChangeKind.QUANTITY, quantity=Decimal(1))]
    store_change(
        store, oid, make_change(store, oid, ChangeKind.CHANGE, "P-1", lines=lines), "portal"
    )
    assert apply(store, book) == {"waiting": 1}
    send(store)
    assert apply(store, book) == {"applied": 1}
    assert statuses(store, [oid]) == {oid: "RECEIVED"}
    assert events_of(store, oid)[-1] == ("RELEASED", "RECEIVED", ["customer_change"])
    assert {s[1] for s in shipments(store, oid)} == {"cancelled"}
    advance(store, [oid], book)
    assert statuses(store, [oid]) == {oid: "RELEASED"}
    live = [s for s in shipments(store, oid) if s[1] != "cancelled"]
    assert live and all(s[3] == 2 and s[2] for s in live)  # released again as version 2
    assert sum(r[3] for r in live_reservations(store, oid) if r[0] == first.line_no) <= 1


# ---------------------------------------------------------------------------- too late


def _release_and_let_the_floor_work(store, book, sandbox, n: int) -> list[str]:
    ids = clean_orders(store, book, n, edi=True, upto="READY")
    advance(store, ids, book)
    assert set(statuses(store, ids).values()) == {"RELEASED"}
    sandbox.client.put("/admin/clock", json={"advance_minutes": 2 * 1440}).raise_for_status()
    return ids


def test_cancel_and_change_once_picking_started_are_refused(store, book, sandbox):
    a, b = _release_and_let_the_floor_work(store, book, sandbox, 2)
    # our store has not read the WMS feed yet: it still thinks RELEASED, the WMS refuses
    ca = store_change(store, a, make_change(store, a, ChangeKind.CANCEL, "C3"))
    first = canonical(store, b).lines[0]
    cb = store_change(
        store,
        b,
        make_change(
            store,
            b,
            ChangeKind.CHANGE,
            "860-3",
            lines=[LineChange(line_no=first.line_no, kind=LineChangeKind.QUANTITY, quantity=1)],
        ),
    )
    assert apply(store, book) == {"waiting": 2}
    send(store)
    assert apply(store, book) == {"refused": 2}
    for oid, cid, purpose in ((a, ca, "01"), (b, cb, "04")):
        assert change_row(store, cid)[0] == "refused"
        assert statuses(store, [oid]) == {oid: "RELEASED"}
        ex = store.execute(
            "SELECT owner_role, reason FROM orderflow.order_exception WHERE order_id = %s "
            "AND category = 'change_too_late' AND status = 'open'",
            (oid,),
        ).fetchall()
        assert len(ex) == 1 and ex[0][0] == "customer_service" and "picking" in ex[0][1]
        assert live_reservations(store, oid)  # nothing given back: it ships
        body = store.execute(
            "SELECT payload->>'body' FROM orderflow.outbox WHERE idempotency_key = %s",
            (f"edi_855:{oid}:chg{cid}",),
        ).fetchone()[0]
        assert f"BAK*{purpose}*RJ*" in body
    assert apply(store, book) == {}


def test_a_change_after_shipment_is_refused_at_once(store, book, sandbox):
    from orderflow.integrations.systems import WmsHook

    (oid,) = _release_and_let_the_floor_work(store, book, sandbox, 1)
    fulfilment.pull_feed(store, "wms", WmsHook().milestones, run_id="t")
    fulfilment.apply_events(store, CTX, book)
    fulfilment.advance_orders(store, CTX, book)
    status = statuses(store, [oid])[oid]
    assert status in ("SHIPPED", "DELIVERED", "INVOICED"), status
    cancels = store.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'wms_release_cancel'"
    ).fetchone()[0]
    cid = store_change(store, oid, make_change(store, oid, ChangeKind.CANCEL, "C4"))
    assert apply(store, book) == {"refused": 1}
    assert "shipped" in change_row(store, cid)[1]
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.outbox WHERE action = 'wms_release_cancel'"
        ).fetchone()[0]
        == cancels
    )
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s "
            "AND category = 'change_too_late' AND status = 'open'",
            (oid,),
        ).fetchone()[0]
        == 1
    )
    assert statuses(store, [oid]) == {oid: status}


# ---------------------------------------------------------------------------- inside sales


def test_inside_sales_cancel_needs_the_role_and_is_audited(store, book, tmp_path, monkeypatch):
    roles = tmp_path / "roles.yaml"
    roles.write_text("users:\n  cs.jane: [customer_service]\n  bob.pricing: [pricing]\n")
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(roles))
    oid = clean_orders(store, book, 1, edi=False, upto="VALIDATED")[0]
    with pytest.raises(changes.ChangeRefused, match="customer_service"):
        changes.request_cancel(store, oid, reason="customer phoned", actor="bob.pricing")
    cid = changes.request_cancel(store, oid, reason="customer phoned", actor="cs.jane")
    audit = store.execute(
        "SELECT actor, action FROM orderflow.audit_log WHERE object_id = %s ORDER BY audit_id",
        (oid,),
    ).fetchall()
    assert audit == [
        ("bob.pricing", "order_cancel_refused"),
        ("cs.jane", "order_cancel_requested"),
    ]
    assert apply(store, book) == {"applied": 1}
    assert change_row(store, cid)[0] == "applied"
    assert events_of(store, oid)[-1][1:] == ("CANCELLED", ["customer_cancel"])
    actor = store.execute(
        "SELECT actor_type, actor_id FROM orderflow.order_event WHERE order_id = %s "
        "ORDER BY event_id DESC LIMIT 1",
        (oid,),
    ).fetchone()
    assert actor == ("user", "cs.jane")
