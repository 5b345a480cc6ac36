"""Order processing end to end: generated day(s) landed through intake, the real
``order_processing`` DAG run with ``dag.test()`` on fresh databases; throughput per stage,
Airflow overhead, latency, and the one-task-per-order comparison. See ``orderflow.bench``.

    .venv/bin/python benchmarks/order_processing.py [--days 1] [--orders-per-day 5000]
        [--naive-orders 1000] [--seed 7] [--keep] [--no-fulfilment]

Same as ``.venv/bin/orderflow bench --dag-test`` (plain ``orderflow bench`` runs on the real
scheduler). Uses ORDERFLOW_TEST_DATABASE_URL's (or
ORDERFLOW_DATABASE_URL's) server when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--orders-per-day", type=int, default=5000)
    ap.add_argument("--naive-orders", type=int, default=1000, help="0 skips the comparison")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-partitions", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep databases and work folder")
    ap.add_argument(
        "--no-fulfilment", action="store_true", help="skip the fulfilment week after processing"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from orderflow import bench

    bench.run(
        days=args.days,
        orders_per_day=args.orders_per_day,
        naive_orders=args.naive_orders,
        seed=args.seed,
        max_partitions=args.max_partitions,
        keep=args.keep,
        fulfilment=not args.no_fulfilment,
    )


if __name__ == "__main__":
    main()
