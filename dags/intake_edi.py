"""EDI intake: X12 850 files per trading partner, 997/TA1 back through the outbox."""

from __future__ import annotations

from airflow.sdk import DAG

from orderflow.operators.intake_tasks import (
    INTAKE_DAG_KWARGS,
    drop_folder_doc,
    drop_schedule,
    wait_and_ingest,
)
from orderflow.operators.outbox import SendOutboxOperator

with DAG(
    dag_id="intake_edi",
    schedule=drop_schedule(name="edi_files", inbox_conn_id="edi_inbox_default", filepath="*/*"),
    doc_md=drop_folder_doc(
        "EDI intake",
        "X12 850 files (one sub-folder per trading partner)",
        "edi_inbox_default",
        "Every received group is acknowledged (997, TA1 for envelope problems) through the "
        "outbox: keyed, sent once.\n",
    ),
    **INTAKE_DAG_KWARGS,
):
    wait, ingest = wait_and_ingest(
        name="edi_files", channel="edi", inbox_conn_id="edi_inbox_default", filepath="*/*"
    )
    ingest >> SendOutboxOperator(
        task_id="send_edi_acknowledgements", actions=["edi_997", "edi_ta1"]
    )
