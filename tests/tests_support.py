"""Shared test helpers: a sandbox process on a free port serving a small generated day."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SYSTEMS = ("erp", "wms", "carrier", "tax", "credit", "screening", "portal", "edi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_small_day(out: Path, seed: int = 11) -> Path:
    from orderflow_sandbox.generator import generate

    generate(
        out, seed=seed, orders_per_day=300, customers=120, items=600, business_date=START.date()
    )
    return out


class Sandbox(str):
    """The base URL, with the process, its drop folder and a client attached."""

    proc: subprocess.Popen
    drop: Path
    client: httpx.Client

    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_* for every system, as `make run` would create them."""
        return {
            f"AIRFLOW_CONN_{name.upper()}_DEFAULT": json.dumps(
                {"conn_type": "http", "host": f"{self}/{name}", "extra": {"timeout": 5}}
            )
            for name in SYSTEMS
        }

    def fs_connection_env(self) -> dict[str, str]:
        """The drop-folder (fs) Connections, pointing into this sandbox's drop folder."""
        folders = {"EDI_INBOX": "edi/inbound", "CSV_INBOX": "csv/inbound", "MAILBOX": "mailbox/new"}
        return {
            f"AIRFLOW_CONN_{name}_DEFAULT": json.dumps(
                {"conn_type": "fs", "extra": {"path": str(self.drop / sub)}}
            )
            for name, sub in folders.items()
        }

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def start_sandbox(day_dir: Path, drop: Path, *, speed: float = 0.000001) -> Sandbox:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "orderflow"),
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--day",
            str(day_dir),
            "--start",
            START.isoformat(),
            "--speed",
            str(speed),
        ],
        env={**os.environ, "ORDERFLOW_SANDBOX_DIR": str(drop)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/admin/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    else:
        proc.kill()
    if proc.poll() is not None:
        raise RuntimeError(proc.stdout.read().decode()[-3000:])
    sb = Sandbox(url)
    sb.proc, sb.drop = proc, drop
    sb.client = httpx.Client(base_url=url, timeout=10)
    return sb


def land_day(conn, sandbox: Sandbox, business_date=None) -> dict:
    """Everything of the sandbox's day in the store, as the scheduled DAGs would leave it:
    master data synced and quality-gated, then every channel ingested. Returns counts."""
    from datetime import timedelta

    from orderflow.intake import drops, mailbox, portal
    from orderflow.integrations.systems import ErpHook, PortalHook, WmsHook
    from orderflow.operators.masterdata import sync_with_gate

    day = business_date or START.date()
    end = START.replace(year=day.year, month=day.month, day=day.day) + timedelta(days=2)
    sandbox.client.put("/admin/clock", json={"now": end.isoformat()}).raise_for_status()
    os.environ.update(sandbox.connection_env())
    summary = sync_with_gate(
        conn, {"erp": ErpHook(), "wms": WmsHook()}, run_id="land_day", full=True, build_docs=False
    )
    stats = {"master_data": summary}
    stats["portal"] = portal.pull(conn, PortalHook()).__dict__
    for channel, sub in (("edi", "edi/inbound"), ("csv", "csv/inbound")):
        root = sandbox.drop / sub
        root.mkdir(parents=True, exist_ok=True)
        stats[channel] = drops.ingest_folder(conn, root, channel).summary()
    (sandbox.drop / "mailbox/new").mkdir(parents=True, exist_ok=True)
    stats["email"] = mailbox.ingest_mailbox(conn, sandbox.drop / "mailbox/new").summary()
    return stats


def score(conn, day_dir: Path) -> dict:
    """Compare the store with the generator's ground truth, per submission.

    Returns per category: tp / fp / fn of held-with-that-category, plus clean orders released
    without a touch (first-pass) and the mismatches (for messages)."""
    truths = {
        t["submission_id"]: t
        for t in map(json.loads, (day_dir / "ground_truth.jsonl").read_text().splitlines())
    }
    subs = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    rows = conn.execute(
        """
        SELECT o.customer_id, o.po_number, o.status, o.channel,
               coalesce(array_agg(DISTINCT e.category) FILTER (WHERE e.category IS NOT NULL), '{}')
          FROM orderflow."order" o
          LEFT JOIN orderflow.order_exception e ON e.order_id = o.order_id
         GROUP BY 1, 2, 3, 4
        """
    ).fetchall()
    by_po: dict[tuple, list] = {}
    for cid, po, status, channel, cats in rows:
        by_po.setdefault((cid, po), []).append((status, channel, set(cats)))
    per_cat: dict[str, dict[str, int]] = {}
    released_clean = clean = 0
    mismatches = []

    def bump(cat, key):
        per_cat.setdefault(cat, {"tp": 0, "fp": 0, "fn": 0})[key] += 1

    for s in subs:
        t = truths[s["submission_id"]]
        if t["expected"] in ("duplicate", "quarantine"):
            continue  # judged at intake (message outcomes), not by processing
        found = by_po.get((s["customer_id"], s["po_number"]), [])
        if not found:
            mismatches.append((s["submission_id"], t["expected"], "no order"))
            continue
        status, _, cats = found[0]
        want = set(t["exception_categories"])
        if t["expected"] == "release":
            clean += 1
            if status == "RELEASED" and not cats:
                released_clean += 1
        for c in want | cats:
            bump(c, "tp" if c in want and c in cats else "fn" if c in want else "fp")
        if (t["expected"] == "release") != (status == "RELEASED") or want != cats:
            mismatches.append(
                (s["submission_id"], t["expected"], status, sorted(want), sorted(cats), t["notes"])
            )
    return {
        "clean": clean,
        "first_pass_released": released_clean,
        "per_category": per_cat,
        "mismatches": mismatches,
    }
