"""The wiring every drop-folder intake DAG shares (EDI, mailbox, CSV): one place for the
defaults, so the DAG files stay configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orderflow.settings import switched_on

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


#: ``ORDERFLOW_DROP_WATCH=off`` leaves the drop folders' Assets without a watcher: intake
#: runs on its 5-minute schedule only
DROP_WATCH_ENABLED = switched_on("ORDERFLOW_DROP_WATCH")


def drop_schedule(
    *, name: str, inbox_conn_id: str, filepath: str = "*", every: timedelta = timedelta(minutes=5)
) -> Any:
    """Every ``every`` (the safety net) or as soon as a file lands: the folder's Asset
    (``<name>_dropped``) is updated by a :class:`~orderflow.operators.drop_trigger.
    DropFolderTrigger` watching the same folder and glob as the run's sensor."""
    from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, DeltaTriggerTimetable

    from orderflow.operators.drop_trigger import DropFolderTrigger

    watchers = (
        [
            AssetWatcher(
                name=f"{name}_watch",
                trigger=DropFolderTrigger(fs_conn_id=inbox_conn_id, filepath=filepath),
            )
        ]
        if DROP_WATCH_ENABLED
        else []
    )
    dropped = Asset(name=f"{name}_dropped", uri=f"orderflow://drop/{name}", watchers=watchers)
    return AssetOrTimeSchedule(timetable=DeltaTriggerTimetable(every), assets=dropped)


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
        # in the triggerer, a listing each time: a file that lands while a run waits is
        # taken within 2 s (the folder watcher starts a run when none waits)
        poke_interval=2,
        timeout=240,
        soft_fail=True,
        # Airflow 3.3.2 race (apache/airflow#67287; fixed upstream, not in this release): a
        # file landing within a second or two of the sensor deferring fires the trigger, and
        # the resumed try is queued before the scheduler reads the executor's "success" of
        # the deferring process; it then takes the try as killed externally and marks it
        # up_for_retry. The retry finds the file at once: let it come in seconds, not after
        # the DAG's 15 s backoff (measured: one single of twenty stored 30 s after its drop).
        retry_delay=timedelta(seconds=1),
        retry_exponential_backoff=0,
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
{extra}Runs every 5 minutes and as soon as a file lands (a watcher in the triggerer lists the
folder every second and updates the folder's Asset). A run that sees no file within 4 minutes
ends *skipped*. Emits `orders_received`.
"""
