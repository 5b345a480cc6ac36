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
