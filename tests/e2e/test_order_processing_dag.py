"""The order-processing DAG end to end (dag.test) on a generated day landed through intake:
clean orders are released without a touch, each defective one is held with the category the
ground truth names, and rerunning the DAG releases, reserves and acknowledges nothing twice
(the sandbox WMS and EDI gateway count)."""

from datetime import datetime

import pytest
from tests_support import score

from orderflow.store import db

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]


def _run(dag_id="order_processing", conf=None):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag(dag_id)
    run = dag.test(run_conf=conf)
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
def processed(store_url, sandbox, day_dir, airflow_db, day_snapshot):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    yield conn, day_snapshot  # its run_id: the order_processing run over the landed day
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
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    _, run = processed
    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.run_id == run.run_id, TaskInstance.dag_id == "order_processing")
            .all()
        )
        values = {
            (x.task_id, x.map_index, x.key): XComModel.deserialize_value(x)
            for x in session.query(XComModel).filter(
                XComModel.run_id == run.run_id, XComModel.dag_id == "order_processing"
            )
        }
    partitions = values[("claim_orders", -1, "return_value")]
    mapped = [ti for ti in tis if ti.map_index >= 0]
    assert 1 <= len(partitions) <= 16
    assert {ti.task_id for ti in mapped} == {"validate_orders"}  # every partition carried
    assert len(mapped) == len(partitions)
    assert all((ti.rendered_map_index or "").startswith("P") for ti in mapped)
    # the later stages had no partition passed on: each an empty expansion, no process
    later = ["check_credit", "allocate_inventory", "plan_shipments", "release_to_wms"]
    assert sorted((ti.task_id, ti.map_index, ti.state) for ti in tis if ti.task_id in later) == [
        (task_id, -1, "skipped") for task_id in sorted(later)
    ]
    # each stage instance records its counts and the seconds spent inside execute (the
    # real-scheduler bench's orders/s per stage), within the task instance's own time
    for ti in mapped:
        out = values[(ti.task_id, ti.map_index, "counts")]
        # every order of the instance's partition is decided or skipped, none twice
        assert out["orders"] + out["skipped"] == len(partitions[ti.map_index]["order_ids"])
        assert 0 < out["execute_s"] <= (ti.end_date - ti.start_date).total_seconds()
        assert [c["task_id"] for c in out["carried"]] == [*later, "send_releases"]
        # when each stage had committed (the bench's release time: events carry the start)
        ends = [datetime.fromisoformat(c["ended_at"]) for c in [out, *out["carried"][:-1]]]
        assert ti.start_date <= ends[0] and ends == sorted(ends) and ends[-1] <= ti.end_date
        assert (ti.task_id, ti.map_index, "return_value") not in values


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


# ---------------------------------------------------------------- human decisions


def _answer_hitl(choice, reason, user="jane.pricing", timeout=90, seen=None):
    """Stand in for a person answering in the UI: fill the waiting HITL request's response
    (what the API's PATCH .../hitlDetails does)."""
    import threading
    import time
    from datetime import UTC, datetime

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    def respond():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with create_session() as session:
                detail = _waiting_hitl(session)
                if detail is not None:
                    ti = session.get(TaskInstance, detail.ti_id, with_for_update=True)
                    if seen is not None:
                        seen["assigned_users"] = detail.assigned_users
                    detail.chosen_options = [choice]
                    detail.params_input = {"reason": reason}
                    detail.responded_by = {"id": user, "name": user}
                    detail.responded_at = datetime.now(UTC)
                    # the API's own resume path (PATCH .../hitlDetails does exactly this);
                    # under dag.test the trigger runs inline and reads the answer itself
                    if ti.state in (TaskInstanceState.AWAITING_INPUT, TaskInstanceState.DEFERRED):
                        handle_event_submit(
                            TriggerEvent(detail.as_resume_event_payload()),
                            task_instance=ti,
                            session=session,
                        )
                    return
            time.sleep(0.5)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread


