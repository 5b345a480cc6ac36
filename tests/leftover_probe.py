"""Not collected by default: ``test_no_leftovers.py`` runs it in a pytest of its own.

It does what careless tests do — leaves a child process running, and an orphaned grandchild
in a session of its own (as ``pg_ctl`` leaves the postmaster) — on top of the embedded
PostgreSQL the run starts, then fails or hangs as ``ORDERFLOW_PROBE`` says.
"""

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]

# Ctrl-C interrupts this run whatever it inherited: started from a shell's background job,
# SIGINT comes ignored, Python then installs no KeyboardInterrupt handler, and the run slept on
# through test_no_leftovers' SIGINT (two CI runs started with `&` on 2026-12-07)
signal.signal(signal.SIGINT, signal.default_int_handler)

# SIGUSR1 writes every thread's stack next to the ready file: what a run that does not stop
# when interrupted is doing (test_no_leftovers asks for it before it gives up on the probe)
if os.environ.get("ORDERFLOW_PROBE_READY"):
    _STACKS = open(os.environ["ORDERFLOW_PROBE_READY"] + ".stacks", "w")  # noqa: SIM115
    faulthandler.register(signal.SIGUSR1, file=_STACKS, all_threads=True)


def test_leaves_processes_behind_then_fails_or_hangs(server_url):
    import psycopg

    from orderflow.dev import pg

    with psycopg.connect(pg.libpq_url(server_url)) as conn:  # the run's server answers
        assert conn.execute("SELECT 1").fetchone() == (1,)
    subprocess.Popen(SLEEPER)
    subprocess.Popen(
        [sys.executable, "-c", f"import subprocess; subprocess.Popen({SLEEPER!r})"],
        start_new_session=True,
    ).wait()
    ready = Path(os.environ["ORDERFLOW_PROBE_READY"])
    ready.write_text(str(os.getpid()))
    if os.environ["ORDERFLOW_PROBE"] == "hang":
        time.sleep(300)
    raise AssertionError("the probe fails on purpose")
