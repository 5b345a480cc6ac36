"""Operations operators: KPI snapshots and the exception desk's timers. Thin glue over
``orderflow.kpis`` and ``orderflow.desk``; XCom carries counts only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.operators.processing import _ctx, _rule_book
from orderflow.settings import STORE_CONN_ID


class _StoreOperator(BaseOperator):
    template_fields: Sequence[str] = ("store_conn_id",)

    def __init__(self, *, store_conn_id: str = STORE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> Any:
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            out = self.run(conn, context)
        finally:
            conn.close()
        self.log.info("%s: %s", self.task_id, out)
        return out

    def run(self, conn: Any, context: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class RefreshOrderFactsOperator(_StoreOperator):
    """Recompute ``order_fact`` (one row per order: milestones, touches, perfect order)."""

    ui_color = "#efe7f7"

    def run(self, conn, context):
        from orderflow import kpis
        from orderflow.store import order_facts

        kpis.refresh_facts(conn)
        return {"orders": order_facts.count(conn)}


class PublishKpiSnapshotsOperator(_StoreOperator):
    """Recompute hourly (last ``hours``) and daily (last ``days``) snapshots of every KPI.

    :param hours: hourly periods to recompute. :param days: daily periods to recompute.
    """

    ui_color = "#efe7f7"

    def __init__(self, *, hours: int = 48, days: int = 35, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hours = hours
        self.days = days

    def run(self, conn, context):
        from datetime import UTC, datetime

        from orderflow import kpis

        return kpis.publish(conn, now=datetime.now(UTC), hours=self.hours, days=self.days)


class RunSlaTimersOperator(_StoreOperator):
    """Notify owners of exceptions nearing their SLA; escalate breached ones (once each)."""

    ui_color = "#f7e7e7"

    def run(self, conn, context):
        from orderflow import desk

        return desk.run_timers(conn, _rule_book(context)).as_xcom()


class RetryTransientExceptionsOperator(_StoreOperator):
    """Send orders held for a transient failure back to the stage that failed (up to the
    routing rules' ``transient_retries``)."""

    ui_color = "#f7e7e7"

    def run(self, conn, context):
        from orderflow import desk

        return desk.retry_transient(
            conn, _rule_book(context), _ctx(context, claimed=False)
        ).as_xcom()


class WatchOperationsOperator(_StoreOperator):
    """Open (and resolve) exceptions for orders stalled in a stage past the fulfilment
    rules' limits, and for outbox actions that stopped delivering (``orderflow.watch``)."""

    ui_color = "#f7e7e7"

    def run(self, conn, context):
        from orderflow import watch

        return watch.run(conn, _rule_book(context)).as_xcom()
