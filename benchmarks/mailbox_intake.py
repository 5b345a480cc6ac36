"""The mailbox channel of a generated day: e-mailed purchase orders (text-layer PDFs, scanned
PDFs and PNG scans) landed into a fresh store database, as ``intake_mailbox`` would land them.
Prints e-mails, pages OCRed, wall and CPU seconds (this process and its children: the
forked readers and the tesseract processes) and e-mails/s.

    .venv/bin/python benchmarks/mailbox_intake.py [--day DIR] [--orders 5000] [--profile OUT]

Master data is synced first (with the quality gate) and not timed. ``--profile`` writes a
cProfile of the timed part (the intake process only; tesseract is a child process). Uses
ORDERFLOW_TEST_DATABASE_URL's server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> tuple[float, float, float]:
    """(this process, its waited-for children, this thread) CPU seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime, time.thread_time()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--day", type=Path, default=None, help="existing generated day (else generate)")
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile here")
    args = ap.parse_args()

    from orderflow.bench import delivered_day
    from orderflow.store import db

    work = Path(tempfile.mkdtemp(prefix="of-bench-mail-"))
    try:
        with delivered_day(args.day, args.orders, work) as sb:
            _run(db, sb.drop / "mailbox/new", args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(db, inbox: Path, profile: Path | None) -> None:
    from orderflow.channels import pdf_text
    from orderflow.intake import mailbox
    from orderflow.integrations.systems import ErpHook, WmsHook
    from orderflow.operators.masterdata import sync_with_gate

    conn = db.connect()
    sync_with_gate(
        conn, {"erp": ErpHook(), "wms": WmsHook()}, run_id="bench", full=True, build_docs=False
    )
    emails = len(list(inbox.glob("*.eml")))
    mb = sum(p.stat().st_size for p in inbox.glob("*.eml")) / 2**20
    print(
        f"{emails} e-mails waiting ({mb:.0f} MB); cores {os.cpu_count()}, "
        f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    pdf_text.STATS.clear()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu0, t0 = _cpu(), time.perf_counter()
    stats = mailbox.ingest_mailbox(conn, inbox)
    wall = time.perf_counter() - t0
    own, kids, main = (b - a for a, b in zip(cpu0, _cpu(), strict=True))
    cpu = own + kids
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    s = pdf_text.STATS
    print(
        f"e-mails {stats.files}  orders {stats.orders}  outcomes {dict(stats.outcomes)}\n"
        f"pages OCRed {s['ocr_pages']} (tesseract+prep wall {s['ocr_seconds']:.1f}s)  "
        f"reader forks {s['readers']}  OCR cache hits {s['ocr_cache_hits']}\n"
        f"wall {wall:.1f}s  CPU {cpu:.1f}s  ({cpu / wall:.2f} cores; intake process "
        f"{own:.1f}s of which its main thread {main:.1f}s, children {kids:.1f}s)  "
        f"{stats.files / wall:.1f} e-mails/s  load after "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    conn.close()


if __name__ == "__main__":
    main()
