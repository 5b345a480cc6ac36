"""Per-stage CPU profile of order processing, and a comparison of what two code versions
decided (``python -m orderflow.dev.stage_profile``).

``prepare OUT``: generate a day (seed 7, ``ORDERS`` orders, default 2,000) and land it into a
template store ``stage_profile_tpl`` (``STAGE_PROFILE_TPL`` names another) on
``ORDERFLOW_TEST_DATABASE_URL`` (once: landing is slow),
then ``ANALYZE`` it (a live store has statistics; copies of a template without them plan
every partition's loads with defaults).

``run OUT LABEL [--no-profile] [--stages=validate,credit,…]``: copy the template, start a
sandbox on a copy of the landed sandbox state, claim every order and run the five stage
functions over the partitions the DAG would cut (each partition as ``OrderStageOperator.execute`` runs it: the rule book, a
connection, the stage with the operators' hooks), then the ``send_releases`` outbox send.
Per stage: orders, wall, CPU seconds of this process, of the PostgreSQL backend and of the
sandbox, and a cProfile (``OUT/LABEL-<stage>.prof``) timed in CPU seconds of this process
(``time.process_time``: waiting for PostgreSQL or the sandbox is not in it — their CPU is
counted apart; ``STAGE_PROFILE_WALL=1`` times it in wall-clock seconds instead, waits
included). ``--stages`` stops after the stages named (the dump is then of that point:
compare only runs that stopped at the same stage). Then every table of the store, minus
timestamps and serial ids, goes to ``OUT/LABEL-dump.json``, and the run's database is
dropped (``STAGE_PROFILE_KEEP=1`` keeps it, to ``EXPLAIN`` its statements).

``compare A.json B.json [table.column,…]``: the tables whose rows differ (columns named are
left out, e.g. identifiers a receiver assigns in the order requests arrive).

Run the baseline with ``PYTHONPATH=<a checkout of the old code>/plugins:<…>/include`` (and this
file by its path) for a before/after.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SERVER = os.environ["ORDERFLOW_TEST_DATABASE_URL"]
TPL = os.environ.get("STAGE_PROFILE_TPL", "stage_profile_tpl")
TICK = os.sysconf("SC_CLK_TCK")


def url(db: str, driver="postgresql+psycopg") -> str:
    from orderflow.bench import _with_db

    return _with_db(SERVER, db, driver)


def admin():
    import psycopg

    c = psycopg.connect(SERVER, autocommit=True)
    return c


def backend_cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def sandbox_cpu(proc) -> float:
    import psutil

    p = psutil.Process(proc.pid)
    t = p.cpu_times()
    total = t.user + t.system
    for ch in p.children(recursive=True):
        try:
            ct = ch.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def prepare(out: Path) -> None:
    import psycopg

    from orderflow.bench import Console, _generate, _land, _new_store

    out.mkdir(parents=True, exist_ok=True)
    say = Console()
    days = _generate(out / "day", 7, 1, int(os.environ.get("ORDERS", "2000")), say)
    a = admin()
    a.execute(f"DROP DATABASE IF EXISTS {TPL}")
    a.close()
    store = _new_store(SERVER, TPL)
    landed = _land(store, out / "day", out / "drop", days[-1], say)
    landed.sandbox.stop()
    # Statistics, as autovacuum gathers them on a live store: a database copied from a
    # template that never had them plans every load with defaults (sequential scans).
    a = psycopg.connect(url(TPL, "postgresql"), autocommit=True)
    a.execute("ANALYZE")
    a.close()
    (out / "meta.json").write_text(json.dumps({"last": str(days[-1]), "orders": landed.orders}))
    print("landed", landed.orders, landed.lines, landed.seconds)


def dump(conn, path: Path) -> None:
    """Every table of the store, columns that are not timestamps or serial ids, sorted."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='orderflow' "
            "AND table_type='BASE TABLE' ORDER BY 1"
        )
    ]
    out = {}
    for t in tables:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='orderflow'"
                " AND table_name=%s AND data_type NOT LIKE 'timestamp%%' "
                " AND coalesce(column_default,'') NOT LIKE 'nextval%%' "
                " AND is_identity='NO' ORDER BY ordinal_position",
                (t,),
            )
        ]
        if not cols:
            continue
        sel = ", ".join(f'"{c}"::text' for c in cols)
        rows = sorted(
            json.dumps(r, default=str)
            for r in conn.execute(f'SELECT {sel} FROM orderflow."{t}"').fetchall()
        )
        out[t] = {"cols": cols, "rows": rows}
    path.write_text(json.dumps(out, indent=0))


