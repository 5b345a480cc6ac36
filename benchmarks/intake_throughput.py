"""Intake throughput on a generated day: portal (over HTTP from the sandbox), EDI and CSV
(drop folders filled by the sandbox), into a fresh store database. Prints orders/s and
lines/s per channel.

    .venv/bin/python benchmarks/intake_throughput.py [--day DIR] [--orders 5000]

Uses ORDERFLOW_TEST_DATABASE_URL's server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--day", type=Path, default=None, help="existing generated day (else generate)")
    ap.add_argument("--orders", type=int, default=5000)
    args = ap.parse_args()

    from tests_support import START, start_sandbox

    from orderflow.dev import pg
    from orderflow.store import db

    work = Path(tempfile.mkdtemp(prefix="of-bench-"))
    day = args.day
    if day is None:
        from orderflow_sandbox.generator import generate

        day = work / "day"
        t0 = time.perf_counter()
        generate(day, seed=7, orders_per_day=args.orders, business_date=START.date())
        print(f"generated {args.orders} orders in {time.perf_counter() - t0:.1f}s")
    business = date.fromisoformat(
        json.loads((day / "manifest.json").read_text())["business_dates"][0]
    )
    from orderflow.bench import scratch_store

    url = scratch_store()
    db.use_url(url)
    sb = start_sandbox(day, work / "drop")
    try:
        os.environ.update(sb.connection_env())
        end = (
            START.replace(year=business.year, month=business.month, day=business.day)
            + timedelta(days=2)
        ).isoformat()
        sb.client.put("/admin/clock", json={"now": end}).raise_for_status()
        _run(db, sb)
    finally:
        sb.stop()
        pg.drop_database(url)


def _run(db, sb) -> None:
    from orderflow import masterdata
    from orderflow.intake import drops, portal
    from orderflow.integrations.systems import ErpHook, PortalHook, WmsHook

    conn = db.connect()
    t0 = time.perf_counter()
    res = masterdata.sync(conn, {"erp": ErpHook(), "wms": WmsHook()}, full=True)
    md_s = time.perf_counter() - t0
    rows = sum(r.rows for r in res)
    print(
        f"master data: {rows:,} rows in {md_s:.1f}s ({rows / md_s:,.0f} rows/s incl. HTTP extract)"
    )
    results = []
    t0 = time.perf_counter()
    stats = portal.pull(conn, PortalHook(), page_size=500)
    results.append(("portal", time.perf_counter() - t0, len(stats.order_ids), stats.items))
    for channel, sub in (("edi", "edi/inbound"), ("csv", "csv/inbound")):
        t0 = time.perf_counter()
        st = drops.ingest_folder(conn, sb.drop / sub, channel)
        results.append((channel, time.perf_counter() - t0, st.orders, st.files))
    print(
        f"{'channel':<8}{'messages':>10}{'orders':>9}{'lines':>9}{'seconds':>9}{'orders/s':>10}{'lines/s':>10}"
    )
    for channel, secs, orders, messages in results:
        lines = conn.execute(
            'SELECT count(*) FROM orderflow.order_line l JOIN orderflow."order" o USING (order_id) '
            "WHERE o.channel = %s",
            (channel,),
        ).fetchone()[0]
        print(
            f"{channel:<8}{messages:>10}{orders:>9}{lines:>9}{secs:>9.1f}{orders / secs:>10.0f}{lines / secs:>10.0f}"
        )
    conn.close()


if __name__ == "__main__":
    main()
