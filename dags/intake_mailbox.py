"""Mailbox intake: e-mailed purchase orders (PDF or image attachments)."""

from __future__ import annotations

from airflow.sdk import DAG

from orderflow.operators.intake_tasks import (
    INTAKE_DAG_KWARGS,
    drop_folder_doc,
    drop_schedule,
    wait_and_ingest,
)

with DAG(
    dag_id="intake_mailbox",
    schedule=drop_schedule(name="emails", inbox_conn_id="mailbox_default"),
    doc_md=drop_folder_doc(
        "Mailbox intake",
        "e-mails (`.eml`) with PDF or image purchase orders",
        "mailbox_default",
        "Orders whose extracted fields fall below the confidence threshold are created **on "
        "hold** with a `low_confidence_extraction` exception: a person confirms them against "
        "the attachment.\n",
    ),
    **INTAKE_DAG_KWARGS,
):
    wait_and_ingest(name="emails", channel="email", inbox_conn_id="mailbox_default")
