"""What a carry runs: the stage tasks after a stage, then the sender; and the first task
after them that it does not run (the partition is then passed on to it)."""

from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from orderflow.operators.outbox import SendOutboxOperator
from orderflow.operators.processing import (
    AllocateInventoryOperator,
    CheckCreditOperator,
    ClaimOrdersOperator,
    PublishRunStatusOperator,
    ValidateOrdersOperator,
)

PARTITION = {"label": "P01 · 2 orders · A…", "order_ids": ["A", "B"]}


def _dag(between=None):
    with DAG("t_carry", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        claim = ClaimOrdersOperator(task_id="claim_orders")
        validate = ValidateOrdersOperator.partial(task_id="validate_orders").expand(
            partition=claim.output
        )
        credit = CheckCreditOperator.partial(task_id="check_credit").expand(
            partition=validate.output
        )
        allocate = AllocateInventoryOperator.partial(task_id="allocate_inventory").expand(
            partition=credit.output
        )
        send = SendOutboxOperator(task_id="send_releases", actions=["wms_release"])
        publish = PublishRunStatusOperator(task_id="publish_status").as_teardown(setups=claim)
        allocate >> send >> publish
        if between is not None:
            allocate >> EmptyOperator(task_id=between)
    return dag


def _carried_by_validate(dag):
    validate = dag.get_task("validate_orders").unmap({"partition": PARTITION})
    ops, left = validate._downstream()
    return [op.task_id for op in ops], left and left.task_id, ops


def test_a_carry_runs_every_stage_after_it_then_the_sender():
    names, left, ops = _carried_by_validate(_dag())
    assert names == ["check_credit", "allocate_inventory", "send_releases"]
    assert left is None  # nothing after them needs the partition: none is passed on
    assert all(op.partition == PARTITION for op in ops[:-1])  # each for this partition


def test_a_task_after_the_stages_that_a_carry_does_not_run_gets_the_partition():
    names, left, _ = _carried_by_validate(_dag(between="notify_team"))
    assert names == ["check_credit", "allocate_inventory", "send_releases"]
    assert left == "notify_team"


def test_a_carried_stage_renders_its_templates_but_not_the_partitions_order_ids():
    from orderflow.operators.processing import _render_all_but_the_partition

    odd = {"label": "P01", "order_ids": ["A", "{{ 40 + 2 }}"]}  # an id is data, never a template
    validate = _dag().get_task("validate_orders").unmap({"partition": odd})
    credit = validate._downstream()[0][0]
    credit.store_conn_id = "{{ params.store }}"
    _render_all_but_the_partition(credit, {"params": {"store": "orderflow_db"}})
    assert credit.store_conn_id == "orderflow_db"
    assert credit.partition is odd
