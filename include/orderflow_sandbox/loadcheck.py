"""Requests per second a running sandbox answers: WMS releases (each a durable write) and
milestone-feed reads, from a few concurrent clients.

    .venv/bin/python -m orderflow_sandbox.loadcheck --url http://127.0.0.1:8090 \\
        --releases 3000 --reads 3000 --clients 4

Releases use fresh Idempotency-Keys (a run id in each) on stocked positions, one unit each;
reads page the feed from random cursors. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def _run(url: str, n: int, clients: int, call) -> tuple[float, list[float]]:
    per = [n // clients + (i < n % clients) for i in range(clients)]

    def worker(i: int) -> list[float]:
        lat = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for j in range(per[i]):
                t = time.perf_counter()
                call(c, i, j)
                lat.append(time.perf_counter() - t)
        return lat

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lats = [x for part in pool.map(worker, range(clients)) for x in part]
    return time.perf_counter() - t0, sorted(lats)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8090")
    ap.add_argument("--releases", type=int, default=3000)
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args(argv)
    run = secrets.token_hex(3)
    with httpx.Client(base_url=args.url, timeout=30) as c:
        stocked = [p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 50]

    def release(c: httpx.Client, i: int, j: int) -> None:
        pos = stocked[(i * 7919 + j) % len(stocked)]
        body = {
            "order_id": f"LC-{run}-{i}-{j}",
            "dc_id": pos["dc_id"],
            "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 0.001}],
        }
        r = c.post("/wms/releases", json=body, headers={"Idempotency-Key": f"lc:{run}:{i}:{j}"})
        r.raise_for_status()

    rel_s, rel_lat = _run(args.url, args.releases, args.clients, release)
    with httpx.Client(base_url=args.url, timeout=30) as c:
        c.put("/admin/clock", json={"advance_minutes": 240}).raise_for_status()
        events = c.get("/admin/state").json()["milestones"]
    rnd = random.Random(7)

    def read(c: httpx.Client, _i: int, _j: int) -> None:
        cursor = rnd.randrange(max(1, events - 200))
        c.get("/wms/milestones", params={"cursor": cursor, "limit": 200}).raise_for_status()

    read_s, read_lat = _run(args.url, args.reads, args.clients, read)

    def p(lat: list[float], q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)

    out = {
        "clients": args.clients,
        "releases": args.releases,
        "releases_per_s": round(args.releases / rel_s, 1),
        "release_ms_p50": p(rel_lat, 0.5),
        "release_ms_p99": p(rel_lat, 0.99),
        "feed_reads": args.reads,
        "feed_events": events,
        "feed_reads_per_s": round(args.reads / read_s, 1),
        "feed_ms_p50": p(read_lat, 0.5),
        "feed_ms_p99": p(read_lat, 0.99),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
