"""Fulfilment end to end: a generated day is landed, processed and then driven to completion
by the sandbox clock — the WMS picks and ships, the carrier delivers — while the
fulfilment_events DAG (dag.test) follows. Every released order ships and is invoiced exactly
once; the 855 / 856 / 810 / email / webhook counts match the orders that should have them;
the sandbox's receivers see no duplicate; the documents read back through our X12 reader;
the partners' 997s are matched to what we sent; a rerun sends nothing. The feeds and
receivers are flaky throughout (duplicates, reordering, 5xx, cut connections)."""

from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest

from orderflow.store import db

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.long,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]


def _run(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag(dag_id)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS, dag_id
    return run


def _ingest_acks(conn, sandbox) -> dict:
    from orderflow.intake import drops

    root = sandbox.drop / "edi/inbound"
    return drops.ingest_folder(conn, root, "edi").summary()


FULFILMENT_RUNS: list[str] = []  # this module's fulfilment_events runs (the metadata DB is shared)


@pytest.fixture(scope="module")
def fulfilled(store_url, sandbox, day_dir, airflow_db):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    # Flaky partners from here on: feeds deliver events twice and out of order and answer
    # 5xx or cut the connection now and then; the receivers answer 5xx.
    feed = {"duplicate_rate": 0.2, "out_of_order_rate": 0.5, "error_rate": 0.1, "reset_rate": 0.02}
    faults = {
        "seed": 5,
        "rules": [
            {"prefix": "/wms/milestones", **feed},
            {"prefix": "/carrier/tracking", **feed},
            *(
                {"prefix": p, "error_rate": 0.1}
                for p in ("/erp/invoices", "/edi/outbound", "/portal/webhooks")
            ),
        ],
    }
    sandbox.client.put("/admin/faults", json=faults).raise_for_status()
    try:
        # A simulated week: every pick, shipment (some miss the truck by a day), delay and
        # delivery (up to four days in transit, plus a day's delay) of the day happens.
        for _ in range(7):
            sandbox.client.put(
                "/admin/clock", json={"advance_minutes": 24 * 60}, timeout=120
            ).raise_for_status()
            FULFILMENT_RUNS.append(_run("fulfilment_events").run_id)
    finally:
        sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    acks = _ingest_acks(conn, sandbox)
    yield conn, acks
    conn.close()


def test_flaky_feeds_lose_no_event_and_store_each_once(fulfilled, sandbox):
    conn, _ = fulfilled
    state = sandbox.client.get("/admin/state").json()
    stored = dict(
        conn.execute(
            "SELECT source, count(*) FROM orderflow.fulfilment_event GROUP BY 1"
        ).fetchall()
    )
    assert stored == {"wms": state["milestones"], "carrier": state["tracking_events"]}
    assert (
        _one(
            conn,
            "SELECT count(*) FROM orderflow.fulfilment_event WHERE status NOT IN ('applied', 'no_op')",
        )
        == 0
    )
    cursors = dict(conn.execute("SELECT cursor_name, value FROM orderflow.sync_cursor").fetchall())
    assert int(cursors["wms_milestones"]) == state["milestones"]
    assert int(cursors["carrier_tracking"]) == state["tracking_events"]


def _one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def test_every_released_order_ships_and_is_invoiced_exactly_once(fulfilled, sandbox):
    conn, _ = fulfilled
    by_status = dict(
        conn.execute(
            'SELECT status, count(*) FROM orderflow."order" WHERE release_version > 0 '
            "GROUP BY status"
        ).fetchall()
    )
    released = sum(by_status.values())
    assert released > 200
    assert set(by_status) <= {"SHIPPED", "DELIVERED", "INVOICED"}, by_status
    # Not INVOICED only with a reason a person is working on: a delivery exception or a
    # withheld invoice (quantity mismatch).
    stuck = conn.execute(
        """
        SELECT o.order_id FROM orderflow."order" o
         WHERE o.release_version > 0 AND o.status <> 'INVOICED'
           AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception e
                            WHERE e.order_id = o.order_id AND e.status = 'open'
                              AND e.category IN ('delivery_exception', 'quantity_mismatch'))
        """
    ).fetchall()
    assert stuck == [], [
        (
            conn.execute(
                'SELECT status FROM orderflow."order" WHERE order_id = %s', (o,)
            ).fetchall(),
            conn.execute(
                "SELECT shipment_id, status, release_version, wms_release_id, shipped_at, "
                "delivered_at, delivery_exception FROM orderflow.shipment WHERE order_id = %s",
                (o,),
            ).fetchall(),
            conn.execute(
                "SELECT status, total FROM orderflow.invoice WHERE order_id = %s", (o,)
            ).fetchall(),
            conn.execute(
                "SELECT * FROM orderflow.shipment_line WHERE shipment_id IN "
                "(SELECT shipment_id FROM orderflow.shipment WHERE order_id = %s)",
                (o,),
            ).fetchall(),
            conn.execute(
                "SELECT kind, status, error FROM orderflow.fulfilment_event WHERE order_id = %s",
                (o,),
            ).fetchall(),
        )
        for (o,) in stuck
    ]
    # one invoice per shipment that shipped anything, and nothing else
    shipped_any = _one(
        conn,
        "SELECT count(DISTINCT shipment_id) FROM orderflow.shipment_line "
        "WHERE quantity_shipped > 0",
    )
    invoices = dict(
        conn.execute("SELECT status, count(*) FROM orderflow.invoice GROUP BY 1").fetchall()
    )
    assert sum(invoices.values()) == shipped_any
    assert set(invoices) <= {"posted", "withheld"}, invoices
    erp = sandbox.client.get("/admin/state").json()
    assert erp["invoices"] == invoices["posted"]
    withheld = invoices.get("withheld", 0)
    assert withheld == _one(
        conn,
        "SELECT count(DISTINCT order_id) FROM orderflow.order_exception "
        "WHERE category = 'quantity_mismatch' AND status = 'open'",
    )


def test_invoices_bill_shipped_quantities_at_the_validated_price(fulfilled):
    conn, _ = fulfilled
    rows = conn.execute(
        """
        SELECT i.invoice_id, ln->>'line_no', ln->>'item_id', (ln->>'quantity')::numeric,
               (ln->>'unit_price')::numeric, sl.quantity_shipped,
               coalesce(ol.contract_price, ol.unit_price), ol.unit_price
          FROM orderflow.invoice i
          CROSS JOIN LATERAL jsonb_array_elements(i.document->'lines') ln
          JOIN orderflow.shipment_line sl ON sl.shipment_id = i.shipment_id
               AND sl.line_no = (ln->>'line_no')::int AND sl.item_id = ln->>'item_id'
          JOIN orderflow.order_line ol ON ol.order_id = i.order_id
               AND ol.line_no = (ln->>'line_no')::int
         WHERE i.status = 'posted'
        """
    ).fetchall()
    assert rows
    for inv, line, item, qty, price, shipped, validated, _typed in rows:
        assert qty == shipped, (inv, line, item)
        assert price == validated, (inv, line, item)
    # short shipments bill what shipped
    short = _one(
        conn,
        "SELECT count(*) FROM orderflow.shipment_line sl JOIN orderflow.invoice i "
        "USING (shipment_id) WHERE i.status = 'posted' "
        "AND sl.quantity_shipped < sl.quantity_released",
    )
    assert short > 0


def test_document_and_notification_counts_match_the_orders_that_should_have_them(
    fulfilled, sandbox
):
    conn, _ = fulfilled
    state = sandbox.client.get("/admin/state").json()
    received = Counter(
        d["document_type"] for d in sandbox.client.get("/edi/outbound").json()["items"]
    )
    edi_released = _one(
        conn,
        'SELECT count(*) FROM orderflow."order" o JOIN orderflow.trading_partner tp '
        "USING (partner_id) WHERE o.channel = 'edi' AND o.release_version > 0 AND tp.isa_id <> ''",
    )
    edi_shipments = _one(
        conn,
        'SELECT count(*) FROM orderflow.shipment s JOIN orderflow."order" o USING (order_id) '
        "JOIN orderflow.trading_partner tp USING (partner_id) "
        "WHERE o.channel = 'edi' AND s.shipped_at IS NOT NULL AND tp.isa_id <> ''",
    )
    edi_invoices = _one(
        conn,
        'SELECT count(*) FROM orderflow.invoice i JOIN orderflow."order" o USING (order_id) '
        "JOIN orderflow.trading_partner tp USING (partner_id) "
        "WHERE o.channel = 'edi' AND i.status = 'posted' AND tp.isa_id <> ''",
    )
    # an 855 per release (a change after release re-releases as a new version) and one
    # re-acknowledgment per customer change that was decided (applied or refused)
    edi_release_events = _one(
        conn,
        'SELECT count(*) FROM orderflow.order_event e JOIN orderflow."order" o USING (order_id) '
        "JOIN orderflow.trading_partner tp USING (partner_id) "
        "WHERE e.to_status = 'RELEASED' AND o.channel = 'edi' AND tp.isa_id <> ''",
    )
    edi_change_acks = _one(
        conn,
        'SELECT count(*) FROM orderflow.order_change c JOIN orderflow."order" o USING (order_id) '
        "JOIN orderflow.trading_partner tp USING (partner_id) "
        "WHERE c.status IN ('applied', 'refused') AND o.channel = 'edi' AND tp.isa_id <> ''",
    )
    assert edi_released > 20
    assert received["855"] == edi_release_events + edi_change_acks
    assert received["856"] == edi_shipments
    assert received["810"] == edi_invoices
    # emails: confirmed for every non-EDI release with an address, shipped for every
    # shipment of a customer with an address; each once (the sink counts Message-IDs).
    # Marketplace orders are told through the marketplace's callbacks, not by e-mail.
    expected = _one(
        conn,
        """
        SELECT (SELECT count(*) FROM orderflow."order" o JOIN orderflow.customer c
                 USING (customer_id) WHERE o.release_version > 0
                   AND o.channel NOT IN ('edi', 'marketplace') AND c.email IS NOT NULL)
             + (SELECT count(*) FROM orderflow.shipment s JOIN orderflow."order" o
                 USING (order_id) JOIN orderflow.customer c USING (customer_id)
                 WHERE s.shipped_at IS NOT NULL AND o.channel <> 'marketplace'
                   AND c.email IS NOT NULL)
        """,
    )
    marketplace_shipped = _one(
        conn,
        'SELECT count(*) FROM orderflow.shipment s JOIN orderflow."order" o USING (order_id) '
        "WHERE s.shipped_at IS NOT NULL AND o.channel = 'marketplace'",
    )
    assert marketplace_shipped == _one(
        conn,
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'marketplace_shipment'",
    )
    by_event = Counter(
        m["key"].split(":")[1] for m in sandbox.client.get("/mail/messages").json()["items"]
    )
    assert by_event["order_confirmed"] + by_event["shipment_shipped"] == expected
    assert state["mail"]["duplicate_message_ids"] == 0
    assert state["mail"]["messages"] == _one(
        conn, "SELECT count(*) FROM orderflow.outbox WHERE action = 'email' AND status = 'sent'"
    )
    hooks = sandbox.client.get("/portal/webhooks").json()["items"]
    assert len(hooks) == _one(
        conn, "SELECT count(*) FROM orderflow.outbox WHERE action = 'webhook' AND status = 'sent'"
    )
    assert {h["event"] for h in hooks} >= {"order_confirmed", "shipment_shipped"}
    assert all(h["customer_id"] for h in hooks)


def test_shipped_notices_leave_with_the_shipment_from_apply_events(fulfilled):
    """The customer's shipped notice is sent by the task that applied the shipment (one task
    hop earlier than the DAG's send task); whatever it could not send (the receivers answer
    5xx here) the send task delivered, each once (the test above)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        values = session.scalars(
            select(XComModel.value).where(
                XComModel.dag_id == "fulfilment_events",
                XComModel.task_id == "apply_events",
                XComModel.key == "return_value",
                XComModel.run_id.in_(FULFILMENT_RUNS),
            )
        ).all()
    results = [XComModel.deserialize_value(type("X", (), {"value": v})) for v in values]
    notified = [r["notified"] for r in results if r.get("shipped")]
    assert notified, "no apply_events run shipped anything"
    sent_here = sum(n.get("sent", 0) for n in notified)
    conn, _ = fulfilled
    # it sends whatever of those actions is due (order confirmations queued at release too)
    notices_sent = _one(
        conn,
        "SELECT count(*) FROM orderflow.outbox WHERE status = 'sent' "
        "AND action IN ('email', 'webhook', 'marketplace_shipment')",
    )
    assert 0 < sent_here <= notices_sent


def test_outbound_x12_reads_back_clean_and_997s_are_matched(fulfilled, sandbox):
    from orderflow.channels.x12.validate import envelope_findings

    conn, acks = fulfilled
    docs = sandbox.client.get("/edi/outbound").json()["items"]
    assert {d["document_type"] for d in docs} == {"855", "856", "810"}
    for d in docs:
        assert envelope_findings(d["body"]) == [], d["document_type"]
    # keep one of each as an artefact (the closing note quotes them)
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    for kind in ("855", "856", "810"):
        sample = next(d for d in docs if d["document_type"] == kind)
        (artifacts / f"sample_{kind}.x12").write_text(sample["body"])
    assert acks["outcomes"].get("acknowledgment", 0) > 0, acks
    status = dict(
        conn.execute(
            "SELECT coalesce(ack_status, 'none'), count(*) FROM orderflow.outbound_document "
            "GROUP BY 1"
        ).fetchall()
    )
    generated = sandbox.client.get("/admin/state").json()["edi_997"]
    assert status.get("A", 0) == generated["delivered"] - generated["rejected"]
    assert "quarantined" not in acks["outcomes"], acks


def test_rerunning_the_dag_sends_nothing_twice(fulfilled, sandbox):
    conn, _ = fulfilled
    before = sandbox.client.get("/admin/state").json()
    outbox = _one(conn, "SELECT count(*) FROM orderflow.outbox")
    _run("fulfilment_events")
    after = sandbox.client.get("/admin/state").json()
    for key in ("invoices", "outbound_edi", "portal_webhooks"):
        assert after[key] == before[key], key
    assert after["mail"]["messages"] == before["mail"]["messages"]
    assert _one(conn, "SELECT count(*) FROM orderflow.outbox") == outbox


# ------------------------------------------------------------------ KPIs and the exception desk
@pytest.fixture(scope="module")
def operated(fulfilled, sandbox):
    """People resolve a few exceptions (touches), processing runs again, one exception
    breaches its SLA; then the KPI and exception-desk DAGs run."""
    from orderflow import decisions
    from orderflow.processing import RunContext

    conn, _ = fulfilled
    held = conn.execute(
        "SELECT exception_id, order_id FROM orderflow.order_exception "
        "WHERE category = 'pricing_mismatch' AND status = 'open' ORDER BY exception_id LIMIT 3"
    ).fetchall()
    assert held
    ctx = RunContext(dag_id="test", run_id="manual__ops", task_id="decide")
    for eid, _ in held:
        decisions.decide(
            conn, eid, "Approve", actor="pricing.jane", reason="customer's price agreed", ctx=ctx
        )
    _run("order_processing")
    # An SLA a minute long, opened two minutes ago: breached.
    (late,) = conn.execute(
        "SELECT exception_id FROM orderflow.order_exception WHERE status = 'open' "
        "AND category = 'short_stock' ORDER BY exception_id LIMIT 1"
    ).fetchone()
    conn.execute(
        "UPDATE orderflow.order_exception SET opened_at = now() - interval '2 minutes', "
        "sla_due_at = now() - interval '1 minute' WHERE exception_id = %s",
        (late,),
    )
    _run("exception_desk")
    _run("publish_kpis")
    return conn, [o for _, o in held], late


def _snapshots(conn, name, dimension="all"):
    """{day: (value, numerator, denominator)} of a KPI's daily snapshots."""
    return {
        period.date(): (value, num, den)
        for period, value, num, den in conn.execute(
            "SELECT period_start, value, numerator, denominator FROM orderflow.kpi_snapshot "
            "WHERE kpi = %s AND grain = 'day' AND dimension = %s",
            (name, dimension),
        )
    }


def _by_day(times_and_values):
    out = {}
    for t, v in times_and_values:
        out.setdefault(t.astimezone(UTC).date(), []).append(v)
    return out


def test_an_sla_breach_escalates_once_and_shows_on_the_desk(operated, sandbox):
    conn, _, late = operated
    row = conn.execute(
        "SELECT sla_state, escalated_at IS NOT NULL, notified_at IS NOT NULL "
        "FROM orderflow.exception_desk WHERE exception_id = %s",
        (late,),
    ).fetchone()
    assert row == ("breached", True, True)
    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM orderflow.audit_log WHERE object_type = 'order_exception' "
            "AND object_id = %s ORDER BY audit_id",
            (str(late),),
        )
    ]
    assert actions == ["notify_owner", "escalate"]
    mail = sandbox.client.get("/mail/messages", params={"subject": "ESCALATION"}).json()["items"]
    assert [m["to"] for m in mail if m["key"] == f"email:sla_breached:{late}"] == [
        ["ops-manager@distributor.example"]
    ]
    _run("exception_desk")  # again: nothing new
    assert len(
        sandbox.client.get("/mail/messages", params={"subject": "ESCALATION"}).json()["items"]
    ) == len(mail)


