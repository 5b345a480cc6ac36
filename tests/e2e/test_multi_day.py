"""Three generated business days run back to back as the schedules would run them: every
simulated day the channels are ingested, and ``masterdata_sync`` (incremental,
as on its hourly schedule), ``order_processing`` and ``fulfilment_events`` run as DAGs
(``dag.test``) while the sandbox's warehouse picks, ships and receives stock.

At the end, for every item × DC: our on-hand and what the WMS holds for releases equal the
WMS's own numbers; ``allocated`` equals its definition; what we hold as released and not yet
shipped equals what the WMS holds for our releases; no sync failed; and every order is in a
state with a reason; the WMS received stock over the days and lines waiting for it were
filled as backorder releases that went out like any order.
"""

from __future__ import annotations

import os

import pytest
from tests_support import START, start_sandbox

from orderflow.store import db
from orderflow.store import processing as inventory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.long,
]

DAYS = 3
STEP_HOURS = 24
# Fri, Mon, Tue of business days, then a week: the last day's shipments (up to 4 days in
# transit, plus a day's delay) deliver too.
STEPS = 12


def _run(dag_id: str, **params):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag(dag_id)
    run = dag.test(run_conf=params or None)
    assert run.state == DagRunState.SUCCESS, dag_id
    return run


def _ingest(conn, sandbox) -> None:
    """Every channel, with the same code the intake DAGs run."""
    from orderflow.intake import drops, mailbox, portal
    from orderflow.integrations.systems import PortalHook

    portal.pull(conn, PortalHook())
    for channel, sub in (("edi", "edi/inbound"), ("csv", "csv/inbound")):
        root = sandbox.drop / sub
        root.mkdir(parents=True, exist_ok=True)
        drops.ingest_folder(conn, root, channel)
    (sandbox.drop / "mailbox/new").mkdir(parents=True, exist_ok=True)
    mailbox.ingest_mailbox(conn, sandbox.drop / "mailbox/new")


@pytest.fixture(scope="module")
def days(store_url, airflow_db, tmp_path_factory):
    from orderflow_sandbox.generator import generate

    day_dir = tmp_path_factory.mktemp("days")
    generate(
        day_dir,
        seed=23,
        days=DAYS,
        orders_per_day=150,
        customers=80,
        items=300,
        business_date=START.date(),
    )
    sandbox = start_sandbox(day_dir, tmp_path_factory.mktemp("drop"), start=START)
    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    try:
        _run("masterdata_sync", full_refresh=True)
        for _ in range(STEPS):
            sandbox.client.put(
                "/admin/clock", json={"advance_minutes": STEP_HOURS * 60}, timeout=300
            ).raise_for_status()
            _ingest(conn, sandbox)
            _run("masterdata_sync")
            _run("order_processing")
            _run("fulfilment_events")
        _run("masterdata_sync")  # the WMS's numbers after the last move
        yield conn, sandbox
    finally:
        conn.close()
        sandbox.stop()


def test_our_inventory_equals_the_wms_after_three_days(days):
    conn, sandbox = days
    wms = {
        (p["item_id"], p["dc_id"]): p
        for p in sandbox.client.get("/wms/inventory", timeout=60).json()["items"]
    }
    ours = {
        (i, d): (on_hand, reserved)
        for i, d, on_hand, reserved in conn.execute(
            "SELECT item_id, dc_id, on_hand, wms_reserved FROM orderflow.inventory_position"
        )
    }
    assert set(ours) == set(wms)
    differ = {
        k: (ours[k], (wms[k]["on_hand"], wms[k]["reserved"]))
        for k in ours
        if (float(ours[k][0]), float(ours[k][1])) != (wms[k]["on_hand"], wms[k]["reserved"])
    }
    assert differ == {}
    assert inventory.allocation_mismatches(conn) == []
    # what we hold as released and not shipped is what the WMS holds for our releases
    held_by_wms = {
        (i, d): q
        for i, d, q in conn.execute(
            "SELECT item_id, dc_id, sum(quantity) FROM orderflow.reservation "
            "WHERE status = 'released' GROUP BY 1, 2"
        )
    }
    assert {k: float(v) for k, v in held_by_wms.items() if v} == {
        k: p["reserved"] for k, p in wms.items() if p["reserved"]
    }
    # something happened: stock moved and orders shipped over the days
    shipped = conn.execute(
        "SELECT count(*) FROM orderflow.reservation WHERE status = 'consumed'"
    ).fetchone()[0]
    assert shipped > 100


def test_every_order_is_in_a_state_with_a_reason(days):
    conn, _ = days
    by_status = dict(
        conn.execute('SELECT status, count(*) FROM orderflow."order" GROUP BY 1').fetchall()
    )
    assert sum(by_status.values()) > 300
    # Orders not at their end (invoiced, cancelled, rejected) wait with an open exception.
    waiting = conn.execute(
        """
        SELECT o.order_id, o.status FROM orderflow."order" o
         WHERE o.status NOT IN ('INVOICED', 'CLOSED', 'CANCELLED', 'REJECTED')
           AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception e
                            WHERE e.order_id = o.order_id AND e.status = 'open')
        """
    ).fetchall()
    assert waiting == [], (by_status, waiting[:20])


def test_backorders_are_filled_when_stock_arrives(days):
    conn, sandbox = days
    assert sandbox.client.get("/admin/state").json()["received_units"] > 0
    children = conn.execute(
        'SELECT order_id, parent_order_id, status FROM orderflow."order" '
        "WHERE parent_order_id IS NOT NULL"
    ).fetchall()
    assert children, "no backordered line was filled over three days"
    # each went out like any order (released or further), and its parent's line gave way
    assert {s for _, _, s in children} <= {
        "RELEASED",
        "PICKED",
        "SHIPPED",
        "DELIVERED",
        "INVOICED",
    }, children
    filled = conn.execute(
        "SELECT count(*) FROM orderflow.order_line WHERE status = 'BACKORDER_FILLED'"
    ).fetchone()[0]
    assert filled >= 1