STAGES = ("validate", "credit", "allocate", "plan", "release", "send")


def run(out: Path, label: str, profile: bool, stages: tuple[str, ...] = STAGES) -> None:
    db_name = f"stage_profile_{label.lower()}"  # as CREATE DATABASE names it
    a = admin()
    a.execute(f"DROP DATABASE IF EXISTS {db_name}")
    a.execute(f"CREATE DATABASE {db_name} TEMPLATE {TPL}")
    a.close()
    drop = out / f"drop-{label}"
    shutil.rmtree(drop, ignore_errors=True)
    shutil.copytree(out / "drop", drop)
    from orderflow.dev.sandbox_proc import start_sandbox
    from orderflow.store import db

    store = url(db_name)
    db.use_url(store)
    sb = start_sandbox(out / "day", drop)
    # a run that fails stops its sandbox too (one left running would skew the next runs)
    atexit.register(lambda: sb.proc.poll() is None and sb.stop())
    os.environ.update(sb.connection_env())
    from orderflow import processing, rules
    from orderflow.integrations import outbox
    from orderflow.integrations.systems import (
        CreditHook,
        ErpHook,
        ScreeningHook,
        TaxHook,
    )
    from orderflow.store import processing as repo

    run_id = "prof"
    conn = db.connect()
    with db.transaction(conn):
        claimed = repo.claim(conn, run_id, 20000)
    parts = repo.partitions(claimed, 16, 250)
    conn.close()
    print(f"{label}: claimed {len(claimed)} in {len(parts)} partitions", flush=True)

    def stage_fn(stage):
        def go(conn, ids, ctx, book):
            if stage == "validate":
                return processing.validate(conn, ids, ctx, book)
            if stage == "credit":
                credit = CreditHook()
                return processing.check_credit(
                    conn,
                    ids,
                    ctx,
                    book,
                    credit.check,
                    ErpHook(retries=2).exposures,
                    **(
                        {"credit_batch": credit.check_many} if hasattr(credit, "check_many") else {}
                    ),
                )
            if stage == "allocate":
                return processing.allocate(conn, ids, ctx, book)
            if stage == "plan":
                tax, screening = TaxHook(), ScreeningHook()
                batches = (
                    {"tax_batch": tax.quote_many, "screening_batch": screening.check_many}
                    if hasattr(tax, "quote_many")
                    else {}
                )
                return processing.plan(conn, ids, ctx, book, tax.quote, screening.check, **batches)
            return processing.release(conn, ids, ctx, book)

        return go

    results = {}
    last = max(STAGES.index(s) for s in stages)
    for stage in STAGES[: last + 1]:
        clock = time.perf_counter if os.environ.get("STAGE_PROFILE_WALL") else time.process_time
        prof = cProfile.Profile(clock) if profile else None
        cpu0, wall0, sb0 = time.process_time(), time.perf_counter(), sandbox_cpu(sb.proc)
        be = 0.0
        orders = 0
        if stage == "send":
            conn = db.connect()
            pid = conn.info.backend_pid
            b0 = backend_cpu(pid)
            if prof:
                prof.enable()
            res = outbox.send(
                conn,
                ["wms_release", "wms_release_cancel", "carrier_tender", "edi_855"],
                limit=50_000,
            )
            if prof:
                prof.disable()
            be += backend_cpu(pid) - b0
            conn.close()
            orders = res.sent
            extra = res.as_dict()
        else:
            extra = {}
            for i, ids in enumerate(parts):
                # what OrderStageOperator.execute does: the rule book, a connection, the run
                if prof:
                    prof.enable()
                book = rules.load(datetime.now(UTC))
                conn = db.connect()
                pid = conn.info.backend_pid
                b0 = backend_cpu(pid)
                ctx = processing.RunContext(
                    dag_id="order_processing",
                    run_id=run_id,
                    task_id=stage,
                    map_index=i,
                    claimed_by=run_id,
                )
                r = stage_fn(stage)(conn, ids, ctx, book)
                b1 = backend_cpu(pid)
                conn.close()
                if prof:
                    prof.disable()
                be += b1 - b0
                orders += r.orders
                for k, v in r.held.items():
                    extra[k] = extra.get(k, 0) + v
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        sbc = sandbox_cpu(sb.proc) - sb0
        results[stage] = dict(
            orders=orders, wall=wall, cpu=cpu, backend_cpu=be, sandbox_cpu=sbc, extra=extra
        )
        print(
            f"{label} {stage:9} n={orders:5} wall {wall:6.2f}s  py-cpu {cpu:6.2f}s "
            f"pg-cpu {be:5.2f}s sandbox-cpu {sbc:5.2f}s  -> {orders / wall if wall else 0:7.0f}/s wall, "
            f"{orders / cpu if cpu else 0:7.0f}/s py-cpu  load {os.getloadavg()[0]:.1f} {extra}",
            flush=True,
        )
        if prof:
            prof.dump_stats(out / f"{label}-{stage}.prof")
    conn = db.connect()
    with db.transaction(conn):
        repo.unclaim(conn, run_id)
    dump(conn, out / f"{label}-dump.json")
    conn.close()
    sb.stop()
    (out / f"{label}-results.json").write_text(json.dumps(results, indent=1))
    if not os.environ.get("STAGE_PROFILE_KEEP"):  # kept: to look at its statements' plans
        a = admin()
        a.execute(f"DROP DATABASE IF EXISTS {db_name}")
        a.close()


