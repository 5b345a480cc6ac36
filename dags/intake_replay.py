"""Replay quarantined channel messages after a fix (manual, with a form)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from orderflow.assets import ORDERS_RECEIVED
from orderflow.operators.intake import ReplayMessagesOperator

with DAG(
    dag_id="intake_replay",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["orderflow", "replay", "intake"],
    default_args={"owner": "orderflow-intake", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "message_ids": Param(
            "",
            type="string",
            title="Message ids",
            description="Quarantined message ids, separated by commas or spaces. "
            "Find them with `orderflow intake quarantined`.",
        ),
        "channel": Param(
            None,
            type=["null", "string"],
            title="Or: every quarantined message of",
            enum=[None, "edi", "portal", "email", "csv", "marketplace"],
        ),
        "reason": Param("", type="string", title="Reason (kept in the audit log)"),
    },
    doc_md="""
### Replay quarantined messages

Use after fixing what made a message fail (partner set-up, master data, a parser fix):
trigger with the message ids (or a channel to replay all of its quarantined messages). Each
replay is a new message (`replay_of` → the original) with its own single outcome; the
original keeps its history. Who triggered it and why go to the audit log.
To replay with corrected file content, use `orderflow intake replay ID --file FIXED`.
""",
):
    ReplayMessagesOperator(
        task_id="replay_messages",
        message_ids="{{ params.message_ids }}",
        channel="{{ params.channel or '' }}",
        reason="{{ params.reason }}",
        outlets=[ORDERS_RECEIVED],
    )
