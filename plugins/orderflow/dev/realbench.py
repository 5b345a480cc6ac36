"""``orderflow bench`` on the real scheduler: the stack of ``make run``, measured.

The stack is the soak's (:class:`orderflow.dev.soak.Stack`: ``orderflow run`` in a state
folder of its own — supervisor, embedded PostgreSQL, API server, scheduler, DAG processor,
triggerer, sandbox and, for Celery, K ``airflow celery worker`` processes). Nothing runs
through ``dag.test()`` and nothing is called directly: the bench only moves the sandbox's
clock, copies files into a drop folder and reads the databases afterwards.

1. **The day.** A generated day of M orders (the soak's generator, more days generated as a
   pool for step 2 and 3, never delivered by the sandbox). The sandbox clock jumps from the
   day's 05:30 to the eve of the next business day at once: every file of the day lands in
   the drop folders, the portal and marketplace feeds hold the whole day. The DAGs' own
   schedules and Asset triggers do the rest. The day is done when the portal and the
   marketplace were each read once after the jump, no drop-folder file waits, no message or
   release-sender outbox row is due and no task of an intake DAG or of order processing runs
   or waits (twice, 5 s apart).
2. **Single arrivals.** N single orders expected to be released, from a later generated day,
   one at a time: with ``--single-channel edi`` single-order EDI files (X12 850) copied into
   the partner's drop folder; with ``portal`` portal orders placed at the sandbox's portal
   (``POST /portal/orders``: in its feed at once, and its new-order notice pushed to
   OrderFlow). Each is timed to its order's ``RELEASED`` event before the next arrives (after
   a random 0–30 s pause, so arrivals fall at random points of the intake schedule).
   ``--single-intake schedule`` leaves intake to its own triggers (the system as it is);
   ``trigger`` starts the channel's intake DAG through the REST API right after the arrival
   (what an event-driven intake would give at best).
3. **Naive comparison** (``naive_orders`` > 0): order processing paused, ``naive_orders``
   later orders landed by intake, then one ``order_processing`` run triggered with
   ``one_order_per_task`` and, for the same number of further orders, one partitioned run;
   ratio = naive run's wall / partitioned run's wall (``dag_run`` start → end).
4. **Backlog** (``backlog``: sizes): the same, once per size and run conf of
   ``backlog_confs`` (the DAG's params: partitions, carrying; ``{}`` is the DAG's defaults),
   each on that many further orders: the processing of a landed batch on the real scheduler, as
   ``--dag-test`` measures it serially. ``backlog_runs[i].received_to_released_s`` is the
   run's start → the last release committed (``last_released_event_s``: → the last
   ``RELEASED`` event, stamped at its transaction's start). A backlog over a run's
   ``batch_limit`` (20,000) is taken by that run and the runs its ``orders_waiting``
   starts; all count.

How each figure is computed (all from stored rows, after the phase):

* ``received_to_released_s``: the day's orders (created after the clock jump): the release
  of the day's last released order minus the first event of the day's first received order
  (wall, PostgreSQL's clock). p50/p95 per order: first event → its release. An order's
  release is its first ``RELEASED`` event, or, later, the commit of the release stage that
  wrote it (``ended_at`` in that stage's counts: an event is stamped with its transaction's
  start, seconds before a large partition's commit).
* ``stage_orders_per_s[stage]``: Σ orders the stage decided (distinct order ids with an
  ``order_event`` written by that task in the day's ``order_processing`` runs) / Σ the
  seconds inside ``execute`` of that stage's successful mapped task instances in those runs
  (``execute_s`` in each instance's XCom: rule book, connection and the stage's
  transaction). ``stage_orders_per_task_s``: the same orders / Σ ``end_date − start_date``
  of those instances (the task runner's start-up included, the scheduler's queueing not).
* ``sends_per_s``: outbox rows of the release sender's actions (``wms_release``,
  ``wms_release_cancel``, ``carrier_tender``, ``edi_855``) whose ``sent_at`` falls inside a
  sender of the day — a ``send_releases`` task instance, or a send a stage task carried
  (its start and end in that task's XCom) — / the seconds during which such a sender (one
  that sent at least a row) ran, overlapping senders merged.
* ``single_arrival_p95_s``: p95 over the singles of arrival (file renamed into the folder,
  or the portal's answer to the order placed) → the order's ``RELEASED`` event; arrival →
  stored and stored → released are reported apart (``single_channel`` says which).
* ``peak_rss_mib``: the highest sum, sampled every second, of the resident memory of every
  process of the stack (``orderflow run`` and all its descendants, the embedded PostgreSQL's
  postmaster and its backends). Shared pages count in each process that maps them.
* CPU seconds: per process the last sampled user + system time, summed over every process
  seen (task processes that live under a second are partly missed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from orderflow.bench_check import reference_cpu_ms
from orderflow.operators.processing import COUNTS_KEY

log = logging.getLogger(__name__)

DAG_ID = "order_processing"
#: the mapped stage tasks and the short names of the JSON
STAGES = {
    "validate_orders": "validate",
    "check_credit": "credit",
    "allocate_inventory": "allocate",
    "plan_shipments": "plan",
    "release_to_wms": "release",
}
SEND_TASK = "send_releases"
SEND_ACTIONS = ("wms_release", "wms_release_cancel", "carrier_tender", "edi_855")
SINGLE_TARGET_P95_S = 15.0
NOTIFIED_TARGET_P95_S = 30.0
#: keys ``--json`` always writes (issue #16)
JSON_KEYS = (
    "executor",
    "orders",
    "received_to_released_s",
    "stage_orders_per_s",
    "sends_per_s",
    "single_arrival_p95_s",
    "naive_orders",
    "naive_ratio",
    "peak_rss_mib",
    "shipped_to_notified_p95_s",  # issue #20
)


# ------------------------------------------------------------------------------ computation
# Pure functions over stored rows (unit-tested in tests/unit/test_realbench_figures.py).


@dataclass(frozen=True)
class TaskRow:
    run_id: str
    task_id: str
    map_index: int
    state: str
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return (self.end - self.start).total_seconds()


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0 < q < 1) by linear interpolation; None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def stage_rates(
    tis: list[TaskRow],
    decided: dict[str, int],
    execute_s: dict[tuple[str, str, int], dict[str, float]] | None = None,
    cpu_s: dict[tuple[str, str, int], dict[str, float]] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per stage: task instances, Σ their seconds, Σ the seconds inside ``execute``, orders
    decided, orders per second inside ``execute`` (``orders_per_s``, the issue's figure) and
    per task-instance second (``orders_per_ti_s``: with the task runner's start-up).

    ``decided``: task_id → distinct orders with an event of that task in the runs measured.
    ``execute_s``: (run_id, task_id, map_index) of a stage instance → stage task_id → the
    seconds it spent inside ``execute`` on that stage (``execute_seconds``: its own, and
    those of the stages it carried its partition through, which then have no instance of
    their own for it). Only mapped instances (``map_index`` ≥ 0) that succeeded count; a
    stage with an instance that recorded no ``execute_s`` of its own has no inside-execute
    rate (None, not zero). ``cpu_s``: the same in the task processes' CPU seconds
    (``cpu_ms_per_order``: how the stage's own work grows with the partition, apart from
    the wall a busy machine adds; the database's CPU is not in it)."""
    execute_s = execute_s or {}
    done = [t for t in tis if t.task_id in STAGES and t.map_index >= 0 and t.state == "success"]
    recorded = [execute_s.get((t.run_id, t.task_id, t.map_index)) or {} for t in done]
    cpus = [(cpu_s or {}).get((t.run_id, t.task_id, t.map_index)) or {} for t in done]
    out: dict[str, dict[str, float | int | None]] = {}
    for task_id, name in STAGES.items():
        rows = [t for t in done if t.task_id == task_id]
        seconds = sum(t.seconds for t in rows)
        complete = all(
            task_id in r for t, r in zip(done, recorded, strict=True) if t.task_id == task_id
        )
        inside = [r[task_id] for r in recorded if task_id in r]
        in_execute = sum(inside) if inside and complete else None
        orders = decided.get(task_id, 0)
        cpu = [r[task_id] for r in cpus if task_id in r]
        on_cpu = sum(cpu) if len(cpu) == len(inside) and in_execute is not None else None
        out[name] = {
            "task_instances": len(rows),
            "ti_seconds": round(seconds, 3),
            "execute_s": None if in_execute is None else round(in_execute, 3),
            "orders": orders,
            "orders_per_s": round(orders / in_execute, 1) if in_execute else None,
            "orders_per_ti_s": round(orders / seconds, 1) if seconds > 0 else None,
            "cpu_s": None if on_cpu is None else round(on_cpu, 3),
            "cpu_ms_per_order": round(on_cpu * 1000 / orders, 3) if on_cpu and orders else None,
        }
    return out


