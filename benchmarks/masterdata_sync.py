"""Master-data sync + quality gate at full default scale: extract over HTTP from the sandbox,
Great Expectations validation, exceptions, publish, dq_passed flags and data docs, into a
fresh store database. Prints the time of each part, for a full and an incremental run, and a
baseline sync without the gate.

    .venv/bin/python benchmarks/masterdata_sync.py [--day /tmp/gen1] [--no-baseline]

A default-scale day (≈2,000 customers, ≈5,000 ship-tos, 10,000 items, ≈31k xrefs, ≈49k
contracts, 20k inventory positions) is generated when ``--day`` is not given. Uses
ORDERFLOW_TEST_DATABASE_URL's server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--day", type=Path, default=None, help="existing generated day (else generate)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the sync without the gate")
    args = ap.parse_args()

    import logging

    from tests_support import START, start_sandbox

    logging.disable(logging.WARNING)  # per-entity lines would drown the numbers

    from orderflow.dev import pg
    from orderflow.store import db, migrations

    work = Path(tempfile.mkdtemp(prefix="of-bench-md-"))
    os.environ["ORDERFLOW_DQ_DOCS_DIR"] = str(work / "dq-docs")
    day = args.day
    if day is None:
        from orderflow_sandbox.generator import generate

        day = work / "day"
        t0 = time.perf_counter()
        generate(day, seed=7, orders_per_day=5000, business_date=START.date())
        print(f"generated a default-scale day in {time.perf_counter() - t0:.1f}s")
    world = json.loads((day / "world.json").read_text())
    print(
        "master data: "
        + ", ".join(
            f"{len(world[k]):,} {k}"
            for k in ("customers", "ship_tos", "items", "xrefs", "contracts", "inventory")
        )
    )
    server = os.environ.get("ORDERFLOW_TEST_DATABASE_URL") or pg.start_embedded(
        ROOT / ".orderflow" / "test-state"
    ).url("postgres")
    from sqlalchemy.engine import make_url

    def fresh_db() -> str:
        url = (
            make_url(server)
            .set(
                database=f"orderflow_bench_{secrets.token_hex(3)}", drivername="postgresql+psycopg"
            )
            .render_as_string(hide_password=False)
        )
        pg.ensure_database(url)
        migrations.upgrade(url)
        return url

    sb = start_sandbox(day, work / "drop")
    urls = []
    try:
        os.environ.update(sb.connection_env())
        if not args.no_baseline:
            urls.append(fresh_db())
            db.use_url(urls[-1])
            _baseline(db)
        urls.append(fresh_db())
        db.use_url(urls[-1])
        _gated(db, sb, world)
    finally:
        sb.stop()
        for url in urls:
            pg.drop_database(url)


def _hooks():
    from orderflow.integrations.systems import ErpHook, WmsHook

    return {"erp": ErpHook(), "wms": WmsHook()}


def _baseline(db) -> None:
    from orderflow import masterdata

    conn = db.connect()
    t0 = time.perf_counter()
    res = masterdata.sync(conn, _hooks(), full=True)
    secs = time.perf_counter() - t0
    rows = sum(r.rows for r in res)
    print(f"\nbaseline, no gate: full sync {rows:,} rows in {secs:.1f}s")
    conn.close()


def _gated(db, sb, world) -> None:
    from orderflow.dq.gate import QualityGate
    from orderflow.operators.masterdata import sync_with_gate

    conn = db.connect()
    t_import = time.perf_counter()
    import great_expectations  # noqa: F401  (the one-off import cost, measured apart)

    t_import = time.perf_counter() - t_import

    timings: dict[str, float] = {}
    orig_call = QualityGate.__call__

    def timed_call(self, entity, records, duplicates):
        t = time.perf_counter()
        try:
            return orig_call(self, entity, records, duplicates)
        finally:
            timings[entity] = time.perf_counter() - t

    QualityGate.__call__ = timed_call
    try:
        for label, full in (("full", True), ("incremental, nothing changed", False)):
            timings.clear()
            t0 = time.perf_counter()
            summary = sync_with_gate(conn, _hooks(), run_id=f"bench-{label[:4]}", full=full)
            secs = time.perf_counter() - t0
            rows = sum(e["rows"] for e in summary["entities"].values())
            extract = sum(e["extract_s"] for e in summary["entities"].values())
            gate_s = sum(timings.values())
            publish = sum(e["publish_s"] for e in summary["entities"].values())
            other = secs - extract - publish - gate_s
            print(f"\ngated sync, {label}: {rows:,} rows in {secs:.1f}s")
            print(
                f"  extract (HTTP) {extract:.1f}s · quality gate {gate_s:.1f}s "
                f"(GX + exceptions + dq_result) · publish {publish:.1f}s · "
                f"flags + docs + rest {other:.1f}s"
            )
            if full:
                print(f"  {'entity':<16}{'rows':>8}{'gate s':>9}{'failed':>8}  failed rules")
                for entity, e in summary["entities"].items():
                    print(
                        f"  {entity:<16}{e['rows']:>8,}{timings.get(entity, 0):>9.2f}"
                        f"{e.get('failed_entities', 0):>8}  {', '.join(e.get('failed_rules', []))}"
                    )
                tables = {"ship_to": "ship_to", "item": "item", "contract": "price_contract"}
                tables["xref"] = "customer_item_xref"
                labelled = {
                    (tables[d["entity"]], d["id"].replace(":", "|", 1))
                    for d in world["master_data_defects"]
                }
                opened = set(
                    conn.execute(
                        "SELECT entity_type, entity_id FROM orderflow.order_exception "
                        "WHERE status = 'open' AND category = 'master_data_quality'"
                    ).fetchall()
                )
                print(
                    f"  exceptions opened {summary['exceptions_opened']}, withheld "
                    f"{summary['withheld']}, labelled defects {len(labelled)}: "
                    + (
                        "exactly the labelled entities"
                        if opened == labelled
                        else f"{len(opened - labelled)} unlabelled, {len(labelled - opened)} missed"
                    )
                )
                print(f"  failed suites: {', '.join(summary['failed_suites']) or 'none'}")
                print(f"  data docs: {summary['docs']}")
    finally:
        QualityGate.__call__ = orig_call
    print(f"\n(one-off `import great_expectations` in this process: {t_import:.1f}s)")
    conn.close()


if __name__ == "__main__":
    main()
