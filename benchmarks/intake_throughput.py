"""Intake throughput on a generated day: portal (over HTTP from the sandbox), EDI and CSV
(drop folders filled by the sandbox), into a fresh store database. Prints orders/s and
lines/s per channel.

    .venv/bin/python benchmarks/intake_throughput.py [--day DIR] [--orders 5000]

Uses ORDERFLOW_TEST_DATABASE_URL's server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--day", type=Path, default=None, help="existing generated day (else generate)")
    ap.add_argument("--orders", type=int, default=5000)
    args = ap.parse_args()

    from orderflow.bench import delivered_day
    from orderflow.store import db

    work = Path(tempfile.mkdtemp(prefix="of-bench-"))
    try:
        with delivered_day(args.day, args.orders, work, through=0) as sb:
            _run(db, sb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
