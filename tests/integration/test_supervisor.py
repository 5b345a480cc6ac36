"""The local-stack supervisor: restarts what dies, and leaves nothing behind on stop."""

import os
import sys
import time

import psutil

from orderflow.dev.supervisor import Service, Supervisor

# A leader that forks a grandchild (like the scheduler's LocalExecutor workers) and sleeps.
FORKING = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "time.sleep(600)\n"
)


def _group_alive(pgid: int) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["pid", "status"])
        if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def _pgid(pid: int):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_stop_all_kills_every_process_group_including_grandchildren(tmp_path):
    services = [
        Service(f"svc{i}", [sys.executable, "-c", FORKING], tmp_path / f"{i}.log") for i in range(3)
    ]
    sup = Supervisor(services, dict(os.environ))
    sup.start_all()
    pgids = [s.proc.pid for s in services]
    assert _wait(lambda: all(len(_group_alive(g)) == 2 for g in pgids))
    sup.stop_all()
    assert _wait(lambda: all(_group_alive(g) == [] for g in pgids), 5)


def test_a_service_that_dies_is_restarted(tmp_path):
    svc = Service(
        "flaky", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "f.log"
    )
    sup = Supervisor([svc], dict(os.environ))
    sup.start_all()
    try:
        first = svc.proc.pid
        svc.proc.kill()
        svc.proc.wait()
        assert _wait(lambda: (sup.watch_once(), svc.alive() and svc.proc.pid != first)[1], 10)
        assert svc.restarts == 1
        assert "starting flaky" in (tmp_path / "f.log").read_text()
    finally:
        sup.stop_all()
    assert not svc.alive()


def test_a_held_service_stays_down_until_released_then_starts_at_once(tmp_path):
    """A drill's outage (``queue_down``) or an operator's maintenance: a file named after the
    service in the hold folder keeps the supervisor from restarting it."""
    svc = Service(
        "redis", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "r.log"
    )
    hold = tmp_path / "hold"
    sup = Supervisor([svc], dict(os.environ), hold_dir=hold)
    sup.start_all()
    try:
        first = svc.proc.pid
        hold.mkdir()
        (hold / "redis").touch()
        svc.proc.kill()
        svc.proc.wait()
        for _ in range(30):  # 3 s: an unheld service would have been restarted after 1 s
            sup.watch_once()
            time.sleep(0.1)
        assert not svc.alive()
        (hold / "redis").unlink()
        sup.watch_once()
        assert _wait(lambda: (sup.watch_once(), svc.alive())[1], 3)
        assert svc.proc.pid != first
    finally:
        sup.stop_all()
    assert not svc.alive()


def test_services_after_one_with_a_readiness_check_start_only_once_it_answers(tmp_path):
    """The API server first: a worker's task started before it answers fails its first try."""
    flag = tmp_path / "ready"
    # the first service "serves" 1.5 s after it starts (writes the flag file)
    first = Service(
        "api",
        [
            sys.executable,
            "-c",
            f"import time, pathlib; time.sleep(1.5); "
            f"pathlib.Path({str(flag)!r}).touch(); time.sleep(600)",
        ],
        tmp_path / "a.log",
        ready=flag.exists,
    )
    second = Service(
        "worker", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "w.log"
    )
    sup = Supervisor([first, second], dict(os.environ))
    try:
        sup.start_all()
        assert flag.exists()
        assert second.started_at - first.started_at >= 1.4
    finally:
        sup.stop_all()


def test_a_readiness_check_that_never_answers_only_delays_the_rest(tmp_path, monkeypatch):
    import orderflow.dev.supervisor as sv

    monkeypatch.setattr(sv, "READY_TIMEOUT_SECONDS", 1.0)
    first = Service(
        "api",
        [sys.executable, "-c", "import time; time.sleep(600)"],
        tmp_path / "a.log",
        ready=lambda: False,
    )
    second = Service(
        "worker", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "w.log"
    )
    sup = Supervisor([first, second], dict(os.environ))
    try:
        sup.start_all()
        assert second.alive()
    finally:
        sup.stop_all()
