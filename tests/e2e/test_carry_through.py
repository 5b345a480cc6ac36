"""A small batch is carried through every stage in its ``validate_orders`` task (the
``carry_through_orders`` param of ``order_processing``): each stage in its own transaction, its
events naming its own task, then its releases sent as ``send_releases`` sends them (keyed,
``orders_released`` announced); the later stage tasks, mapped over what the stage before
passed on, get no instance for it. A stage that fails while carried is left to its own task
(its partition passed on), with its retries and holds. Real DAGs (``dag.test``),
the real store and the sandbox's services; the failure is the sandbox's fault injection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from tests_support_ai import run_dag

from orderflow.store import db

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]

STAGE_TASKS = ["validate_orders", "check_credit", "allocate_inventory", "plan_shipments",
               "release_to_wms"]  # fmt: skip


@pytest.fixture(scope="module")
def processed(store_url, sandbox, day_dir, airflow_db, day_snapshot):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    yield conn
    conn.close()


def _trickle(conn, n: int) -> list[str]:
    """``n`` new orders: copies of orders released without a hold (each line one more, its
    own PO: not a duplicate), taken in through intake (RECEIVED)."""
    from orderflow.domain.models import Order
    from orderflow.store import intake

    rows = conn.execute(
        """
        SELECT o.canonical FROM orderflow."order" o
         WHERE o.status = 'RELEASED' AND o.parent_order_id IS NULL
           AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception e
                            WHERE e.order_id = o.order_id)
           AND NOT EXISTS (SELECT 1 FROM orderflow."order" c
                            WHERE c.order_id LIKE 'CARRY-%%' AND c.customer_id = o.customer_id)
         ORDER BY o.order_id LIMIT %s
        """,
        (n,),
    ).fetchall()
    assert len(rows) == n
    ids = []
    for (canonical,) in rows:
        order = Order.model_validate(canonical)
        tag = uuid.uuid4().hex[:8].upper()
        copy = order.model_copy(
            update={
                "order_id": f"CARRY-{tag}",
                "po_number": f"CARRY-{tag}",
                "lines": [
                    ln.model_copy(update={"quantity": ln.quantity + Decimal(1)})
                    for ln in order.lines
                ],
                "provenance": order.provenance.model_copy(
                    update={"received_at": datetime.now(UTC)}
                ),
            }
        )
        with db.transaction(conn):
            intake.insert_orders(conn, [copy], message_id=None, actor_id="test.intake")
        ids.append(copy.order_id)
    return ids


def _xcoms(run_id: str, key: str = "counts") -> dict:
    """(task_id, map_index) → the XCom ``key`` of the run's task instances: a stage's counts
    by default, ``return_value`` for what it passed on (the claim's partitions)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (x.task_id, x.map_index): XComModel.deserialize_value(x)
            for x in session.query(XComModel).filter(
                XComModel.run_id == run_id, XComModel.key == key
            )
        }


def _instances(run_id: str) -> dict[str, list[tuple[int, str]]]:
    """task_id → (map_index, state) of the run's instances."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        out: dict[str, list[tuple[int, str]]] = {}
        for ti in session.query(TaskInstance).filter(TaskInstance.run_id == run_id):
            out.setdefault(ti.task_id, []).append((ti.map_index, ti.state))
        return out


def _events(conn, ids: list[str], run_id: str) -> dict[str, list[tuple[str, str]]]:
    """Per order: (to_status, task_id) of the run's events, in order."""
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    for oid, to_status, task_id in conn.execute(
        "SELECT order_id, to_status, task_id FROM orderflow.order_event "
        "WHERE order_id = ANY(%s) AND run_id = %s ORDER BY event_id",
        (ids, run_id),
    ):
        out[oid].append((to_status, task_id))
    return out


def _statuses(conn, ids):
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)', (ids,)
        ).fetchall()
    )


def test_a_trickle_is_released_by_its_validate_task_and_no_later_stage_task_starts(processed):
    conn = processed
    ids = _trickle(conn, 2)
    run = run_dag("order_processing")
    assert set(_statuses(conn, ids).values()) == {"RELEASED"}
    out = _xcoms(run.run_id)
    assert len(_xcoms(run.run_id, "return_value")[("claim_orders", -1)]) == 1  # one partition
    validate = out[("validate_orders", 0)]
    assert validate["passed"] == 2
    carried = validate["carried"]
    assert [c["task_id"] for c in carried] == [*STAGE_TASKS[1:], "send_releases"]
    assert all(c["passed"] == 2 and c["execute_s"] > 0 for c in carried[:-1])
    send = carried[-1]  # when it sent, for the bench's sends/s
    assert send["sent"] > 0 and send["started_at"] <= send["ended_at"]
    # validate_orders passed nothing on: the stage tasks after it had no partition to map
    # over, so none started (an empty expansion: one `skipped` instance, no process)
    assert ("validate_orders", 0) not in _xcoms(run.run_id, "return_value")
    tis = _instances(run.run_id)
    for task_id in STAGE_TASKS[1:]:
        assert tis[task_id] == [(-1, "skipped")], task_id
    # each decision names the stage task whose configuration made it, as without carrying
    expected = list(zip(["VALIDATED", "CREDIT_OK", "ALLOCATED", "READY", "RELEASED"],
                        STAGE_TASKS, strict=True))  # fmt: skip
    for oid, events in _events(conn, ids, run.run_id).items():
        assert [e for e in events if e[1] in STAGE_TASKS] == expected, oid
    # their releases (WMS, carrier tenders, 855s) went out from validate_orders, once each
    # under its key, and send_releases found nothing of theirs left to send
    queued, sent, keys = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'sent'), "
        "count(DISTINCT idempotency_key) FROM orderflow.outbox WHERE order_id = ANY(%s) "
        "AND action IN ('wms_release', 'carrier_tender', 'edi_855')",
        (ids,),
    ).fetchone()
    assert queued == sent == keys >= 2
    assert carried[-1]["sent"] >= sent
    assert _xcoms(run.run_id, "return_value")[("send_releases", -1)].get("sent", 0) == 0
    # and orders_released was announced by the task that sent them
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        announced = {
            e.source_task_id
            for e in session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id)
            if e.asset.name == "orders_released"
        }
    assert announced == {"validate_orders"}


