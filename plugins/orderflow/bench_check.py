"""``orderflow bench --check-api``: the order-check API under load, measured.

Generates a day, lands it through intake into a fresh store and processes it with the stage
functions (so customers have open orders, stock has reservations: the exposure and
availability queries see a working store), then starts a real ``airflow api-server`` with the
plugin and sends ``POST /orderflow/api/check`` at a fixed rate (open loop: request *i* is due
at ``i / rate`` s, whether or not earlier ones have answered) with a sales user's JWT, each
request a draft of one of the day's orders. Latency is measured from the moment a request was
due to its answer, so a server (or client) that falls behind shows as latency, not as a lower
rate. Prints p50 / p95 / p99, the rate achieved and errors, and returns them
(``check_api_p95_ms``), with what tells a dear request from a busy machine:

- CPU per answered request of the api-server's processes, of the bench's PostgreSQL backends
  and of the load generator (this process), each counted apart (``/proc``, ``psutil``);
- the load average at the start (1 / 5 / 15 min) and the busy CPU seconds of every other
  process on the machine over the run (``/proc/stat`` minus the three above), with steal;
- how often the api-server was taken off a CPU it still wanted (involuntary context
  switches per request: other runnable processes);
- the CPU time of a fixed reference workload before and after the run
  (:func:`reference_cpu_ms`): the same work costs more CPU time on a contended host.

A run with a load average above half the CPUs at its start, or with other processes using
more than a tenth of the machine, is marked LOADED: its latency says little about the code.

The load generator, the api-server and PostgreSQL share this machine's CPUs: the latency is
the whole machine's, which is what a single-box deployment would see.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_P95_MS = 50.0
SALES_USER = "bench.sales"


def _prepare_store(store_url: str, day: Path, drop: Path, last, say) -> list[dict]:
    """Land the day and process it (validate → plan) in partitions; return the drafts."""
    from orderflow import processing, rules
    from orderflow.bench import _land
    from orderflow.integrations.systems import CreditHook, ScreeningHook, TaxHook
    from orderflow.ordercheck.service import draft_of
    from orderflow.store import db
    from orderflow.store import processing as repo

    landed = _land(store_url, day, drop, last, say)
    try:
        conn = db.connect()
        t0 = time.perf_counter()
        ctx = processing.RunContext(dag_id="bench_check", run_id="bench", task_id="stage")
        book = rules.load(conn=conn)
        claimed = repo.claim(conn, "bench", 100_000)
        parts = repo.partitions(claimed, 8)
        credit, tax, screening = CreditHook(), TaxHook(), ScreeningHook()
        for ids in parts:
            processing.validate(conn, ids, ctx, book)
            processing.check_credit(
                conn, ids, ctx, book, credit.check, credit_batch=credit.check_many
            )
            processing.allocate(conn, ids, ctx, book)
            processing.plan_through(conn, ids, ctx, book, tax, screening)
        repo.unclaim(conn, "bench")
        statuses = dict(
            conn.execute('SELECT status, count(*) FROM orderflow."order" GROUP BY 1').fetchall()
        )
        say(
            f"landed {landed.orders:,} orders ({landed.lines:,} lines) in {landed.seconds:.1f}s, "
            f"processed in {time.perf_counter() - t0:.1f}s: {statuses}"
        )
        ids = [
            r[0]
            for r in conn.execute(
                'SELECT order_id FROM orderflow."order" WHERE customer_id IS NOT NULL '
                "AND parent_order_id IS NULL ORDER BY order_id"
            )
        ]
        views = repo.load_orders(conn, ids, [s for s in statuses])
        conn.close()
    finally:
        landed.sandbox.stop()
    return [draft_of(v).model_dump(mode="json") for v in views]


async def _load(
    url: str, token: str, drafts: list[dict], rate: float, seconds: float
) -> tuple[list[float], dict[int, int], float, list[str]]:
    import aiohttp

    n = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps(d).encode() for d in drafts]
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    # the headers once for the session, no cookie jar, no response decompression: the load
    # generator shares the CPUs with what it measures
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    ) as session:

        async def one(i: int, due: float) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.post(url, data=bodies[i % len(bodies)]) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            except Exception as exc:  # counted, never hidden
                statuses[0] = statuses.get(0, 0) + 1
                if len(errors) < 5:
                    errors.append(repr(exc))
            latencies.append(time.perf_counter() - due)

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed, errors


def _run(coro):
    """``asyncio.run`` on uvloop where it is installed (uvicorn's own loop: less CPU per
    request for the load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _pct(values: list[float], q: float) -> float:
    from orderflow.bench import _pct as pct

    return pct(values, q)


class ServerCpu:
    """CPU seconds (user + system) spent by the api-server's processes and by the PostgreSQL
    backends connected to the bench's databases, between :meth:`start` and :meth:`stop`:
    the server side's cost per request, apart from what the rest of the machine does.

    Backends are found in ``pg_stat_activity`` and read from ``/proc`` (a database server on
    this machine; elsewhere its share is reported as ``None``)."""

    def __init__(self, server_pid: int | None, server_url: str | None, databases: list[str]):
        self.server_pid, self.server_url, self.databases = server_pid, server_url, databases
        self._api0: dict[int, float] = {}
        self._pg0: dict[int, float] = {}
        self._switches0: dict[int, int] = {}

    @staticmethod
    def _involuntary(pids) -> dict[int, int]:
        """Involuntary context switches per process: each is the process taken off a CPU
        that it still wanted (by another runnable process), and its caches cooled."""
        import psutil

        out = {}
        for pid in pids:
            try:
                out[pid] = psutil.Process(pid).num_ctx_switches().involuntary
            except (psutil.Error, OSError):
                continue
        return out

    @staticmethod
    def _cpu(pids) -> dict[int, float]:
        import psutil

        out = {}
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except (psutil.Error, OSError):
                continue
        return out

    def _api_pids(self) -> list[int]:
        import psutil

        if self.server_pid is None:
            return []
        try:
            proc = psutil.Process(self.server_pid)
            return [proc.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            return []

    def _pg_pids(self) -> list[int] | None:
        if not self.server_url or not self.databases:
            return None
        import psycopg

        from orderflow.dev import pg

        try:
            with psycopg.connect(pg.libpq_url(self.server_url), autocommit=True) as conn:
                if conn.info.host not in ("127.0.0.1", "localhost", "::1") and not str(
                    conn.info.host
                ).startswith("/"):
                    return None
                return [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) "
                        "AND pid <> pg_backend_pid()",
                        (self.databases,),
                    )
                ]
        except psycopg.Error:
            return None

    def start(self) -> None:
        pids = self._api_pids()
        self._api0 = self._cpu(pids)
        self._switches0 = self._involuntary(pids)
        pg_pids = self._pg_pids()
        self._pg0 = self._cpu(pg_pids) if pg_pids is not None else {}

    def stop(self) -> dict[str, float | None]:
        pids = self._api_pids()
        api1 = self._cpu(pids)
        switches = sum(v - self._switches0.get(p, 0) for p, v in self._involuntary(pids).items())
        pg_pids = self._pg_pids()
        api = sum(v - self._api0.get(p, 0.0) for p, v in api1.items())
        pg_s = None
        if pg_pids is not None:
            pg1 = self._cpu(pg_pids)
            pg_s = sum(v - self._pg0.get(p, 0.0) for p, v in pg1.items())
        return {
            "api_server_cpu_s": round(api, 2),
            "postgres_cpu_s": _round(pg_s, 2),
            "api_server_involuntary_switches": switches,
        }


