"""The drop-folder intake DAGs' deferrable sensors, as parsed (they need the metadata
database to parse: here, not in tests/dags)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.db]


def test_drop_folder_sensors_retry_within_seconds(airflow_db):
    """Airflow 3.3.2 takes a deferrable sensor resumed right after deferring for killed
    externally (apache/airflow#67287) and marks it up_for_retry; the retry finds the file at
    once, so it must not wait the intake DAGs' 15 s doubling backoff (a dropped order was
    stored 30 s late)."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.sensors.filesystem import FileSensor

    from orderflow.settings import DAGS_DIR

    bag = DagBag(str(DAGS_DIR))
    sensors = [
        task
        for dag_id in ("intake_edi", "intake_csv", "intake_mailbox")
        for task in bag.get_dag(dag_id).tasks
        if isinstance(task, FileSensor)
    ]
    assert len(sensors) == 3
    for task in sensors:
        assert task.deferrable and task.retries >= 1, task.task_id
        assert task.retry_delay <= timedelta(seconds=2) and not task.retry_exponential_backoff
