"""What the soak's settle phase counts as work still going on (``soak.busy_tasks``), run on
PostgreSQL against the two columns of Airflow's ``task_instance`` and ``dag_run`` it reads.

Regression: an intake DAG's file sensor runs every 5 minutes (to defer, then to time out
when no file came), and with five intake DAGs it kept a quiet stack "busy" for most of every
poll, so the short soak reported "did not settle". Waiting for files is not work — the files
are counted as files waiting; a task moving orders or messages is."""

from __future__ import annotations

import psycopg
import pytest

from orderflow.dev import soak

pytestmark = [pytest.mark.db]


@pytest.fixture
def metadata(fresh_database):
    url = fresh_database.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE task_instance (dag_id text, task_id text, state text)")
        conn.execute("CREATE TABLE dag_run (dag_id text, state text)")
        yield conn


def _busy(conn) -> dict[str, int]:
    return soak.busy_tasks(lambda sql, params: conn.execute(sql, params).fetchall())


def _tasks(conn, *rows) -> None:
    conn.execute("DELETE FROM task_instance")
    for row in rows:
        conn.execute("INSERT INTO task_instance VALUES (%s, %s, %s)", row)


def test_waiting_for_files_is_not_work(metadata):
    conn = metadata
    for dag_id in soak.INTAKE_DAGS:
        for state in ("running", "queued", "scheduled", "deferred"):
            _tasks(conn, (dag_id, "wait_for_files", state))
            assert _busy(conn) == {}, (dag_id, state)
    # an intake run queued behind its own waiting sensor: not counted either
    conn.execute("INSERT INTO dag_run VALUES ('intake_csv', 'queued')")
    assert _busy(conn) == {}


def test_tasks_that_move_orders_and_messages_are_work(metadata):
    conn = metadata
    _tasks(
        conn,
        ("intake_csv", "ingest_csv_files", "running"),
        ("order_processing", "validate_orders", "queued"),
        ("fulfilment_events", "apply_events", "up_for_retry"),
        ("intake_csv", "wait_for_csv_files", "running"),
        ("order_approvals", "find_exceptions_to_approve", "running"),  # housekeeping
        ("order_processing", "plan_shipments", "success"),
    )
    conn.execute("INSERT INTO dag_run VALUES ('order_processing', 'queued')")
    assert _busy(conn) == {
        "queued run order_processing": 1,
        "task fulfilment_events.apply_events up_for_retry": 1,
        "task intake_csv.ingest_csv_files running": 1,
        "task order_processing.validate_orders queued": 1,
    }


def test_the_real_scheduler_bench_counts_only_intake_and_processing(metadata):
    """``orderflow bench`` waits for the day's work only (intake and order processing):
    fulfilment and housekeeping run on their schedules forever."""
    conn = metadata
    _tasks(
        conn,
        ("fulfilment_events", "apply_events", "running"),
        ("order_processing", "validate_orders", "running"),
        ("intake_edi", "ingest_edi_files", "queued"),
    )
    day = [*soak.INTAKE_DAGS, "order_processing"]
    busy = soak.busy_tasks(lambda sql, params: conn.execute(sql, params).fetchall(), work=day)
    assert busy == {
        "task intake_edi.ingest_edi_files queued": 1,
        "task order_processing.validate_orders running": 1,
    }