def _clock(row: str) -> str:
    """An X12 envelope's date and time of creation (ISA09/10, GS04/05) left out."""
    row = re.sub(r"\*\d{6}\*\d{4}\*U\*", "*D*T*U*", row)
    return re.sub(r"(GS\*[^*]*\*[^*]*\*[^*]*)\*\d{8}\*\d{4}\*", r"\1*D*T*", row)


def compare(a_path: str, b_path: str, ignore_cols: str = "") -> int:
    """Print the tables whose rows differ; returns how many."""
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    ignore = set(filter(None, ignore_cols.split(",")))
    same = diff = 0
    for t in sorted(set(a) | set(b)):
        ra, rb = a.get(t, {}).get("rows", []), b.get(t, {}).get("rows", [])
        ra, rb = sorted(map(_clock, ra)), sorted(map(_clock, rb))
        cols = a.get(t, b.get(t))["cols"]
        keep = [i for i, c in enumerate(cols) if f"{t}.{c}" not in ignore]
        if ignore:
            ra = sorted(json.dumps([json.loads(r)[i] for i in keep]) for r in ra)
            rb = sorted(json.dumps([json.loads(r)[i] for i in keep]) for r in rb)
        if ra == rb:
            same += 1
            continue
        diff += 1
        sa, sb = set(ra), set(rb)
        print(
            f"== {t}: {len(ra)} vs {len(rb)} rows; only in A {len(sa - sb)}, only in B {len(sb - sa)}; cols {cols}"
        )
        for r in sorted(sa - sb)[:3]:
            print("  A", r[:400])
        for r in sorted(sb - sa)[:3]:
            print("  B", r[:400])
    print(f"{same} tables identical, {diff} differ")
    return diff


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prepare":
        prepare(Path(sys.argv[2]))
    elif cmd == "run":
        named = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--stages=")]
        run(
            Path(sys.argv[2]),
            sys.argv[3],
            "--no-profile" not in sys.argv,
            tuple(named[0].split(",")) if named else STAGES,
        )
    else:
        sys.exit(1 if compare(*sys.argv[2:5]) else 0)
