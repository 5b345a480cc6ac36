"""The wiring every drop-folder intake DAG shares (EDI, mailbox, CSV): one place for the
defaults, so the DAG files stay configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: every intake DAG (the schedule stays in each DAG file): retried with backoff — a flaky
#: share or API must not need a person; one run at a time per channel
INTAKE_DAG_KWARGS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1,
    "tags": ["orderflow", "intake"],
    "default_args": {
        "owner": "orderflow-intake",
        "retries": 3,
        # 15 s, doubling: a task lost with its worker is back within ≈ 65 s (heartbeat 40 s)
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
    },
}


def wait_and_ingest(*, name: str, channel: str, inbox_conn_id: str, filepath: str = "*"):
    """A deferrable wait for files (no worker slot while idle; skipped after 4 minutes
    without a file, inside the 5-minute schedule) followed by their ingestion.
    Returns ``(wait, ingest)``; ``ingest`` emits ``orders_received``."""
    from airflow.providers.standard.sensors.filesystem import FileSensor

    from orderflow.assets import ORDERS_RECEIVED
    from orderflow.operators.intake import IngestDropFolderOperator

    wait = FileSensor(
        task_id=f"wait_for_{name}",
        fs_conn_id=inbox_conn_id,
        filepath=filepath,
        deferrable=True,
        poke_interval=15,
        timeout=240,
        soft_fail=True,
    )
    ingest = IngestDropFolderOperator(
        task_id=f"ingest_{name}",
        channel=channel,
        inbox_conn_id=inbox_conn_id,
        outlets=[ORDERS_RECEIVED],
    )
    wait >> ingest
    return wait, ingest


def drop_folder_doc(title: str, what: str, conn_id: str, extra: str = "") -> str:
    return f"""
### {title}

Waits in the triggerer (deferred: no worker slot held while idle) for {what} in the
`{conn_id}` folder; when files are there, ingests them: each is stored raw, parsed, and
ends **created**, **quarantined** (reason, where, what to do — replay with `intake_replay`)
or **duplicate** (pointer to the original), then moves to the folder's `.archive/<outcome>/`.
{extra}A run that sees no file within 4 minutes ends *skipped*. Emits `orders_received`.
"""
