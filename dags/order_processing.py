"""Order processing: claim → validate → credit → allocate → plan → release → send, in
bounded partitions (dynamic task mapping over order partitions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, chain

from orderflow.assets import (
    MASTER_DATA_PUBLISHED,
    ORDERS_PROCESSED,
    ORDERS_RECEIVED,
    ORDERS_RELEASED,
    ORDERS_WAITING,
)
from orderflow.operators.outbox import SendOutboxOperator
from orderflow.operators.processing import (
    MAP_INDEX_TEMPLATE,
    AllocateInventoryOperator,
    CheckCreditOperator,
    ClaimOrdersOperator,
    PlanShipmentsOperator,
    PublishRunStatusOperator,
    ReleaseToWmsOperator,
    ValidateOrdersOperator,
)

with DAG(
    dag_id="order_processing",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
        assets=(ORDERS_RECEIVED | MASTER_DATA_PUBLISHED | ORDERS_WAITING),
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    # overlapping runs never claim the same order; with 2 at most, an order landing while
    # two trickle runs were finishing waited 13.6 s queued (docs/performance.md)
    max_active_runs=4,
    max_active_tasks=16,
    tags=["orderflow", "processing"],
    default_args={"owner": "orderflow-ops", "retries": 2, "retry_delay": timedelta(seconds=10)},
    params={
        "max_partitions": Param(
            16,
            type="integer",
            minimum=1,
            maximum=64,
            title="Partitions per stage",
            description="Upper bound of mapped task instances per stage.",
        ),
        "min_partition_orders": Param(
            2500,
            type="integer",
            minimum=1,
            title="Orders per partition (at least)",
            description="A batch is cut into more partitions only past this many orders "
            "each. A partition is one process carrying its orders through every stage; "
            "more partitions than the workers have cores only add task start-ups and "
            "contention (a 4,700-order backlog on 2 cores: 13.6 s in 2 partitions, 19.3 s "
            "in 4, 53.7 s in 16 stage by stage).",
        ),
        "carry_through_orders": Param(
            20000,
            type="integer",
            minimum=0,
            title="Carry a partition through (orders, at most)",
            description="A partition of at most this many orders (by default every one: "
            "a run claims at most 20,000) goes through every stage in its validate task, "
            "each stage in its own transaction, as that stage's task is configured, and its "
            "releases are sent from there; the stage tasks after it get no instance for it. "
            "No task hop and no wait for the slowest partition between stages. A stage "
            "that fails there is left to its own task, with its retries and holds. 0: every "
            "stage in its own task (so with one order per task).",
        ),
        "one_order_per_task": Param(
            False,
            type="boolean",
            title="One order per task (benchmark only)",
            description="The naive fan-out, for comparison: slow, capped at 1,024 orders.",
        ),
    },
    doc_md="""
### Order processing

Every 5 minutes, and whenever intake lands orders, master data is published or a run left
orders waiting:

1. **claim_orders** — sends orders whose master-data holds were fixed back to validation,
   claims every processable order, up to 20,000 a run (two overlapping runs never take the
   same one; a run that claims a full 20,000 announces `orders_waiting`, which starts the
   next run at once), and cuts them into at most 16 partitions of at least 2,500 orders (a
   customer is never split; up to 2,500 orders are one partition). Each mapped task below
   is named by the orders it carries.
2. **validate_orders** → **check_credit** → **allocate_inventory** → **plan_shipments** →
   **release_to_wms**: one stage per partition, one transaction per stage and partition.
   Orders that need a person go **ON_HOLD** with a typed exception (category, reason, owner
   role, SLA) — everything else flows. Each decision records the rule-set versions it used
   (`include/rules/`). A partition is carried through all five in its **validate_orders**
   task (`carry_through_orders`: every partition by default), and its releases are sent
   from there (as **send_releases** sends them, keyed): a trickle reaches the WMS seconds
   after it lands and a partition never waits for a slower one between stages. Each stage
   task is mapped over the partitions the one before passed on, so a carried partition has
   no instance after its validate task (a stage with none at all shows `skipped`). A stage
   that fails there is left to its own task (the partition is passed on to it), with its
   retries and holds. Each instance's XCom `counts` says what it did, carried stages
   included; its `return_value` is the partition it passed on.
3. **send_releases** — delivers the queued WMS releases, WMS release cancels (customers'
   changes after release) and 855 acknowledgements (outbox, idempotency keys per order, DC
   and release version); it runs even when no order was claimed.
4. **publish_status** — gives the claims back and logs where the run's orders stand.

Rerun or clear any task freely: a stage only acts on orders still in its input status, and
every side effect is keyed, so nothing is reserved, released or acknowledged twice. External
services (credit, tax, screening) are retried with backoff; past the budget the partition's
orders are held `integration_failure` (dead letter kept) instead of failing the run.
To act on one order, use `order_reprocess`.
""",
):
    claim = ClaimOrdersOperator(
        task_id="claim_orders",
        max_partitions="{{ params.max_partitions }}",
        min_partition_orders="{{ params.min_partition_orders }}",
        one_order_per_task="{{ params.one_order_per_task }}",
        announces=ORDERS_WAITING,  # a full batch: the next run at once for the rest
    )
    # Each stage is mapped over the partitions the stage before passed on: a partition
    # carried through every stage in its validate task has no instance after it.
    stages, partitions = [], claim.output
    for op, task_id in (
        (ValidateOrdersOperator, "validate_orders"),
        (CheckCreditOperator, "check_credit"),
        (AllocateInventoryOperator, "allocate_inventory"),
        (PlanShipmentsOperator, "plan_shipments"),
        (ReleaseToWmsOperator, "release_to_wms"),
    ):
        stage = op.partial(
            task_id=task_id,
            map_index_template=MAP_INDEX_TEMPLATE,
            # the naive fan-out compared against is one task per order *per stage*
            carry_through="{{ 0 if params.one_order_per_task else params.carry_through_orders }}",
            announces=ORDERS_RELEASED,  # a carried partition's releases sent (send_releases')
        ).expand(partition=partitions)
        stages.append(stage)
        partitions = stage.output
    send = SendOutboxOperator(
        task_id="send_releases",
        actions=["wms_release", "wms_release_cancel", "carrier_tender", "edi_855"],
        limit=50_000,
        # also when no order was claimed: release cancels queued by the claim still go out
        trigger_rule="none_failed",
        announces=ORDERS_RELEASED,  # only when something was sent
    )
    # A teardown: gives the claims back whatever happened, without hiding a failed stage.
    publish = PublishRunStatusOperator(
        task_id="publish_status", outlets=[ORDERS_PROCESSED]
    ).as_teardown(setups=claim)
    chain(claim, *stages, send, publish)
