"""DAG parse time: what the DAG processor pays for each file of ``dags/`` on every parse loop.

Each file is parsed in a fresh interpreter (after ``import airflow.sdk``, which every parse
pays anyway), ``--repeat`` times; prints per file the median wall seconds and the modules it
added, then the whole folder through a ``DagBag``. Parse time is a measurement here, not a
timed test; ``tests/dags/test_dag_integrity.py`` asserts what keeps it low (no heavy imports,
no I/O at parse time).

    .venv/bin/python benchmarks/dag_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
_ONE = """
import json, runpy, sys, time
import airflow.sdk
before = set(sys.modules)
t0 = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"s": time.perf_counter() - t0, "modules": len(set(sys.modules) - before)}))
"""
_BAG = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"s": time.perf_counter() - t0, "dags": len(bag.dags),
                  "errors": len(bag.import_errors)}))
"""


def _run(code: str, arg: str) -> dict:
    env = {"PYTHONPATH": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    import os

    out = subprocess.run(
        [sys.executable, "-c", code, arg],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'file':32} {'median s':>9} {'modules added':>14}")
    total = 0.0
    for path in sorted(DAGS.glob("*.py")):
        runs = [_run(_ONE, str(path)) for _ in range(args.repeat)]
        median = statistics.median(r["s"] for r in runs)
        total += median
        print(f"{path.name:32} {median:9.3f} {runs[-1]['modules']:14d}")
    bag = _run(_BAG, str(DAGS))
    print(f"{'sum of files':32} {total:9.3f}")
    print(
        f"whole folder through a DagBag (imports included): {bag['s']:.2f} s, "
        f"{bag['dags']} DAGs, {bag['errors']} import errors"
    )


if __name__ == "__main__":
    main()