def _waiting_hitl(session):
    """The HITL request of an order_approval task still waiting for its answer, if any."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import State

    return (
        session.query(HITLDetail)
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        .filter(
            HITLDetail.responded_at.is_(None),
            TaskInstance.dag_id == "order_approval",
            TaskInstance.state.not_in(list(State.finished)),
        )
        .first()
    )


def _approval_dag(watch_s=60.0, answer_poll_s=0.5):
    """order_approval as parsed, its trigger's intervals set for a test (operator params)."""
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag("order_approval")
    task = dag.get_task("decide_exception")
    task.watch_interval, task.answer_poll_interval = watch_s, answer_poll_s
    return dag


def _exception(conn, category):
    return conn.execute(
        "SELECT e.exception_id, e.order_id, e.line_no FROM orderflow.order_exception e "
        "JOIN orderflow.\"order\" o USING (order_id) WHERE e.category = %s AND e.status = 'open' "
        "AND o.status = 'ON_HOLD' ORDER BY e.exception_id LIMIT 1",
        (category,),
    ).fetchone()


def test_approvals_never_queue_behind_the_run_limit(processed):
    """Only as many approval runs as the window has room for are started (the triggered
    runs stay queued here: no scheduler runs them, so they keep their places)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    conn, _ = processed
    approvable = conn.execute(
        "SELECT count(*) FROM orderflow.order_exception WHERE status = 'open' "
        "AND category IN ('pricing_mismatch', 'credit_limit')"
    ).fetchone()[0]
    assert approvable > 2
    _run("order_approvals", {"approval_window": 2})
    _run("order_approvals", {"approval_window": 2})  # full: asks nobody
    asked = conn.execute(
        "SELECT exception_id FROM orderflow.order_exception WHERE approval_run_id IS NOT NULL"
    ).fetchall()
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "order_approval").count()
    assert len(asked) == 2 and runs == 2
    # The two asked first are the most urgent.
    from orderflow.domain.approvals import APPROVABLE, POST_RELEASE

    first = conn.execute(
        "SELECT exception_id FROM orderflow.order_exception WHERE order_id IS NOT NULL "
        "AND status = 'open' AND category = ANY(%s) ORDER BY sla_due_at, exception_id LIMIT 2",
        ([*APPROVABLE, *POST_RELEASE],),
    ).fetchall()
    assert sorted(asked) == sorted(first)


def test_approval_dag_run_limit_is_the_window(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import APPROVAL_WINDOW, DAGS_DIR

    bag = DagBag(str(DAGS_DIR))
    assert bag.get_dag("order_approval").max_active_runs == APPROVAL_WINDOW
    assert bag.get_dag("order_approvals").params["approval_window"] == APPROVAL_WINDOW


def test_the_scheduler_examines_every_run_that_can_be_running_in_one_loop(airflow_db, tmp_path):
    """Waiting approvals are running DAG runs, and Airflow's scheduler examines running runs
    in turn, ``max_dagruns_per_loop_to_schedule`` per loop. With more running runs than that
    (300 approvals waiting, as the window once allowed) every task-to-task hop of order
    processing waited 8-10 s for its run's turn. The stack must examine them all each loop:
    every approval the window allows plus every scheduled DAG's run limit, with room left
    for people's manual runs."""
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.dev.stack import Databases, component_env
    from orderflow.settings import APPROVAL_WINDOW, DAGS_DIR, SCHEDULER_RUNS_PER_LOOP

    bag = DagBag(str(DAGS_DIR))
    scheduled = sum(
        d.max_active_runs
        for d in bag.dags.values()
        if d.dag_id != "order_approval" and type(d.timetable).__name__ != "NullTimetable"
    )
    assert APPROVAL_WINDOW + scheduled + 16 <= SCHEDULER_RUNS_PER_LOOP
    env = component_env(
        Databases("postgresql://a/airflow", "postgresql://a/store", False), tmp_path
    )
    assert int(env["AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE"]) == (
        SCHEDULER_RUNS_PER_LOOP
    )


