"""An intake poll that found nothing starts no processing run, and a send of releases that
sent nothing wakes no fulfilment run (dag.test against the sandbox and the store).

Regression (#15, the soak's settle phase): the portal and marketplace pulls emitted
``orders_received`` on every 5-minute run and ``send_releases`` emitted ``orders_released`` on
every processing run, so an idle stack chained order_processing → fulfilment_events runs back
to back and never became quiet. Their assets are now emitted through a ``when_any`` alias, only
when the run did something (the DAGs' own timetables still run them)."""

from datetime import timedelta

import pytest
from tests_support import START

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.sandbox]


def _announced(run_id: str, asset_name: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetEvent.source_run_id == run_id, AssetModel.name == asset_name)
            .count()
        )


def _run(dag_id):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag(dag_id).test()
    assert run.state == DagRunState.SUCCESS, dag_id
    return run


def test_polls_and_sends_announce_only_when_they_did_something(
    airflow_db, store, sandbox, monkeypatch
):
    from orderflow import masterdata
    from orderflow.integrations.systems import ErpHook, WmsHook

    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})
    masterdata.sync(store, {"erp": ErpHook(), "wms": WmsHook()}, full=True)
    first = _run("intake_portal")
    assert _announced(first.run_id, "orders_received") == 1
    again = _run("intake_portal")  # the feed is drained: nothing new
    assert _announced(again.run_id, "orders_received") == 0
    released = _run("order_processing")  # the portal's orders: releases sent
    sent = store.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'wms_release' AND status = 'sent'"
    ).fetchone()[0]
    assert sent > 0 and _announced(released.run_id, "orders_released") == 1
    idle = _run("order_processing")  # nothing left to send
    assert _announced(idle.run_id, "orders_released") == 0
