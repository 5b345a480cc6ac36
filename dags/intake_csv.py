"""Inside-sales CSV intake: order exports from the reps' tools."""

from __future__ import annotations

from airflow.sdk import DAG

from orderflow.operators.intake_tasks import (
    INTAKE_DAG_KWARGS,
    drop_folder_doc,
    drop_schedule,
    wait_and_ingest,
)

with DAG(
    dag_id="intake_csv",
    schedule=drop_schedule(name="csv_files", inbox_conn_id="csv_inbox_default"),
    doc_md=drop_folder_doc(
        "Inside-sales CSV intake",
        "CSV exports (any known column layout)",
        "csv_inbox_default",
        "A bad row holds back only its own order, named by row and column; formula-like "
        "values are refused (CSV injection).\n",
    ),
    **INTAKE_DAG_KWARGS,
):
    wait_and_ingest(name="csv_files", channel="csv", inbox_conn_id="csv_inbox_default")
