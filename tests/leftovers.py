"""The processes a test run started, found and stopped by the run's marker.

Every test run carries ``ORDERFLOW_TEST_RUN=<id>`` in its environment (``make test`` sets it,
``conftest.py`` makes one up otherwise), so every process the tests start inherits it: the
embedded PostgreSQL (through ``pg_ctl``, which detaches it from the terminal), sandboxes,
Airflow api-servers, workers and whatever they fork. The embedded server's data directory
(``.orderflow/test-state/runs/<id>``) is also on the postmaster's command line.

``python tests/leftovers.py <id>`` is what ``make test`` runs after pytest exits: it
lists what is still alive for that run, stops it, and exits 1 if there was anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import psutil

MARKER = "ORDERFLOW_TEST_RUN"
ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = ROOT / ".orderflow" / "test-state" / "runs"


def run_dir(run_id: str) -> Path:
    return RUNS_DIR / run_id


#: pytest-xdist's name of a worker (``gw0``, ``gw1``…), in the worker's environment and so in
#: that of every process its tests start.
WORKER = "PYTEST_XDIST_WORKER"


def find(run_id: str, worker: str | None = None) -> list[psutil.Process]:
    """Live processes of the run ``run_id`` (never the calling process), children included.

    With ``worker``, only what that pytest-xdist worker's tests started: a worker that ends
    before its siblings must not stop them, nor the controller, which carry the same run
    marker (the controller's sweep, after all workers ended, covers the whole run)."""
    me = os.getpid()
    state = f"{run_dir(run_id)}/"
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmdline = proc.info["cmdline"] or []
            if worker is None:
                ours = any(state in arg for arg in cmdline) or proc.environ().get(MARKER) == run_id
            else:
                environ = proc.environ()
                ours = environ.get(MARKER) == run_id and environ.get(WORKER) == worker
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if ours:
            found[proc.pid] = proc
            # PostgreSQL backends overwrite their environment with their process title.
            try:
                for child in proc.children(recursive=True):
                    found.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
    return [p for p in found.values() if p.pid != me and _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {proc.pid}"


def stop(procs: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``grace`` seconds."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def wait_gone(run_id: str, timeout: float) -> list[psutil.Process]:
    """What of the run is still alive after waiting up to ``timeout`` seconds for it to exit."""
    deadline = time.monotonic() + timeout
    while True:
        left = find(run_id)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the run's ORDERFLOW_TEST_RUN")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to let processes exit")
    parser.add_argument("--list", action="store_true", help="only list them, stop nothing")
    args = parser.parse_args(argv)
    left = find(args.run_id) if args.list else wait_gone(args.run_id, args.wait)
    if not left:
        print(f"leftover check: no process of test run {args.run_id} is running")
        return 0
    print(f"leftover check FAILED: test run {args.run_id} left {len(left)} process(es) running:")
    for proc in left:
        print(f"  {describe(proc)}")
    if not args.list:
        stop(left)
        print("  (stopped them now)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
