"""A test run leaves no process behind: the embedded PostgreSQL it started, and what tests
started and forgot, are stopped when it ends — when tests fail, on Ctrl-C or SIGTERM — and
what a run killed outright (SIGKILL) left is cleaned up by the next run.

Each case runs ``leftover_probe.py`` in a pytest of its own, on the embedded server (as a
newcomer's ``make test`` does), under a run name of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import leftovers
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTEST = str(Path(sys.executable).parent / "pytest")
PROBE = "tests/leftover_probe_workers.py"


def _probe(tmp_path: Path, name: str, mode: str) -> tuple[subprocess.Popen, Path, Path]:
    # a run of its own: not a pytest-xdist worker of this one, nor on this run's server
    drop = ("ORDERFLOW_TEST_DATABASE_URL", "ORDERFLOW_TEST_RUN_SERVER", leftovers.WORKER)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    ready = tmp_path / f"{name}.ready"
    out = tmp_path / f"{name}.out"
    env.update(
        {leftovers.MARKER: name, "ORDERFLOW_PROBE": mode, "ORDERFLOW_PROBE_READY": str(ready)}
    )
    proc = subprocess.Popen(
        [PYTEST, "-p", "no:cacheprovider", "-q", "tests/leftover_probe.py"],
        cwd=ROOT,
        env=env,
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, ready, out


def _wait_ready(proc: subprocess.Popen, ready: Path, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)


def _postmasters(name: str) -> list[psutil.Process]:
    found = []
    for proc in leftovers.find(name):
        try:
            if f"{leftovers.run_dir(name)}/pgdata" in proc.cmdline():
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def _name(case: str) -> str:
    return f"probe{case}{os.getpid()}"


def test_a_failing_run_stops_its_server_and_what_tests_left(tmp_path):
    name = _name("f")
    proc, _, out = _probe(tmp_path, name, "fail")
    assert proc.wait(180) == 1, out.read_text()

    text = out.read_text()
    assert "1 failed" in text, text
    assert "stopping 2 process(es) the tests left running" in text, text
    assert "stopped and removed this run's embedded PostgreSQL" in text, text
    assert leftovers.find(name) == []
    assert not leftovers.run_dir(name).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupted_run_stops_everything(tmp_path, signum):
    name = _name(signal.Signals(signum).name[3:].lower())
    proc, ready, out = _probe(tmp_path, name, "hang")
    _wait_ready(proc, ready, out)
    assert _postmasters(name), "the run's embedded PostgreSQL should be running now"
    assert len(leftovers.find(name)) > 3  # pytest's own children, the postmaster, backends

    proc.send_signal(signum)
    # 180 s as for the failing run above: on a loaded 2-core host the interrupted run's
    # clean-up (children, the embedded PostgreSQL) once took longer than 120 s; if it does not
    # stop, say where it is (that is how an inherited, ignored SIGINT was found)
    try:
        code = proc.wait(180)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        leftovers.stop(leftovers.find(name))
        stacks = Path(f"{ready}.stacks").read_text()
        pytest.fail(
            f"the interrupted run did not stop in 180 s; its threads:\n{stacks}\n"
            f"its output:\n{out.read_text()}"
        )
    assert code != 0
    assert leftovers.wait_gone(name, 5) == [], out.read_text()
    assert not leftovers.run_dir(name).exists()


@pytest.mark.long  # a rare recovery path: in `make test-long`
def test_a_killed_run_is_cleaned_up_by_the_next_run(tmp_path):
    killed = _name("k")
    proc, ready, out = _probe(tmp_path, killed, "hang")
    _wait_ready(proc, ready, out)
    proc.kill()
    proc.wait(30)
    assert _postmasters(killed), "SIGKILL leaves the server running (nothing can catch it)"

    next_run = _name("n")
    proc, _, out = _probe(tmp_path, next_run, "fail")
    assert proc.wait(180) == 1, out.read_text()
    assert f"removed {leftovers.run_dir(killed)} of a test run that died" in out.read_text()
    assert leftovers.find(killed) == []
    assert not leftovers.run_dir(killed).exists()
    assert leftovers.find(next_run) == []


def test_the_leftover_check_fails_and_stops_what_is_left():
    name = _name("c")
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, leftovers.MARKER: name},
    )
    try:
        assert leftovers.main([name, "--list"]) == 1
        assert sleeper.poll() is None  # --list only looks
        assert leftovers.main([name, "--wait", "0.5"]) == 1
        assert sleeper.wait(10) is not None
        assert leftovers.main([name, "--wait", "0"]) == 0
    finally:
        sleeper.kill()


def test_a_parallel_run_s_workers_stop_only_what_their_own_tests_left(tmp_path):
    """``make test`` runs the unit/DAG half on pytest-xdist workers, which carry the run's
    marker as the controller does: a worker that ends first stops what its tests left, and
    neither the controller, nor the worker still running, nor the embedded server that the
    controller started and both workers use (``leftover_probe_workers.py``)."""
    name = _name("w")
    drop = ("ORDERFLOW_TEST_DATABASE_URL", "ORDERFLOW_TEST_RUN_SERVER", leftovers.WORKER)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({leftovers.MARKER: name, "ORDERFLOW_PROBE_READY": str(tmp_path)})
    log = tmp_path / "probe.out"
    proc = subprocess.Popen(
        [PYTEST, "-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "loadgroup", PROBE],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        rc = proc.wait(240)
    finally:
        leftovers.stop(leftovers.find(name))
    out = log.read_text()
    assert rc == 0, out
    assert "2 passed" in out, out
    assert "stopped and removed this run's embedded PostgreSQL" in out, out
    assert leftovers.find(name) == []
    assert not leftovers.run_dir(name).exists()
