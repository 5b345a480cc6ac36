"""KPI tables: order facts and hourly / daily snapshots of every KPI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable

from orderflow.assets import ORDERS_PROCESSED
from orderflow.operators.operations import PublishKpiSnapshotsOperator, RefreshOrderFactsOperator

with DAG(
    dag_id="publish_kpis",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("7 * * * *", timezone="UTC"), assets=ORDERS_PROCESSED
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "kpi"],
    default_args={"owner": "orderflow-ops", "retries": 2, "retry_delay": timedelta(minutes=1)},
    doc_md="""
### KPI tables
Hourly (at :07) and after every order-processing run:
1. **refresh_order_facts** — `orderflow.order_fact`: one row per order with the first time it
   reached each milestone (from the event log), its human touches (from the audit trail),
   first-pass and perfect-order flags.
2. **publish_kpi_snapshots** — every KPI of `orderflow.kpis` (cycle times p50/p90, first-pass
   release rate, touchless rate, release → pick, perfect order rate, manual touches per
   order, exception volume, time to resolve and SLA attainment per category, expedited
   freight cost per cause, invoice dispute rate, integration failure rate per partner and
   endpoint) for the last 48 hours by hour and the last 35 days by day, overall and per
   dimension, into `orderflow.kpi_snapshot`. Older periods are kept for trends.
""",
):
    refresh = RefreshOrderFactsOperator(task_id="refresh_order_facts")
    publish = PublishKpiSnapshotsOperator(task_id="publish_kpi_snapshots")
    refresh >> publish
