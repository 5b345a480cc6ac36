"""``orderflow soak``: continuous operation on the real stack, with faults, reconciled.

It generates N business days, starts the stack exactly as ``make run`` does (``orderflow
run``: the same supervisor, embedded PostgreSQL, API server, scheduler, DAG processor,
triggerer, sandbox and — for Celery — K ``airflow celery worker`` processes) in a state
folder of its own on free ports, then only moves the sandbox's clock: files arrive in the
drop folders and the portal feed as simulated time passes them, the WMS picks, ships and
receives stock, and the DAGs' own schedules and Asset triggers do all the work. Nothing is
called directly and nothing runs through ``dag.test()``.

A chaos profile (``include/soak/<name>.yaml``) names faults at simulated hours after the
start: SIGKILL of a Celery worker (LocalExecutor: of a task process) while a task runs,
a queued task's Celery message lost on the broker (requeued only by the scheduler's
``task_queued_timeout``), kills of the scheduler, triggerer, DAG processor and the
embedded PostgreSQL (the supervisor starts them again), the queue of the pushed-event wake-ups down for a while (the
stack's own ``redis-server``, SIGKILLed and held down, or SIGSTOPped), and windows of sandbox fault rules (5xx, resets, outages,
duplicate and reordered feed pages) through ``PUT /admin/faults``. Each fault's recovery is
the time from its injection (or, for a window, from its end) to the next successful task of
the kind it hit, read from Airflow's own task instances afterwards.

At the end the clock stops, the stack is left to settle, ``fulfilment_events`` and
``masterdata_sync`` are triggered once more (as an operator would) and everything is
reconciled against the sandbox's own records: ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx
import yaml

from orderflow import settings

log = logging.getLogger(__name__)

PROFILE_DIR = settings.INCLUDE_DIR / "soak"
#: First business date of a soak (a Friday: the weekend is simulated too on longer runs).
FIRST_DAY = date(2026, 11, 27)
#: The clock starts before the first arrivals of the day (06:00 UTC).
CLOCK_START_HOUR = 5.5
#: Simulated hours after the last business day's arrivals: shipments, deliveries, invoices.
DEFAULT_TAIL_HOURS = 24.0
FINAL_STATES = ("INVOICED", "CLOSED", "CANCELLED", "REJECTED")
FULFILMENT_STATES = ("RELEASED", "PICKED", "SHIPPED", "DELIVERED")

# Variables a calling test session points at its own databases: the soak's stack resolves
# its own (the embedded PostgreSQL in its state folder).
_NOT_INHERITED = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "ORDERFLOW_DATABASE_URL",
    "ORDERFLOW_SANDBOX_DIR",
)


# ------------------------------------------------------------------------------ profiles
KINDS = (
    "kill_worker",
    "lose_task_message",
    "kill_scheduler",
    "kill_triggerer",
    "kill_dag_processor",
    "kill_postgres",
    "faults",
    "rewind_feed",
    "reuse_release_ids",
    "queue_down",
    "answer_approvals",
)


@dataclass
class Action:
    at_hours: float  # simulated hours after the clock start
    kind: str
    name: str = ""
    duration_hours: float = 0.0  # faults: how long the rules apply
    rules: list[dict] = field(default_factory=list)  # faults: sandbox FaultRules
    # kill_worker, lose_task_message: DAGs to hit, in order
    prefer: list[str] = field(default_factory=list)
    # kill_worker, lose_task_message, answer_approvals: how long to wait for a target
    wait_s: float = 90.0
    feed: str = "wms"  # rewind_feed: which feed ("wms" milestones or "carrier" tracking)
    drop_fraction: float = 0.5  # rewind_feed: share of what we have read that the WMS purges
    count: int = 3  # reuse_release_ids: how many new releases get an id given out before;
    # answer_approvals: how many waiting Required Actions to answer
    signal: str = "kill"  # queue_down: "kill" (SIGKILL, held down) or "stop" (SIGSTOP)


@dataclass
class Profile:
    name: str
    seed: int
    description: str
    actions: list[Action]
    speed: float | None = None  # the profile's clock speed unless --speed is given


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    data = yaml.safe_load(path.read_text())
    actions = []
    for i, a in enumerate(data.get("actions") or []):
        if a.get("kind") not in KINDS:
            raise ValueError(
                f"{path}: action {i}: kind must be one of {KINDS}, not {a.get('kind')}"
            )
        if a["kind"] == "faults" and not (a.get("rules") and a.get("duration_hours")):
            raise ValueError(f"{path}: action {i}: faults need rules and duration_hours")
        if a["kind"] == "queue_down":
            if not a.get("duration_hours"):
                raise ValueError(f"{path}: action {i}: queue_down needs duration_hours")
            if a.get("signal", "kill") not in ("kill", "stop"):
                raise ValueError(f"{path}: action {i}: queue_down signal is 'kill' or 'stop'")
        actions.append(Action(**a))
    actions.sort(key=lambda a: a.at_hours)
    return Profile(
        name=data.get("name") or path.stem,
        seed=int(data.get("seed", 7)),
        description=data.get("description", ""),
        actions=actions,
        speed=float(data["speed"]) if data.get("speed") else None,
    )


# ------------------------------------------------------------------------------ the stack
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


#: an Airflow service's command or process title → its name (here and in the bench's
#: :func:`orderflow.dev.realbench.process_group`)
AIRFLOW_SERVICES = (
    ("airflow scheduler", "scheduler"),
    ("airflow dag-processor", "dag-processor"),
    ("airflow triggerer", "triggerer"),
    ("airflow api-server", "api-server"),
    ("airflow api_server", "api-server"),  # its process title once started
)

#: a supervised process's command → its component in the CPU account
_COMPONENTS = (
    *AIRFLOW_SERVICES,
    ("celery", "celery workers (task instances)"),
    ("sandbox serve", "sandbox (stand-in systems)"),
    ("redis-server", "redis (wake-ups)"),
)


class CpuMeter:
    """CPU seconds per component of the stack, sampled while it runs: a component's CPU is
    the sum over its live process tree of each process's own and reaped children's times
    (a task instance's process, and the OCR it forks, count to the Celery worker that ran
    it). Each pid's last sample is kept, so a killed and restarted component keeps what its
    dead processes used up to their last sample."""

    def __init__(self) -> None:
        self._by_pid: dict[int, tuple[str, float]] = {}
        self.samples = 0

    @staticmethod
    def _tree_seconds(proc) -> float:
        import psutil

        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def sample(self, supervisor_pid: int | None, postmaster_pid: int | None) -> None:
        import psutil

        roots: list[tuple[str, Any]] = []
        try:
            sup = psutil.Process(supervisor_pid) if supervisor_pid else None
            if sup is not None:
                t = sup.cpu_times()  # the supervisor itself, not its children
                self._by_pid[sup.pid] = ("orderflow run (supervisor)", t.user + t.system)
                for child in sup.children():
                    cmd = " ".join(child.cmdline())
                    name = next((n for k, n in _COMPONENTS if k in cmd), "other")
                    roots.append((name, child))
            if postmaster_pid:
                roots.append(("postgresql", psutil.Process(postmaster_pid)))
        except psutil.Error:
            return
        for name, proc in roots:
            self._by_pid[proc.pid] = (name, self._tree_seconds(proc))
        self.samples += 1

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for name, seconds in self._by_pid.values():
            out[name] += seconds
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


class Stack:
    """``orderflow run`` in a state folder of its own, and handles on what it started."""

    def __init__(self, state: Path, executor: str, workers: int, clock_start: datetime):
        self.state = state
        self.api_port, self.sandbox_port, self.smtp_port = (
            _free_port(),
            _free_port(),
            _free_port(),
        )
        self.queue = f"soak-{os.getpid()}-{secrets.token_hex(3)}"
        roles_file = state / "roles.yaml"
        roles_file.write_text(yaml.safe_dump({"users": desk_users()}))
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update(
            {
                "ORDERFLOW_STATE_DIR": str(state),
                "ORDERFLOW_API_PORT": str(self.api_port),
                "ORDERFLOW_SANDBOX_PORT": str(self.sandbox_port),
                "ORDERFLOW_SANDBOX_SMTP_PORT": str(self.smtp_port),
                "ORDERFLOW_SANDBOX_START": clock_start.isoformat(),
                "ORDERFLOW_SANDBOX_SPEED": "0.000001",  # stopped until the soak starts it
                "ORDERFLOW_EXECUTOR": executor,
                "ORDERFLOW_CELERY_WORKERS": str(workers),
                "ORDERFLOW_CELERY_QUEUE": self.queue,
                # the wake-ups' Redis is the stack's own (a drill takes it down); the Celery
                # broker stays the machine's
                "ORDERFLOW_REDIS": "own",
                "ORDERFLOW_OWN_REDIS_PORT": str(_free_port()),
                # the soak's people: Airflow logins for each of them (dev.stack.airflow_users)
                "ORDERFLOW_ROLES_FILE": str(roles_file),
            }
        )
        self.env = env
        self.ui = f"http://localhost:{self.api_port}"
        self.sandbox = httpx.Client(base_url=f"http://127.0.0.1:{self.sandbox_port}", timeout=60)
        self.proc: subprocess.Popen | None = None
        self._tokens: dict[str, str] = {}
        self.cpu = CpuMeter()
        self._cpu_sampled = 0.0

    # -- lifecycle
    #: seconds the stack gets to answer its health checks: migrations and the API server's
    #: start took over 300 s on a 2-core machine at load average 35–55 (other helpers' runs)
    START_TIMEOUT_S = 600.0

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        t0 = time.monotonic()
        self.log_file = (self.state.parent / "run.log").open("ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "orderflow"), "run"],
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orderflow run exited ({self.proc.returncode}); see run.log")
            if self._ok(f"{self.ui}/orderflow/health") and self._ok(
                f"http://127.0.0.1:{self.sandbox_port}/admin/health"
            ):
                return time.monotonic() - t0
            time.sleep(1)
        raise RuntimeError("the stack did not become healthy in time; see run.log")

    def stop(self) -> list[str]:
        """Stop ``orderflow run`` (Ctrl-C: it stops everything it started). Returns what had
        to be cleaned up after it (should be nothing)."""
        leftovers: list[str] = []
        if self.proc is None:
            return leftovers
        try:
            postmaster = self.postmaster()
        except (OSError, ValueError, IndexError):
            postmaster = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                leftovers.append("orderflow run did not stop in 120 s: killed")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if postmaster and _alive(postmaster):
            # `orderflow run` stops its embedded server with pg_ctl as the server's own user;
            # in a folder that user cannot enter (pytest's 0700 temp dirs) that fails quietly.
            leftovers.append(f"embedded PostgreSQL (pid {postmaster}) still ran: fast shutdown")
            os.kill(postmaster, signal.SIGINT)
            deadline = time.monotonic() + 30
            while _alive(postmaster) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(postmaster):
                os.kill(postmaster, signal.SIGKILL)
        self.sandbox.close()
        self.log_file.close()
        return leftovers

    @staticmethod
    def _ok(url: str) -> bool:
        try:
            return httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    # -- Airflow REST API
    def token(self, user: str = "admin") -> str:
        """A bearer token for ``user``, logged in with the password the stack generated."""
        if user not in self._tokens:
            passwords = json.loads((self.state / "airflow" / "passwords.json").read_text())
            r = httpx.post(
                f"{self.ui}/auth/token",
                json={"username": user, "password": passwords[user]},
                timeout=30,
            )
            r.raise_for_status()
            self._tokens[user] = r.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "admin", **kw) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.ui}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=30,
            **kw,
        )

    # -- databases (the embedded server, over its Unix socket)
    def db_url(self, database: str) -> str:
        lines = (self.state / "pgdata" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres@/{database}?host={lines[4]}&port={lines[3]}"

    def query(self, database: str, sql: str, params: tuple = (), retries: int = 60) -> list:
        import psycopg

        for attempt in range(retries):
            try:
                with psycopg.connect(self.db_url(database), connect_timeout=5) as conn:
                    return conn.execute(sql, params).fetchall()
            except (psycopg.OperationalError, OSError, IndexError):
                if attempt == retries - 1:
                    raise
                time.sleep(1)
        return []

    # -- the processes the supervisor runs
    def services(self) -> dict[str, Any]:
        """name → psutil.Process of each child of ``orderflow run`` (its own group)."""
        import psutil

        out = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
                if f"airflow {name}" in cmd:
                    out[name] = child
            if cmd.startswith("redis-server") or "/redis-server" in cmd.split(" ", 1)[0]:
                out["redis"] = child
            if "celery" in cmd and "worker" in cmd:
                for part in cmd.split():
                    if part.startswith("celery-worker-"):
                        out[part.split(".")[0]] = child
                        break
        return out

    def sample_cpu(self, every: float = 15.0) -> None:
        """Sample the CPU account (at most every ``every`` seconds)."""
        if time.monotonic() - self._cpu_sampled < every or self.proc is None:
            return
        self._cpu_sampled = time.monotonic()
        try:
            postmaster = self.postmaster()
        except (OSError, ValueError, IndexError):
            postmaster = None
        self.cpu.sample(self.proc.pid, postmaster)

    def postmaster(self) -> int:
        return int((self.state / "pgdata" / "postmaster.pid").read_text().splitlines()[0])

    def clock(self) -> datetime:
        r = self.sandbox.get("/admin/clock")
        r.raise_for_status()
        return datetime.fromisoformat(r.json()["now"])


# ------------------------------------------------------------------------------ people
#: holds a role no approval asks for: Airflow must refuse this user's answer to any of them
OUTSIDER = "desk.outsider"
#: roles that are not an exception's owner (the super role answers everything)
_NOT_OWNERS = ("operations_manager", "rule_approver", "sales")


def desk_users() -> dict[str, list[str]]:
    """The soak's roles file: ``admin`` (every role), one desk user per owner role of the
    shipped mapping (``desk.pricing``, ``desk.credit``, ...) and :data:`OUTSIDER`."""
    shipped = yaml.safe_load((settings.INCLUDE_DIR / "access" / "roles.yaml").read_text())
    owners = [r for r in shipped.get("roles") or {} if r not in _NOT_OWNERS]
    return {
        "admin": ["operations_manager", "rule_approver"],
        **{f"desk.{r}": [r] for r in owners},
        OUTSIDER: ["sales"],
    }


_WAITING = ("deferred", "awaiting_input")


def _answer_approvals(stack: Stack, fault: Injected) -> bool:
    """A person answers up to ``count`` waiting Required Actions through Airflow's REST API
    (what the UI's Required Actions page calls): first :data:`OUTSIDER` tries to reject each
    (Airflow must answer 403), then a desk user holding the exception's owner role approves
    it with a reason. Armed at the action's time and tried on every turn of the drive (and
    for a while after it) until some wait: True once answered. The ``order_approvals``
    dispatcher runs every 5 wall-clock minutes, long at a soak's speed, so while none waits
    it is triggered, as an operator would from the UI, at most once a minute."""
    from orderflow.domain.approvals import APPROVE, REJECT

    d = fault.detail
    if time.monotonic() - d.get("_looked", 0.0) < 5:
        return False
    d["_looked"] = time.monotonic()
    try:
        r = stack.api(
            "GET",
            "/dags/order_approval/dagRuns/~/hitlDetails",
            params={"response_received": "false", "limit": 100, "order_by": "created_at"},
        )
        r.raise_for_status()
    except httpx.HTTPError as exc:  # the API server restarting or busy: look again later
        log.info("soak: Required Actions not listed (%s)", exc)
        return False
    waiting = [h for h in r.json()["hitl_details"] if h["task_instance"]["state"] in _WAITING]
    if not waiting:
        if time.monotonic() - d.get("_triggered", 0.0) >= 60:
            d["_triggered"] = time.monotonic()
            d["dispatcher_triggered"] = d.get("dispatcher_triggered", 0) + 1
            stack.api("POST", "/dags/order_approvals/dagRuns", json={"logical_date": None})
        return False
    answered, outsider = [], []
    for h in waiting[: d["count"]]:
        ti = h["task_instance"]
        path = (
            f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/"
            f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
        )
        wrong = stack.api(
            "PATCH",
            path,
            user=OUTSIDER,
            json={"chosen_options": [REJECT], "params_input": {"reason": "not mine to decide"}},
        )
        outsider.append(wrong.status_code)
        assigned = [u["id"] for u in h.get("assigned_users") or []]
        who = next((u for u in assigned if u.startswith("desk.")), "admin")
        at = _now().isoformat()
        right = stack.api(
            "PATCH",
            path,
            user=who,
            json={"chosen_options": [APPROVE], "params_input": {"reason": "soak: approved"}},
        )
        answered.append(
            {"run_id": ti["dag_run_id"], "user": who, "status": right.status_code, "at": at}
        )
    d.pop("_looked", None)
    d.pop("_triggered", None)
    d.update(waiting=len(waiting), answered=answered, outsider_status=outsider)
    d["answered_after_s"] = round(
        (
            datetime.fromisoformat(answered[0]["at"]) - datetime.fromisoformat(fault.at)
        ).total_seconds(),
        1,
    )
    return True


def _approvals_applied(stack: Stack, fault: Injected) -> None:
    """Recovered when Airflow refused every outsider's answer and each accepted answer was
    applied: its run's ``apply_decision`` succeeded and the exception is resolved by the
    user who answered (the audit's actor). Seconds: answer → the last one applied."""
    d = fault.detail
    d["outsider_refused"] = bool(d["outsider_status"]) and set(d["outsider_status"]) == {403}
    applied, missing = [], []
    for a in d["answered"]:
        if a["status"] != 200:
            continue  # resolved elsewhere meanwhile (409) or refused: not counted
        ((ended,),) = stack.query(
            "airflow",
            "SELECT max(end_date) FILTER (WHERE state = 'success') FROM task_instance "
            "WHERE dag_id = 'order_approval' AND task_id = 'apply_decision' AND run_id = %s",
            (a["run_id"],),
        )
        rows = stack.query(
            "orderflow",
            "SELECT resolved_by FROM orderflow.order_exception WHERE approval_run_id = %s",
            (a["run_id"],),
        )
        if ended is None or not rows or rows[0][0] != a["user"]:
            missing.append({"run_id": a["run_id"], "applied_at": ended, "resolved_by": rows})
            continue
        applied.append((ended - datetime.fromisoformat(a["at"])).total_seconds())
    d["applied"], d["not_applied"] = len(applied), missing
    if applied and not missing and d["outsider_refused"]:
        fault.recovered_s = round(max(applied), 1)
        fault.recovered_by = f"{len(applied)} answers applied by their responders"


# ------------------------------------------------------------------------------ faults
@dataclass
class Injected:
    kind: str
    name: str
    at: str  # wall clock, UTC ISO
    sim_at: str  # sandbox clock
    detail: dict = field(default_factory=dict)
    until: str | None = None  # faults windows: when the rules were lifted (wall clock)
    recovered_s: float | None = None
    recovered_by: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _kill_worker(stack: Stack, action: Action, executor: str) -> dict | None:
    """SIGKILL the Celery worker (whole process group) running a task, preferring the
    profile's DAGs; LocalExecutor: the task's own process. None when no task ran in time."""
    import psutil

    deadline = time.monotonic() + action.wait_s
    while time.monotonic() < deadline:
        rows = stack.query(
            "airflow",
            "SELECT dag_id, task_id, run_id, map_index, try_number, pid FROM task_instance "
            "WHERE state = 'running' AND pid IS NOT NULL ORDER BY start_date",
        )
        rank = {d: i for i, d in enumerate(action.prefer)}
        rows.sort(key=lambda r: rank.get(r[0], len(rank)))
        for dag_id, task_id, run_id, map_index, try_number, pid in rows:
            if action.prefer and dag_id not in rank and time.monotonic() < deadline - 30:
                break  # wait a little longer for a preferred DAG
            target = None
            if executor == "celery":
                for name, proc in stack.services().items():
                    if not name.startswith("celery-worker-"):
                        continue
                    try:
                        if pid in {c.pid for c in proc.children(recursive=True)}:
                            target = (name, proc.pid)
                    except psutil.Error:
                        continue
                if target is None:
                    continue
                os.killpg(target[1], signal.SIGKILL)
            else:
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    continue
                target = ("task process", pid)
            return {
                "process": target[0],
                "pid": target[1],
                "dag_id": dag_id,
                "task_id": task_id,
                "run_id": run_id,
                "map_index": map_index,
                "try_number": try_number,
            }
        time.sleep(0.5)
    return None


def _lose_task_message(stack: Stack, action: Action, executor: str) -> dict | None:
    """A task's Celery message lost between the scheduler and the workers — what a worker
    SIGKILLed after taking a message, before its task reported running, leaves behind: the
    task instance stays ``queued`` with no message anywhere. The workers' main processes
    are paused (SIGSTOP: they take no message; the tasks they run go on, in their pool
    processes) until a task instance is queued — for the first half of ``wait_s`` one of
    the profile's preferred DAGs only, then any; its message is removed from the stack's
    queue on the broker and the workers resume. Only the scheduler's
    ``task_queued_timeout`` brings it back. LocalExecutor: nothing to lose."""
    if executor != "celery":
        return {"skipped": "LocalExecutor: no message between the scheduler and a worker"}
    import psutil
    import redis

    from orderflow.dev.stack import Executor

    broker = redis.Redis.from_url(
        Executor.from_env(stack.env).broker_url, socket_timeout=5, socket_connect_timeout=5
    )
    workers = [p for n, p in stack.services().items() if n.startswith("celery-worker-")]
    paused = []
    for proc in workers:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
            paused.append(proc.pid)
    t0 = time.monotonic()
    try:
        rank = {d: i for i, d in enumerate(action.prefer)}
        while time.monotonic() - t0 < action.wait_s:
            rows = stack.query(
                "airflow",
                "SELECT dag_id, task_id, run_id, map_index, try_number, external_executor_id, "
                "queued_dttm FROM task_instance WHERE state = 'queued' "
                "AND external_executor_id IS NOT NULL ORDER BY queued_dttm",
            )
            if rank and time.monotonic() - t0 < action.wait_s / 2:
                rows = [r for r in rows if r[0] in rank]  # first half: a preferred DAG's only
            rows.sort(key=lambda r: rank.get(r[0], len(rank)))
            messages = {_celery_task_id(m): m for m in broker.lrange(stack.queue, 0, -1)}
            for dag_id, task_id, run_id, map_index, try_number, celery_id, queued in rows:
                raw = messages.get(celery_id)
                if raw is None or not broker.lrem(stack.queue, 1, raw):
                    continue
                return {
                    "dag_id": dag_id,
                    "task_id": task_id,
                    "run_id": run_id,
                    "map_index": map_index,
                    "try_number": try_number,
                    "celery_task_id": celery_id,
                    "queued_at": queued.isoformat(),
                    "workers_paused_s": round(time.monotonic() - t0, 1),
                }
            time.sleep(0.2)
        return None
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        broker.close()


def _celery_task_id(raw: bytes) -> str | None:
    """The Celery task id of a message as the Redis transport keeps it in a queue."""
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def _kill_service(stack: Stack, name: str) -> dict | None:
    proc = stack.services().get(name)
    if proc is None:
        return None
    os.killpg(proc.pid, signal.SIGKILL)
    return {"process": name, "pid": proc.pid}


#: the cursor and exception of each feed the sandbox can rewind
_FEEDS = {"wms": "wms_milestones", "carrier": "carrier_tracking"}


def _rewind_feed(stack: Stack, action: Action) -> dict | None:
    """The WMS purges part of what we have read and numbers the rest from the start: our
    cursor now points past its end or at another event. Nothing we have not read is lost."""
    name = _FEEDS[action.feed]
    deadline = time.monotonic() + action.wait_s
    while True:  # something read to rewind (the feed is read every few minutes)
        rows = stack.query(
            "orderflow", "SELECT value FROM orderflow.sync_cursor WHERE cursor_name = %s", (name,)
        )
        read = int(rows[0][0] or 0) if rows else 0
        drop = int(read * action.drop_fraction)
        if drop >= 1:
            break
        if time.monotonic() > deadline:
            return None
        time.sleep(2)
    r = stack.sandbox.post(f"/admin/feeds/{action.feed}/compact", json={"drop": drop})
    r.raise_for_status()
    answer = r.json()
    return {
        "source": action.feed,
        "feed": name,
        "our_cursor": read,
        "dropped": answer["dropped"],
        "length": answer["length"],
    }


def _operate_rewound_feed(stack: Stack, fault: Injected) -> bool:
    """What the feed's owners do once the exception is on the desk (its message names the
    command): resync from the start; stored events are skipped by their natural keys. True
    once done."""
    d = fault.detail
    import psycopg

    from orderflow import fulfilment

    source = d["source"]
    try:
        with psycopg.connect(stack.db_url("orderflow"), connect_timeout=5) as conn:
            open_at = fulfilment.feed_discontinuity_opened_at(conn, source)
    except (psycopg.OperationalError, OSError, IndexError):
        return False  # the store is restarting: next round
    if open_at is None:
        return False
    d["exception_after_s"] = round((open_at - datetime.fromisoformat(fault.at)).total_seconds(), 1)
    with psycopg.connect(stack.db_url("orderflow")) as conn:
        fulfilment.resync_feed(conn, source, 0, actor="soak-operator", reason="soak: feed rewound")
    d["resynced_at"] = _now().isoformat()
    return True


def _pushes(stack: Stack) -> dict:
    """The sandbox's webhook deliveries so far, per source: requests, failed requests, and the
    seconds the receiver took (total and slowest)."""
    try:
        subs = stack.sandbox.get("/admin/subscriptions").json()["subscriptions"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    keys = ("delivered", "requests", "failed_requests", "post_s_total", "post_s_max", "pending")
    return {src: {k: sub.get(k) for k in keys} for src, sub in subs.items()}


def _queue_down(stack: Stack, action: Action) -> dict | None:
    """Take the wake-ups' Redis down: SIGKILL it and hold it down (the supervisor does not
    restart a held service), or SIGSTOP it (up, but answers nothing)."""
    from orderflow.dev.stack import hold_dir

    proc = stack.services().get("redis")
    if proc is None:
        return None
    if action.signal == "stop":
        os.kill(proc.pid, signal.SIGSTOP)
    else:
        hold = hold_dir(stack.state)
        hold.mkdir(parents=True, exist_ok=True)
        (hold / "redis").write_text("held down by orderflow soak (queue_down)\n")
        os.kill(proc.pid, signal.SIGKILL)
    return {
        "process": "redis",
        "pid": proc.pid,
        "signal": action.signal,
        "duration_hours": action.duration_hours,
        "pushes_at_injection": _pushes(stack),
    }


def _queue_up(stack: Stack, fault: Injected) -> None:
    """End a queue outage: SIGCONT, or lift the hold (the supervisor starts Redis again);
    note when it answers again and what the webhooks went through meanwhile."""
    import contextlib

    import redis

    from orderflow.dev.stack import hold_dir

    d = fault.detail
    if d.get("signal") == "stop":
        with contextlib.suppress(ProcessLookupError):
            os.kill(d["pid"], signal.SIGCONT)
    else:
        (hold_dir(stack.state) / "redis").unlink(missing_ok=True)
    fault.until = _now().isoformat()
    d["pushes_at_end"] = _pushes(stack)
    t0 = time.monotonic()
    client = redis.Redis(
        port=int(stack.env["ORDERFLOW_OWN_REDIS_PORT"]),
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    while time.monotonic() - t0 < 30:
        try:
            if client.ping():
                d["answering_again_s"] = round(time.monotonic() - t0, 1)
                break
        except redis.RedisError:
            time.sleep(0.2)
    client.close()


def inject(stack: Stack, action: Action, executor: str) -> dict | None:
    if action.kind == "queue_down":
        return _queue_down(stack, action)
    if action.kind == "rewind_feed":
        return _rewind_feed(stack, action)
    if action.kind == "reuse_release_ids":
        # armed, not timed: the next N new releases whenever they come (the sender records
        # each as sent and its follow-up — linking the id to the shipment — fails)
        r = stack.sandbox.post("/admin/faults/reuse-release-ids", json={"count": action.count})
        r.raise_for_status()
        return {"armed": action.count}
    if action.kind == "kill_scheduler":
        # the task instances it leaves orphaned: recovery is when each ran again or finished
        running = stack.query(
            "airflow",
            "SELECT dag_id, task_id, run_id, map_index, try_number FROM task_instance "
            "WHERE state = 'running'",
        )
        detail = _kill_service(stack, "scheduler")
        if detail is not None:
            detail["running_tasks"] = [list(r) for r in running]
        return detail
    if action.kind == "kill_worker":
        return _kill_worker(stack, action, executor)
    if action.kind == "lose_task_message":
        return _lose_task_message(stack, action, executor)
    if action.kind == "answer_approvals":
        return {"count": action.count}  # armed: answered by the drive when some wait
    if action.kind == "kill_postgres":
        pid = stack.postmaster()
        os.kill(pid, signal.SIGKILL)
        return {"process": "postgres", "pid": pid}
    if action.kind.startswith("kill_"):
        return _kill_service(stack, action.kind.removeprefix("kill_").replace("_", "-"))
    raise ValueError(action.kind)


# ------------------------------------------------------------------------------ the run
@dataclass
class Options:
    days: int
    orders_per_day: int
    executor: str
    workers: int
    chaos: str
    report_dir: Path
    speed: float | None = None  # None: the profile's speed, else 600
    seed: int = 7
    tail_hours: float = DEFAULT_TAIL_HOURS
    settle_timeout: float = 900.0
    keep_state: bool = False


def run(opts: Options, command: str = "") -> dict:
    """Run the soak, write the report, return it."""
    from orderflow_sandbox.generator import generate

    profile = load_profile(opts.chaos)
    if opts.speed is None:
        opts.speed = profile.speed or 600.0
    report_dir = opts.report_dir
    state = report_dir / "state"
    if state.exists():
        if not (state / ".soak").exists():
            raise RuntimeError(f"{state} exists and is not a soak's state folder")
        shutil.rmtree(state)
    (state / "sandbox").mkdir(parents=True)
    (state / ".soak").write_text("state of an orderflow soak; deleted by the next one\n")

    t_begin = time.monotonic()
    manifest = generate(
        state / "sandbox" / "day",
        seed=opts.seed,
        days=opts.days,
        orders_per_day=opts.orders_per_day,
        customers=max(80, opts.orders_per_day * 2 // 5),
        items=max(300, opts.orders_per_day * 2),
        business_date=FIRST_DAY,
    )
    dates = [date.fromisoformat(d) for d in manifest.business_dates]
    clock_start = datetime.combine(dates[0], datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=CLOCK_START_HOUR
    )
    last_arrival = max(
        datetime.fromisoformat(json.loads(line)["arrival_at"].replace("Z", "+00:00"))
        for line in (state / "sandbox" / "day" / "orders.jsonl").open()
    )
    clock_end = last_arrival + timedelta(hours=opts.tail_hours)
    log.info(
        "soak: %d day(s) × %d orders, %s executor%s, chaos %s, simulated %s → %s at ×%g",
        opts.days,
        opts.orders_per_day,
        opts.executor,
        f" ({opts.workers} workers)" if opts.executor == "celery" else "",
        profile.name,
        clock_start.isoformat(),
        clock_end.isoformat(),
        opts.speed,
    )

    stack = Stack(state, opts.executor, opts.workers, clock_start)
    injected: list[Injected] = []
    timings: dict[str, float] = {}
    t_stack = time.monotonic()
    try:
        timings["stack_start_s"] = stack.start()
        log.info("soak: stack healthy in %.0fs (%s)", timings["stack_start_s"], stack.ui)
        t0 = time.monotonic()
        _wait_ready(stack)
        timings["ready_s"] = time.monotonic() - t0
        t_drive = time.monotonic()
        injected = _drive(stack, profile, opts, clock_start, clock_end)
        timings["drive_s"] = time.monotonic() - t_drive
        t0 = time.monotonic()
        settled = _settle(stack, opts.settle_timeout)
        timings["settle_s"] = time.monotonic() - t0
        stack.sample_cpu(every=0)
        report = reconcile(stack, opts, profile, manifest, injected, settled)
        report["cpu_s"] = cpu = stack.cpu.totals()
        wall = time.monotonic() - t_stack
        report["cpu_account"] = {
            "total_s": round(sum(cpu.values()), 1),
            "per_order_ms": round(1000 * sum(cpu.values()) / max(1, report["orders_received"]), 1),
            "machine_cpu_s": round(wall * (os.cpu_count() or 1), 1),
            "samples": stack.cpu.samples,
        }
        timings["total_s"] = time.monotonic() - t_begin
        report["timings"] = {k: round(v, 1) for k, v in timings.items()}
        report["command"] = command
    finally:
        leftovers = stack.stop()
    report["stop_leftovers"] = leftovers
    report["findings"] += leftovers
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (report_dir / "report.md").write_text(render_markdown(report))
    if not opts.keep_state:
        shutil.rmtree(state, ignore_errors=True)
    return report


def _wait_ready(stack: Stack, timeout: float = 600) -> None:
    """Every DAG parsed and the first master-data sync done (orders need master data)."""
    deadline = time.monotonic() + timeout
    expected = {p.stem for p in settings.DAGS_DIR.glob("*.py")}
    while time.monotonic() < deadline:
        try:
            r = stack.api("GET", "/dags", params={"limit": 100})
            seen = (
                {d["dag_id"] for d in r.json().get("dags", [])} if r.status_code == 200 else set()
            )
        except httpx.HTTPError:
            seen = set()
        if expected <= seen:
            rows = stack.query(
                "airflow",
                "SELECT count(*) FROM dag_run WHERE dag_id = 'masterdata_sync' "
                "AND state = 'success'",
            )
            if rows[0][0]:
                return
        time.sleep(2)
    raise RuntimeError(f"not ready in {timeout:.0f}s: DAGs or the first master-data sync")


def _active_rules(profile: Profile, elapsed_h: float) -> list[dict]:
    return [
        rule
        for a in profile.actions
        if a.kind == "faults" and a.at_hours <= elapsed_h < a.at_hours + a.duration_hours
        for rule in a.rules
    ]


def _drive(
    stack: Stack, profile: Profile, opts: Options, clock_start: datetime, clock_end: datetime
) -> list[Injected]:
    stack.sandbox.put("/admin/clock", json={"speed": opts.speed}).raise_for_status()
    pending = list(profile.actions)
    windows: dict[int, Injected] = {}
    outages: dict[int, Injected] = {}  # queue_down: lifted after their duration
    injected: list[Injected] = []
    applied: list[dict] = []
    to_operate: list[Injected] = []  # rewound feeds waiting for their exception, then a resync
    to_parse: list[Injected] = []  # DAG processor killed: waiting for its first parse after
    to_answer: list[Injected] = []  # approvals to answer once some Required Actions wait
    last_log = 0.0
    while True:
        if stack.proc.poll() is not None:
            raise RuntimeError("orderflow run exited during the soak; see run.log")
        now_sim = stack.clock()
        elapsed_h = (now_sim - clock_start).total_seconds() / 3600
        rules = _active_rules(profile, elapsed_h)
        if rules != applied:
            body = {"seed": profile.seed, "rules": rules}
            stack.sandbox.put("/admin/faults", json=body).raise_for_status()
            applied = rules
        for i, fault in list(windows.items()):
            a = profile.actions[i]
            if elapsed_h >= a.at_hours + a.duration_hours:
                fault.until = _now().isoformat()
                del windows[i]
        for i, fault in list(outages.items()):
            a = profile.actions[i]
            if elapsed_h >= a.at_hours + a.duration_hours:
                _queue_up(stack, fault)
                log.info("soak: %s over at %s: %s", fault.name, now_sim.isoformat(), fault.detail)
                del outages[i]
        while pending and pending[0].at_hours <= elapsed_h:
            action = pending.pop(0)
            at = _now()
            if action.kind == "faults":
                detail = {"rules": action.rules, "duration_hours": action.duration_hours}
            else:
                detail = inject(stack, action, opts.executor)
            fault = Injected(
                kind=action.kind,
                name=action.name or action.kind,
                at=at.isoformat(),
                sim_at=now_sim.isoformat(),
                detail=detail or {"skipped": "nothing to hit (no running task / process)"},
            )
            injected.append(fault)
            if action.kind == "faults":
                windows[profile.actions.index(action)] = fault
            if action.kind == "queue_down" and detail:
                outages[profile.actions.index(action)] = fault
            if action.kind == "rewind_feed" and detail:
                to_operate.append(fault)
            if action.kind == "kill_dag_processor" and detail:
                to_parse.append(fault)
            if action.kind == "answer_approvals":
                to_answer.append(fault)
            log.info("soak: %s at %s: %s", fault.name, fault.sim_at, fault.detail)
        to_operate = [f for f in to_operate if not _operate_rewound_feed(stack, f)]
        to_parse = [f for f in to_parse if not _parsed_again(stack, f)]
        to_answer = [f for f in to_answer if not _answer_approvals(stack, f)]
        if now_sim >= clock_end:
            break
        stack.sample_cpu()
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log.info("soak: simulated %s (%.1f h in)", now_sim.isoformat(), elapsed_h)
        time.sleep(1)
    deadline = time.monotonic() + 300
    while to_operate and time.monotonic() < deadline:  # the feed is read every few minutes
        time.sleep(5)
        to_operate = [f for f in to_operate if not _operate_rewound_feed(stack, f)]
    for f in to_operate:
        f.detail["exception_after_s"] = None  # never noticed: a finding
    deadline = time.monotonic() + 180
    while to_answer and time.monotonic() < deadline:  # held orders may come late in the day
        time.sleep(1)
        to_answer = [f for f in to_answer if not _answer_approvals(stack, f)]
    for f in to_answer:
        f.detail.update(answered=[], outsider_status=[])  # none ever waited: a finding
        for k in ("_looked", "_triggered"):
            f.detail.pop(k, None)
    for fault in windows.values():
        fault.until = _now().isoformat()
    for fault in outages.values():
        _queue_up(stack, fault)
    # Stop time and lift every fault: what follows is settling, not simulation.
    stack.sandbox.put("/admin/clock", json={"speed": 0.000001}).raise_for_status()
    stack.sandbox.put("/admin/faults", json={"seed": profile.seed, "rules": []})
    for fault in injected:
        if fault.kind == "reuse_release_ids":
            state = stack.sandbox.post("/admin/faults/reuse-release-ids", json={"count": 0})
            fault.detail["hits"] = state.json()["hits"]
            fault.until = _now().isoformat()
    return injected


#: DAGs that move orders, messages and stock (housekeeping DAGs — approvals, desk, KPIs,
#: heartbeat — run every few minutes forever and do not hold settling)
WORK_DAGS = (
    "intake_edi",
    "intake_csv",
    "intake_mailbox",
    "intake_portal",
    "intake_marketplace",
    "order_processing",
    "fulfilment_events",
    "masterdata_sync",
)
#: task instances that run or wait, plus queued runs (one created by an Asset event waits
#: behind max_active_runs with unscheduled tasks; running runs are not counted: an intake
#: run's deferred sensor keeps it running while it waits for files). An intake DAG's queued
#: run is not counted either: it waits behind that sensor for as long as no file comes, and
#: the intake's work is counted where it is (files waiting, messages pending). Nor is the
#: intake's file sensor itself (``wait_for_*``), in any state: every intake run starts one
#: every 5 minutes that runs to defer and runs again to time out when no file came — five
#: intake DAGs kept a quiet stack "busy" most of the time, so it never settled; the files it
#: waits for are counted as files waiting.
_BUSY_DETAIL_SQL = """
SELECT 'task ' || dag_id || '.' || task_id || ' ' || state, count(*) FROM task_instance
 WHERE state IN ('running', 'queued', 'scheduled', 'up_for_retry', 'up_for_reschedule',
                 'restarting')
   AND dag_id = ANY(%(work)s)
   AND NOT (dag_id = ANY(%(intake)s) AND starts_with(task_id, 'wait_for_'))
 GROUP BY 1
UNION ALL
SELECT 'queued run ' || dag_id, count(*) FROM dag_run
 WHERE state = 'queued' AND dag_id = ANY(%(work)s) AND NOT dag_id = ANY(%(intake)s)
 GROUP BY 1
"""
_STORE_BUSY_SQL = """
SELECT (SELECT count(*) FROM orderflow.channel_message WHERE outcome = 'pending'),
       (SELECT count(*) FROM orderflow.outbox
         WHERE status IN ('pending', 'sending') OR (status = 'failed'
               AND next_attempt_at < now() + interval '2 minutes')),
       (SELECT count(*) FROM orderflow.fulfilment_event WHERE status = 'pending'),
       (SELECT count(*) FROM orderflow.order_change WHERE status IN ('pending', 'waiting_wms'))
"""
#: what is counted while settling; pending fulfilment events may wait legitimately (an event
#: for a release we have not recorded yet), so they are reported but do not hold settling.
#: Customers' changes not yet applied do: a change to a released order waits for its WMS
#: cancels to be sent, then the next ``order_processing`` run gives the stock back — compared
#: before that run, our released quantity is the cancelled order's above the WMS's.
_BUSY_KEYS = (
    "work_runs_and_tasks",
    "files_waiting",
    "messages_pending",
    "outbox_due",
    "events_pending",
    "changes_due",
)


INTAKE_DAGS = (
    "intake_edi",
    "intake_csv",
    "intake_mailbox",
    "intake_portal",
    "intake_marketplace",
)


def _waiting_files(state: Path) -> int:
    """Delivered drop-folder files not yet ingested (ingested ones move to ``.archive``)."""
    root = state / "sandbox"
    n = 0
    for sub in ("edi/inbound", "csv/inbound", "mailbox/new"):
        base = root / sub
        if base.exists():
            n += sum(
                1
                for p in base.rglob("*")
                if p.is_file() and not any(x.startswith(".") for x in p.relative_to(base).parts)
            )
    return n


def _settle(stack: Stack, timeout: float) -> dict:
    """Let the stack finish what arrived: the intake DAGs are triggered once (their schedule
    is every 5 minutes), then rounds of: wait until quiet — no task of a work DAG runs or
    waits, no file waits in a drop folder, nothing is due in the store (3 polls 5 s apart) —
    then ``fulfilment_events`` and ``masterdata_sync`` once more, side by side, as an operator
    would before comparing with the WMS. Master data published triggers ``order_processing``
    (backorders filled from stock that arrived), so rounds repeat until one changes no order
    (≤ 4)."""
    deadline = time.monotonic() + timeout
    for dag_id in INTAKE_DAGS:
        stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
    settled: dict[str, Any] = {"rounds": []}
    last_event = None
    for _ in range(4):
        quiet, busy, detail = _wait_quiet(stack, deadline)
        events = stack.query("orderflow", "SELECT max(event_id) FROM orderflow.order_event")[0][0]
        round_ = {
            "quiet": quiet,
            "busy_at_end": dict(zip(_BUSY_KEYS, busy, strict=False)),
            "busy_detail": detail,
        }
        settled["rounds"].append(round_)
        if events == last_event:
            break  # the last round's syncs changed no order
        last_event = events
        round_.update(
            _trigger_and_wait(
                stack,
                ("fulfilment_events", "masterdata_sync"),
                max(120.0, deadline - time.monotonic()),
            )
        )
        if not quiet:
            break  # out of time: compared after one last sync all the same, reported unsettled
    settled["quiet"] = settled["rounds"][-1]["quiet"]
    settled["busy_at_end"] = settled["rounds"][-1]["busy_at_end"]
    settled["busy_detail"] = settled["rounds"][-1]["busy_detail"]
    return settled


#: the outbox rows counted due, by action and status (logged)
_STORE_BUSY_DETAIL_SQL = """
SELECT 'outbox ' || action || ' ' || status, count(*) FROM orderflow.outbox
 WHERE status IN ('pending', 'sending') OR (status = 'failed'
       AND next_attempt_at < now() + interval '2 minutes') GROUP BY 1
"""


def busy_tasks(query, work: Sequence[str] = WORK_DAGS) -> dict[str, int]:
    """The ``work`` DAGs' task instances and queued runs counted busy, by name (``query``
    runs SQL on the Airflow metadata database: ``Stack.query`` bound to it)."""
    params = {"work": list(work), "intake": list(INTAKE_DAGS)}
    return {k: n for k, n in sorted(query(_BUSY_DETAIL_SQL, params))}


#: outbox actions sent only by a DAG on a slow schedule: when nothing else is busy and rows
#: of these are due, settle triggers their sender instead of waiting for its schedule
SCHEDULED_SENDERS = {
    "crm_approval_request": "crm_sync",
    "marketplace_ack": "intake_marketplace",
    "marketplace_cancel": "intake_marketplace",
}


#: quiet = this many polls in a row with nothing busy, this far apart (an Asset event's run
#: is created within a scheduler loop, ~1 s, so 10 s of quiet is not a gap between runs)
QUIET_POLLS = 3
QUIET_POLL_S = 5.0


def _wait_quiet(stack: Stack, deadline: float) -> tuple[bool, tuple, dict]:
    quiet = 0
    busy: tuple = ()
    detail: dict[str, int] = {}
    triggered: dict[str, float] = {}
    while quiet < QUIET_POLLS:
        time.sleep(QUIET_POLL_S)
        stack.sample_cpu()
        detail = busy_tasks(lambda sql, params: stack.query("airflow", sql, params))
        store = stack.query("orderflow", _STORE_BUSY_SQL)[0]
        busy = (sum(detail.values()), _waiting_files(stack.state), *store)
        quiet = quiet + 1 if not any((*busy[:4], busy[5])) else 0
        if busy[3]:
            detail.update(stack.query("orderflow", _STORE_BUSY_DETAIL_SQL))
            if not any(busy[:3]):
                _trigger_scheduled_senders(stack, detail, triggered)
        if busy[5] and not any(busy[:4]):
            # the changes are applied at the start of each order_processing run (every 5
            # minutes): run it now, as an operator would, rather than wait
            _trigger_once_a_minute(stack, "order_processing", triggered, "changes due")
        log.info("soak: settling, busy %s %s", dict(zip(_BUSY_KEYS, busy, strict=False)), detail)
        if time.monotonic() > deadline:
            break
    return quiet >= QUIET_POLLS, busy, detail


def _trigger_scheduled_senders(stack: Stack, detail: dict, triggered: dict[str, float]) -> None:
    """Trigger the sender DAG of each slow-schedule action with rows due (at most once a
    minute each), as an operator would rather than wait up to its schedule's interval."""
    due = {key.split()[1] for key in detail if key.startswith("outbox ")}
    for action in due & set(SCHEDULED_SENDERS):
        _trigger_once_a_minute(stack, SCHEDULED_SENDERS[action], triggered, f"due {action} rows")


def _trigger_once_a_minute(stack: Stack, dag_id: str, triggered: dict[str, float], why: str):
    last = triggered.get(dag_id)
    if last is None or time.monotonic() - last >= 60:
        triggered[dag_id] = time.monotonic()
        stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
        log.info("soak: settling, triggered %s for %s", dag_id, why)


def _parsed_again(stack: Stack, fault: Injected) -> bool:
    """Whether a DAG file was parsed since the DAG processor was killed (watched while
    driving: ``dag.last_parsed_time`` keeps only the latest parse, so the end of the run
    cannot tell when the first one came)."""
    (latest,) = stack.query("airflow", "SELECT max(last_parsed_time) FROM dag")[0]
    at = datetime.fromisoformat(fault.at)
    if latest is None or latest <= at:
        return False
    fault.detail["parsed_again_s"] = round((latest - at).total_seconds(), 1)
    return True


def _trigger_and_wait(stack: Stack, dag_ids: Sequence[str], timeout: float) -> dict[str, str]:
    """Trigger each DAG at once (they run side by side) and wait for every run to end."""
    runs: dict[str, str] = {}
    states: dict[str, str] = {}
    for dag_id in dag_ids:
        r = stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
        if r.status_code in (200, 201):
            runs[dag_id] = r.json()["dag_run_id"]
        else:
            states[dag_id] = f"trigger failed: {r.status_code} {r.text[:200]}"
    deadline = time.monotonic() + timeout
    while runs and time.monotonic() < deadline:
        time.sleep(3)
        for dag_id, run_id in list(runs.items()):
            r = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if r.status_code == 200 and r.json()["state"] in ("success", "failed"):
                states[dag_id] = r.json()["state"]
                del runs[dag_id]
    return {**states, **dict.fromkeys(runs, "timeout")}


# ------------------------------------------------------------------------------ reconcile
def _reused_ids_accounted(stack: Stack, fault: Injected) -> None:
    """Each release the WMS answered with a reused id: its outbox row is recorded as sent
    (the WMS applied it), its follow-up is a typed dead letter and the order has an open
    exception. Recovered (from the hit to the last dead letter) when every hit is."""
    d = fault.detail
    hits = d.get("hits") or []
    d["hit"] = len(hits)
    if not hits:
        return  # armed but never hit: unrecovered, so the report says the fault never fired
    accounted: list[float] = []
    for hit in hits:
        rows = stack.query(
            "orderflow",
            """
            SELECT o.status, o.followup_status,
                   (SELECT min(created_at) FROM orderflow.dead_letter dl
                     WHERE dl.source = 'outbox_followup' AND dl.source_ref = o.idempotency_key),
                   (SELECT count(*) FROM orderflow.order_exception x
                     WHERE x.order_id = %s AND x.status = 'open'
                       AND x.category = 'integration_failure')
              FROM orderflow.outbox o WHERE o.idempotency_key = %s
            """,
            (hit["order_id"], hit["key"]),
        )
        if not rows:
            d.setdefault("not_accounted", []).append([hit["key"], "no outbox row"])
            continue
        status, followup, dead_at, open_exceptions = rows[0]
        if status != "sent" or followup != "dead" or dead_at is None or not open_exceptions:
            d.setdefault("not_accounted", []).append(
                [hit["key"], f"{status}/{followup}, exceptions {open_exceptions}"]
            )
            continue
        accounted.append((dead_at - datetime.fromisoformat(hit["at"])).total_seconds())
    if len(accounted) == len(hits):
        fault.recovered_s = round(max(accounted), 1)
        fault.recovered_by = (
            f"{len(hits)} releases recorded as sent, their follow-ups dead-lettered and held"
        )


#: the run that sent each notification: fulfilment_events' apply_events (it sends the shipped
#: notices it queued) and send_documents attempts (every try), with the run's type and the
#: Assets whose events it consumed
_SENDER_RUNS_SQL = """
WITH tries AS (
    SELECT run_id, start_date, end_date FROM task_instance
     WHERE dag_id = 'fulfilment_events' AND task_id IN ('apply_events', 'send_documents')
       AND start_date IS NOT NULL
    UNION
    SELECT run_id, start_date, end_date FROM task_instance_history
     WHERE dag_id = 'fulfilment_events' AND task_id IN ('apply_events', 'send_documents')
       AND start_date IS NOT NULL
)
SELECT t.start_date, coalesce(t.end_date, now()), dr.run_type,
       coalesce(array_agg(DISTINCT a.name) FILTER (WHERE a.name IS NOT NULL), '{}')
  FROM tries t
  JOIN dag_run dr ON dr.dag_id = 'fulfilment_events' AND dr.run_id = t.run_id
  LEFT JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id
  LEFT JOIN asset_event ae ON ae.id = dae.event_id
  LEFT JOIN asset a ON a.id = ae.asset_id
 GROUP BY 1, 2, 3
 ORDER BY 1
"""
#: how a notification went out, by the fulfilment_events run that sent it
PATHS = {
    "push": "a run woken by a pushed event's wake-up (fulfilment_events_pushed)",
    "poll": "the 2-minute scheduled run (the poll)",
    "other": "a run woken by released orders, triggered by hand, or another DAG's sender",
}


def _path(run_type: str, assets: list[str]) -> str:
    if "fulfilment_events_pushed" in assets:
        return "push"
    return "poll" if run_type == "scheduled" else "other"


def notifications(stack: Stack) -> list[dict]:
    """Each shipment's shipped → customer notified (the measure of
    :data:`orderflow.store.fulfilment.SHIPPED_TO_NOTIFIED_SQL`) with when it arrived, when
    the notice went out and by which path (:data:`PATHS`)."""
    from orderflow.store.fulfilment import SHIPPED_TO_NOTIFIED_SQL

    head, sep, _ = SHIPPED_TO_NOTIFIED_SQL.rpartition("SELECT s.shipment_id")
    assert sep, "SHIPPED_TO_NOTIFIED_SQL changed shape"
    sql = head + (
        "SELECT s.shipment_id, s.arrived, n.sent, extract(epoch FROM n.sent - s.arrived)::float8"
        " FROM shipped s JOIN notified n USING (shipment_id) ORDER BY n.sent"
    )
    rows = stack.query("orderflow", sql, {"since": "-infinity"})
    runs = stack.query("airflow", _SENDER_RUNS_SQL)
    out = []
    for shipment_id, arrived, sent, seconds in rows:
        path = "other"
        for start, end, run_type, assets in runs:
            if start <= sent <= end:
                path = _path(run_type, list(assets))
                if path == "push":
                    break
        out.append(
            {
                "shipment_id": shipment_id,
                "arrived": arrived,
                "sent": sent,
                "seconds": float(seconds),
                "path": path,
            }
        )
    return out


def _latency_by_path(notified: list[dict]) -> dict:
    """shipped → notified p50/p95/max overall and per path, with the shipments counted."""
    from orderflow.pushed import latency

    def one(values: list[float]) -> dict:
        return {
            "p50_s": latency.percentile(values, 50),
            "p95_s": latency.percentile(values, 95),
            "max_s": round(max(values), 1) if values else None,
            "shipments": len(values),
        }

    out = {"all": one([n["seconds"] for n in notified])}
    for path in PATHS:
        out[path] = one([n["seconds"] for n in notified if n["path"] == path])
    return out


#: the end of the first successful fulfilment_events run that consumed a pushed wake-up
#: raised after the given time
_PUSH_WOKEN_RUN_DONE_SQL = """
SELECT min(dr.end_date)
  FROM dag_run dr
  JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id
  JOIN asset_event ae ON ae.id = dae.event_id
  JOIN asset a ON a.id = ae.asset_id
 WHERE dr.dag_id = 'fulfilment_events' AND dr.state = 'success'
   AND a.name = 'fulfilment_events_pushed' AND ae.timestamp > %s
"""


def outside_faults(
    waits: list[dict], injected: list[Injected], start: str = "arrived", end: str = "sent"
) -> list[dict]:
    """The waits (e.g. a notice's, shipped → notified: ``arrived`` → ``sent``) that
    overlapped no fault's reach: from its injection to its recovery (``recovered_s``), or to
    when it was lifted when it did not recover. A killed worker holds its ``fulfilment_events``
    run until its task is found dead and retried — about a minute and a half of wall clock,
    which at ×1200 is more than a simulated day (the next run, which may overlap it, carries
    the notices on): what waited in it measures the fault, not the normal path."""
    spans = []
    for f in injected:
        if "skipped" in f.detail:
            continue
        injected_at = datetime.fromisoformat(f.at)
        if f.recovered_s is not None:
            over = injected_at + timedelta(seconds=f.recovered_s)
        else:
            over = datetime.fromisoformat(f.until) if f.until else injected_at
        spans.append((injected_at, over))
    return [w for w in waits if not any(a <= w[end] and w[start] <= b for a, b in spans)]


def _queue_recovery(stack: Stack, fault: Injected, notified: list[dict]) -> None:
    """A queue outage: recovered when a fulfilment_events run woken by a pushed event raised
    after the queue came back has succeeded (seconds from the injection); meanwhile the poll
    must have kept notifying."""
    d = fault.detail
    at = datetime.fromisoformat(fault.at)
    back = datetime.fromisoformat(fault.until) if fault.until else at
    during = [n for n in notified if at <= n["sent"] <= back]
    d["notified_during_outage"] = dict(Counter(n["path"] for n in during))
    if during:
        d["notified_during_outage_latency"] = _latency_by_path(during)["all"]
    d["outage_s"] = round((back - at).total_seconds(), 1)
    # the trigger's side: the first wake-up (Asset event of the watched Asset) after the
    # queue came back, and how often the triggerer saw the watcher's trigger fail
    rows = stack.query(
        "airflow",
        "SELECT min(ae.timestamp), count(*) FROM asset_event ae JOIN asset a ON a.id = ae.asset_id "
        "WHERE a.name = 'fulfilment_events_pushed' AND ae.timestamp > %s",
        (back,),
    )
    first_wake, wakes = rows[0]
    d["wake_ups_after"] = wakes
    d["first_wake_up_after_back_s"] = (
        round((first_wake - back).total_seconds(), 1) if first_wake else None
    )
    d["trigger_failures_logged"] = _trigger_failures(stack)
    pushes_at, pushes_end = d.get("pushes_at_injection") or {}, d.get("pushes_at_end") or {}
    webhooks = {}
    for src, end in pushes_end.items():
        start = pushes_at.get(src) or {}
        n = (end.get("requests") or 0) - (start.get("requests") or 0)
        secs = (end.get("post_s_total") or 0) - (start.get("post_s_total") or 0)
        webhooks[src] = {
            "requests": n,
            "failed": (end.get("failed_requests") or 0) - (start.get("failed_requests") or 0),
            "mean_s": round(secs / n, 3) if n else None,
        }
    d["webhooks_during_outage"] = webhooks
    # recovered: a run woken by a pushed wake-up raised after the queue came back finished
    # its work (the next successful task of that kind); whether a shipment happened to be
    # notified by such a run depends on when the WMS ships, so it is a detail, not the test
    ((woken_done,),) = stack.query("airflow", _PUSH_WOKEN_RUN_DONE_SQL, (back,))
    first = next((n for n in notified if n["path"] == "push" and n["sent"] > back), None)
    d["first_push_notified_after_back_s"] = (
        round((first["sent"] - back).total_seconds(), 1) if first else None
    )
    if woken_done is not None:
        fault.recovered_s = round((woken_done - at).total_seconds(), 1)
        fault.recovered_by = (
            "a fulfilment_events run woken by a pushed event finished "
            f"{(woken_done - back).total_seconds():.1f} s after the queue came back"
        )


def _trigger_failures(stack: Stack) -> int:
    """Lines of the triggerer's log where a trigger exited with an error (the watcher's,
    while its Redis was gone: the triggerer starts it again on its next loop)."""
    path = stack.state / "logs" / "triggerer.log"
    try:
        with path.open(errors="replace") as f:
            return sum(1 for line in f if "exited with error" in line)
    except OSError:
        return 0


def _task_instance_now(stack: Stack, d: dict) -> list[tuple]:
    """``[(state, try_number, start_date, end_date)]`` of the task instance ``d`` names."""
    return stack.query(
        "airflow",
        "SELECT state, try_number, start_date, end_date FROM task_instance "
        "WHERE dag_id = %s AND task_id = %s AND run_id = %s AND map_index = %s",
        (d["dag_id"], d["task_id"], d["run_id"], d["map_index"]),
    )


def _recovery(stack: Stack, fault: Injected) -> None:
    """Seconds from the injection (a window: from its end) to the next successful task of
    the kind the fault hit."""
    start = datetime.fromisoformat(fault.until or fault.at)
    d = fault.detail
    if fault.kind == "kill_scheduler" and d.get("running_tasks"):
        # orphans: each task instance running at the kill, back running (a later try) or
        # finished; recovered when the last of them is
        at = datetime.fromisoformat(fault.at)
        back: list[float] = []
        for dag_id, task_id, run_id, map_index, try_number in d["running_tasks"]:
            rows = stack.query(
                "airflow",
                "SELECT state, try_number, start_date, end_date FROM task_instance "
                "WHERE dag_id = %s AND task_id = %s AND run_id = %s AND map_index = %s",
                (dag_id, task_id, run_id, map_index),
            )
            if not rows:
                continue
            state, now_try, started, ended = rows[0]
            if now_try > try_number and started:
                back.append((started - at).total_seconds())
            elif state in ("success", "failed", "skipped") and ended:
                back.append((ended - at).total_seconds())
            else:
                d.setdefault("orphans_not_back", []).append([dag_id, task_id, state])
        d["orphans"] = len(d["running_tasks"])
        if back and not d.get("orphans_not_back"):
            fault.recovered_s = round(max(back), 1)
            fault.recovered_by = f"all {len(back)} orphaned task instances ran again or finished"
            return
    if fault.kind == "rewind_feed":
        if d.get("resynced_at"):
            sql = (
                "SELECT min(end_date), 'feed read after the resync' FROM task_instance "
                "WHERE state = 'success' AND dag_id = 'fulfilment_events' AND start_date > %s"
            )
            params: tuple = (datetime.fromisoformat(d["resynced_at"]),)
            ((when, what),) = stack.query("airflow", sql, params)
            if when is not None:
                fault.recovered_s = round(
                    (when - datetime.fromisoformat(fault.at)).total_seconds(), 1
                )
                fault.recovered_by = what
        return
    if fault.kind == "reuse_release_ids":
        _reused_ids_accounted(stack, fault)
        return
    if fault.kind == "answer_approvals":
        _approvals_applied(stack, fault)
        return
    if fault.kind == "lose_task_message" and "dag_id" in d:
        # the task instance whose message was lost: requeued by the scheduler (its log says
        # so), then running and succeeded; try_number does not move on a requeue
        rows = _task_instance_now(stack, d)
        at = datetime.fromisoformat(fault.at)
        requeued = stack.query(
            "airflow",
            "SELECT min(dttm) FROM log WHERE event = 'stuck in queued reschedule' "
            "AND dag_id = %s AND task_id = %s AND run_id = %s AND map_index = %s",
            (d["dag_id"], d["task_id"], d["run_id"], d["map_index"]),
        )
        when = requeued[0][0] if requeued else None
        d["requeued_after_s"] = round((when - at).total_seconds(), 1) if when else None
        queued = datetime.fromisoformat(d["queued_at"])
        d["queued_for_s"] = round((when - queued).total_seconds(), 1) if when else None
        if rows:
            state, try_number, started, ended = rows[0]
            d["final_state"], d["final_try"] = state, try_number
            if started and started > at:
                d["running_again_s"] = round((started - at).total_seconds(), 1)
            if state == "success" and ended and ended > at:
                fault.recovered_s = round((ended - at).total_seconds(), 1)
                fault.recovered_by = "the task whose message was lost, requeued"
        return
    if fault.kind == "kill_worker" and "dag_id" in d:
        # the killed task instance itself: when its next try started and when it succeeded
        rows = _task_instance_now(stack, d)
        if rows:
            state, try_number, started, ended = rows[0]
            at = datetime.fromisoformat(fault.at)
            d["final_state"], d["final_try"] = state, try_number
            if try_number > d["try_number"] and started:
                d["running_again_s"] = round((started - at).total_seconds(), 1)
            if state == "success" and ended:
                fault.recovered_s = round((ended - at).total_seconds(), 1)
                fault.recovered_by = f"the killed task, try {try_number}"
                return
        sql = (
            "SELECT min(end_date), 'next success of the same task' FROM task_instance "
            "WHERE state = 'success' AND dag_id = %s AND task_id = %s AND end_date > %s"
        )
        params: tuple = (d["dag_id"], d["task_id"], start)
    elif fault.kind == "kill_triggerer":
        # a deferred sensor that finished after the triggerer came back
        sql = (
            "SELECT min(end_date), 'deferred sensor' FROM task_instance "
            "WHERE state = 'success' AND task_id LIKE 'wait%%' AND end_date > %s"
        )
        params = (start,)
    elif fault.kind == "kill_dag_processor":
        if "parsed_again_s" in d:
            fault.recovered_s = d["parsed_again_s"]
            fault.recovered_by = "a DAG file parsed again (watched while driving)"
            return
        # not seen while driving: the earliest of the latest parses, an upper bound
        sql = (
            "SELECT min(last_parsed_time), 'DAG file parsed (upper bound)' FROM dag "
            "WHERE last_parsed_time > %s"
        )
        params = (start,)
    else:
        # scheduler, database, sandbox faults: a task scheduled after it, run to success
        sql = (
            "SELECT min(end_date), 'any task started after' FROM task_instance "
            "WHERE state = 'success' AND start_date > %s"
        )
        params = (start,)
    try:
        ((when, what),) = stack.query("airflow", sql, params)
    except Exception as exc:  # reported, not fatal
        fault.recovered_by = f"query failed: {exc}"
        return
    if when is not None:
        fault.recovered_s = round((when - datetime.fromisoformat(fault.at)).total_seconds(), 1)
        fault.recovered_by = what


def _p(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(quantiles(values, n=100, method="inclusive")[q - 1], 1)


def reconcile(
    stack: Stack,
    opts: Options,
    profile: Profile,
    manifest,
    injected: list[Injected],
    settled: dict,
) -> dict:
    q = stack.query
    sb = stack.sandbox
    findings: list[str] = []
    sim_now = stack.clock()

    # ---- messages in: every one has exactly one outcome
    outcomes = dict(
        q("orderflow", "SELECT outcome, count(*) FROM orderflow.channel_message GROUP BY 1")
    )
    messages_in = sum(outcomes.values())

    # ---- orders against the generator's ground truth (by PO: one order per submission)
    day_dir = stack.state / "sandbox" / "day"
    subs = [json.loads(line) for line in (day_dir / "orders.jsonl").open()]
    truth = {
        t["submission_id"]: t for t in map(json.loads, (day_dir / "ground_truth.jsonl").open())
    }
    arrived = [
        s for s in subs if datetime.fromisoformat(s["arrival_at"].replace("Z", "+00:00")) <= sim_now
    ]
    expected_by_po: Counter = Counter()
    allowed_by_po: Counter = Counter()
    for s in arrived:
        exp = truth[s["submission_id"]]["expected"]
        if exp in ("release", "hold"):
            expected_by_po[s["po_number"]] += 1
        if exp != "quarantine":
            allowed_by_po[s["po_number"]] += 1
    # the marketplace's orders come from its own feed (marketplace_orders.jsonl), one order each
    market = day_dir / "marketplace_orders.jsonl"
    for item in map(json.loads, market.open()) if market.exists() else ():
        at = datetime.fromisoformat(item["arrival_at"].replace("Z", "+00:00"))
        if item["type"] == "order" and at <= sim_now:
            expected_by_po[item["marketplace_order_id"]] += 1
            allowed_by_po[item["marketplace_order_id"]] += 1
    orders_by_po = Counter(
        dict(
            q(
                "orderflow",
                'SELECT po_number, count(*) FROM orderflow."order" '
                "WHERE parent_order_id IS NULL GROUP BY 1",
            )
        )
    )
    missing = {po: n - orders_by_po[po] for po, n in expected_by_po.items() if orders_by_po[po] < n}
    # an order still inside a quarantined message waits for a person: not lost, but listed
    quarantined_raw = [
        bytes(r[0])
        for r in q(
            "orderflow", "SELECT raw FROM orderflow.channel_message WHERE outcome = 'quarantined'"
        )
    ]
    in_quarantine = {po for po in missing if any(po.encode() in raw for raw in quarantined_raw)}
    lost_orders = {po: n for po, n in missing.items() if po not in in_quarantine}
    extra = {po: n - allowed_by_po[po] for po, n in orders_by_po.items() if n > allowed_by_po[po]}

    # ---- every order in exactly one state, with a reason when not at its end
    by_status = dict(q("orderflow", 'SELECT status, count(*) FROM orderflow."order" GROUP BY 1'))
    no_reason = q(
        "orderflow",
        """
        SELECT o.order_id, o.status FROM orderflow."order" o
         WHERE o.status NOT IN ('INVOICED', 'CLOSED', 'CANCELLED', 'REJECTED',
                                'RELEASED', 'PICKED', 'SHIPPED', 'DELIVERED')
           AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception e
                            WHERE e.order_id = o.order_id AND e.status = 'open')
         ORDER BY 1
        """,
    )
    open_reasons = dict(
        q(
            "orderflow",
            "SELECT category, count(DISTINCT order_id) FROM orderflow.order_exception "
            "WHERE status = 'open' AND order_id IS NOT NULL GROUP BY 1",
        )
    )

    # ---- outbox against the receivers' own idempotency records
    outbox = defaultdict(dict)
    for action, status, n in q(
        "orderflow", "SELECT action, status, count(*) FROM orderflow.outbox GROUP BY 1, 2"
    ):
        outbox[action][status] = n
    sent_keys = defaultdict(set)
    for action, key in q(
        "orderflow", "SELECT action, idempotency_key FROM orderflow.outbox WHERE status = 'sent'"
    ):
        sent_keys[action].add(key)
    # The receivers' side is read after ours: a stack that did not settle still sends, and
    # a row recorded sent after the receiver was read would count as lost.
    summary = sb.get("/admin/state").json()

    def keys(system: str) -> list[str]:
        r = sb.get(f"/admin/idempotency/{system}")
        return r.json()["keys"] if r.status_code == 200 else []

    release_keys = keys("release")
    invoice_keys = keys("invoice")
    outbound_keys = set(keys("outbound"))
    lost_releases = sorted(sent_keys["wms_release"] - set(release_keys))
    lost_invoices = sorted(sent_keys["erp_invoice"] - set(invoice_keys))
    edi_actions = [a for a in sent_keys if a.startswith("edi_")]
    lost_edi = sorted(k for a in edi_actions for k in sent_keys[a] - outbound_keys)
    dup_releases = max(0, summary["releases"] - len(set(release_keys)))
    dup_invoices = max(0, summary["invoices"] - len(set(invoice_keys)))
    shipments_released = q(
        "orderflow",
        "SELECT count(*), count(DISTINCT wms_release_id) FROM orderflow.shipment "
        "WHERE wms_release_id IS NOT NULL",
    )[0]
    dup_release_ids = shipments_released[0] - shipments_released[1]
    posted = q("orderflow", "SELECT count(*) FROM orderflow.invoice WHERE status = 'posted'")[0][0]
    edi_received = Counter(d["document_type"] for d in sb.get("/edi/outbound").json()["items"])
    edi_sent = {a.removeprefix("edi_"): len(sent_keys[a]) for a in edi_actions}
    mail = summary["mail"]
    mail_sent = outbox.get("email", {}).get("sent", 0)
    lost_mail = max(0, mail_sent - mail["messages"])

    # ---- inventory per item × DC equal to the WMS
    from orderflow.store import processing as inventory

    wms = {(p["item_id"], p["dc_id"]): p for p in sb.get("/wms/inventory").json()["items"]}
    ours = {
        (i, d): (float(on_hand), float(reserved))
        for i, d, on_hand, reserved in q(
            "orderflow",
            "SELECT item_id, dc_id, on_hand, wms_reserved FROM orderflow.inventory_position",
        )
    }
    inv_mismatch = [
        {"item_id": k[0], "dc_id": k[1], "ours": ours.get(k), "wms": (p["on_hand"], p["reserved"])}
        for k, p in wms.items()
        if ours.get(k) != (float(p["on_hand"]), float(p["reserved"]))
    ] + [
        {"item_id": k[0], "dc_id": k[1], "ours": v, "wms": None}
        for k, v in ours.items()
        if k not in wms
    ]
    import psycopg

    with psycopg.connect(stack.db_url("orderflow")) as conn:
        alloc = [
            {"item_id": r[0], "dc_id": r[1], "allocated": float(r[2]), "derived": float(r[3])}
            for r in inventory.allocation_mismatches(conn)
        ]
    held_by_wms = {
        (i, d): float(qty)
        for i, d, qty in q(
            "orderflow",
            "SELECT item_id, dc_id, sum(quantity) FROM orderflow.reservation "
            "WHERE status = 'released' GROUP BY 1, 2",
        )
        if qty
    }
    reserved_diff = [
        {
            "item_id": k[0],
            "dc_id": k[1],
            "ours_released": held_by_wms.get(k, 0.0),
            "wms": p["reserved"],
        }
        for k, p in wms.items()
        if abs(held_by_wms.get(k, 0.0) - float(p["reserved"])) > 1e-9
    ]

    # ---- dead letters with causes
    dead = [
        {"source": s, "ref": r, "error": (e or "")[:300]}
        for s, r, e in q(
            "orderflow",
            "SELECT source, source_ref, error FROM orderflow.dead_letter ORDER BY created_at",
        )
    ] + [
        {"source": f"outbox/{a}", "ref": k, "error": (e or "")[:300]}
        for a, k, e in q(
            "orderflow",
            "SELECT action, idempotency_key, last_error FROM orderflow.outbox "
            "WHERE status IN ('dead', 'unknown') ORDER BY outbox_id",
        )
    ]

    # ---- latency: shipped → customer notified (wall clock, from the shipped milestone's
    # arrival: pushed by the sandbox WMS, or polled when the push or its wake-up was missed)
    from orderflow.pushed import latency as push_latency

    notified = notifications(stack)
    shipped_lat = push_latency.summarise([n["seconds"] for n in notified])
    shipped_by_path = _latency_by_path(notified)

    # ---- latency: received → released, from the order's first event (wall clock: what the
    # machine took; the order's received_at is the message's simulated arrival)
    released = [
        {"received": first, "released": done, "seconds": float(seconds)}
        for first, done, seconds in q(
            "orderflow",
            """
            SELECT min(e.occurred_at),
                   min(e.occurred_at) FILTER (WHERE e.to_status = 'RELEASED'),
                   extract(epoch FROM min(e.occurred_at) FILTER (WHERE e.to_status = 'RELEASED')
                                      - min(e.occurred_at))
              FROM orderflow.order_event e
             GROUP BY e.order_id
            HAVING bool_or(e.to_status = 'RELEASED')
            """,
        )
    ]
    lat = [r["seconds"] for r in released]

    # ---- faults and DAG-run failures
    for fault in injected:
        if "skipped" in fault.detail:
            continue
        if fault.kind == "queue_down":
            _queue_recovery(stack, fault, notified)
        else:
            _recovery(stack, fault)
    shipped_calm = _latency_by_path(outside_faults(notified, injected))["all"]
    calm = [r["seconds"] for r in outside_faults(released, injected, "received", "released")]
    windows = []
    for f in injected:
        start = datetime.fromisoformat(f.at)
        end = datetime.fromisoformat(f.until) if f.until else start
        # a failure explained by a fault: it overlaps the fault (and its retries' reach)
        windows.append((start - timedelta(seconds=5), end + timedelta(seconds=300), f.name))
    failed_runs = q(
        "airflow",
        "SELECT dag_id, run_id, start_date, end_date FROM dag_run WHERE state = 'failed' "
        "ORDER BY start_date",
    )
    failed = []
    for dag_id, run_id, start, end in failed_runs:
        end = end or _now()
        causes = [name for ws, we, name in windows if start and start <= we and end >= ws]
        tasks = [
            t
            for (t,) in q(
                "airflow",
                "SELECT task_id FROM task_instance WHERE dag_id = %s AND run_id = %s "
                "AND state IN ('failed', 'upstream_failed')",
                (dag_id, run_id),
            )
        ]
        failed.append({"dag_id": dag_id, "run_id": run_id, "failed_tasks": tasks, "faults": causes})
    unexplained = [f for f in failed if not f["faults"]]
    task_failures = dict(
        q(
            "airflow",
            "SELECT dag_id || '.' || task_id, count(*) FROM task_instance_history "
            "WHERE state = 'failed' GROUP BY 1 ORDER BY 2 DESC",
        )
    )
    runs = dict(q("airflow", "SELECT state, count(*) FROM dag_run GROUP BY 1"))

    lost_breakdown = {
        "orders": sum(lost_orders.values()),
        "messages_unprocessed": outcomes.get("pending", 0),
        "wms_releases": len(lost_releases),
        "erp_invoices": len(lost_invoices),
        "edi_documents": len(lost_edi),
        "emails": lost_mail,
    }
    dup_breakdown = {
        "orders": sum(extra.values()),
        "wms_releases_by_key": dup_releases,
        "wms_release_ids": dup_release_ids,
        "erp_invoices_by_key": dup_invoices,
        "email_message_ids": mail["duplicate_message_ids"],
    }
    if no_reason:
        findings.append(f"{len(no_reason)} orders wait without an open exception (no reason)")
    for f in injected:
        if f.recovered_s is None and "skipped" not in f.detail:
            findings.append(
                f"fault {f.name} at {f.sim_at}: no successful task of its kind after it"
            )
    if not settled.get("quiet"):
        findings.append(
            f"the stack did not settle: {settled.get('busy_at_end')} {settled.get('busy_detail')}"
        )

    report = {
        "days": opts.days,
        "orders_per_day": opts.orders_per_day,
        "executor": opts.executor,
        "workers": opts.workers if opts.executor == "celery" else None,
        "chaos": profile.name,
        "seed": opts.seed,
        "speed": opts.speed,
        "simulated": {"until": sim_now.isoformat(), "business_dates": manifest.business_dates},
        "orders_received": sum(by_status.values()),
        "submissions_arrived": len(arrived),
        "messages": {"in": messages_in, **outcomes},
        "sandbox_deliveries": summary["deliveries"],
        "lost": sum(lost_breakdown.values()),
        "lost_breakdown": lost_breakdown,
        "lost_orders": dict(sorted(lost_orders.items())[:50]),
        "in_quarantine_orders": sorted(in_quarantine)[:50],
        "duplicated": sum(dup_breakdown.values()),
        "duplicated_breakdown": dup_breakdown,
        "duplicated_orders": dict(sorted(extra.items())[:50]),
        "orders_by_status": by_status,
        "orders_without_reason": len(no_reason),
        "orders_without_reason_sample": [list(r) for r in no_reason[:20]],
        "open_exceptions_by_category": open_reasons,
        "wms_releases": {
            "sent": len(sent_keys["wms_release"]),
            "sandbox_keys": len(set(release_keys)),
            "sandbox_releases": summary["releases"],
            "lost_keys": lost_releases[:20],
        },
        "erp_invoices": {
            "posted": posted,
            "sent": len(sent_keys["erp_invoice"]),
            "sandbox_keys": len(set(invoice_keys)),
            "sandbox_invoices": summary["invoices"],
            "lost_keys": lost_invoices[:20],
        },
        "edi_outbound": {
            "sent": edi_sent,
            "received": dict(edi_received),
            "lost_keys": lost_edi[:20],
        },
        "edi_997_from_partners": summary.get("edi_997"),
        "emails": {
            "sent": mail_sent,
            "sandbox": mail["messages"],
            "duplicate_message_ids": mail["duplicate_message_ids"],
            "unknown": outbox.get("email", {}).get("unknown", 0),
        },
        "outbox": {a: dict(s) for a, s in sorted(outbox.items())},
        "inventory_mismatches": len(inv_mismatch) + len(alloc),
        "inventory_mismatch_sample": inv_mismatch[:20],
        "allocation_mismatches": alloc[:20],
        "released_not_equal_wms_reserved": len(reserved_diff),
        "released_not_equal_wms_reserved_sample": reserved_diff[:20],
        "dead_letters": dead,
        "received_to_released_p50_s": _p(lat, 50),
        "received_to_released_p95_s": _p(lat, 95),
        "released_orders_measured": len(lat),
        "shipped_to_notified_outside_faults": shipped_calm,
        "received_to_released_outside_faults": {
            "p50_s": _p(calm, 50),
            "p95_s": _p(calm, 95),
            "orders": len(calm),
        },
        **shipped_lat,
        "shipped_to_notified_by_path": shipped_by_path,
        "faults": [asdict(f) for f in injected],
        "faults_unrecovered": sum(
            1 for f in injected if f.recovered_s is None and "skipped" not in f.detail
        ),
        "dag_runs": runs,
        "failed_dag_runs": failed,
        "failed_dag_runs_unexplained": len(unexplained),
        "task_failures": task_failures,
        "settle": settled,
        "findings": findings,
    }
    return report


def _path_lines(by_path: dict | None, calm: dict | None = None) -> list[str]:
    """The report's lines of shipped → notified by path, then outside the faults' reach."""
    if not by_path:
        return []
    lines = [
        f"  - via {path}: p50 {v['p50_s']} s, p95 {v['p95_s']} s, max {v['max_s']} s over "
        f"{v['shipments']} shipments — {PATHS[path]}"
        if v["shipments"]
        else f"  - via {path}: no shipments — {PATHS[path]}"
        for path, v in by_path.items()
        if path in PATHS
    ]
    if calm:
        lines.append(
            f"  - outside the faults' reach (waits that overlapped no fault from its injection "
            f"to its recovery): p50 {calm['p50_s']} s, p95 {calm['p95_s']} s, max "
            f"{calm['max_s']} s over {calm['shipments']} shipments"
        )
    return lines


def _cpu_lines(r: dict) -> list[str]:
    """Where the machine's CPU went from the drive's start to the reconciliation."""
    if not r.get("cpu_s"):
        return []
    acc = r["cpu_account"]
    lines = [
        "## CPU by component",
        "",
        f"{acc['total_s']:,} CPU-seconds measured ({acc['per_order_ms']} ms per order "
        f"received) of the {acc['machine_cpu_s']:,} the machine's cores had from the stack's "
        "start to the reconciliation:",
        "",
        "| component | CPU s | share |",
        "|---|---|---|",
    ]
    total = acc["total_s"] or 1
    for name, seconds in r["cpu_s"].items():
        lines.append(f"| {name} | {seconds:,} | {100 * seconds / total:.0f} % |")
    return [*lines, ""]


def render_markdown(r: dict) -> str:
    ok = r["lost"] == 0 and r["duplicated"] == 0 and r["inventory_mismatches"] == 0
    lines = [
        f"# Soak report: {r['days']} day(s) × {r['orders_per_day']} orders, "
        f"{r['executor']}{' × ' + str(r['workers']) if r['workers'] else ''}, chaos `{r['chaos']}`",
        "",
        f"**{'PASS' if ok else 'FAIL'}** — lost **{r['lost']}**, duplicated **{r['duplicated']}**, "
        f"inventory mismatches **{r['inventory_mismatches']}**, unexplained failed DAG runs "
        f"**{r['failed_dag_runs_unexplained']}**, unrecovered faults **{r['faults_unrecovered']}**.",
        "",
        f"Command: `{r.get('command', '')}`",
        "",
        f"Simulated until {r['simulated']['until']} (business dates "
        f"{', '.join(r['simulated']['business_dates'])}) at ×{r['speed']}; seed {r['seed']}; "
        f"timings {r.get('timings')}.",
        "",
        "## Messages and orders",
        "",
        f"- submissions arrived: {r['submissions_arrived']}; messages in: {r['messages']}",
        f"- orders received: {r['orders_received']}; by status: {r['orders_by_status']}",
        f"- orders waiting without a reason: {r['orders_without_reason']}",
        f"- open exceptions by category (orders): {r['open_exceptions_by_category']}",
        f"- lost: {r['lost_breakdown']}",
        f"- duplicated: {r['duplicated_breakdown']}",
        f"- orders still inside quarantined messages (waiting for a person): "
        f"{len(r['in_quarantine_orders'])}",
        f"- received → released: p50 {r['received_to_released_p50_s']} s, "
        f"p95 {r['received_to_released_p95_s']} s over {r['released_orders_measured']} orders"
        + (
            f"; outside the faults' reach p50 {calm['p50_s']} s, p95 {calm['p95_s']} s over "
            f"{calm['orders']} orders"
            if (calm := r.get("received_to_released_outside_faults"))
            else ""
        ),
        f"- shipped → customer notified: p50 {r.get('shipped_to_notified_p50_s')} s, "
        f"p95 {r.get('shipped_to_notified_p95_s')} s (target ≤ 30 s) over "
        f"{r.get('shipped_to_notified_measured')} shipments",
        *_path_lines(
            r.get("shipped_to_notified_by_path"), r.get("shipped_to_notified_outside_faults")
        ),
        "",
        "## Side effects against the receivers' records",
        "",
        f"- WMS releases: {r['wms_releases']}",
        f"- ERP invoices: {r['erp_invoices']}",
        f"- EDI outbound: {r['edi_outbound']}; partners' 997s: {r['edi_997_from_partners']}",
        f"- e-mails: {r['emails']}",
        f"- outbox: {r['outbox']}",
        f"- inventory mismatches (item × DC vs WMS, plus allocation): {r['inventory_mismatches']}; "
        f"released ≠ WMS reserved: {r['released_not_equal_wms_reserved']}",
        "",
        *_cpu_lines(r),
        "## Faults",
        "",
        "| fault | injected (simulated) | detail | recovered_s | by |",
        "|---|---|---|---|---|",
    ]
    for f in r["faults"]:
        detail = {
            k: v
            for k, v in f["detail"].items()
            if k not in ("rules", "pushes_at_injection", "pushes_at_end")
        }
        if "rules" in f["detail"]:
            detail["rules"] = len(f["detail"]["rules"])
        lines.append(
            f"| {f['name']} | {f['sim_at']} | {json.dumps(detail)} | {f['recovered_s']} | "
            f"{f['recovered_by']} |"
        )
    lines += [
        "",
        "## DAG runs",
        "",
        f"- runs by state: {r['dag_runs']}",
        f"- failed runs: {len(r['failed_dag_runs'])}, unexplained: "
        f"{r['failed_dag_runs_unexplained']}",
    ]
    for f in r["failed_dag_runs"]:
        lines.append(
            f"  - {f['dag_id']} {f['run_id']}: tasks {f['failed_tasks']}; faults {f['faults']}"
        )
    lines += [f"- task attempts failed: {r['task_failures']}", "", "## Dead letters", ""]
    lines += [f"- {d['source']} {d['ref']}: {d['error']}" for d in r["dead_letters"]] or ["- none"]
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in r["findings"]] or ["- none"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ command
def _raise_interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _command():
    import click

    @click.command("soak")
    @click.option("--days", default=1, show_default=True, help="Business days to simulate.")
    @click.option("--orders-per-day", default=300, show_default=True)
    @click.option(
        "--executor", type=click.Choice(["celery", "local"]), default="celery", show_default=True
    )
    @click.option("--workers", default=2, show_default=True, help="Celery workers.")
    @click.option(
        "--chaos",
        default="short",
        show_default=True,
        help="Profile: include/soak/NAME.yaml or a path.",
    )
    @click.option("--report", "report_dir", type=click.Path(path_type=Path), required=True)
    @click.option(
        "--speed",
        type=float,
        default=None,
        help="Simulated seconds per real second  [default: the profile's, else 600].",
    )
    @click.option("--seed", default=7, show_default=True, help="Seed of the generated days.")
    @click.option(
        "--tail-hours",
        default=DEFAULT_TAIL_HOURS,
        show_default=True,
        help="Simulated hours after the last arrival (picking, shipping, invoicing).",
    )
    @click.option("--settle-timeout", default=900.0, show_default=True, help="Seconds.")
    @click.option("--keep-state", is_flag=True, help="Keep the stack's state folder.")
    def soak(
        days,
        orders_per_day,
        executor,
        workers,
        chaos,
        report_dir,
        speed,
        seed,
        tail_hours,
        settle_timeout,
        keep_state,
    ):
        """Run the real stack through N generated business days with a chaos profile, then
        reconcile against the sandbox's records (report.json, report.md in --report). Exits
        1 when anything was lost or duplicated."""
        report_dir.mkdir(parents=True, exist_ok=True)
        # Ctrl-C or SIGTERM (also when started in the background, where SIGINT is ignored)
        # unwinds through run(): the stack it started is stopped, nothing is left behind.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        opts = Options(
            days=days,
            orders_per_day=orders_per_day,
            executor=executor,
            workers=workers,
            chaos=chaos,
            report_dir=report_dir,
            speed=speed,
            seed=seed,
            tail_hours=tail_hours,
            settle_timeout=settle_timeout,
            keep_state=keep_state,
        )
        report = run(opts, command=" ".join(["orderflow", *sys.argv[1:]]))
        click.echo(
            f"lost {report['lost']}, duplicated {report['duplicated']}, inventory mismatches "
            f"{report['inventory_mismatches']}, unexplained failed runs "
            f"{report['failed_dag_runs_unexplained']}; report in {report_dir}"
        )
        if report["lost"] or report["duplicated"]:
            sys.exit(1)

    return soak


soak_command = _command()
