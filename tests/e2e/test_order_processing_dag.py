"""The order-processing DAG end to end (dag.test) on a generated day landed through intake:
clean orders are released without a touch, each defective one is held with the category the
ground truth names, and rerunning the DAG releases, reserves and acknowledges nothing twice
(the sandbox WMS and EDI gateway count)."""

import pytest
from tests_support import land_day, score

from orderflow.store import db

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.sandbox]


def _run(dag_id="order_processing"):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag(dag_id)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    return run


def _counts(store):
    return {
        "reservations": store.execute("SELECT count(*) FROM orderflow.reservation").fetchone()[0],
        "shipments": store.execute("SELECT count(*) FROM orderflow.shipment").fetchone()[0],
        "outbox": dict(
            store.execute("SELECT action, count(*) FROM orderflow.outbox GROUP BY 1").fetchall()
        ),
        "events": store.execute("SELECT count(*) FROM orderflow.order_event").fetchone()[0],
    }


@pytest.fixture(scope="module")
def processed(store_url, sandbox, day_dir, airflow_db):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    land_day(conn, sandbox)
    run = _run()
    yield conn, run
    conn.close()


def test_clean_orders_release_first_pass_and_defects_hold_with_their_category(processed, day_dir):
    conn, _ = processed
    result = score(conn, day_dir)
    assert result["clean"] > 200
    assert result["first_pass_released"] == result["clean"]
    for category, c in result["per_category"].items():
        precision = c["tp"] / max(1, c["tp"] + c["fp"])
        recall = c["tp"] / max(1, c["tp"] + c["fn"])
        assert precision >= 0.98 and recall >= 0.98, (category, c)
    # the only orders not judged are low-confidence e-mails, quarantined at intake
    assert all(m[2] == "no order" for m in result["mismatches"]), result["mismatches"][:5]
    held = conn.execute(
        "SELECT count(*) FROM orderflow.order_exception WHERE order_id IS NOT NULL "
        "AND (owner_role IS NULL OR reason = '' OR sla_due_at IS NULL)"
    ).fetchone()[0]
    assert held == 0


def test_every_decision_records_rule_versions_and_the_task_that_made_it(processed):
    conn, run = processed
    rows = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE rule_set_version LIKE '%%@%%'), "
        "count(*) FILTER (WHERE run_id = %s AND task_id IS NOT NULL) "
        "FROM orderflow.order_event WHERE actor_id LIKE 'order_processing.%%'",
        (run.run_id,),
    ).fetchone()
    assert rows[0] > 0 and rows[0] == rows[1] == rows[2]


def test_mapped_tasks_are_bounded_and_named_by_their_orders(processed):
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    _, run = processed
    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.run_id == run.run_id, TaskInstance.dag_id == "order_processing")
            .all()
        )
    mapped = [ti for ti in tis if ti.map_index >= 0]
    per_stage = {}
    for ti in mapped:
        per_stage[ti.task_id] = per_stage.get(ti.task_id, 0) + 1
    assert set(per_stage) == {
        "validate_orders",
        "check_credit",
        "allocate_inventory",
        "plan_shipments",
        "release_to_wms",
    }
    assert all(1 <= n <= 16 for n in per_stage.values()), per_stage
    assert all((ti.rendered_map_index or "").startswith("P") for ti in mapped)


def test_released_orders_reach_the_wms_once_and_reruns_change_nothing(processed, sandbox):
    conn, _ = processed
    released = conn.execute(
        "SELECT count(*) FROM orderflow.shipment WHERE status = 'released'"
    ).fetchone()[0]
    sent = conn.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'wms_release' AND status = 'sent'"
    ).fetchone()[0]
    state = sandbox.client.get("/admin/state").json()
    assert released == sent == state["releases"] > 0
    edi_acks = conn.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'edi_855' AND status = 'sent'"
    ).fetchone()[0]
    assert edi_acks > 0
    before, wms_before = _counts(conn), state["releases"]
    edi_before = state["outbound_edi"]
    _run()  # a second run: nothing new to do
    state = sandbox.client.get("/admin/state").json()
    assert _counts(conn) == before
    assert state["releases"] == wms_before and state["outbound_edi"] == edi_before
    # no reservation exceeds stock, and allocated == live reservations per position
    bad = conn.execute(
        """
        SELECT count(*) FROM orderflow.inventory_position p
         WHERE p.allocated <> coalesce((SELECT sum(quantity) FROM orderflow.reservation r
                                         WHERE r.item_id = p.item_id AND r.dc_id = p.dc_id
                                           AND r.status IN ('held', 'released')), 0)
            OR p.allocated > p.on_hand
        """
    ).fetchone()[0]
    assert bad == 0