def test_kpis_match_an_independent_computation_from_ground_truth_and_events(
    operated, day_dir, sandbox
):
    """Each KPI value is recomputed here from the event log, the ground truth of the
    generated day or the sandbox's own milestone log — not from OrderFlow's tables."""
    import json
    import statistics
    from collections import defaultdict
    from datetime import datetime, timedelta

    from orderflow import kpis

    conn, touched, _ = operated
    # first-pass release rate: released orders, minus the ones a person touched first
    released = dict(
        conn.execute(
            "SELECT order_id, min(occurred_at) FROM orderflow.order_event "
            "WHERE to_status = 'RELEASED' GROUP BY 1"
        ).fetchall()
    )
    assert set(touched) <= set(released)
    # ... over every order that reached a processing decision (released, held or rejected),
    # placed on the day of that first decision: held orders are its misses too
    decided = dict(
        conn.execute(
            "SELECT order_id, min(occurred_at) FROM orderflow.order_event "
            "WHERE to_status IN ('RELEASED', 'ON_HOLD', 'REJECTED') GROUP BY 1"
        ).fetchall()
    )
    snap = _snapshots(conn, "first_pass_release_rate")
    expected = _by_day((t, o in released and o not in touched) for o, t in decided.items())
    assert {d: (n, den) for d, (_, n, den) in snap.items()} == {
        d: (sum(v), len(v)) for d, v in expected.items()
    }
    assert sum(den for _, _, den in snap.values()) > sum(n for _, n, _ in snap.values())
    # ... and its drill-down names exactly the orders decided and not released untouched
    first, last = min(decided.values()), max(decided.values())
    misses = kpis.drill(
        conn,
        kpis.BY_NAME["first_pass_release_rate"],
        first,
        last + timedelta(seconds=1),
        hits=False,
    )
    assert sorted(misses) == sorted(set(decided) - (set(released) - set(touched)))
    # cycle time received → released, p50 per day, from the event log
    received = dict(conn.execute('SELECT order_id, received_at FROM orderflow."order"').fetchall())
    minutes = _by_day((t, (t - received[o]).total_seconds() / 60) for o, t in released.items())
    snap = _snapshots(conn, "cycle_released_p50")
    assert set(snap) == set(minutes)
    for day, values in minutes.items():
        assert float(snap[day][0]) == pytest.approx(statistics.median(values), abs=0.01)
    # exception volume per category: the orders behind it are the ground truth's
    truth = defaultdict(set)
    subs = {
        s["submission_id"]: s
        for s in map(json.loads, (day_dir / "orders.jsonl").read_text().splitlines())
    }
    for t in map(json.loads, (day_dir / "ground_truth.jsonl").read_text().splitlines()):
        if t["expected"] in ("duplicate", "quarantine"):
            continue
        sub = subs[t["submission_id"]]
        for c in t["exception_categories"]:
            truth[c].add((sub["customer_id"], sub["po_number"]))
    po = {
        o: (c, p)
        for o, c, p in conn.execute(
            'SELECT order_id, customer_id, po_number FROM orderflow."order"'
        )
    }
    assert len(truth) >= 5
    landed = set(po.values())  # (a few low-confidence e-mails stay quarantined at intake)
    for category, orders in truth.items():
        orders &= landed
        ids = kpis.drill(
            conn,
            kpis.BY_NAME["exception_volume"],
            first - timedelta(days=1),
            datetime.now(UTC) + timedelta(minutes=1),
            dimension=f"category={category}",
            limit=100_000,
        )
        assert {po[i] for i in ids} == orders, category
        snap = _snapshots(conn, "exception_volume", f"category={category}")
        opened = conn.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE category = %s", (category,)
        ).fetchone()[0]
        assert sum(v for v, _, _ in snap.values()) == opened, category
    # release → pick p50 per day against the WMS's own milestone log (the sandbox feed)
    feed, cursor = [], 0
    while page := sandbox.client.get(
        "/wms/milestones", params={"cursor": cursor, "limit": 1000}
    ).json()["items"]:
        feed += page
        cursor += len(page)
    per_release = defaultdict(dict)
    for e in feed:
        per_release[(e["order_id"], e["release_id"])].setdefault(
            e["milestone"], datetime.fromisoformat(e["occurred_at"])
        )
    per_order = defaultdict(list)
    for (order_id, _), m in per_release.items():
        per_order[order_id].append(m)
    gaps = _by_day(
        (
            max(m["picked"] for m in ms),
            (max(m["picked"] for m in ms) - min(m["released"] for m in ms)).total_seconds() / 60,
        )
        for ms in per_order.values()
        if all("picked" in m and "released" in m for m in ms)
    )
    snap = _snapshots(conn, "release_to_pick_p50")
    assert set(snap) == set(gaps)
    for day, values in gaps.items():
        assert float(snap[day][0]) == pytest.approx(statistics.median(values), abs=0.01)
