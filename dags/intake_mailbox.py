"""Mailbox intake: wait (deferred, no worker slot) for e-mailed purchase orders (PDF or image attachments), then ingest them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import IngestDropFolderOperator

with DAG(
    dag_id="intake_mailbox",
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
### Mailbox intake

Waits in the triggerer (deferred: no worker slot held while idle) for e-mailed purchase orders (PDF or image attachments) in
the `mailbox_default` folder; when files are there, ingests them: each is stored raw, parsed, and
ends **created**, **quarantined** (reason, where, what to do — replay with `intake_replay`)
or **duplicate** (pointer to the original), then moves to the folder's `.archive/<outcome>/`.
Orders whose extracted fields fall below the confidence threshold are created **on hold**
with a `low_confidence_extraction` exception: a person confirms them against the attachment.
A run that sees no file within 4 minutes ends *skipped*. Emits `orders_received`.
""",
):
    wait = FileSensor(
        task_id="wait_for_emails",
        fs_conn_id="mailbox_default",
        filepath="*",
        deferrable=True,
        poke_interval=15,
        timeout=240,
        soft_fail=True,
    )
    ingest = IngestDropFolderOperator(
        task_id="ingest_emails",
        channel="email",
        inbox_conn_id="mailbox_default",
        outlets=[ORDERS_RECEIVED],
    )
    wait >> ingest
