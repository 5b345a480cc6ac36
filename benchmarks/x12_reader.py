"""X12 reader throughput and memory (issue #13 D5): a generated 32 MB file of many small POs
and a 32 MB single PO (more PO1 lines than X12's 100,000-loop maximum), each parsed by
``orderflow.channels.x12.parse`` in a fresh process. Prints MB/s, peak RSS, orders and the
outcome. Targets: ≥ 20 MB/s, < 256 MiB peak RSS.

    .venv/bin/python benchmarks/x12_reader.py [--mb 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MEASURE = """
import resource, sys, time
from orderflow.channels.x12 import parse
data = open(sys.argv[1], "rb").read()
t0 = time.perf_counter()
r = parse(data)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
codes = sorted({e.code for e in r.error_list})
print(f"{len(data) / 2**20 / dt:.1f}\\t{rss:.0f}\\t{len(r.orders)}\\t{len(r.transactions)}\\t{dt:.2f}\\t{','.join(codes) or '-'}")
"""


def _write(path: Path, target: int, lines_per_po: int | None) -> None:
    head = (
        "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
        "00401*000000001*0*P*>~\nGS*PO*BUYER*SELLER*20261128*0930*1*X*004010~\n"
    )
    with path.open("w") as f:
        f.write(head)
        size, n = len(head), 0
        while size < target and (lines_per_po or n == 0):
            n += 1
            count = lines_per_po or max(1, (target - size) // 52)
            segs = [f"ST*850*{n:04d}", f"BEG*00*SA*PO{n:08d}**20261128", "N1*ST*STORE 12*92*0012"]
            segs += [f"PO1*{i}*2*EA*1.50*PE*BP*PART{i:07d}" for i in range(1, count + 1)]
            segs += [f"CTT*{count}", f"SE*{len(segs) + 2}*{n:04d}"]
            text = "~\n".join(segs) + "~\n"
            f.write(text)
            size += len(text)
        f.write(f"GE*{n}*1~\nIEA*1*000000001~\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=32)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="of-x12-bench-"))
    cases = [("many POs (5 lines each)", 5), ("single PO", None)]
    print(
        f"{'file':<26}{'MB':>6}{'MB/s':>8}{'peak MiB':>10}{'orders':>9}{'sets':>8}{'s':>7}  findings"
    )
    for name, lines in cases:
        path = work / f"{'single' if lines is None else 'many'}.x12"
        _write(path, args.mb * 2**20, lines)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(ROOT / "plugins"), "PATH": ""},
        ).stdout.split("\t")
        mbs, rss, orders, sets, secs, codes = out
        mb = path.stat().st_size / 2**20
        print(
            f"{name:<26}{mb:>6.1f}{float(mbs):>8.1f}{rss:>10}{orders:>9}{sets:>8}{secs:>7}  "
            f"{codes.strip()}"
        )
        path.unlink()


if __name__ == "__main__":
    main()
