"""Reprocess a window of orders (manual, form): a dry run first, then the real run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param, chain

from orderflow.operators.outbox import SendOutboxOperator
from orderflow.operators.processing import (
    AllocateInventoryOperator,
    CheckCreditOperator,
    PlanShipmentsOperator,
    PublishRunStatusOperator,
    ReleaseToWmsOperator,
    ValidateOrdersOperator,
)
from orderflow.operators.replay import PrepareReprocessWindowOperator


def _applied(dry_run: str) -> bool:
    """Go on to the stages only after a real run (a dry run writes nothing, sends nothing)."""
    return str(dry_run).strip().lower() not in ("true", "1", "yes")


with DAG(
    dag_id="order_reprocess_window",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["orderflow", "replay"],
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "window_from": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Orders received from",
            description="Required.",
        ),
        "window_to": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="… until before",
            description="Required.",
        ),
        "channel": Param(
            "", enum=["", "edi", "portal", "email", "csv", "api", "marketplace"], title="Channel"
        ),
        "customer_id": Param("", type="string", title="Customer id"),
        "status": Param("", type="string", title="Order status (e.g. ON_HOLD)"),
        "hold_category": Param(
            "", type="string", title="Open exception category (e.g. credit_limit)"
        ),
        "action": Param(
            "revalidate",
            enum=["revalidate", "reallocate", "release", "cancel"],
            title="Action",
            description="As in order_reprocess, applied to each order of the window.",
        ),
        "reason": Param("", type="string", minLength=3, title="Reason (audited)"),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="List the orders and what would happen to each; write nothing. "
            "Untick to apply.",
        ),
    },
    doc_md="""
### Reprocess a window of orders

Trigger with the form: a range of `received_at`, optional filters (channel, customer,
status, the category of an open hold), an action (revalidate / reallocate / release /
cancel) and a reason. **dry_run is on by default**: **prepare_orders** lists the orders it
would touch and what would happen to each (from → to, the exceptions it would close, or why
it would be refused) in its log and XCom, and writes nothing.

Untick `dry_run` to apply: each order goes through the same function as `order_reprocess`
(`decisions.reprocess`), one transaction each, with its checks, role rules and audit —
**release** of a held order overrides its exceptions and is refused (and audited) for a user
without the owner or escalation role of each. The orders applied are claimed for this run
and taken through the same stages as `order_processing`; **send_releases** delivers what
was queued. One more audit row (`reprocess_window`) records the window, who and why.
CLI: `orderflow reprocess --from … --to … --action … [--apply] --reason …`.
""",
):
    prepare = PrepareReprocessWindowOperator(
        task_id="prepare_orders",
        window_from="{{ params.window_from or '' }}",
        window_to="{{ params.window_to or '' }}",
        channel="{{ params.channel }}",
        customer_id="{{ params.customer_id }}",
        status="{{ params.status }}",
        hold_category="{{ params.hold_category }}",
        action="{{ params.action }}",
        reason="{{ params.reason }}",
        dry_run="{{ params.dry_run }}",
    )
    check_applied = ShortCircuitOperator(
        task_id="check_applied",
        python_callable=_applied,
        op_args=["{{ params.dry_run }}"],
    )
    stages = [
        op(task_id=task_id, partition=prepare.output)
        for op, task_id in (
            (ValidateOrdersOperator, "validate_order"),
            (CheckCreditOperator, "check_credit"),
            (AllocateInventoryOperator, "allocate_inventory"),
            (PlanShipmentsOperator, "plan_shipments"),
            (ReleaseToWmsOperator, "release_to_wms"),
        )
    ]
    send = SendOutboxOperator(
        task_id="send_releases", actions=["wms_release", "carrier_tender", "edi_855"]
    )
    publish = PublishRunStatusOperator(task_id="publish_status").as_teardown(setups=prepare)
    chain(prepare, check_applied, *stages, send, publish)
