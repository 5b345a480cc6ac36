"""The sandbox as a child process, and landing its day in a store as the scheduled DAGs would.

Shared by the tests (``tests/tests_support.py`` re-exports these) and ``orderflow bench``:
start ``orderflow sandbox serve`` on a free port with a generated day, move its clock past
the day so every file is delivered, then sync master data (with the quality gate) and ingest
every channel into the store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

#: Simulated start of the sandbox clock (the tests' generated days begin on this date).
START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SYSTEMS = (
    "erp",
    "wms",
    "carrier",
    "tax",
    "credit",
    "screening",
    "portal",
    "edi",
    "marketplace",
    "crm",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox(str):
    """The base URL, with the process, its drop folder, its SMTP sink port and a client."""

    proc: subprocess.Popen
    drop: Path
    smtp_port: int
    client: httpx.Client

    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_* for every system (and the SMTP sink), as `make run` would create them."""
        env = {
            f"AIRFLOW_CONN_{name.upper()}_DEFAULT": json.dumps(
                {"conn_type": "http", "host": f"{self}/{name}", "extra": {"timeout": 5}}
            )
            for name in SYSTEMS
        }
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.smtp_port,
                "extra": {
                    "disable_tls": True,
                    "disable_ssl": True,
                    "from_email": "orders@orderflow.local",
                },
            }
        )
        return env

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

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crash or an OOM kill leaves behind)."""
        self.client.close()
        self.proc.kill()
        self.proc.wait(10)


def start_sandbox(
    day_dir: Path,
    drop: Path,
    *,
    speed: float = 0.000001,
    start: datetime = START,
    fresh: bool = False,
    port: int | None = None,
    smtp_port: int | None = None,
) -> Sandbox:
    """Serve ``day_dir`` on a free port (clock at ``start``, nearly stopped by default), with
    its SMTP sink on another free port.

    The sandbox keeps its state in ``drop`` (``state.sqlite3``): started again on the same
    folder it continues where it stopped, and ``start``/``speed`` apply only to a state it
    creates; ``fresh`` forgets a stored one first."""
    port = port or free_port()
    smtp_port = smtp_port or free_port()
    while smtp_port == port:
        smtp_port = free_port()
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
            start.isoformat(),
            "--speed",
            str(speed),
            "--smtp-port",
            str(smtp_port),
        ],
        env={
            **os.environ,
            "ORDERFLOW_SANDBOX_DIR": str(drop),
            "ORDERFLOW_SANDBOX_FRESH": "1" if fresh else "",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    # 180 s: at load average 50–60 on a 2-core machine the server took over 60 s to answer,
    # and a sandbox killed for it (not yet reaped, so poll() said running) was handed out
    deadline = time.monotonic() + 180
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
        proc.wait(10)
    if proc.poll() is not None:
        raise RuntimeError(proc.stdout.read().decode()[-3000:])
    sb = Sandbox(url)
    sb.proc, sb.drop, sb.smtp_port = proc, drop, smtp_port
    sb.client = httpx.Client(base_url=url, timeout=10)
    return sb


def land_day(
    conn, sandbox: Sandbox, business_date: date | None = None, timings: dict | None = None
) -> dict:
    """Everything of the sandbox's day in the store, as the scheduled DAGs would leave it:
    master data synced and quality-gated, the CRM's account context synced, then every
    channel ingested. Returns counts.

    ``business_date`` is the last business day to deliver (default: ``START``'s date); the
    clock moves to two days after it, so every earlier day is delivered too. ``timings``,
    when given, receives the seconds of each step (master data and each channel)."""
    from orderflow import crm
    from orderflow.intake import drops, mailbox, marketplace, portal
    from orderflow.integrations.crm import CrmHook
    from orderflow.integrations.systems import ErpHook, MarketplaceHook, PortalHook, WmsHook
    from orderflow.operators.masterdata import sync_with_gate

    timings = {} if timings is None else timings
    t0 = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t0
        timings[step] = time.perf_counter() - t0
        t0 = time.perf_counter()

    day = business_date or START.date()
    end = START.replace(year=day.year, month=day.month, day=day.day) + timedelta(days=2)
    # Moving the clock writes every file due by then into the drop folder before answering:
    # ten generated days can take longer than the client's 10 s default on a busy machine.
    sandbox.client.put(
        "/admin/clock", json={"now": end.isoformat()}, timeout=600
    ).raise_for_status()
    os.environ.update(sandbox.connection_env())
    lap("deliver")
    summary = sync_with_gate(
        conn, {"erp": ErpHook(), "wms": WmsHook()}, run_id="land_day", full=True, build_docs=False
    )
    stats = {"master_data": summary}
    lap("master_data")
    stats["crm"] = [
        r.as_dict() for r in crm.sync_account_context(conn, CrmHook(), full=True, run_id="land_day")
    ]
    lap("crm")
    stats["portal"] = portal.pull(conn, PortalHook()).__dict__
    lap("portal")
    for channel, sub in (("edi", "edi/inbound"), ("csv", "csv/inbound")):
        root = sandbox.drop / sub
        root.mkdir(parents=True, exist_ok=True)
        stats[channel] = drops.ingest_folder(conn, root, channel).summary()
        lap(channel)
    (sandbox.drop / "mailbox/new").mkdir(parents=True, exist_ok=True)
    stats["email"] = mailbox.ingest_mailbox(conn, sandbox.drop / "mailbox/new").summary()
    lap("email")
    stats["marketplace"] = marketplace.pull(conn, MarketplaceHook()).summary()
    lap("marketplace")
    return stats
