"""Inside-sales CSV intake: wait (deferred, no worker slot) for inside-sales CSV uploads, then ingest them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import IngestDropFolderOperator

with DAG(
    dag_id="intake_csv",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "intake"],
    default_args={
        "owner": "orderflow-intake",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
    doc_md="""
### Inside-sales CSV intake

Waits in the triggerer (deferred: no worker slot held while idle) for inside-sales CSV uploads in
the `csv_inbox_default` folder; when files are there, ingests them: each is stored raw, parsed, and
ends **created**, **quarantined** (reason, where, what to do — replay with `intake_replay`)
or **duplicate** (pointer to the original), then moves to the folder's `.archive/<outcome>/`.
A run that sees no file within 4 minutes ends *skipped*. Emits `orders_received`.
""",
):
    wait = FileSensor(
        task_id="wait_for_csv_files",
        fs_conn_id="csv_inbox_default",
        filepath="*",
        deferrable=True,
        poke_interval=15,
        timeout=240,
        soft_fail=True,
    )
    ingest = IngestDropFolderOperator(
        task_id="ingest_csv_files",
        channel="csv",
        inbox_conn_id="csv_inbox_default",
        outlets=[ORDERS_RECEIVED],
    )
    wait >> ingest