def test_with_carrying_off_every_stage_decides_in_its_own_task(processed):
    conn = processed
    ids = _trickle(conn, 2)
    run = run_dag("order_processing", carry_through_orders=0)
    assert set(_statuses(conn, ids).values()) == {"RELEASED"}
    out, passed = _xcoms(run.run_id), _xcoms(run.run_id, "return_value")
    for task_id in STAGE_TASKS:
        stage = out[(task_id, 0)]
        assert (stage["orders"], stage["passed"]) == (2, 2), task_id
        assert "carried" not in stage
        assert sorted(passed[(task_id, 0)]["order_ids"]) == sorted(ids), task_id


def test_a_stage_failing_while_carried_is_left_to_its_own_task(processed, sandbox, tmp_path):
    """The credit service answers 503 to everything: the carry stops at check_credit without
    failing validate_orders; check_credit's own task holds the orders ``integration_failure``
    once its retries are spent (none here), as it does without carrying."""
    from airflow.sdk import DAG

    from orderflow.operators.processing import (
        AllocateInventoryOperator,
        CheckCreditOperator,
        ClaimOrdersOperator,
        PublishRunStatusOperator,
        ValidateOrdersOperator,
    )

    conn = processed
    ids = _trickle(conn, 1)
    with DAG("test_carry_through_fault", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        claim = ClaimOrdersOperator(task_id="claim_orders")
        validate = ValidateOrdersOperator.partial(
            task_id="validate_orders", carry_through=10
        ).expand(partition=claim.output)
        credit = CheckCreditOperator.partial(task_id="check_credit", retries=0).expand(
            partition=validate.output
        )
        allocate = AllocateInventoryOperator.partial(task_id="allocate_inventory").expand(
            partition=credit.output
        )
        publish = PublishRunStatusOperator(task_id="publish_status").as_teardown(setups=claim)
        claim >> validate >> credit >> allocate >> publish
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(tmp_path))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs serialized DAGs
    sandbox.client.put(
        "/admin/faults", json={"seed": 7, "rules": [{"prefix": "/credit", "error_rate": 1.0}]}
    ).raise_for_status()
    try:
        run = dag.test()
    finally:
        sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    out = _xcoms(run.run_id)
    assert out[("validate_orders", 0)]["passed"] == 1
    validate = out[("validate_orders", 0)]
    assert "carried" not in validate  # stopped at the first carried stage, and says why
    assert validate["carry_stopped"]["task_id"] == "check_credit"
    assert validate["carry_stopped"]["error"].startswith("ExternalUnavailable")
    # it passed its partition on, so check_credit had an instance to take it
    assert _xcoms(run.run_id, "return_value")[("validate_orders", 0)]["order_ids"] == ids
    assert out[("check_credit", 0)]["held"] == {"integration_failure": 1}
    assert _statuses(conn, ids) == {ids[0]: "ON_HOLD"}
    held = conn.execute(
        "SELECT category FROM orderflow.order_exception WHERE order_id = %s AND status = 'open'",
        (ids[0],),
    ).fetchall()
    assert held == [("integration_failure",)]


def test_a_run_that_claims_a_full_batch_announces_that_orders_wait(processed, tmp_path):
    """``batch_limit`` orders claimed: more may be waiting, and ``orders_waiting`` (which
    ``order_processing`` is scheduled on) starts the next run at once instead of at the next
    schedule. A run that claimed fewer announces nothing."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetEvent
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from orderflow.assets import ORDERS_WAITING
    from orderflow.operators.processing import ClaimOrdersOperator, PublishRunStatusOperator

    conn = processed
    ids = _trickle(conn, 2)
    runs = {}
    for limit in (1, 10):
        with DAG(f"test_claim_full_batch_{limit}", schedule=None,
                 start_date=datetime(2026, 1, 1)) as dag:  # fmt: skip
            claim = ClaimOrdersOperator(
                task_id="claim_orders", batch_limit=limit, announces=ORDERS_WAITING
            )
            claim >> PublishRunStatusOperator(task_id="publish_status").as_teardown(
                setups=claim
            )  # gives the claims back
        bag = DagBag(dag_folder=str(tmp_path))
        bag.bag_dag(dag)
        sync_bag_to_db(bag, "dags-folder", None)
        runs[limit] = dag.test()
        claimed = _xcoms(runs[limit].run_id, "return_value")[("claim_orders", -1)]
        assert sum(len(p["order_ids"]) for p in claimed) == min(limit, len(ids))
    with create_session() as session:
        announced = {
            limit: [
                e.asset.name
                for e in session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id)
            ]
            for limit, run in runs.items()
        }
    assert announced == {1: ["orders_waiting"], 10: []}
    run_dag("order_processing")  # the trickle processed, as the next run would
    assert set(_statuses(conn, ids).values()) == {"RELEASED"}
