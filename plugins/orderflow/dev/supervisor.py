"""A small foreground supervisor for the local stack (``make run`` / ``orderflow run``).

It owns every process it starts: each runs in its own process group (so LocalExecutor workers
and other grandchildren are stopped with it), is restarted with backoff when it dies
unexpectedly (the scheduler and DAG processor exit for good after a database outage), and on
Ctrl-C / SIGTERM everything is stopped — politely, then by force — before the embedded
PostgreSQL is shut down. Nothing is left behind.

Daemons that detach themselves (the embedded PostgreSQL, started by ``pg_ctl``) are watched
the same way through a :class:`DaemonService`: a liveness check instead of a child process,
restarted with the same backoff when it fails, and left to their owner to stop.

A service can be *held* down on purpose (a chaos drill's outage, an operator's maintenance):
while a file named after it exists in the supervisor's hold folder (``.orderflow/run/hold/``
in the local stack), it is not restarted; once the file is gone it starts again at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0
MAX_BACKOFF_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 120.0


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    #: answers once the service serves; the services after it start only then (at start-up)
    ready: Callable[[], bool] | None = field(default=None, repr=False)
    _log_file: object = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - owned by the service
        self._log_file.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode()
        )
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class DaemonService(Service):
    """A service that runs detached: ``launch()`` starts it (and returns once it answers),
    ``check()`` tells whether it still runs. Never signalled by the supervisor: its owner
    stops it after everything that uses it."""

    launch: Callable[[], None] | None = None
    check: Callable[[], bool] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
        self.started_at = time.monotonic()
        try:
            self.launch()
        except Exception as exc:  # e.g. shared memory still held by dying backends
            log.warning("%s did not start: %s", self.name, exc)

    def signal_group(self, sig: int) -> None:
        return None

    def alive(self) -> bool:
        try:
            return bool(self.check())
        except Exception:
            return False


class Supervisor:
    def __init__(self, services: list[Service], env: dict[str, str], hold_dir: Path | None = None):
        self.services = services
        self.env = env
        self.hold_dir = hold_dir
        self._stopping = False
        self._held: set[str] = set()

    def held(self, svc: Service) -> bool:
        """Whether ``svc`` is held down on purpose (a file named after it in the hold folder)."""
        return self.hold_dir is not None and (self.hold_dir / svc.name).exists()

    def _on_signal(self, signum, _frame) -> None:
        self._stopping = True

    def start_all(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for svc in self.services:
            if isinstance(svc, DaemonService):
                svc.started_at = time.monotonic()  # started before the supervisor: watch it
                continue
            svc.start(self.env)
            log.info("started %s (pid %s), log %s", svc.name, svc.proc.pid, svc.log_path)
            if svc.ready is not None:
                self._wait_ready(svc)

    def _wait_ready(self, svc: Service) -> None:
        """Hold the next services until ``svc`` serves: a task a worker starts before the
        API server answers fails its first attempt (connection refused) and waits out its
        retry delay."""
        timeout = READY_TIMEOUT_SECONDS
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping and svc.alive():
            with contextlib.suppress(Exception):
                if svc.ready():
                    log.info("%s ready in %.1fs", svc.name, time.monotonic() - svc.started_at)
                    return
            time.sleep(0.5)
        log.warning("%s not ready after %.0fs; starting the rest anyway", svc.name, timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def watch_once(self) -> None:
        """Restart services that died on their own, with exponential backoff."""
        now = time.monotonic()
        for svc in self.services:
            if svc.alive() or self._stopping:
                self._held.discard(svc.name)
                continue
            if self.held(svc):
                if svc.name not in self._held:
                    self._held.add(svc.name)
                    log.warning("%s is down and held (%s): not restarting", svc.name, self.hold_dir)
                svc.next_start = 0.0
                continue
            if svc.name in self._held:
                # released from a hold: start now, not after a backoff
                self._held.discard(svc.name)
                svc.restarts, svc.next_start = 0, now
                svc.signal_group(signal.SIGKILL)
                log.info("%s released from its hold: starting it", svc.name)
            elif svc.next_start == 0.0:
                code = svc.proc.returncode if svc.proc else None
                # a service that ran a while before dying starts over with a short backoff
                if now - svc.started_at > 60:
                    svc.restarts = 0
                delay = min(MAX_BACKOFF_SECONDS, 2.0**svc.restarts)
                log.warning(
                    "%s exited (code %s); restarting in %.0fs (see %s)",
                    svc.name,
                    code,
                    delay,
                    svc.log_path,
                )
                svc.signal_group(signal.SIGKILL)  # reap orphans of the dead leader
                svc.next_start = now + delay
            elif now >= svc.next_start:
                svc.restarts += 1
                svc.next_start = 0.0
                svc.start(self.env)
                log.info("restarted %s (pid %s)", svc.name, svc.proc.pid if svc.proc else "-")

    def run_forever(self, poll_seconds: float = 1.0) -> None:
        while not self._stopping:
            self.watch_once()
            time.sleep(poll_seconds)

    def stop_all(self) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left (groups included)."""
        # Ignore further Ctrl-C while stopping: a second one must not leave orphans.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for svc in reversed(self.services):
            svc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        children = [s for s in self.services if not isinstance(s, DaemonService)]
        while time.monotonic() < deadline and any(s.alive() for s in children):
            time.sleep(0.2)
        for svc in children:
            # also catches grandchildren (task workers) that outlived their leader
            svc.signal_group(signal.SIGKILL)
            if svc.proc is not None:
                try:
                    svc.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.error("%s (pid %s) did not exit", svc.name, svc.proc.pid)
            if svc._log_file is not None:
                svc._log_file.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
