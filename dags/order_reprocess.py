"""Reprocess one order from the UI: revalidate, reallocate, release or cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, chain

from orderflow.operators.decisions import PrepareReprocessOperator
from orderflow.operators.outbox import SendOutboxOperator
from orderflow.operators.processing import (
    AllocateInventoryOperator,
    CheckCreditOperator,
    PlanShipmentsOperator,
    PublishRunStatusOperator,
    ReleaseToWmsOperator,
    ValidateOrdersOperator,
)

with DAG(
    dag_id="order_reprocess",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["orderflow", "replay"],
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "order_id": Param("", type="string", minLength=1, title="Order id"),
        "action": Param(
            "revalidate",
            enum=["revalidate", "reallocate", "release", "cancel"],
            title="Action",
            description="revalidate: after fixing data, run every check again; reallocate: "
            "give stock back and allocate again; release: continue an order on hold "
            "(overrides its approvable exceptions: only for a user holding the owner or "
            "escalation role of each, as on the exception desk); cancel: give stock back "
            "and cancel.",
        ),
        "reason": Param("", type="string", minLength=3, title="Reason (audited)"),
    },
    doc_md="""
### Reprocess one order

Trigger with the form: order id, action and a reason. **prepare_order** applies the action
(exceptions resolved with the reason, stock given back where needed, audit row with who
and why) and claims the order for this run; then the same stage operators as
`order_processing` take it as far as it can go, and **send_releases** delivers what was
queued. Refused with a clear message when the action does not fit the order's state (e.g.
releasing an order held for an unknown item: fix the data and revalidate).

**release** of an order on hold overrides its exceptions (a credit limit, a compliance
screening …): the user who triggered the run must hold the owner or escalation role of
every open exception (`include/access/roles.yaml`, `operations_manager` covers all) —
the same rule as the exception desk and the Required Actions of `order_approval`. Anyone
else is refused with the role that is missing, and the refusal is audited.

A whole window of orders (received between two times, by channel, customer, status or hold
category): `order_reprocess_window` — a dry run first, then the same action per order.
""",
):
    prepare = PrepareReprocessOperator(
        task_id="prepare_order",
        order_id="{{ params.order_id }}",
        action="{{ params.action }}",
        reason="{{ params.reason }}",
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
    # A teardown: it runs whatever happened, and does not hide a refused or failed run.
    publish = PublishRunStatusOperator(task_id="publish_status").as_teardown(setups=prepare)
    chain(prepare, *stages, send, publish)
