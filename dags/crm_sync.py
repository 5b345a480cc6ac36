"""CRM: account context in, pricing approvals out, the account owners' decisions back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable, Param, chain

from orderflow.operators.crm import (
    ApplyCrmDecisionsOperator,
    RequestCrmApprovalsOperator,
    SyncAccountContextOperator,
)
from orderflow.operators.outbox import SendOutboxOperator

with DAG(
    dag_id="crm_sync",
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "master-data", "exceptions"],
    default_args={"owner": "orderflow-data", "retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Extract every CRM record instead of the changes since the last sync.",
        )
    },
    doc_md="""
### CRM: account context and pricing approvals

Every 5 minutes (Connection `crm_default`):

1. **sync_account_context** — accounts (owner, team), special price agreements and quotes
   (changes since the last sync, with an overlap; idempotent upserts) → `crm_account`,
   `crm_price_agreement`, `crm_quote`. Order validation reads them: a price a valid quote
   or agreement explains is no mismatch (the line records which document), a price from an
   expired quote is held `pricing_mismatch` with cause `quote_expired`.
2. **request_crm_approvals** — every open pricing hold (pricing mismatch, expired
   contract) of a customer with a CRM account gets the account's team and owner and one
   approval request in the outbox (key `crm-approval:<exception id>`; validation queues
   them itself, this sweeps up the rest).
3. **send_crm_requests** — delivers the requests to the CRM (exactly once by key) and
   records the CRM's request id.
4. **apply_crm_decisions** — reads the CRM's decision feed after its cursor and applies
   each decision once: *approved* resolves the hold as a price override (audited as
   `crm:<user>`; the order resumes on the next processing run), *rejected* keeps the hold
   and escalates it to the exception's escalation role.
""",
):
    chain(
        SyncAccountContextOperator(
            task_id="sync_account_context", full_refresh="{{ params.full_refresh }}"
        ),
        RequestCrmApprovalsOperator(task_id="request_crm_approvals"),
        SendOutboxOperator(task_id="send_crm_requests", actions=["crm_approval_request"]),
        ApplyCrmDecisionsOperator(task_id="apply_crm_decisions"),
    )