def send_rate(
    tis: list[TaskRow],
    sent_at: list[datetime],
    carried: Sequence[tuple[datetime, datetime]] = (),
) -> dict[str, float | int | None]:
    """Rows sent while a sender ran / the seconds during which at least one sender that sent a
    row was running (overlapping senders merged: neither a row nor a second is counted twice).
    A sender is a sender task instance, or a send a stage task carried (``carried``: its
    start and end, :func:`carried_sends`)."""
    spans = [(t.start, t.end, True) for t in tis if t.task_id == SEND_TASK and t.start and t.end]
    spans += [(a, b, False) for a, b in carried]
    busy = [x for x in spans if any(x[0] <= s <= x[1] for s in sent_at)]
    merged: list[list[datetime]] = []
    for a, b, _ in sorted(busy, key=lambda x: x[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    counted = sum(1 for s in sent_at if any(a <= s <= b for a, b in merged))
    seconds = sum((b - a).total_seconds() for a, b in merged)
    return {
        "sent": counted,
        "sent_outside_sender": len(sent_at) - counted,
        "sender_task_instances": sum(1 for x in busy if x[2]),
        "carried_sends": sum(1 for x in busy if not x[2]),
        "sender_seconds": round(seconds, 3),
        "sends_per_s": round(counted / seconds, 1) if seconds > 0 else None,
    }


def carried_sends(
    values: list[tuple[str, str, int, Any]],
) -> list[tuple[datetime, datetime]]:
    """The start and end of every send a stage task carried (``carried`` entries of the
    sender task in the stage instances' XComs)."""
    out = []
    for _run, _task, _index, value in values:
        if not isinstance(value, dict):
            continue
        for c in value.get("carried") or []:
            if c.get("task_id") == SEND_TASK and c.get("started_at") and c.get("ended_at"):
                out.append(
                    (datetime.fromisoformat(c["started_at"]), datetime.fromisoformat(c["ended_at"]))
                )
    return out


def day_latency(rows: list[tuple[datetime, datetime | None]]) -> dict[str, Any]:
    """``rows``: (first event, RELEASED event or None) per order of the day."""
    released = [(r, x) for r, x in rows if x is not None]
    per_order = [(x - r).total_seconds() for r, x in released]
    span = (
        (max(x for _, x in released) - min(r for r, _ in rows)).total_seconds()
        if released
        else None
    )
    return {
        "orders_received": len(rows),
        "orders_released": len(released),
        "received_to_released_s": round(span, 1) if span is not None else None,
        "received_to_released_p50_s": _round(pct(per_order, 0.50)),
        "received_to_released_p95_s": _round(pct(per_order, 0.95)),
    }


def single_summary(singles: list[dict[str, Any]]) -> dict[str, Any]:
    """``singles``: per drop, ``drop_to_released_s`` (None when not released) and
    ``drop_to_stored_s``."""
    done = [s["drop_to_released_s"] for s in singles if s.get("drop_to_released_s") is not None]
    stored = [s["drop_to_stored_s"] for s in singles if s.get("drop_to_stored_s") is not None]
    after = [
        s["drop_to_released_s"] - s["drop_to_stored_s"]
        for s in singles
        if s.get("drop_to_released_s") is not None and s.get("drop_to_stored_s") is not None
    ]
    to_wms = [s["drop_to_wms_s"] for s in singles if s.get("drop_to_wms_s") is not None]
    return {
        "singles": len(singles),
        "singles_released": len(done),
        "single_arrival_p50_s": _round(pct(done, 0.50)),
        "single_arrival_p95_s": _round(pct(done, 0.95)),
        "single_arrival_max_s": _round(max(done) if done else None),
        "single_drop_to_stored_p95_s": _round(pct(stored, 0.95)),
        "single_stored_to_released_p95_s": _round(pct(after, 0.95)),
        # the WMS has the release: its first wms_release row sent
        "single_drop_to_wms_p95_s": _round(pct(to_wms, 0.95)),
    }


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def shape(results: dict[str, Any]) -> dict[str, Any]:
    """The JSON ``--json`` writes: the issue's keys first, then everything else measured."""
    missing = [k for k in JSON_KEYS if k not in results]
    if missing:
        raise KeyError(f"results lack {missing}")
    stages = results["stage_orders_per_s"]
    if set(stages) != set(STAGES.values()):
        raise KeyError(f"stage_orders_per_s must name {sorted(STAGES.values())}")
    return {k: results[k] for k in JSON_KEYS} | {
        k: v for k, v in results.items() if k not in JSON_KEYS
    }


# ------------------------------------------------------------------------------ sampling


class Sampler(threading.Thread):
    """Every second: the stack's processes' resident memory (summed; the peak kept) and each
    process's CPU seconds (the last value seen per pid, with the group it was last seen in:
    a process that exits between two looks loses at most its last second)."""

    def __init__(self, stack: Any, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.stack, self.every = stack, every
        self.halt = threading.Event()
        self.peak_rss = 0.0
        self.peak_at: dict[str, float] = {}
        self.cpu: dict[tuple[int, float], float] = {}
        self.group: dict[tuple[int, float], str] = {}
        self.samples = 0

    def processes(self) -> list[Any]:
        import psutil

        procs: list[Any] = []
        roots = [self.stack.proc.pid]
        with contextlib.suppress(OSError, ValueError, IndexError):
            roots.append(self.stack.postmaster())
        for pid in roots:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.Error:
                continue
        return procs

    def sample(self) -> None:
        import psutil

        total = 0.0
        groups: dict[str, float] = defaultdict(float)
        for p in self.processes():
            try:
                with p.oneshot():
                    rss = p.memory_info().rss / 2**20
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                    name = _group(p)
            except psutil.Error:
                continue
            total += rss
            groups[name] += rss
            self.cpu[key] = t.user + t.system
            if name != "?" or key not in self.group:  # an exiting process has no title
                self.group[key] = name
        self.samples += 1
        if total > self.peak_rss:
            self.peak_rss = total
            self.peak_at = {k: round(v, 1) for k, v in sorted(groups.items())}

    def run(self) -> None:
        while not self.halt.wait(self.every):
            with contextlib.suppress(Exception):
                self.sample()

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def cpu_by_group(self) -> dict[str, float]:
        """CPU seconds so far per process group (:func:`process_group`), exited ones kept."""
        out: dict[str, float] = defaultdict(float)
        for key, cpu in list(self.cpu.items()):
            out[self.group.get(key, "?")] += cpu
        return dict(out)


def cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each group spent between two ``Sampler.cpu_by_group`` looks, largest
    first (the groups that spent none left out)."""
    spent = {g: round(after[g] - before.get(g, 0.0), 1) for g in after}
    return dict(sorted(((g, v) for g, v in spent.items() if v > 0), key=lambda gv: -gv[1]))


def _group(p: Any) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        return "?"
    if not cmd:  # a zombie has no command line left: it keeps the group it was seen in
        return "?"
    # a spawned worker (the api-server's uvicorn workers) counts with its parent
    if "from multiprocessing" in cmd:
        with contextlib.suppress(Exception):
            parent = p.parent()
            if parent is not None:
                return _group(parent)
    return process_group(cmd, p.name())


def process_group(cmd: str, name: str = "") -> str:
    """The bench's name for a stack process, from its command line (Airflow and PostgreSQL
    set process titles): the Airflow services, task supervisors and the task processes
    under them, the executor's workers, PostgreSQL's sessions by database."""
    from orderflow.dev.soak import AIRFLOW_SERVICES

    for title, group in (
        *AIRFLOW_SERVICES,
        ("airflow supervisor:", "task supervisors"),
        ("airflow task supervisor:", "task supervisors"),
    ):
        if title in cmd:
            return group
    if cmd.startswith("airflow worker -- "):
        return "executor workers" if "Executor" in cmd else "task processes"
    if "celery" in cmd:
        return "celery worker"
    if "postgres" in cmd or name.startswith("postgres"):
        words = cmd.split()[1:] if cmd.startswith("postgres:") else []
        if words and words[0].endswith(":"):  # the cluster's name: "postgres: 16/main: …"
            words = words[1:]
        # a session: "USER DATABASE HOST(PORT)|[local] STATE"
        if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
            return f"postgresql {words[1]}"
        return "postgresql"
    if "redis-server" in cmd:
        return "redis"
    if name == "tesseract" or cmd.startswith("tesseract "):
        return "OCR (tesseract)"  # lives about a second a page: partly missed
    if "sandbox" in cmd:
        return "sandbox"
    if "orderflow run" in cmd or cmd.endswith("orderflow run"):
        return "supervisor"
    return f"other: {cmd[:60]}"


# ------------------------------------------------------------------------------ the run


@dataclass
class Options:
    orders_per_day: int = 500
    executor: str = "local"
    workers: int = 2
    singles: int = 20
    single_intake: str = "schedule"  # or "trigger"
    single_channel: str = "edi"  # or "portal"
    naive_orders: int = 0
    #: one backlog run per size and conf, each on that many further orders
    backlog: tuple[int, ...] = ()
    backlog_confs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    seed: int = 7
    json_path: Path | None = None
    work: Path | None = None
    keep: bool = False
    day_timeout: float = 1800.0
    start_timeout: float = 1200.0  # a loaded 2-core machine took > 300 s
    single_timeout: float = 900.0
    #: the shipping phase, last: simulated hours the sandbox clock moves (0 skips it) in
    #: 10-minute steps, one per ``ship_step_s`` of wall time
    ship_hours: float = 24.0
    ship_step_s: float = 1.0
    ship_timeout: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(opts: Options, say: Any = print) -> dict[str, Any]:
    """The whole real-scheduler bench; prints as it goes, returns (and writes) the JSON."""
    from orderflow.dev import soak
    from orderflow_sandbox.generator import generate

    if opts.single_intake not in ("schedule", "trigger"):
        raise ValueError("single_intake is 'schedule' or 'trigger'")
    if opts.single_channel not in ("edi", "portal"):
        raise ValueError("single_channel is 'edi' or 'portal'")
    own_work = opts.work is None
    work = opts.work or Path(tempfile.mkdtemp(prefix="of-realbench-"))
    state = work / "state"
    if state.exists():
        shutil.rmtree(state)
    (state / "sandbox").mkdir(parents=True)
    m = opts.orders_per_day
    # the day + a pool of later days for the singles and the naive batches (never delivered)
    wanted = (
        2 * opts.naive_orders + 4 * opts.singles + 2 * sum(opts.backlog) * len(opts.backlog_confs)
    )
    pool_days = 1 + -(-max(wanted, 1) // max(m, 1))
    t0 = time.monotonic()
    manifest = generate(
        state / "sandbox" / "day",
        seed=opts.seed,
        days=1 + pool_days,
        orders_per_day=m,
        customers=max(80, m * 2 // 5),
        items=max(300, m * 2),
        business_date=soak.FIRST_DAY,
    )
    dates = [date.fromisoformat(d) for d in manifest.business_dates]
    day_dir = state / "sandbox" / "day"
    clock_start = datetime.combine(dates[0], datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=soak.CLOCK_START_HOUR
    )
    # the eve of the second business day: the whole first day has arrived, nothing later
    clock_day_end = datetime.combine(dates[1], datetime.min.time(), tzinfo=UTC) - timedelta(
        minutes=1
    )
    pool = _pool(day_dir, clock_day_end)
    say(
        f"realbench: {m:,} orders/day, {_describe(opts)}; generated {1 + pool_days} day(s) "
        f"({manifest.orders:,} orders; day 1 is measured, later ones are the pool) in "
        f"{time.monotonic() - t0:.0f}s; load average {_load()}"
    )
    results: dict[str, Any] = {
        "executor": opts.executor,
        "workers": opts.workers if opts.executor == "celery" else None,
        "orders_per_day": m,
        "seed": opts.seed,
        "single_intake": opts.single_intake,
        "single_channel": opts.single_channel,
        # how fast this host is tonight (the same code's CPU an order moved by a third between
        # evenings on one machine type): a fixed piece of Python work, before and after
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": _load(),
            "reference_cpu_ms_start": reference_cpu_ms(),
        },
        **opts.extra,
    }
    stack = soak.Stack(state, opts.executor, opts.workers, clock_start)
    sampler: Sampler | None = None
    ok = False
    try:
        results["stack_start_s"] = round(stack.start(timeout=opts.start_timeout), 1)
        t0 = time.monotonic()
        soak._wait_ready(stack, timeout=opts.start_timeout)
        results["ready_s"] = round(time.monotonic() - t0, 1)
        say(
            f"  stack healthy in {results['stack_start_s']}s, DAGs parsed and master data "
            f"synced {results['ready_s']}s later (load average {_load()})"
        )
        sampler = Sampler(stack)
        sampler.start()
        cpu0, groups0 = 0.0, {}
        with contextlib.suppress(Exception):
            sampler.sample()
            cpu0, groups0 = sampler.cpu_seconds(), sampler.cpu_by_group()
        day = _day(stack, clock_start, clock_day_end, opts, say)
        results.update(day)
        results["day_cpu_s"] = round(sampler.cpu_seconds() - cpu0, 1)
        results["day_cpu_s_by_group"] = cpu_between(groups0, sampler.cpu_by_group())
        results["load_average_after_day"] = _load()
        cpu1 = sampler.cpu_seconds()
        singles: list[dict[str, Any]] = []
        results["single_arrivals"] = singles  # filled as they come (kept if interrupted)
        try:
            _singles(stack, pool, opts, say, singles)
        except Exception as exc:  # the day's figures still count
            log.exception("singles failed")
            results["singles_error"] = repr(exc)
        finally:
            results.update(single_summary(singles))
        results["singles_cpu_s"] = round(sampler.cpu_seconds() - cpu1, 1)
        results["single_event_driven"] = opts.single_intake == "trigger"
        results["load_average_after_singles"] = _load()
        if opts.naive_orders:
            try:
                results.update(_naive(stack, pool, opts, say, sampler.cpu_by_group))
            except Exception as exc:
                log.exception("naive comparison failed")
                results.update(
                    {
                        "naive_orders": opts.naive_orders,
                        "naive_ratio": None,
                        "naive_error": repr(exc),
                    }
                )
        else:
            results.update({"naive_orders": 0, "naive_ratio": None})
        if opts.backlog:
            results["backlog_runs"] = backlogs = []
            for n in opts.backlog:
                for conf in opts.backlog_confs:
                    try:
                        backlogs.append(_backlog(stack, pool, n, conf, say, sampler.cpu_by_group))
                    except Exception as exc:
                        log.exception("backlog run of %d orders %s failed", n, conf)
                        backlogs.append({"conf": conf, "size": n, "error": repr(exc)})
        results["shipped_to_notified_p95_s"] = None
        if opts.ship_hours > 0:
            try:
                results.update(_shipping(stack, opts, say))
            except Exception as exc:
                log.exception("shipping phase failed")
                results["shipping_error"] = repr(exc)
        results["stack_cpu_s"] = round(sampler.cpu_seconds(), 1)
        ok = True
    finally:
        # a second Ctrl-C / SIGTERM (timeout(1) signals its whole group) must not cut the
        # stack's stop or the partial JSON short
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if sampler is not None:
            sampler.halt.set()
            sampler.join(5)
            results["peak_rss_mib"] = round(sampler.peak_rss, 1)
            results["peak_rss_by_process_mib"] = sampler.peak_at
            results["rss_samples"] = sampler.samples
        results["stop_leftovers"] = stack.stop()
        results["load_average_end"] = _load()
        results["machine"]["reference_cpu_ms_end"] = reference_cpu_ms()
        if ok and not opts.keep:
            shutil.rmtree(work if own_work else state, ignore_errors=True)
        elif not ok:
            say(f"FAILED: the stack's logs are kept in {work}")
            if opts.json_path:  # what was measured before it stopped, the rest null
                partial = {k: results.get(k) for k in JSON_KEYS} | results
                partial["stage_orders_per_s"] = results.get("stage_orders_per_s") or dict.fromkeys(
                    STAGES.values()
                )
                partial["incomplete"] = True
                opts.json_path.parent.mkdir(parents=True, exist_ok=True)
                opts.json_path.write_text(json.dumps(shape(partial), indent=2, default=str) + "\n")
    out = shape(results)
    for line in summary_lines(out):
        say(line)
    if opts.json_path:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        say(f"JSON: {opts.json_path}")
    return out


def _describe(opts: Options) -> str:
    if opts.executor == "celery":
        return f"CeleryExecutor × {opts.workers} workers"
    return "LocalExecutor"


# -- the day


def _pool(day_dir: Path, day_end: datetime) -> dict[str, Any]:
    """What the sandbox will not deliver (after ``day_end``): single-order EDI files of
    orders expected released, every other order file, in arrival order, and portal orders
    expected released (``portal_singles``)."""
    orders = {
        o["submission_id"]: o
        for o in map(json.loads, (day_dir / "orders.jsonl").read_text().splitlines())
    }
    truth = {
        t["submission_id"]: t
        for t in map(json.loads, (day_dir / "ground_truth.jsonl").read_text().splitlines())
    }

    def clean(s: str) -> bool:
        return (
            truth.get(s, {}).get("expected") == "release"
            and not orders[s].get("defects")
            and not orders[s].get("duplicate_of")
        )

    portal = [
        o
        for s, o in orders.items()
        if o["channel"] == "portal"
        and datetime.fromisoformat(o["arrival_at"].replace("Z", "+00:00")) > day_end
        and clean(s)
    ]
    singles, files = [], []
    for d in map(json.loads, (day_dir / "deliveries.jsonl").read_text().splitlines()):
        at = datetime.fromisoformat(d["at"].replace("Z", "+00:00"))
        subs = d.get("submission_ids") or []
        if at <= day_end or not subs or any(s not in orders for s in subs):
            continue
        item = {**d, "orders": [orders[s] for s in subs]}
        if d["channel"] == "edi" and len(subs) == 1 and all(map(clean, subs)):
            singles.append(item)
        else:
            files.append(item)
    return {"singles": singles, "files": files, "portal_singles": portal}


def _day(
    stack: Any, clock_start: datetime, day_end: datetime, opts: Options, say: Any
) -> dict[str, Any]:
    t_jump = _now()
    minutes = (day_end - clock_start).total_seconds() / 60
    r = stack.sandbox.put("/admin/clock", json={"advance_minutes": minutes}, timeout=600)
    r.raise_for_status()
    delivered = r.json().get("delivered")
    say(
        f"  day: sandbox clock {clock_start:%a %H:%M} → {day_end:%a %d %H:%M}: {delivered} files "
        f"into the drop folders, the portal and marketplace feeds hold the day; waiting for "
        "the DAGs' schedules and Asset triggers …"
    )
    t0 = time.monotonic()
    _wait_day(stack, t_jump, opts.day_timeout, say)
    t_end = _now()
    wall = time.monotonic() - t0
    runs = [
        r[0]
        for r in stack.query(
            "airflow",
            # every run that overlaps the day (one started just before the jump claims its
            # first orders too)
            "SELECT run_id FROM dag_run WHERE dag_id = %s AND start_date <= %s "
            "AND (end_date IS NULL OR end_date >= %s)",
            (DAG_ID, t_end, t_jump),
        )
    ]
    return _measure_day(stack, runs, t_jump, t_end, wall, say)


def _wait_day(stack: Any, t_jump: datetime, timeout: float, say: Any) -> None:
    from orderflow.dev import soak

    deadline = time.monotonic() + timeout
    quiet, last_log = 0, time.monotonic()
    while quiet < 2:
        time.sleep(5)
        read = {
            d
            for (d,) in stack.query(
                "airflow",
                "SELECT DISTINCT dag_id FROM dag_run WHERE dag_id IN "
                "('intake_portal', 'intake_marketplace') AND start_date > %s "
                "AND state = 'success'",
                (t_jump,),
            )
        }
        # the day's work only: intake and order processing (fulfilment, master data and the
        # housekeeping DAGs run on their schedules forever; on a loaded machine one of them
        # always runs, and the soak's settle criterion never came)
        tasks = sum(
            soak.busy_tasks(
                lambda sql, params: stack.query("airflow", sql, params),
                work=[*soak.INTAKE_DAGS, DAG_ID],
            ).values()
        )
        pending, due = stack.query(
            "orderflow",
            "SELECT (SELECT count(*) FROM orderflow.channel_message WHERE outcome = 'pending'), "
            "(SELECT count(*) FROM orderflow.outbox WHERE action = ANY(%s) AND (status IN "
            "('pending', 'sending') OR (status = 'failed' AND next_attempt_at < now() + "
            "interval '2 minutes')))",
            (list(SEND_ACTIONS),),
        )[0]
        busy = (tasks, soak._waiting_files(stack.state), pending, due)
        quiet = quiet + 1 if len(read) == 2 and not any(busy) else 0
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            n = stack.query(
                "orderflow",
                "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('RECEIVED', "
                "'VALIDATED', 'CREDIT_OK', 'ALLOCATED', 'READY')) FROM orderflow.\"order\"",
            )[0]
            say(
                f"    … {n[0]:,} orders stored, {n[1]:,} past processing; busy (tasks, files, "
                f"messages, outbox) {busy}; feeds read {sorted(read)}; load {_load()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"the day did not finish in {timeout:.0f}s: busy {busy}")


def _task_rows(stack: Any, run_ids: list[str]) -> list[TaskRow]:
    return [
        TaskRow(run_id, task_id, map_index, str(state), start, end)
        for run_id, task_id, map_index, state, start, end in stack.query(
            "airflow",
            "SELECT run_id, task_id, map_index, state, start_date, end_date FROM task_instance "
            "WHERE dag_id = %s AND run_id = ANY(%s)",
            (DAG_ID, run_ids),
        )
    ]


def execute_seconds(
    values: list[tuple[str, str, int, dict[str, Any]]], field: str = "execute_s"
) -> dict[tuple[str, str, int], dict[str, float]]:
    """(run_id, task_id, map_index) of a stage instance → stage task_id → the seconds it
    spent inside ``execute`` on that stage, from the instances' counts: its own
    ``execute_s``, and each stage it carried its partition through (``carried``).
    ``field="cpu_s"``: the task process's CPU seconds instead of the wall."""
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    for run_id, task_id, map_index, value in values:
        if not isinstance(value, dict) or value.get(field) is None:
            continue
        spent = out.setdefault((run_id, task_id, map_index), {})
        spent[task_id] = spent.get(task_id, 0.0) + float(value[field])
        for carried in value.get("carried") or []:
            if carried.get("task_id") in STAGES and carried.get(field) is not None:
                stage = carried["task_id"]
                spent[stage] = spent.get(stage, 0.0) + float(carried[field])
    return out


RELEASE_TASK = "release_to_wms"


def release_ends(
    values: list[tuple[str, str, int, Any]],
) -> dict[tuple[str, int], datetime]:
    """(run_id, map_index) of ``release_to_wms`` events → when the release that wrote them
    had committed: the ``ended_at`` its counts record, in a ``release_to_wms`` instance or
    carried in an earlier stage's (whose map index its events carry). A RELEASED event is
    stamped with its transaction's start, which for a partition of thousands is seconds
    before its orders are released for anyone to see. Two releases under one key (a run
    with a carried partition and another's own release task at the same map index): the
    later."""
    out: dict[tuple[str, int], datetime] = {}

    def note(run_id: str, map_index: int, at: Any) -> None:
        if at:
            t = datetime.fromisoformat(at)
            key = (run_id, map_index)
            out[key] = max(out[key], t) if key in out else t

    for run_id, task_id, map_index, value in values:
        if not isinstance(value, dict):
            continue
        if task_id == RELEASE_TASK:
            note(run_id, map_index, value.get("ended_at"))
        for carried in value.get("carried") or []:
            if carried.get("task_id") == RELEASE_TASK:
                note(run_id, map_index, carried.get("ended_at"))
    return out


def released_at(
    event: datetime,
    run_id: str | None,
    map_index: int | None,
    ends: dict[tuple[str, int], datetime],
) -> datetime:
    """An order's release: its RELEASED event, or its release's commit when that is known."""
    end = ends.get((run_id, map_index if map_index is not None else -1))
    return max(event, end) if end else event


def _stage_xcoms(stack: Any, run_ids: list[str]) -> list[tuple[str, str, int, Any]]:
    """(run_id, task_id, map_index, value) of every stage instance's counts (its XCom
    ``counts``: its return value is the partition it passes on)."""
    return [
        (r, t, m, v)
        for r, t, m, v in stack.query(
            "airflow",
            """
            SELECT run_id, task_id, map_index, (CASE jsonb_typeof(value) WHEN 'string'
                   THEN (value #>> '{}')::jsonb ELSE value END)
              FROM xcom
             WHERE dag_id = %s AND run_id = ANY(%s) AND task_id = ANY(%s) AND key = %s
            """,
            (DAG_ID, run_ids, list(STAGES), COUNTS_KEY),
        )
    ]


def _decided(stack: Any, run_ids: list[str]) -> dict[str, int]:
    """Stage task → the orders it decided in these runs (distinct orders with an event of it)."""
    return dict(
        stack.query(
            "orderflow",
            "SELECT task_id, count(DISTINCT order_id) FROM orderflow.order_event "
            "WHERE run_id = ANY(%s) AND task_id = ANY(%s) GROUP BY 1",
            (run_ids, list(STAGES)),
        )
    )


def _measure_day(
    stack: Any, runs: list[str], t_jump: datetime, t_end: datetime, wall: float, say: Any
) -> dict[str, Any]:
    tis = _task_rows(stack, runs)
    xcoms = _stage_xcoms(stack, runs)
    stages = stage_rates(
        tis, _decided(stack, runs), execute_seconds(xcoms), execute_seconds(xcoms, "cpu_s")
    )
    sent_at = [
        r[0]
        for r in stack.query(
            "orderflow",
            "SELECT sent_at FROM orderflow.outbox WHERE status = 'sent' AND action = ANY(%s) "
            "AND sent_at BETWEEN %s AND %s",
            (list(SEND_ACTIONS), t_jump, t_end),
        )
    ]
    sends = send_rate(tis, sent_at, carried_sends(xcoms))
    rows = stack.query(
        "orderflow",
        """
        SELECT min(e.occurred_at), r.occurred_at, r.run_id, r.map_index
          FROM orderflow."order" o JOIN orderflow.order_event e USING (order_id)
          LEFT JOIN LATERAL (
                SELECT x.occurred_at, x.run_id, x.map_index FROM orderflow.order_event x
                 WHERE x.order_id = o.order_id AND x.to_status = 'RELEASED'
                 ORDER BY x.occurred_at LIMIT 1) r ON true
         WHERE o.created_at >= %s AND o.created_at <= %s
         GROUP BY o.order_id, r.occurred_at, r.run_id, r.map_index
        """,
        (t_jump, t_end),
    )
    ends = release_ends(xcoms)
    lat = day_latency([(a, b and released_at(b, run_id, m, ends)) for a, b, run_id, m in rows])
    first_last = stack.query(
        "orderflow",
        'SELECT min(created_at), max(created_at) FROM orderflow."order" WHERE created_at >= %s',
        (t_jump,),
    )[0]
    statuses = dict(
        stack.query(
            "orderflow",
            'SELECT status, count(*) FROM orderflow."order" WHERE created_at >= %s '
            "AND created_at <= %s GROUP BY 1 ORDER BY 2 DESC",
            (t_jump, t_end),
        )
    )
    run_states = dict(
        stack.query(
            "airflow",
            "SELECT state, count(*) FROM dag_run WHERE dag_id = %s AND run_id = ANY(%s) GROUP BY 1",
            (DAG_ID, runs),
        )
    )
    retried = stack.query(
        "airflow",
        "SELECT count(*) FROM task_instance_history WHERE dag_id = %s AND run_id = ANY(%s)",
        (DAG_ID, runs),
    )[0][0]
    out = {
        "orders": lat["orders_received"],
        **lat,
        "stage_orders_per_s": {k: v["orders_per_s"] for k, v in stages.items()},
        "stage_orders_per_task_s": {k: v["orders_per_ti_s"] for k, v in stages.items()},
        "stages": stages,
        "sends_per_s": sends["sends_per_s"],
        "sends": sends,
        "day_wall_s": round(wall, 1),
        "jump_to_first_stored_s": _secs(first_last[0], t_jump),
        "jump_to_last_stored_s": _secs(first_last[1], t_jump),
        "processing_runs": len(runs),
        "processing_run_states": run_states,
        "processing_task_tries_retried": retried,
        "orders_by_status": statuses,
    }
    say(
        f"  day done in {wall:.0f}s after the jump: {out['orders']:,} orders stored (first "
        f"{out['jump_to_first_stored_s']}s, last {out['jump_to_last_stored_s']}s after the "
        f"jump), {lat['orders_released']:,} released; {len(runs)} order_processing runs "
        f"{run_states}; load average {_load()}"
    )
    return out


def _secs(a: datetime | None, b: datetime) -> float | None:
    return None if a is None else round((a - b).total_seconds(), 1)


# -- single arrivals


def _drop(stack: Any, day_dir: Path, item: dict) -> Path:
    """Copy a generated file into its drop folder as the sandbox does (hidden name, then an
    atomic rename)."""
    name = Path(item["path"]).name
    base = stack.state / "sandbox"
    if item["channel"] == "edi":
        target = base / "edi" / "inbound" / (item.get("partner_id") or "unknown") / name
    elif item["channel"] == "email":
        target = base / "mailbox" / "new" / name
    else:
        target = base / "csv" / "inbound" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".part")
    shutil.copyfile(day_dir / item["path"], tmp)
    os.replace(tmp, target)
    return target


_INTAKE_DAG = {
    "edi": "intake_edi",
    "email": "intake_mailbox",
    "csv": "intake_csv",
    "portal": "intake_portal",
}
_PORTAL_FIELDS = ("customer_id", "ship_to_id", "po_number", "po_date", "requested_ship_date")


def _place_portal_order(stack: Any, order: dict) -> None:
    """A customer places ``order`` on the sandbox's portal (under a request id of its own:
    the generated one arrives with its later day)."""
    body = {k: order.get(k) for k in _PORTAL_FIELDS}
    body.update(
        client_request_id=f"bench-{order['client_request_id']}",
        currency=order.get("currency", "USD"),
        lines=order["lines"],
    )
    stack.sandbox.post("/portal/orders", json=body).raise_for_status()


def _singles(
    stack: Any, pool: dict[str, Any], opts: Options, say: Any, out: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not opts.singles:
        return out
    channel = opts.single_channel
    key = "singles" if channel == "edi" else "portal_singles"
    items = pool[key][: opts.singles]
    pool[key] = pool[key][opts.singles :]
    if len(items) < opts.singles:
        say(f"  singles: only {len(items)} single {channel} orders in the pool")
    rnd = random.Random(opts.seed)  # noqa: S311 - pauses between drops, not secrets
    own = (
        "the folder watcher, a waiting deferred file sensor poking every 2 s, every 5 min"
        if channel == "edi"
        else "the portal's new-order notice and its Redis wake-up, every 5 min"
    )
    say(
        f"  singles: {len(items)} single "
        + ("-order EDI files" if channel == "edi" else "portal orders")
        + ", one at a time, intake "
        + (
            f"left to its own triggers ({own})"
            if opts.single_intake == "schedule"
            else "triggered through the REST API at each arrival"
        )
    )
    day_dir = stack.state / "sandbox" / "day"
    for n, item in enumerate(items, 1):
        # schedule: drops at random points of the 5-minute intake schedule
        time.sleep(rnd.uniform(0, 30 if opts.single_intake == "schedule" else 3))
        order = item["orders"][0] if channel == "edi" else item
        t_drop = _now()
        if channel == "edi":
            _drop(stack, day_dir, item)
        else:
            _place_portal_order(stack, order)
        if opts.single_intake == "trigger":
            stack.api("POST", f"/dags/{_INTAKE_DAG[channel]}/dagRuns", json={"logical_date": None})
        res = _wait_order(stack, order["po_number"], t_drop, opts.single_timeout)
        res.update({"po_number": order["po_number"], "partner_id": item.get("partner_id")})
        out.append(res)
        say(
            f"    {n:>2}. {order['po_number']}: stored +{res['drop_to_stored_s']}s, "
            f"{res['status']} +{res['drop_to_released_s']}s (load {_load()})"
        )
    _wms_received(stack, out)
    return out


def _wms_received(stack: Any, singles: list[dict[str, Any]], timeout: float = 60.0) -> None:
    """``drop_to_wms_s``: drop → the first WMS release of the order sent (the warehouse has
    it), for each released single; waits up to ``timeout`` for the last sends."""
    released = {s["order_id"]: s for s in singles if s.get("drop_to_released_s") is not None}
    deadline = time.monotonic() + timeout
    sent: dict[str, datetime] = {}
    while released and time.monotonic() < deadline:
        sent = dict(
            stack.query(
                "orderflow",
                "SELECT order_id, min(sent_at) FROM orderflow.outbox WHERE action = "
                "'wms_release' AND status = 'sent' AND order_id = ANY(%s) GROUP BY 1",
                (list(released),),
            )
        )
        if set(sent) >= set(released):
            break
        time.sleep(1)
    for order_id, single in released.items():
        at = sent.get(order_id)
        single["drop_to_wms_s"] = (
            _secs(at, datetime.fromisoformat(single["dropped_at"])) if at else None
        )


def _wait_order(stack: Any, po_number: str, t_drop: datetime, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        rows = stack.query(
            "orderflow",
            """
            SELECT o.created_at, o.status,
                   (SELECT min(e.occurred_at) FROM orderflow.order_event e
                     WHERE e.order_id = o.order_id AND e.to_status = 'RELEASED'), o.order_id
              FROM orderflow."order" o
             WHERE o.po_number = %s AND o.created_at >= %s
             ORDER BY o.created_at LIMIT 1
            """,
            (po_number, t_drop),
        )
        row = rows[0] if rows else None
        if row and (row[2] is not None or row[1] in ("ON_HOLD", "REJECTED", "CANCELLED")):
            break
        time.sleep(0.5)
    created, status, released, order_id = row or (None, "NOT STORED", None, None)
    return {
        "order_id": order_id,
        "dropped_at": t_drop.isoformat(),
        "status": status if released is None else "RELEASED",
        "drop_to_stored_s": _secs(created, t_drop),
        "drop_to_released_s": _secs(released, t_drop),
    }


# -- shipping: shipped → customer notified, pushed events on


_NOTICES_DUE_SQL = """
SELECT (SELECT count(*) FROM orderflow.fulfilment_event WHERE status = 'pending'),
       (SELECT count(*) FROM orderflow.outbox
         WHERE action IN ('email', 'webhook', 'marketplace_shipment')
           AND (status IN ('pending', 'sending')
                OR (status = 'failed' AND next_attempt_at < now() + interval '2 minutes')))
"""


def _shipping(stack: Any, opts: Options, say: Any) -> dict[str, Any]:
    """Last: the sandbox clock moves on in 10-minute steps (the day's releases are picked,
    shipped, in transit; the WMS and the carrier push their events; later days' files
    arrive, as on any day) and, once the events and notices are settled, each shipment's
    shipped → customer notified as the soak measures it (arrival of its first *shipped*
    milestone → its first notice sent), by the path that sent it."""
    from orderflow.dev import soak

    steps = max(1, round(opts.ship_hours * 6))
    say(
        f"  shipping: the sandbox clock moves {opts.ship_hours:g} simulated hours in 10-minute "
        f"steps every {opts.ship_step_s:g}s; WMS and carrier push their events …"
    )
    t0 = _now()
    for _ in range(steps):
        stack.sandbox.put("/admin/clock", json={"advance_minutes": 10}, timeout=120)
        time.sleep(opts.ship_step_s)
    deadline = time.monotonic() + opts.ship_timeout
    due = stack.query("orderflow", _NOTICES_DUE_SQL)[0]
    while any(due) and time.monotonic() < deadline:
        time.sleep(5)
        due = stack.query("orderflow", _NOTICES_DUE_SQL)[0]
    notified = [n for n in soak.notifications(stack) if n["arrived"] >= t0]
    by_path = soak._latency_by_path(notified)
    out = {
        "shipped_to_notified_p50_s": by_path["all"]["p50_s"],
        "shipped_to_notified_p95_s": by_path["all"]["p95_s"],
        "shipped_to_notified_max_s": by_path["all"]["max_s"],
        "shipped_to_notified_measured": len(notified),
        "shipped_to_notified_by_path": by_path,
        "shipping_settled": not any(due),
        "shipping_wall_s": round((_now() - t0).total_seconds(), 1),
    }
    say(
        f"    {len(notified)} shipments notified: p50 {out['shipped_to_notified_p50_s']} s, "
        f"p95 {out['shipped_to_notified_p95_s']} s, max {out['shipped_to_notified_max_s']} s"
        + ("" if out["shipping_settled"] else f" (not settled: events, notices due {due})")
    )
    return out


# -- naive comparison


def _naive(
    stack: Any,
    pool: dict[str, Any],
    opts: Options,
    say: Any,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Order processing paused; a batch landed by intake; one run triggered with the given
    conf; its wall (dag_run start → end) and the stack's CPU by group. Once naive (one
    order per task), once partitioned, on equal batches of later orders."""
    n = opts.naive_orders
    out: dict[str, Any] = {"naive_orders": n}
    walls: dict[str, Any] = {}
    for mode, naive in (("partitioned", False), ("naive", True)):
        walls[mode] = _naive_run(stack, _batch(pool, n), {"one_order_per_task": naive}, say, cpu)
        say(f"  naive comparison, {mode}: {walls[mode]}")
    out["naive_runs"] = walls
    p, q = walls["partitioned"].get("wall_s"), walls["naive"].get("wall_s")
    out["naive_ratio"] = round(q / p, 2) if p and q else None
    return out


def _batch(pool: dict[str, Any], n: int) -> list[dict]:
    """Files of the pool holding at least ``n`` orders (channels intake can be triggered for)."""
    batch, count = [], 0
    while pool["files"] and count < n:
        item = pool["files"].pop(0)
        if item["channel"] not in _INTAKE_DAG:
            continue
        batch.append(item)
        count += len(item["orders"])
    return batch


def _backlog(
    stack: Any,
    pool: dict[str, Any],
    n: int,
    conf: dict[str, Any],
    say: Any,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One run over a landed backlog of ``n`` later orders (``conf`` as its conf), and the
    runs its full batches start: their wall, the first's start → the last RELEASED,
    per-stage rates inside execute."""
    res = _naive_run(stack, _batch(pool, n), dict(conf), say, cpu)
    run_ids = res["run_ids"]
    first_start, last_released, released = stack.query(
        "orderflow",
        "SELECT min(occurred_at), max(occurred_at) FILTER (WHERE to_status = 'RELEASED'), "
        "count(DISTINCT order_id) FILTER (WHERE to_status = 'RELEASED') "
        "FROM orderflow.order_event WHERE run_id = ANY(%s)",
        (run_ids,),
    )[0]
    xcoms = _stage_xcoms(stack, run_ids)
    committed = max(release_ends(xcoms).values(), default=None)
    start = stack.query(
        "airflow",
        "SELECT start_date FROM dag_run WHERE dag_id = %s AND run_id = %s",
        (DAG_ID, res["run_id"]),
    )[0][0]
    stages = stage_rates(
        _task_rows(stack, run_ids),
        _decided(stack, run_ids),
        execute_seconds(xcoms),
        execute_seconds(xcoms, "cpu_s"),
    )
    out = {
        "conf": conf,
        "size": n,
        "orders": res["orders_landed"],
        "released": released,
        "runs": len(run_ids),
        "run_wall_s": res["wall_s"],
        # to the last release's commit (its events carry its transaction's start)
        "received_to_released_s": _secs(
            max(committed, last_released) if committed and last_released else last_released,
            start,
        ),
        "last_released_event_s": _secs(last_released, start),
        "first_decision_s": _secs(first_start, start),
        "mapped_task_instances": res["mapped_task_instances"],
        "stage_orders_per_s": {k: v["orders_per_s"] for k, v in stages.items()},
        "stages": stages,
        "cpu_s_by_group": res["cpu_s_by_group"],
    }
    say(
        f"  backlog: {out['orders']} orders landed, {len(run_ids)} run(s) "
        f"{conf or '(defaults)'}: start → "
        f"last RELEASED {out['received_to_released_s']} s ({released} released), run wall "
        f"{res['wall_s']} s, {res['mapped_task_instances']} mapped task instances; stage "
        f"orders/s inside execute {out['stage_orders_per_s']}; stack CPU s trigger → end "
        f"{out['cpu_s_by_group']}"
    )
    return out


def _naive_run(
    stack: Any,
    batch: list[dict],
    conf: dict[str, Any],
    say: Any,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    _pause_processing(stack)
    failed_queued = _fail_queued(stack)
    t0 = _now()
    day_dir = stack.state / "sandbox" / "day"
    for item in batch:
        _drop(stack, day_dir, item)
    for channel in {i["channel"] for i in batch}:
        stack.api("POST", f"/dags/{_INTAKE_DAG[channel]}/dagRuns", json={"logical_date": None})
    from orderflow.dev import soak

    # Landed: no file waiting, no message pending, no ingest task to come or running (it
    # announces orders_received at its end: that event must be queued before the queue is
    # emptied below) and the orders received the same over two looks
    intake = sorted({_INTAKE_DAG[i["channel"]] for i in batch})
    deadline, received, landed = time.monotonic() + 3600, -1, False
    while time.monotonic() < deadline and not landed:
        time.sleep(3)
        running = stack.query(  # not its sensor: a run may wait minutes for a next file
            "airflow",
            "SELECT count(*) FROM task_instance WHERE dag_id = ANY(%s) "
            "AND task_id LIKE 'ingest\\_%%' AND state IN "
            "('scheduled', 'queued', 'running', 'up_for_retry', 'restarting')",
            (intake,),
        )[0][0]
        pending = stack.query(
            "orderflow",
            "SELECT count(*) FROM orderflow.channel_message WHERE outcome = 'pending'",
        )[0][0]
        before, received = (
            received,
            stack.query(
                "orderflow",
                'SELECT count(*) FROM orderflow."order" WHERE created_at >= %s '
                "AND status = 'RECEIVED'",
                (t0,),
            )[0][0],
        )
        landed = (
            not soak._waiting_files(stack.state)
            and not pending
            and not running
            and received == before
        )
    # the scheduler's own runs must not claim the batch: Asset events queued while paused
    # are dropped, and the run is triggered before the DAG is unpaused
    stack.query(
        "airflow",
        "DELETE FROM asset_dag_run_queue WHERE target_dag_id = %s RETURNING 1",
        (DAG_ID,),
    )
    # nor its schedule's next run right at the unpause (checked below all the same: the
    # run must have claimed every order of the batch)
    stack.query(
        "airflow",
        "UPDATE dag SET next_dagrun_create_after = now() + interval '30 minutes' "
        "WHERE dag_id = %s RETURNING 1",
        (DAG_ID,),
    )
    cpu0 = cpu() if cpu else {}
    r = stack.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": conf},
    )
    r.raise_for_status()
    run_id = r.json()["dag_run_id"]
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    # A batch over a run's batch_limit: the run announces orders_waiting and the runs that
    # starts take the rest. Every run queued from now on counts, until none is left running
    # and the runs decided the whole batch (or nothing moves for 60 s).
    runs, decided, idle_since = _runs_since(stack, run_id), 0, time.monotonic()
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        time.sleep(3)
        runs = _runs_since(stack, run_id)
        if any(state not in ("success", "failed") for state, _, _ in runs.values()):
            idle_since = time.monotonic()
            continue
        now_decided = _decided_orders(stack, list(runs), t0)
        if now_decided >= received or runs[run_id][0] == "failed":
            decided = now_decided
            break
        if now_decided != decided:
            decided, idle_since = now_decided, time.monotonic()
        elif time.monotonic() - idle_since > 60:
            break
    cpu_spent = cpu_between(cpu0, cpu()) if cpu else None
    tis = _task_rows(stack, list(runs))
    mapped = sum(1 for t in tis if t.task_id in STAGES and t.map_index >= 0)
    states = [state for state, _, _ in runs.values()]
    start = runs[run_id][1]
    end = max((e for _, _, e in runs.values() if e), default=None)
    return {
        "run_id": run_id,
        "run_ids": list(runs),
        "state": runs[run_id][0],
        "scheduler_runs_failed_before": failed_queued,
        "orders_landed": received,
        "orders_claimed": decided,
        "mapped_task_instances": mapped,
        # the stack's CPU from the trigger to the runs' end, by process group
        "cpu_s_by_group": cpu_spent,
        # only runs that took the whole batch measure it
        "wall_s": round((end - start).total_seconds(), 1)
        if set(states) == {"success"} and decided == received and end
        else None,
    }


def _runs_since(stack: Any, run_id: str) -> dict[str, tuple[str, datetime, datetime | None]]:
    """run_id → (state, start, end) of ``run_id`` and every run queued after it."""
    rows = stack.query(
        "airflow",
        """
        SELECT run_id, state, coalesce(start_date, queued_at), end_date FROM dag_run
         WHERE dag_id = %s AND queued_at >= (SELECT queued_at FROM dag_run
                                              WHERE dag_id = %s AND run_id = %s)
         ORDER BY queued_at
        """,
        (DAG_ID, DAG_ID, run_id),
    )
    return {r: (state, start, end) for r, state, start, end in rows}


def _decided_orders(stack: Any, run_ids: list[str], since: datetime) -> int:
    """Orders created since ``since`` (the batch) that the runs' validate tasks decided
    (a run may also take older orders: fixed master-data holds, backorders)."""
    return stack.query(
        "orderflow",
        "SELECT count(DISTINCT e.order_id) FROM orderflow.order_event e "
        'JOIN orderflow."order" o USING (order_id) WHERE e.run_id = ANY(%s) '
        "AND e.task_id = 'validate_orders' AND o.created_at >= %s",
        (run_ids, since),
    )[0][0]


def _pause_processing(stack: Any, attempts: int = 10) -> None:
    """Pause ``order_processing`` with none of its runs in flight: the scheduler does not
    advance the runs of a paused DAG, so a run caught running is let finish first."""
    for _ in range(attempts):
        _wait_no_processing(stack)
        stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True}).raise_for_status()
        if not _running_processing(stack):
            return
        stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    raise RuntimeError("order_processing kept starting runs: could not pause it between runs")


def _running_processing(stack: Any) -> int:
    return stack.query(
        "airflow",
        "SELECT count(*) FROM dag_run WHERE dag_id = %s AND state = 'running'",
        (DAG_ID,),
    )[0][0]


def _wait_no_processing(stack: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running_processing(stack):
            return
        time.sleep(2)
    raise RuntimeError(f"order_processing runs still running after {timeout:.0f} s")


def _fail_queued(stack: Any) -> int:
    """Runs the scheduler queued (Asset events, its schedule) would claim the batch once the
    DAG is unpaused: marked failed through the REST API, counted in the report."""
    rows = stack.query(
        "airflow",
        "SELECT run_id FROM dag_run WHERE dag_id = %s AND state = 'queued'",
        (DAG_ID,),
    )
    for (run_id,) in rows:
        stack.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    return len(rows)


# ------------------------------------------------------------------------------ summary


def summary_lines(r: dict[str, Any]) -> list[str]:
    ex = "LocalExecutor" if r["executor"] == "local" else f"Celery × {r.get('workers')}"
    stages = ", ".join(f"{k} {v}" for k, v in r["stage_orders_per_s"].items())
    per_task = ", ".join(f"{k} {v}" for k, v in (r.get("stage_orders_per_task_s") or {}).items())
    p95 = r["single_arrival_p95_s"]
    lines = [
        "",
        f"== real-scheduler bench: {r['orders']:,} orders, {ex} (load average at the end "
        f"{r.get('load_average_end')}) ==",
        f"  host: reference workload {(r.get('machine') or {}).get('reference_cpu_ms_start')} ms "
        f"of CPU before, {(r.get('machine') or {}).get('reference_cpu_ms_end')} ms after "
        "(compare runs by it: a slower host costs every figure more)",
        f"  received → released (day, first received → last released): "
        f"{r['received_to_released_s']} s; per order p50 {r.get('received_to_released_p50_s')} s,"
        f" p95 {r.get('received_to_released_p95_s')} s; {r.get('orders_released')} released",
        f"  stage orders/s inside execute (orders decided / Σ execute seconds): {stages}",
        f"  stage orders/s per task-instance second (start-up included): {per_task}",
        f"  sends/s (release sender, rows sent inside send_releases / Σ their seconds): "
        f"{r['sends_per_s']}",
        f"  single arrivals ({r.get('singles')}, intake {r.get('single_intake')}): p50 "
        f"{r.get('single_arrival_p50_s')} s, p95 {p95} s, max {r.get('single_arrival_max_s')} s "
        f"(target ≤ {SINGLE_TARGET_P95_S:g} s: "
        f"{'met' if p95 is not None and p95 <= SINGLE_TARGET_P95_S else 'MISSED'}); drop → "
        f"stored p95 {r.get('single_drop_to_stored_p95_s')} s, stored → released p95 "
        f"{r.get('single_stored_to_released_p95_s')} s, drop → the WMS has the release p95 "
        f"{r.get('single_drop_to_wms_p95_s')} s",
        f"  naive: {r['naive_orders']} orders, ratio {r['naive_ratio']}",
        f"  shipped → customer notified ({r.get('shipped_to_notified_measured')} shipments, "
        f"pushed events): p50 {r.get('shipped_to_notified_p50_s')} s, p95 "
        f"{r.get('shipped_to_notified_p95_s')} s (target ≤ {NOTIFIED_TARGET_P95_S:g} s)",
        f"  peak RSS of the stack (sum over its processes): {r['peak_rss_mib']} MiB "
        f"{r.get('peak_rss_by_process_mib')}",
        f"  CPU seconds (stack, sampled): day {r.get('day_cpu_s')}, singles "
        f"{r.get('singles_cpu_s')}, whole run {r.get('stack_cpu_s')}",
        f"  the day's CPU seconds by process group: {r.get('day_cpu_s_by_group')}",
    ]
    for b in r.get("backlog_runs") or []:
        lines.append(
            f"  backlog {b.get('conf') or '(defaults)'}: {b.get('orders')} orders, start → last "
            f"RELEASED {b.get('received_to_released_s')} s, {b.get('mapped_task_instances')} "
            f"mapped task instances{'; ' + b['error'] if b.get('error') else ''}"
        )
    return lines