def machine_cpu() -> tuple[float, float] | None:
    """This machine's (busy, steal) CPU seconds since boot, all CPUs (``/proc/stat``), or
    None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq) / tick, steal / tick


def reference_cpu_ms(repeat: int = 5) -> float:
    """CPU milliseconds this process spends on a fixed piece of Python work (dicts, JSON,
    hashing; 45–60 ms on the 2-vCPU development VM), the median of ``repeat``.

    The CPU a request costs depends on the machine as well as on the code: on a host whose
    other tenants keep the CPUs busy, the same instructions take more CPU time (caches and
    branch predictors cooled by every switch, a sibling hyperthread busy). Printed next to
    the CPU per request, it tells a slower machine from a dearer request."""
    import hashlib
    import statistics

    def work() -> None:
        d = {str(i): i * 3 for i in range(60_000)}
        s = json.dumps(d)
        json.loads(s)
        for i in range(2_000):
            hashlib.sha256(s[i : i + 64].encode()).digest()

    import gc

    times = []
    enabled = gc.isenabled()
    gc.disable()  # this process's heap (Airflow's) would be walked, not the work measured
    try:
        for _ in range(repeat):
            t = time.process_time()
            work()
            times.append((time.process_time() - t) * 1000)
    finally:
        if enabled:
            gc.enable()
    return round(statistics.median(times), 1)


def _round(x: float | None, n: int) -> float | None:
    return None if x is None else round(x, n)


def measure(
    base: str,
    token: str,
    drafts: list[dict],
    rate: float,
    seconds: float,
    say,
    server_cpu: ServerCpu | None = None,
) -> dict[str, Any]:
    """Warm up, then ``rate`` requests/s for ``seconds`` against ``base``; the numbers."""
    url = f"{base}/orderflow/api/check"
    _run(_load(url, token, drafts, min(rate, 50.0), 2.0))  # pool, caches, imports
    ncpu = os.cpu_count() or 1
    load0 = os.getloadavg()
    say(
        f"load average at start (1 / 5 / 15 min): {load0[0]:.1f} / {load0[1]:.1f} / "
        f"{load0[2]:.1f} on {ncpu} CPUs"
        + (
            " — LOADED: other work is running, latency is not comparable"
            if load0[0] > ncpu / 2
            else ""
        )
    )
    reference = reference_cpu_ms()
    if server_cpu is not None:
        server_cpu.start()
    machine0 = machine_cpu()
    cpu0 = os.times()
    lat, statuses, elapsed, errors = _run(_load(url, token, drafts, rate, seconds))
    client_s = sum(os.times()[:2]) - sum(cpu0[:2])
    machine1 = machine_cpu()
    server = server_cpu.stop() if server_cpu is not None else {}
    reference_after = reference_cpu_ms()
    ms = sorted(x * 1000 for x in lat)
    ok = statuses.get(200, 0)
    out = {
        "check_api_p50_ms": round(_pct(ms, 0.50), 1),
        "check_api_p95_ms": round(_pct(ms, 0.95), 1),
        "check_api_p99_ms": round(_pct(ms, 0.99), 1),
        "check_api_max_ms": round(ms[-1], 1) if ms else None,
        "check_api_target_rate": rate,
        "check_api_achieved_rate": round(len(lat) / elapsed, 1),
        "check_api_requests": len(lat),
        "check_api_ok": ok,
        "check_api_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "check_api_client_cpu_s": round(client_s, 1),
        "check_api_load_average_start": round(load0[0], 1),
        "check_api_load_average": round(max(load0[0], os.getloadavg()[0]), 1),
    }
    client = out["check_api_client_cpu_s"]
    api_s, pg_s = server.get("api_server_cpu_s"), server.get("postgres_cpu_s")
    out["check_api_server_cpu_s"] = api_s
    out["check_api_postgres_cpu_s"] = pg_s
    switches = server.get("api_server_involuntary_switches")
    out["check_api_server_involuntary_switches_per_request"] = (
        round(switches / max(ok, 1), 2) if switches is not None else None
    )
    # the rest of the machine over the run: busy CPU seconds not spent by the load
    # generator, the api-server or the bench's PostgreSQL backends (other people's work)
    others = steal = None
    if machine0 is not None and machine1 is not None:
        busy = machine1[0] - machine0[0]
        steal = round(machine1[1] - machine0[1], 1)
        others = round(max(0.0, busy - client_s - (api_s or 0.0) - (pg_s or 0.0)), 1)
    capacity = elapsed * ncpu
    out["check_api_other_processes_cpu_s"] = others
    out["check_api_other_processes_cpu_share"] = (
        round(others / capacity, 2) if others is not None and capacity > 0 else None
    )
    out["check_api_steal_cpu_s"] = steal
    out["check_api_reference_cpu_ms"] = [reference, reference_after]
    out["check_api_machine_loaded"] = bool(
        load0[0] > ncpu / 2 or (out["check_api_other_processes_cpu_share"] or 0) > 0.1
    )
    per = {
        "client": client,
        "api_server": api_s,
        "postgres": pg_s,
    }
    out["check_api_cpu_ms_per_request"] = {
        k: round(v * 1000 / max(ok, 1), 2) if v is not None else None for k, v in per.items()
    }
    say(
        f"check API at {rate:.0f} req/s for {seconds:.0f}s: {len(lat):,} requests, "
        f"{ok:,} answered 200, achieved {out['check_api_achieved_rate']} req/s; latency "
        f"p50 {out['check_api_p50_ms']} ms, p95 {out['check_api_p95_ms']} ms (target ≤ "
        f"{TARGET_P95_MS:.0f}: {'met' if out['check_api_p95_ms'] <= TARGET_P95_MS else 'MISSED'})"
        f", p99 {out['check_api_p99_ms']} ms, max {out['check_api_max_ms']} ms"
    )
    cpu = out["check_api_cpu_ms_per_request"]
    say(
        f"  CPU per request: api-server {cpu['api_server']} ms, PostgreSQL backends "
        f"{cpu['postgres']} ms, load generator {cpu['client']} ms (CPU seconds over the run: "
        f"{api_s} / {pg_s} / {client})"
    )
    share = out["check_api_other_processes_cpu_share"]
    say(
        f"  the rest of the machine: {others} CPU s"
        + (f" ({share:.0%} of its {capacity:.0f})" if share is not None else "")
        + f", steal {steal} s; api-server taken off a CPU by another process "
        f"{out['check_api_server_involuntary_switches_per_request']} times per request; "
        f"load average {out['check_api_load_average_start']} at start, "
        f"{out['check_api_load_average']} at most; the reference workload took {reference} ms "
        f"of CPU before the run, {reference_after} ms after"
        + (
            " — LOADED MACHINE: the latency and, through cold caches, the CPU per request "
            "are not comparable with a quiet run"
            if out["check_api_machine_loaded"]
            else " — quiet machine"
        )
    )
    if errors:
        say(f"  errors: {errors}")
    return out


def run_check_api(
    *,
    rate: float = 200.0,
    seconds: float = 30.0,
    orders_per_day: int = 1000,
    seed: int = 7,
    workers: int = 2,
    keep: bool = False,
) -> dict[str, Any]:
    """The whole check-API benchmark on fresh databases; returns the numbers."""
    from orderflow import bench

    say = bench.Console()
    server, source = bench._server_url()
    token = f"{os.getpid()}_{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="of-bench-check-"))
    dbs = bench.Databases(server=server, source=source, token=token)
    dbs.airflow_url = bench._with_db(server, f"airflow_bench_{token}", "postgresql+psycopg2")
    bench._configure_airflow(work, dbs.airflow_url)
    say(f"machine: {bench._machine(server)}")
    say(f"database server: {source}; databases *_bench_{token}; work folder {work}")
    results: dict[str, Any] = {}
    api = None
    ok = False
    try:
        from orderflow.dev import pg
        from orderflow.dev.api_server import start_api_server

        with say.redirected(work / "bench.log"):
            pg.ensure_database(dbs.airflow_url)
            subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                check=True,
                env=os.environ.copy(),
                capture_output=True,
            )
            last = bench._generate(work / "day", seed, 1, orders_per_day, say)[-1]
            dbs.stores.append(bench._new_store(server, f"orderflow_bench_{token}"))
            drafts = _prepare_store(dbs.stores[-1], work / "day", work / "drop", last, say)
            api = start_api_server(
                work / "api",
                {SALES_USER: "viewer"},
                {SALES_USER: ["sales"]},
                workers=workers,
            )
        say(f"api-server with {workers} worker(s) at {api.base}; {len(drafts):,} distinct drafts")
        server_cpu = ServerCpu(
            api.proc.pid,
            server,
            [f"orderflow_bench_{token}", f"airflow_bench_{token}"],
        )
        results = measure(api.base, api.token(SALES_USER), drafts, rate, seconds, say, server_cpu)
        results["check_api_server_workers"] = workers
        ok = True
    finally:
        if api is not None:
            api.stop()
        if not ok:
            say(f"FAILED — kept for a look: {work}")
        bench._cleanup(dbs, work, keep or not ok, say)
    return results
