"""Not collected by default: ``test_no_leftovers.py`` runs it under ``pytest -n 2`` on the
embedded server, one test on each worker (``--dist loadgroup``).

Both workers use the one embedded PostgreSQL the controller started. The first worker's test
leaves a child and an orphaned grandchild (in a session of its own) running, then that worker
ends while the second worker's test is still running. Ending, the first worker must stop what
its test left, and nothing of the controller, the server or the other worker: the second test
waits for the leftovers to go, then checks that the server still answers.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]
SHARED = Path(os.environ.get("ORDERFLOW_PROBE_READY", "."))


def _answers(server_url: str) -> bool:
    import psycopg

    from orderflow.dev import pg

    assert server_url == os.environ["ORDERFLOW_TEST_RUN_SERVER"]  # the controller's server
    with psycopg.connect(pg.libpq_url(server_url)) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.xdist_group("leaves")
def test_leaves_processes_behind(server_url):
    assert _answers(server_url)
    child = subprocess.Popen(SLEEPER)
    grandchild = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subprocess; "
            f"print(subprocess.Popen({SLEEPER!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)",
        ],
        start_new_session=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pids = f"{child.pid} {grandchild}"
    (SHARED / "left.tmp").write_text(f"{os.environ['PYTEST_XDIST_WORKER']} {pids}")
    (SHARED / "left.tmp").rename(SHARED / "left")


@pytest.mark.xdist_group("waits")
def test_outlives_the_other_worker(server_url):
    deadline = time.monotonic() + 120
    while not (SHARED / "left").exists():
        assert time.monotonic() < deadline, "the other test never ran"
        time.sleep(0.1)
    worker, *pids = (SHARED / "left").read_text().split()
    assert worker != os.environ["PYTEST_XDIST_WORKER"], "both tests ran on one worker"
    while any(_alive(int(pid)) for pid in pids):
        assert time.monotonic() < deadline, "the other worker did not stop what it left"
        time.sleep(0.1)
    assert _answers(server_url)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
