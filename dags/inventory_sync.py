"""Inventory from the WMS every two minutes: the changes since the last read, through the
same quality gate as the hourly master-data sync (which still re-reads everything daily)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable

from orderflow.operators.masterdata import SyncMasterDataOperator

with DAG(
    dag_id="inventory_sync",
    schedule=CronTriggerTimetable("*/2 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "master-data"],
    default_args={"owner": "orderflow-data", "retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md="""
### Inventory sync (every 2 minutes)

Reads the WMS's inventory positions changed since the last read (the same changed-since
cursor, overlap and Great Expectations suite as `masterdata_sync`, which also runs hourly and
in full once a day) and publishes them: allocation decides on stock at most a few minutes
old. The WMS still confirms at release: a release it cannot cover (409) re-routes its order —
the refused lines wait as backorders, or the order is processed again on the stock as now
synced (`orderflow.refusals`). Emits nothing: order processing runs every 5 minutes and fills
backorders from what arrived. On a fresh stack it is skipped until the first full sync
(`masterdata_sync`) has run: checked against an empty catalogue, every position would fail.
Rerun or clear freely.
""",
):
    SyncMasterDataOperator(
        task_id="sync_inventory",
        entities=["inventory"],
        full_refresh_every=None,
        build_docs=False,
    )
