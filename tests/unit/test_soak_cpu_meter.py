"""The soak's CPU account: a component's CPU includes what its short-lived descendants used
(a task instance's process, the OCR it forks), and a restarted component keeps the CPU of
its dead processes."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from orderflow.dev.soak import CpuMeter

# a supervisor-like parent whose child starts a grandchild that burns CPU and exits (reaped)
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    "subprocess.run([sys.executable, '-c', {burn!r}])\n"
    "print('done', flush=True)\n"
    "time.sleep(60)\n"
)


def _start(seconds: float) -> subprocess.Popen:
    code = PARENT.format(burn=BURN.format(s=seconds))
    # a "service" under a root, as the supervisor's children are under `orderflow run`
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {code!r}, 'celery worker'])\n"
            f"time.sleep(60)\n",
        ],
    )
    return root


def test_descendants_that_exited_count_to_their_component():
    root = _start(0.6)
    try:
        meter = CpuMeter()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meter.sample(root.pid, None)
            if meter.totals().get("celery workers (task instances)", 0) >= 0.55:
                break
            time.sleep(0.3)
        totals = meter.totals()
        assert totals["celery workers (task instances)"] >= 0.55, totals
    finally:
        for p in psutil.Process(root.pid).children(recursive=True):
            p.kill()
        root.kill()
        root.wait()


def test_a_killed_component_keeps_what_it_used_until_its_last_sample():
    root = _start(0.4)
    try:
        meter = CpuMeter()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meter.sample(root.pid, None)
            if meter.totals().get("celery workers (task instances)", 0) >= 0.35:
                break
            time.sleep(0.3)
        for p in psutil.Process(root.pid).children(recursive=True):
            p.kill()
        time.sleep(0.3)
        meter.sample(root.pid, None)  # the component is gone: its last sample stays
        assert meter.totals()["celery workers (task instances)"] >= 0.35
    finally:
        root.kill()
        root.wait()
