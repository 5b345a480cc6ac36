"""Replay outbound dead letters (manual, form): role-restricted and audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from orderflow.operators.replay import ReplayDeadLettersOperator, SendReplayedOperator

OUTBOX_ACTIONS = [
    "",
    "wms_release",
    "wms_release_cancel",
    "erp_invoice",
    "edi_855",
    "edi_856",
    "edi_810",
    "edi_997",
    "edi_ta1",
    "webhook",
    "email",
]

with DAG(
    dag_id="outbox_replay",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["orderflow", "replay"],
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "outbox_ids": Param(
            "",
            type="string",
            title="Outbox ids",
            description="Comma or space separated (orderflow outbox attention lists them). "
            "Or leave empty and choose an action and/or a window below.",
        ),
        "action": Param("", enum=OUTBOX_ACTIONS, title="Action (all dead letters of it)"),
        "window_from": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Dead-lettered from",
        ),
        "window_to": Param(
            None, type=["null", "string"], format="date-time", title="… until before"
        ),
        "reason": Param("", type="string", minLength=3, title="Reason (audited)"),
        "dry_run": Param(False, type="boolean", title="Dry run (only list the rows)"),
    },
    doc_md="""
### Replay outbound dead letters

Trigger with the form: the outbox ids to replay — or an action (e.g. `erp_invoice`) and/or
a window of when the rows were dead-lettered — and a reason. **replay_dead_letters** puts
every selected `dead` (or checked `unknown`) row back in the queue under its idempotency key
(receivers that deduplicate by key answer a repeat with their first answer), with one audit
row per row (`outbox_replay`: who, their roles, why); **send_replayed** sends them at once.

Only a user holding the owner or escalation role of `integration_failure` in the routing
rules (`integration`; `operations_manager` always) may replay
(`include/access/roles.yaml`). Anyone else is refused with the role that is missing, the
refusal is audited (`outbox_replay_refused`) and nothing else changes. `dry_run` lists the
rows only. The same function serves `orderflow outbox replay` and the UI
(`orderflow.integrations.outbox.replay_dead_letters`).
""",
):
    replay = ReplayDeadLettersOperator(
        task_id="replay_dead_letters",
        outbox_ids="{{ params.outbox_ids }}",
        action="{{ params.action }}",
        window_from="{{ params.window_from or '' }}",
        window_to="{{ params.window_to or '' }}",
        reason="{{ params.reason }}",
        dry_run="{{ params.dry_run }}",
    )
    replay >> SendReplayedOperator(task_id="send_replayed", replay_task_id="replay_dead_letters")
