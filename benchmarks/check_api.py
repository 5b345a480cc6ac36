"""The order-check API under load: a landed and processed day in a fresh store, a real
``airflow api-server`` with the plugin, ``POST /orderflow/api/check`` at a fixed rate (open
loop) with a sales user's JWT; p50/p95/p99 latency and the rate achieved. See
``orderflow.bench_check``.

    .venv/bin/python benchmarks/check_api.py [--rate 200] [--seconds 30] [--orders 1000]
        [--workers 1] [--seed 7] [--keep]

Same as ``.venv/bin/orderflow bench --check-api``. Uses ORDERFLOW_TEST_DATABASE_URL's (or
ORDERFLOW_DATABASE_URL's) server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--orders", type=int, default=1000, help="orders of the generated day")
    ap.add_argument("--workers", type=int, default=1, help="api-server worker processes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep databases and work folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from orderflow.bench_check import run_check_api

    results = run_check_api(
        rate=args.rate,
        seconds=args.seconds,
        orders_per_day=args.orders,
        seed=args.seed,
        workers=args.workers,
        keep=args.keep,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
