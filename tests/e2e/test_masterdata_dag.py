"""The master-data sync DAG end to end (dag.test) against the sandbox and the store: a manual
full refresh publishes everything through the quality gate, opens exceptions for the labelled
defects, flags their rows, returns a small summary to XCom and emits the asset; the next
(scheduled-style) run is incremental."""

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.sandbox]

LABEL_TABLE = {
    "ship_to": "ship_to",
    "item": "item",
    "xref": "customer_item_xref",
    "contract": "price_contract",
}


@pytest.fixture
def env(sandbox, monkeypatch, tmp_path):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ORDERFLOW_DQ_DOCS_DIR", str(tmp_path / "dq-docs"))
    return tmp_path / "dq-docs"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    return DagBag(str(DAGS_DIR)).get_dag("masterdata_sync")


def _summary(run):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="sync_master_data")
            .one()
        )
        return ti.xcom_pull(task_ids="sync_master_data", session=session)


def test_the_inventory_sync_waits_for_the_first_full_sync(airflow_db, store, sandbox, env):
    """The 2-minute inventory sync can start on a fresh stack before the first full sync:
    checked against an empty catalogue, every position would fail "item exists" and "DC
    exists" (a fresh ``make run`` opened 20,000 exceptions that way). It is skipped, and
    opens nothing, until the full sync has run (this module's first test: its store is
    fresh)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from orderflow import masterdata
    from orderflow.settings import DAGS_DIR

    assert not masterdata.ready(store)
    run = DagBag(str(DAGS_DIR)).get_dag("inventory_sync").test()
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id="inventory_sync", run_id=run.run_id).one()
        assert ti.state == "skipped"
    assert store.execute("SELECT count(*) FROM orderflow.order_exception").fetchone()[0] == 0


def test_masterdata_dag_full_then_incremental(airflow_db, store, sandbox, day_dir, env):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    dag = _dag()
    assert dag.params["full_refresh"] is False
    run = dag.test(run_conf={"full_refresh": True})
    assert run.state == DagRunState.SUCCESS

    world = json.loads((day_dir / "world.json").read_text())
    labelled = {
        (LABEL_TABLE[d["entity"]], d["id"].replace(":", "|", 1))
        for d in world["master_data_defects"]
    }
    open_now = set(
        store.execute(
            "SELECT entity_type, entity_id FROM orderflow.order_exception WHERE status = 'open' "
            "AND category = 'master_data_quality' AND order_id IS NULL"
        ).fetchall()
    )
    assert open_now == labelled
    suites = {
        r[0]
        for r in store.execute(
            "SELECT DISTINCT suite FROM orderflow.dq_result WHERE run_id = %s", (run.run_id,)
        )
    }
    assert len(suites) == 10
    assert store.execute("SELECT count(*) FROM orderflow.ship_to WHERE NOT dq_passed").fetchone()[
        0
    ] == sum(1 for d in world["master_data_defects"] if d["entity"] == "ship_to")

    summary = _summary(run)
    assert summary["full_refresh"] is True
    assert summary["entities"]["contracts"]["rows"] == len(world["contracts"])
    assert 0 < summary["entities"]["ship_tos"]["pass_rate"] < 1
    assert summary["failed_suites"] and summary["seconds"] > 0
    assert summary["docs"].startswith("file://") and (env / "index.html").exists()
    assert len(json.dumps(summary)) < 8000  # counts, never data

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "orderflow://store/master_data")
            .filter(AssetEvent.source_run_id == run.run_id)
            .count()
        )
    assert events == 1

    # A run without conf (as the schedule runs it): incremental, nothing new, still green.
    # (A fresh DAG object: dag.test(run_conf=...) leaves the conf in the object's params.)
    second = _dag().test()
    assert second.state == DagRunState.SUCCESS
    summary = _summary(second)
    assert summary["full_refresh"] is False
    assert summary["entities"]["contracts"]["changed"] == 0
    assert summary["entities"]["contracts"]["rows"] < len(world["contracts"])
    assert summary["exceptions_opened"] == 0


def test_inventory_sync_reads_what_the_wms_changed_minutes_ago(airflow_db, store, sandbox, env):
    """``inventory_sync`` (every 2 minutes): a WMS change reaches the store by the next run,
    not the next hourly sync."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    bag = DagBag(str(DAGS_DIR))
    if not store.execute("SELECT count(*) FROM orderflow.inventory_position").fetchone()[0]:
        assert bag.get_dag("masterdata_sync").test().state == DagRunState.SUCCESS
    pos = sandbox.client.get("/wms/inventory").json()["items"]
    target = next(p for p in pos if p["available"] >= 5)
    sandbox.client.put("/admin/clock", json={"advance_minutes": 1}).raise_for_status()
    sandbox.client.post(
        "/wms/reservations",
        json={
            "item_id": target["item_id"],
            "dc_id": target["dc_id"],
            "quantity": 5,
            "reference": "another system",
        },
    ).raise_for_status()
    run = bag.get_dag("inventory_sync").test()
    assert run.state == DagRunState.SUCCESS
    wms_reserved = store.execute(
        "SELECT wms_reserved FROM orderflow.inventory_position WHERE item_id = %s AND dc_id = %s",
        (target["item_id"], target["dc_id"]),
    ).fetchone()[0]
    assert wms_reserved == target["reserved"] + 5
