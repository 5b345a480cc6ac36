"""EDI intake: wait (deferred, no worker slot) for X12 850 files in the EDI drop folder (one sub-folder per trading partner), then ingest them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import IngestDropFolderOperator, SendOutboxOperator

with DAG(
    dag_id="intake_edi",
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
### EDI intake

Waits in the triggerer (deferred: no worker slot held while idle) for X12 850 files in the EDI drop folder (one sub-folder per trading partner) in
the `edi_inbox_default` folder; when files are there, ingests them: each is stored raw, parsed, and
ends **created**, **quarantined** (reason, where, what to do — replay with `intake_replay`)
or **duplicate** (pointer to the original), then moves to the folder's `.archive/<outcome>/`.
A run that sees no file within 4 minutes ends *skipped*. Emits `orders_received`.
""",
):
    wait = FileSensor(
        task_id="wait_for_edi_files",
        fs_conn_id="edi_inbox_default",
        filepath="*/*",
        deferrable=True,
        poke_interval=15,
        timeout=240,
        soft_fail=True,
    )
    ingest = IngestDropFolderOperator(
        task_id="ingest_edi_files",
        channel="edi",
        inbox_conn_id="edi_inbox_default",
        outlets=[ORDERS_RECEIVED],
    )
    send_acks = SendOutboxOperator(
        task_id="send_edi_acknowledgements", actions=["edi_997", "edi_ta1"]
    )
    wait >> ingest >> send_acks
