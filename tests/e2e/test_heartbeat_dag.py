"""The first DAG end to end: dag.test() against a migrated Airflow DB and the real store."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db]


def test_heartbeat_dag_writes_one_row_for_its_run(airflow_db, store_url, store):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag("platform_heartbeat")
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    row = store.execute(
        "SELECT run_id, attempts FROM orderflow.heartbeat WHERE dag_id = 'platform_heartbeat' "
        "AND run_id = %s",
        (run.run_id,),
    ).fetchone()
    assert row == (run.run_id, 1)
