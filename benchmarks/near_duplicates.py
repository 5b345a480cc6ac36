"""Near-duplicate orders across channels (#17, model 2): precision and recall on a later
generated period the model did not train on, per seed, with the time it took.

    .venv/bin/python benchmarks/near_duplicates.py [--seeds 1 2 3] [--train-days 40]
        [--test-days 20] [--json PATH]

For each seed: ``orderflow.ai.duplicates.evaluate`` generates ``train + test`` business days
(``orderflow_sandbox.generator.duplicates``), trains on the first period (the threshold is
calibrated on time folds of it) and scores every order of the test period against the
customer's earlier orders of the window, as the validation stage does. Prints one JSON line
per seed (``dup_precision``, ``dup_recall``, recall per kind of re-submission, the
threshold, CPU and wall seconds) and the worst of each over the seeds. Targets: both ≥ 0.95.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "plugins", ROOT / "include"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--train-days", type=int, default=40)
    ap.add_argument("--test-days", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from orderflow.ai import duplicates

    rows = []
    for seed in args.seeds:
        wall, cpu = time.perf_counter(), time.process_time()
        r = duplicates.evaluate(seed, train_days=args.train_days, test_days=args.test_days)
        r["cpu_s"] = round(time.process_time() - cpu, 1)
        r["wall_s"] = round(time.perf_counter() - wall, 1)
        rows.append(r)
        print(json.dumps(r), flush=True)
    worst = {
        "seeds": args.seeds,
        "min_dup_precision": min(r["dup_precision"] for r in rows),
        "min_dup_recall": min(r["dup_recall"] for r in rows),
        "cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
        "wall_s": round(sum(r["wall_s"] for r in rows), 1),
    }
    print(json.dumps(worst))
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": worst}, indent=2))


if __name__ == "__main__":
    main()
