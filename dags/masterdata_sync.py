"""Master-data sync + quality gate: CRM account context, ERP/WMS → Great Expectations → store
(flagged)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable, Param

from orderflow.assets import MASTER_DATA_PUBLISHED
from orderflow.operators.crm import SyncAccountContextOperator
from orderflow.operators.masterdata import SyncMasterDataOperator

with DAG(
    dag_id="masterdata_sync",
    # Hourly at :17, and at once on a fresh install (order processing waits for a first sync).
    schedule=CronTriggerTimetable("17 * * * *", timezone="UTC", run_immediately=True),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "master-data"],
    default_args={
        "owner": "orderflow-data",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    params={
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Extract every record instead of the changes since the last sync.",
        )
    },
    doc_md="""
### Master-data sync + quality gate

Hourly (at :17) and once at start, pulls customers, ship-tos, items, customer part numbers, price contracts,
credit accounts, carriers, EDI partners, DCs (ERP) and inventory (WMS) — the changes since
the last sync, or everything with **Full refresh** (and automatically once a day). Each entity
runs its Great Expectations suite before it is published:

- every expectation's result → `orderflow.dq_result` (pass rates: `orderflow.dq_pass_rate_daily`,
  `orderflow.dq_suite_run`; freshness: `orderflow.master_data_freshness`);
- each failing record → one open **master_data_quality** exception (owner role and SLA from
  the category), its row published with `dq_passed = false`; order validation holds only
  the orders that use it. Records the store would reject are withheld (the stored version
  stays, flagged). Fix a record upstream and the next sync auto-resolves its exception;
- GX data docs → `<state dir>/dq-docs/index.html` (URI in the task's XCom).

First, **sync_account_context** brings the CRM's accounts (owner, team), special price
agreements and quotes (Connection `crm_default`; see `crm_sync`), so that the first
validation after a sync already knows the prices they explain; the ERP/WMS sync runs even
when the CRM does not answer.

A failing entity never fails the run. Emits `master_data_published`. Rerun or clear freely:
upserts are idempotent, a run's results replace its earlier attempt's, and the changed-since
cursors only advance after a publish committed. Connections: `erp_default`, `wms_default`,
`crm_default`, `orderflow_db`.
""",
):
    account_context = SyncAccountContextOperator(
        task_id="sync_account_context", full_refresh="{{ params.full_refresh }}"
    )
    master_data = SyncMasterDataOperator(
        task_id="sync_master_data",
        full_refresh="{{ params.full_refresh }}",
        outlets=[MASTER_DATA_PUBLISHED],
        # the ERP's data is published whether or not the CRM answered
        trigger_rule="all_done",
    )
    account_context >> master_data
