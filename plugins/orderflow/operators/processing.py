"""Order-processing operators: classic ``BaseOperator`` subclasses a data team can extend.

Each stage operator takes one **partition** (``{"label": ..., "order_ids": [...]}``, built by
:class:`ClaimOrdersOperator`) and is applied with ``.partial(...).expand(partition=...)``, so the
number of mapped task instances per stage stays bounded however many orders arrive. A stage
returns the partition for the next stage to map over (None when it carried it through every
stage after it) and records its counts in the XCom ``counts``. XCom carries ids and counts
only; every decision lives in the store.

To add a stage, subclass :class:`OrderStageOperator`, set ``stage``/``input_status`` and
implement :meth:`OrderStageOperator.run` with a function of ``orderflow.processing``.
Transient failures of external systems are retried by Airflow (``retries`` with exponential
backoff); on the last attempt the partition's orders are held ``integration_failure`` and a
dead letter is kept, so a dead service never fails the run or loses an order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from orderflow.settings import STORE_CONN_ID

#: Airflow's [core] max_map_length default: more mapped instances fail the upstream task.
MAX_MAP_LENGTH = 1024

#: Label of a mapped task instance in the UI: which orders it carries.
MAP_INDEX_TEMPLATE = "{{ task.partition['label'] }}"

#: XCom key of a stage instance's counts (its return value is the partition it passes on).
COUNTS_KEY = "counts"


def _ctx(context: Any, claimed: bool = True):
    from orderflow.processing import RunContext

    ti = context["ti"]
    return RunContext(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None,
        claimed_by=ti.run_id if claimed else None,
    )


def _rule_book(context: Any):
    """Rules in effect when the run was due (a rerun next week decides as this run did)."""
    from orderflow import rules

    run = context.get("dag_run")
    at = getattr(run, "run_after", None) or getattr(run, "logical_date", None)
    return rules.load(at)


class ClaimOrdersOperator(BaseOperator):
    """Claim processable orders for this run and cut them into partitions.

    Claims nothing until a first full master-data sync has completed. First applies the
    customers' pending cancels and changes (``orderflow.changes``), sends orders whose
    master-data holds were fixed upstream back to validation; then
    claims (``FOR UPDATE SKIP LOCKED``, lease-based: overlapping runs never take the same
    order; a rerun of this run gets its own orders back).

    :param max_partitions: upper bound of mapped task instances per stage (default 16;
        with ``min_partition_orders`` it bounds the processes a large batch runs in).
    :param min_partition_orders: a partition carries at least this many orders before the
        batch is cut further (default 2,500: a partition is a process carrying its orders
        through the stages, a stage decides a few hundred to a few thousand orders a CPU
        second, and partitions beyond the workers' cores only add start-ups and
        contention; up to 2,500 orders are one partition). Templated.
    :param batch_limit: at most this many orders per run (default 20,000: four days of a
        25,000-line distributor; the rest waits for the next run).
    :param one_order_per_task: one partition per order (capped at ``max_map_length``): the
        naive fan-out the benchmark compares against. Templated.
    :param announces: an Asset emitted when the run claimed a full ``batch_limit`` (more
        orders may be waiting; the DAG scheduled on it starts its next run at once). Not in
        the naive fan-out.
    :param store_conn_id: the operational store. Templated.
    :return: (XCom) the partitions: ``[{"label": "P01 · 312 orders · C00012…", "order_ids": [...]}]``.
    """

    template_fields: Sequence[str] = (
        "max_partitions",
        "min_partition_orders",
        "batch_limit",
        "one_order_per_task",
        "store_conn_id",
    )
    ui_color = "#e8f1e4"

    def __init__(
        self,
        *,
        max_partitions: int | str = 16,
        min_partition_orders: int | str = 2_500,
        batch_limit: int | str = 20_000,
        one_order_per_task: bool | str = False,
        announces: Any = None,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        from orderflow.assets import announcing

        announcing(announces, kwargs)
        super().__init__(**kwargs)
        self.announces = announces
        self.max_partitions = max_partitions
        self.min_partition_orders = min_partition_orders
        self.batch_limit = batch_limit
        self.one_order_per_task = one_order_per_task
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from orderflow import masterdata, processing
        from orderflow.store import db
        from orderflow.store import processing as repo

        ctx = _ctx(context)
        conn = db.connect(self.store_conn_id)
        try:
            if not masterdata.ready(conn):
                # Validating against an empty copy of the master data would hold every order
                # as unknown: wait for the first full sync (masterdata_sync runs on start).
                self.log.warning("no master-data sync has completed yet; claiming nothing")
                return []
            # Customers' cancels and changes first: an amended order is claimed below with
            # everything else and runs through every stage again; a cancelled one is not.
            from orderflow import changes

            applied = changes.apply_pending(conn, ctx, _rule_book(context))
            if applied:
                self.log.info("customer changes: %s", applied)
            freed = processing.release_fixed_master_data_holds(conn, ctx)
            # Stock that arrived goes to lines waiting for it first (best priority first);
            # their backorder releases are claimed below with everything else.
            from orderflow import backorders

            filled = backorders.fill(conn, _rule_book(context))
            if filled["releases"]:
                self.log.info("backorders: %s", filled)
            naive = str(self.one_order_per_task).lower() in ("true", "1")
            limit = min(int(self.batch_limit), MAX_MAP_LENGTH) if naive else int(self.batch_limit)
            with db.transaction(conn):
                claimed = repo.claim(conn, ctx.run_id, limit)
        finally:
            conn.close()
        if naive:
            parts = [[order_id] for order_id, _ in claimed]
        else:
            parts = repo.partitions(
                claimed, int(self.max_partitions), int(self.min_partition_orders)
            )
        self.log.info(
            "released %d fixed master-data holds; claimed %d orders in %d partitions",
            freed,
            len(claimed),
            len(parts),
        )
        if not naive and len(claimed) >= limit:
            from orderflow.assets import announce_if

            self.log.info("a full batch (%d): more orders may wait; announcing it", limit)
            announce_if(context, self.announces, True)
        return [{"label": _label(i, ids), "order_ids": ids} for i, ids in enumerate(parts, start=1)]


def _label(i: int, ids: list[str]) -> str:
    if len(ids) == 1:
        return f"P{i:02d} · {ids[0]}"
    return f"P{i:02d} · {len(ids)} orders · {ids[0]}…"


class OrderStageOperator(BaseOperator):
    """One processing stage over one partition of orders.

    :param partition: ``{"label", "order_ids"}`` — usually mapped from the claim task's
        output. Templated.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param only_claimed: process only orders claimed by this run (default True; the
        reprocess DAG turns it off to act on one order).
    :param carry_through: a partition of at most this many orders (0: never) is carried on
        through the stage tasks downstream of this one, in this task instance: each stage as
        that task is configured, in its own transaction, its events naming that task; then,
        when the task after the last stage is an outbox sender
        (:class:`~orderflow.operators.outbox.SendOutboxOperator`) and orders were released,
        that sender's delivery (keyed and leased as always). Every task hop costs a
        scheduler loop and a task start-up, and a stage task waits for the slowest
        partition of the stage before it: carried, a trickle is released seconds after it
        lands and a landed backlog in a few partitions runs as fast as the cores allow. A
        carried partition is carried through every stage after this one (a stage with
        nothing in its input status costs a query), so nothing is passed on and the stage
        tasks after it, mapped over what this one returns, get no instance for it. The
        carry stops at the first stage that fails, which its own task then runs, retries
        and holds as always. Templated.
    :param announces: an Asset emitted when this task, carrying a partition through the
        sender, sent something (the sender's own ``announces``).
    :return: (XCom) the partition for the next stage (``{"label", "order_ids"}``), or None
        when it was carried through every stage after this one. The XCom ``counts``: orders,
        passed, held per category, skipped, ``execute_s`` (wall) and ``cpu_s`` (this
        process's CPU: the database's is not in it), ``ended_at`` (the stage's
        transaction committed by then: its decisions' events carry its start);
        ``carried``: the same for each task carried through; ``carry_stopped``: where and
        why a carry stopped.
    """

    stage: ClassVar[str] = ""
    input_status: ClassVar[str] = ""
    template_fields: Sequence[str] = ("partition", "store_conn_id", "carry_through")
    template_fields_renderers: ClassVar[dict[str, str]] = {"partition": "json"}
    ui_color = "#f3ecf9"

    def __init__(
        self,
        *,
        partition: dict[str, Any] | None = None,
        store_conn_id: str = STORE_CONN_ID,
        only_claimed: bool = True,
        carry_through: int | str = 0,
        announces: Any = None,
        **kwargs: Any,
    ) -> None:
        from orderflow.assets import announcing

        announcing(announces, kwargs)
        kwargs.setdefault("retries", 3)
        kwargs.setdefault("retry_delay", timedelta(seconds=10))
        kwargs.setdefault("retry_exponential_backoff", True)
        kwargs.setdefault("map_index_template", MAP_INDEX_TEMPLATE)
        super().__init__(**kwargs)
        self.partition = partition or {"label": "", "order_ids": []}
        self.store_conn_id = store_conn_id
        self.only_claimed = only_claimed
        self.carry_through = carry_through
        self.announces = announces

    def run(self, conn: Any, order_ids: list[str], ctx: Any, book: Any) -> Any:
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        import time

        from orderflow import processing
        from orderflow.integrations.http import ExternalUnavailable
        from orderflow.store import db

        started, cpu = time.perf_counter(), time.process_time()
        ids = list(self.partition.get("order_ids") or [])
        ctx = _ctx(context, self.only_claimed)
        book = _rule_book(context)
        carried: list[dict[str, Any]] = []
        stopped: dict[str, str] | None = None
        conn = db.connect(self.store_conn_id)
        try:
            try:
                result = self.run(conn, ids, ctx, book)
            except ExternalUnavailable as exc:
                ti = context["ti"]
                if ti.try_number <= self.retries:
                    raise  # Airflow retries with backoff
                self.log.error("%s: giving up after %d tries: %s", self.stage, ti.try_number, exc)
                result = processing.fail_transient(
                    conn, self.stage, ids, self.input_status, ctx, book, exc
                )
            # the stage's own time (rule book, connection, the stage's transaction): what
            # the bench divides the orders decided by, apart from the task runner's start-up
            own_s = time.perf_counter() - started
            own_cpu = time.process_time() - cpu  # this process's CPU (the database's apart)
            ended = datetime.now(UTC).isoformat()  # its transaction committed by then
            carry = len(ids) <= int(self.carry_through or 0)
            if carry:
                carried, stopped = self._carry(context, conn, ids, ctx, book)
        finally:
            conn.close()
        out = {
            **result.as_xcom(),
            "execute_s": round(own_s, 4),
            "cpu_s": round(own_cpu, 4),
            "ended_at": ended,
        }
        self.log.info("%s %s: %s", self.stage, self.partition.get("label"), out)
        if carried:
            out["carried"] = carried
        if stopped:
            out["carry_stopped"] = stopped
        context["ti"].xcom_push(key=COUNTS_KEY, value=out)
        if carry and not stopped:
            # every stage after this one ran here: the stage tasks after it, mapped over
            # what this one returns, get no instance for this partition (none starts only
            # to find its orders done)
            return None
        return {"label": self.partition.get("label", ""), "order_ids": ids}

    def _downstream(self) -> tuple[list[Any], Any]:
        """The stage tasks after this one (each the only stage task downstream of the one
        before), as operators of this partition, configured as in the DAG; then the outbox
        sender downstream of the last, if there is one. And the first task after them that
        is none of these nor a teardown (stages branching, a task of the data team's), which
        a carry does not run: None when there is none."""
        from airflow.sdk.definitions.mappedoperator import MappedOperator

        from orderflow.operators.outbox import SendOutboxOperator

        out: list[Any] = []
        task: Any = self
        while True:
            after = task.downstream_list
            nxt = [
                t
                for t in after
                if issubclass(getattr(t, "operator_class", type(t)), OrderStageOperator)
            ]
            if len(nxt) == 1:
                task = nxt[0]
                out.append(
                    task.unmap({"partition": self.partition})
                    if isinstance(task, MappedOperator)
                    else task
                )
                continue
            senders = [t for t in after if isinstance(t, SendOutboxOperator)][:1]
            left = [t for t in after if t not in senders and not t.is_teardown]
            return out + senders, (left[0] if left else None)

    def _carry(
        self, context: Any, conn: Any, ids: list[str], ctx: Any, book: Any
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """Run the downstream stages on this partition here (``carry_through``), every one
        of them (one that finds nothing in its input status decides nothing), up to the
        first that fails. Returns each carried stage's counts, and where and why the carry
        stopped when a stage failed."""
        import dataclasses
        import time

        from orderflow.assets import announce_if

        carried: list[dict[str, Any]] = []
        ops, left = self._downstream()
        for op in ops:
            started, cpu = time.perf_counter(), time.process_time()
            if not isinstance(op, OrderStageOperator):  # the sender: deliver what was queued
                began = datetime.now(UTC)
                try:
                    op.render_template_fields(context)
                    sent = op.deliver(conn)
                except Exception as exc:  # its own task sends it
                    self.log.warning("carried send failed (%s); %s sends it", exc, op.task_id)
                    return carried, {"task_id": op.task_id, "error": f"{type(exc).__name__}: {exc}"}
                entry = {"task_id": op.task_id, **sent.as_dict()}
                entry["execute_s"] = round(time.perf_counter() - started, 4)
                # when it sent (as a sender task instance's start and end: the bench's sends/s)
                entry["started_at"] = began.isoformat()
                entry["ended_at"] = datetime.now(UTC).isoformat()
                carried.append(entry)
                self.log.info("carried through %s: %s", op.task_id, entry)
                announce_if(context, self.announces, sent.sent)
                break
            try:
                _render_all_but_the_partition(op, context)
                result = op.run(conn, ids, dataclasses.replace(ctx, task_id=op.task_id), book)
            except Exception as exc:  # its own task runs it, with its retries and holds
                self.log.warning(
                    "carry through stopped at %s (%s: %s); that task takes the partition on",
                    op.task_id,
                    type(exc).__name__,
                    exc,
                )
                with contextlib.suppress(Exception):
                    conn.rollback()
                return carried, {"task_id": op.task_id, "error": f"{type(exc).__name__}: {exc}"}
            entry = {
                "task_id": op.task_id,
                **result.as_xcom(),
                "execute_s": round(time.perf_counter() - started, 4),
                "cpu_s": round(time.process_time() - cpu, 4),
                "ended_at": datetime.now(UTC).isoformat(),
            }
            carried.append(entry)
            self.log.info("carried through %s: %s", op.task_id, entry)
        if left is not None:  # the partition is passed on to it
            return carried, {"task_id": left.task_id, "error": "not a task a carry runs"}
        return carried, None


def _render_all_but_the_partition(op: OrderStageOperator, context: Any) -> None:
    """Render a carried stage's templated fields, but not its partition: that is this
    task's own, already resolved, and its order ids are data — Airflow renders every string
    of a templated dict as a Jinja template (measured 0.13 ms an id: 0.5 ms an order over
    the four stages a validate task carries)."""
    partition = op.partition
    op.partition = {"label": "", "order_ids": []}
    try:
        op.render_template_fields(context)
    finally:
        op.partition = partition


class ValidateOrdersOperator(OrderStageOperator):
    """RECEIVED → VALIDATED: customer, ship-to, item mapping, master-data quality, UoM,
    contract price vs order price, minimums, duplicate suspicion (rules: validation, pricing)."""

    stage = "validate"
    input_status = "RECEIVED"

    def run(self, conn, order_ids, ctx, book):
        from orderflow import processing

        return processing.validate(conn, order_ids, ctx, book)


class CheckCreditOperator(OrderStageOperator):
    """VALIDATED → CREDIT_OK: exposure (open AR + open orders + this order) against the
    limit — the limit, open AR and hold read from the ERP at decision time for the
    partition's customers in one call (the synced figures when the ERP cannot answer) —
    plus the credit service's real-time decision (rules: credit), asked for the partition's
    customers in one call where the service has a batch endpoint, else one call each.

    :param credit_conn_id: HTTP Connection of the credit service. Templated.
    :param erp_conn_id: HTTP Connection of the ERP. Templated.
    """

    stage = "credit"
    input_status = "VALIDATED"
    template_fields: Sequence[str] = (
        *OrderStageOperator.template_fields,
        "credit_conn_id",
        "erp_conn_id",
    )

    def __init__(
        self,
        *,
        credit_conn_id: str = "credit_default",
        erp_conn_id: str = "erp_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.credit_conn_id = credit_conn_id
        self.erp_conn_id = erp_conn_id

    def run(self, conn, order_ids, ctx, book):
        from orderflow import processing
        from orderflow.integrations.systems import CreditHook, ErpHook

        credit = CreditHook(self.credit_conn_id)
        # a short budget: the synced figures are a sound fallback, a stalled stage is not
        erp = ErpHook(self.erp_conn_id, retries=2)
        return processing.check_credit(
            conn, order_ids, ctx, book, credit.check, erp.exposures, credit_batch=credit.check_many
        )


class AllocateInventoryOperator(OrderStageOperator):
    """CREDIT_OK → ALLOCATED: atomic reservations across both DCs by priority, substitution,
    split and back-order per policy (rules: sourcing, substitution)."""

    stage = "allocate"
    input_status = "CREDIT_OK"

    def run(self, conn, order_ids, ctx, book):
        from orderflow import processing

        return processing.allocate(conn, order_ids, ctx, book)


class PlanShipmentsOperator(OrderStageOperator):
    """ALLOCATED → READY: shipments with carrier and service by rules and rates, tax quote,
    restricted-party screening (rules: carrier).

    :param tax_conn_id: HTTP Connection of the tax engine. Templated.
    :param screening_conn_id: HTTP Connection of the screening service. Templated.
    """

    stage = "plan"
    input_status = "ALLOCATED"
    template_fields: Sequence[str] = (
        *OrderStageOperator.template_fields,
        "tax_conn_id",
        "screening_conn_id",
    )

    def __init__(
        self,
        *,
        tax_conn_id: str = "tax_default",
        screening_conn_id: str = "screening_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tax_conn_id = tax_conn_id
        self.screening_conn_id = screening_conn_id

    def run(self, conn, order_ids, ctx, book):
        from orderflow import processing
        from orderflow.integrations.systems import ScreeningHook, TaxHook

        tax, screening = TaxHook(self.tax_conn_id), ScreeningHook(self.screening_conn_id)
        return processing.plan_through(conn, order_ids, ctx, book, tax, screening)


class ReleaseToWmsOperator(OrderStageOperator):
    """READY → RELEASED: a WMS release per shipment and an 855 for EDI customers, queued in the
    outbox with idempotency keys per (order, DC, release version).

    :param wms_conn_id: HTTP Connection of the WMS (stored on the outbox rows). Templated.
    :param edi_conn_id: HTTP Connection of the EDI gateway. Templated.
    :param carrier_conn_id: HTTP Connection of the carrier / TMS the shipments are tendered
        to (stored on the ``carrier_tender`` outbox rows). Templated.
    """

    stage = "release"
    input_status = "READY"
    template_fields: Sequence[str] = (
        *OrderStageOperator.template_fields,
        "wms_conn_id",
        "edi_conn_id",
        "carrier_conn_id",
    )

    def __init__(
        self,
        *,
        wms_conn_id: str = "wms_default",
        edi_conn_id: str = "edi_default",
        carrier_conn_id: str = "carrier_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wms_conn_id = wms_conn_id
        self.edi_conn_id = edi_conn_id
        self.carrier_conn_id = carrier_conn_id

    def run(self, conn, order_ids, ctx, book):
        from orderflow import processing

        return processing.release(
            conn,
            order_ids,
            ctx,
            book,
            wms_conn_id=self.wms_conn_id,
            edi_conn_id=self.edi_conn_id,
            carrier_conn_id=self.carrier_conn_id,
            capacity=self._capacity(book),
        )

    def _capacity(self, book):
        """The WMS's pick capacity in its current wave, asked only when capacity-aware
        sequencing is switched on in the ``ai`` rules; None (release everything, as without
        it) when it is off, the WMS states none, or cannot be asked."""
        from orderflow.ai import sequencing

        if not book.ai.enabled(sequencing.MODEL_NAME):
            return None
        from orderflow.integrations.systems import WmsHook

        try:
            return sequencing.capacity_from_wms(WmsHook(self.wms_conn_id).capacity()) or None
        except Exception as exc:  # advisory: the stage releases as it always did
            self.log.warning("WMS capacity not known (%s): releasing everything", exc)
            return None


class PublishRunStatusOperator(BaseOperator):
    """End of a processing run: give back the run's claims and summarise where its orders
    stand (counts per status) for the run's XCom and log. Runs whatever happened upstream.

    :param store_conn_id: the operational store. Templated.
    """

    template_fields: Sequence[str] = ("store_conn_id",)
    ui_color = "#e8f1e4"

    def __init__(self, *, store_conn_id: str = STORE_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow.store import db
        from orderflow.store import processing as repo

        run_id = context["ti"].run_id
        conn = db.connect(self.store_conn_id)
        try:
            with db.transaction(conn):
                counts = repo.claimed_by_status(conn, run_id)
                freed = repo.unclaim(conn, run_id)
        finally:
            conn.close()
        summary = {"orders": freed, "by_status": counts}
        self.log.info("processing run %s: %s", run_id, summary)
        return summary