def test_approvals_are_dispatched_once_per_exception(processed):
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    conn, _ = processed
    _run("order_approvals")
    asked = conn.execute(
        "SELECT count(*), count(approval_run_id) FROM orderflow.order_exception "
        "WHERE status = 'open' AND category IN ('pricing_mismatch', 'credit_limit')"
    ).fetchone()
    assert asked[0] > 0 and asked[0] == asked[1]
    with create_session() as session:
        runs = {r.run_id for r in session.query(DagRun).filter(DagRun.dag_id == "order_approval")}
    asked_runs = {
        r
        for (r,) in conn.execute(
            "SELECT approval_run_id FROM orderflow.order_exception "
            "WHERE approval_run_id IS NOT NULL"
        )
    }
    assert asked_runs and asked_runs <= runs
    _run("order_approvals")  # nothing new to ask
    with create_session() as session:
        again = session.query(DagRun).filter(DagRun.dag_id == "order_approval").count()
    assert again == len(runs)


def test_a_price_override_through_human_in_the_loop_releases_the_order(processed):
    import json
    import os
    import tempfile

    conn, _ = processed
    exception_id, order_id, line_no = _exception(conn, "pricing_mismatch")
    roles = {
        "jane.pricing": ["pricing"],
        "sam.stock": ["inventory"],
        "olga": ["operations_manager"],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump({"users": roles}, f)
    os.environ["ORDERFLOW_ROLES_FILE"] = f.name
    seen = {}
    try:
        responder = _answer_hitl(
            "Approve", "customer's negotiated price, confirmed by phone", seen=seen
        )
        dag = _approval_dag()
        run = dag.test(
            run_conf={
                "exception_id": exception_id,
                "order_id": order_id,
                "owner_role": "pricing",
                "escalation_role": "pricing_manager",
            }
        )
        responder.join(5)
    finally:
        os.environ.pop("ORDERFLOW_ROLES_FILE")
    assert run.state == "success"
    # only the pricing role (and the operations manager) may answer this Required Action
    assert sorted(u["id"] for u in seen["assigned_users"]) == ["jane.pricing", "olga"]
    status, approvals = conn.execute(
        'SELECT status, approvals FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()
    assert status == "VALIDATED" and approvals == ["pricing_mismatch"]
    audit = conn.execute(
        "SELECT actor, action, reason, before->>'order_status', after->>'order_status' "
        "FROM orderflow.audit_log WHERE object_id = %s",
        (str(exception_id),),
    ).fetchall()
    assert audit == [
        (
            "jane.pricing",
            "approve_pricing_mismatch",
            "customer's negotiated price, confirmed by phone",
            "ON_HOLD",
            "VALIDATED",
        )
    ]
    _run()
    status = conn.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]
    assert status == "RELEASED"
    price, charged = conn.execute(
        "SELECT unit_price, contract_price FROM orderflow.order_line "
        "WHERE order_id = %s AND line_no = %s",
        (order_id, line_no),
    ).fetchone()
    assert price == charged  # the override: we charge the customer's price


def test_a_desk_resolution_ends_the_waiting_required_action_promptly(processed):
    """An exception approved at the desk while its Required Action waits: the waiting task
    ends (skipped, not failed) within a few of its watch intervals instead of its 3-day
    timeout, audited as ended by orderflow with who resolved it, and the run is over (its
    place in the approval window is free)."""
    import json
    import os
    import tempfile
    import threading
    import time

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from orderflow import decisions
    from orderflow.domain.approvals import APPROVE
    from orderflow.processing import RunContext

    conn, _ = processed
    exception_id, order_id, _ = conn.execute(
        "SELECT e.exception_id, e.order_id, e.line_no FROM orderflow.order_exception e "
        "JOIN orderflow.\"order\" o USING (order_id) WHERE e.category = 'pricing_mismatch' "
        "AND e.status = 'open' AND o.status = 'ON_HOLD' ORDER BY e.exception_id DESC LIMIT 1"
    ).fetchone()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump({"users": {"jane.pricing": ["pricing"], "olga": ["operations_manager"]}}, f)
    watch_s, bound_s = 2.0, 30.0
    marks: dict[str, float] = {}

    def the_desk():
        """Olga approves at the desk once the Required Action waits; if the task were still
        waiting long past the bound, answer it (so a failing test ends)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with create_session() as session:
                if _waiting_hitl(session) is not None:
                    break
            time.sleep(0.2)
        else:
            return
        with db.connect() as desk:
            ctx = RunContext(dag_id="orderflow_ui", run_id="ui__olga", task_id="desk")
            decisions.decide(
                desk, exception_id, APPROVE, actor="olga", reason="agreed by phone", ctx=ctx
            )
        marks["resolved"] = time.monotonic()
        time.sleep(bound_s * 3)
        if "ended" not in marks:
            _answer_hitl("Keep on hold", "the test gave up waiting", user="olga").join()

    os.environ["ORDERFLOW_ROLES_FILE"] = f.name
    try:
        desk = threading.Thread(target=the_desk, daemon=True)
        desk.start()
        run = _approval_dag(watch_s=watch_s, answer_poll_s=60).test(
            run_conf={
                "exception_id": exception_id,
                "order_id": order_id,
                "owner_role": "pricing",
                "escalation_role": "pricing_manager",
            }
        )
        marks["ended"] = time.monotonic()
    finally:
        os.environ.pop("ORDERFLOW_ROLES_FILE")
    assert "resolved" in marks, "the Required Action never waited"
    took = marks["ended"] - marks["resolved"]
    with create_session() as session:
        states = {
            ti.task_id: ti.state
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == "order_approval", TaskInstance.run_id == run.run_id
            )
        }
    assert states == {"decide_exception": "skipped", "apply_decision": "skipped"}, states
    assert run.state == "success"  # over: no longer one of the window's active runs
    assert took <= bound_s, f"the Required Action ended {took:.1f} s after the desk resolved it"
    ((actor, before, after, reason),) = conn.execute(
        "SELECT actor, before, after, reason FROM orderflow.audit_log "
        "WHERE object_id = %s AND action = 'end_required_action'",
        (str(exception_id),),
    ).fetchall()
    assert actor == "orderflow" and before["approval_run_id"] == run.run_id
    assert after["resolved_by"] == "olga" and after["status"] == "resolved"
    assert "olga" in reason and "nothing left to ask" in reason
    # the desk's approval stands: the order moved on, approved once
    status, approvals = conn.execute(
        'SELECT status, approvals FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()
    assert status == "VALIDATED" and approvals == ["pricing_mismatch"]


def test_reprocess_revalidates_a_fixed_order_and_refuses_what_cannot_be_overridden(
    processed, day_dir
):
    import json

    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    conn, _ = processed
    exception_id, order_id, line_no = _exception(conn, "unknown_item")
    dag = DagBag(str(DAGS_DIR)).get_dag("order_reprocess")
    refused = dag.test(
        run_conf={"order_id": order_id, "action": "release", "reason": "just ship it"}
    )
    assert refused.state == "failed"  # an unknown item cannot be overridden
    # a person corrects the line: the item the customer meant
    cust, po = conn.execute(
        'SELECT customer_id, po_number FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()
    sub = next(
        s
        for s in map(json.loads, (day_dir / "orders.jsonl").read_text().splitlines())
        if s["customer_id"] == cust and s["po_number"] == po
    )
    true_item = next(ln["item_id"] for ln in sub["lines"] if ln["line_no"] == line_no)
    conn.execute(
        "UPDATE orderflow.order_line SET item_id = %s WHERE order_id = %s AND line_no = %s",
        (true_item, order_id, line_no),
    )
    run = dag.test(
        run_conf={"order_id": order_id, "action": "revalidate", "reason": "line corrected"}
    )
    assert run.state == "success"
    status, touches = conn.execute(
        'SELECT status, manual_touches FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()
    assert status == "RELEASED" and touches == 1
    resolution = conn.execute(
        "SELECT resolution, resolved_by FROM orderflow.order_exception WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()
    assert resolution[0] == "fixed"


def test_reprocess_cancel_gives_the_stock_back(processed):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    conn, _ = processed
    order_id = conn.execute(
        "SELECT order_id FROM orderflow.\"order\" WHERE status = 'ON_HOLD' LIMIT 1"
    ).fetchone()[0]
    dag = DagBag(str(DAGS_DIR)).get_dag("order_reprocess")
    run = dag.test(run_conf={"order_id": order_id, "action": "cancel", "reason": "customer call"})
    assert run.state == "success"
    row = conn.execute(
        'SELECT status, claimed_by_run FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()
    assert row == ("CANCELLED", None)
    assert (
        conn.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s AND status = 'open'",
            (order_id,),
        ).fetchone()[0]
        == 0
    )


def test_fixed_master_data_releases_exactly_the_orders_that_depend_on_it(processed, sandbox):
    """#5: an order held for a failing item flows once the item is fixed upstream and the next
    sync passes; an order held for a record nobody fixed stays held."""
    from orderflow.integrations.systems import ErpHook, WmsHook
    from orderflow.operators.masterdata import sync_with_gate

    conn, _ = processed
    held = conn.execute(
        """
        SELECT e.order_id, e.details->>'entity_type', e.details->>'entity_id'
          FROM orderflow.order_exception e JOIN orderflow."order" o USING (order_id)
         WHERE e.category = 'master_data_quality' AND e.status = 'open' AND o.status = 'ON_HOLD'
        """
    ).fetchall()
    weightless = {
        eid
        for (eid,) in conn.execute(
            "SELECT entity_id FROM orderflow.order_exception WHERE order_id IS NULL "
            "AND status = 'open' AND entity_type = 'item' AND reason LIKE '%%weight_positive%%'"
        )
    }
    fixed = [(o, eid) for o, et, eid in held if et == "item" and eid in weightless]
    untouched = [o for o, et, eid in held if (o, eid) not in fixed]
    assert fixed and untouched, held  # the generated day holds both kinds
    for _, item_id in fixed:
        sandbox.client.patch(
            f"/admin/master/items/{item_id}", json={"weight_kg": 1.25}
        ).raise_for_status()
    sync_with_gate(
        conn, {"erp": ErpHook(), "wms": WmsHook()}, run_id="fix-1", full=True, build_docs=False
    )
    before = dict(conn.execute('SELECT order_id, status FROM orderflow."order"').fetchall())
    _run()
    after = dict(conn.execute('SELECT order_id, status FROM orderflow."order"').fetchall())
    for order_id, _ in fixed:
        assert after[order_id] == "RELEASED", order_id
        resolution = conn.execute(
            "SELECT resolution FROM orderflow.order_exception WHERE order_id = %s "
            "AND category = 'master_data_quality'",
            (order_id,),
        ).fetchone()[0]
        assert resolution == "auto_resolved"
    for order_id in untouched:
        assert after[order_id] == "ON_HOLD"
    # of the orders on hold, exactly the fixed ones moved (an order an earlier test of this
    # module took off hold — a desk approval — is processed by the same run, as it should be)
    moved = {o for o in before if before[o] == "ON_HOLD" and after[o] != before[o]}
    assert moved == {o for o, _ in fixed}
    # the run may also have filled lines waiting for stock: new orders are only those
    new = set(after) - set(before)
    assert new == {
        o
        for (o,) in conn.execute(
            'SELECT order_id FROM orderflow."order" WHERE parent_order_id IS NOT NULL'
        )
        if o in new
    }
