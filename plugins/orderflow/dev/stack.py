"""The local stack behind ``make run``: databases, migrations, Connections and the environment
every Airflow component (and the sandbox) runs with.

Two databases on one PostgreSQL server: ``airflow`` (Airflow's metadata) and ``orderflow``
(the operational store). The server is the embedded one under ``.orderflow/pgdata`` unless
``ORDERFLOW_DATABASE_URL`` / ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` name an existing one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from orderflow import settings
from orderflow.dev import pg

log = logging.getLogger(__name__)

API_PORT = int(os.environ.get("ORDERFLOW_API_PORT", "8080"))
SANDBOX_PORT = int(os.environ.get("ORDERFLOW_SANDBOX_PORT", "8090"))
#: The sandbox's SMTP sink (the ``smtp_default`` Connection points at it).
SMTP_PORT = int(os.environ.get("ORDERFLOW_SANDBOX_SMTP_PORT", "8025"))
ADMIN_USER = "admin"


@dataclass(frozen=True)
class Databases:
    airflow_url: str  # SQLAlchemy URL for Airflow's metadata
    store_url: str  # SQLAlchemy URL for the operational store
    embedded: bool


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def resolve_databases(state_dir: Path = settings.STATE_DIR, *, start: bool = True) -> Databases:
    """Where the two databases live; starts the embedded server when nothing else is given."""
    airflow_url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    store_url = settings.store_database_url()
    if airflow_url or store_url:
        # One given: the other lives on the same server under its conventional name.
        airflow_url = airflow_url or _with_database(store_url, "airflow")
        store_url = store_url or _with_database(airflow_url, "orderflow")
        embedded = False
    else:
        if not start:
            raise RuntimeError("no database configured and the embedded one may not be started")
        server = pg.start_embedded(state_dir)
        airflow_url, store_url, embedded = server.url("airflow"), server.url("orderflow"), True
    return Databases(
        airflow_url=_driver(airflow_url, "postgresql+psycopg2"),
        store_url=_driver(store_url, "postgresql+psycopg"),
        embedded=embedded,
    )


def _secrets(state_dir: Path) -> dict[str, str]:
    """Per-install secrets, generated once and kept (0600) in the state folder, never in git.

    All components must share the JWT secret (the Execution API validates task tokens the
    scheduler issued) and the Fernet key (Connection passwords in the metadata DB).
    """
    path = state_dir / "secrets.json"
    if path.exists():
        values = json.loads(path.read_text())
        if "push_secret" in values:
            return values
        # an install from before pushed events: add the webhook secret, keep the rest
        values["push_secret"] = secrets.token_urlsafe(32)
        path.write_text(json.dumps(values))
        return values
    from cryptography.fernet import Fernet

    values = {
        "fernet_key": Fernet.generate_key().decode(),
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
        # the sandbox WMS and carrier sign their webhooks with it (Connection fulfilment_push)
        "push_secret": secrets.token_urlsafe(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return values


def airflow_home(state_dir: Path = settings.STATE_DIR) -> Path:
    return state_dir / "airflow"


#: The sandbox under ``orderflow run``: its clock (simulated seconds per real second) and the
#: size of the day it generates on first start. A newcomer should see the whole story —
#: received, held, released, picked, shipped, delivered, invoiced — within minutes, and a
#: delivery takes a carrier's transit days: at 360x a day passes in 4 minutes (at 240x a
#: next-day delivery and the 2-minute feed read left no channel invoiced after 10 minutes),
#: and 500 orders a day keeps the arrivals (≈ 2 orders/s at the peak) within what two cores
#: process (at 60x a 5,000-order day fell behind). ``ORDERFLOW_SANDBOX_SPEED=1`` and
#: ``ORDERFLOW_SANDBOX_ORDERS=5000`` run a real-time day at the target customer's volume.
DEMO_SPEED = 360.0
DEMO_ORDERS = 500


def sandbox_speed(environ: dict[str, str] | None = None) -> float:
    environ = os.environ if environ is None else environ
    return float(environ.get("ORDERFLOW_SANDBOX_SPEED") or DEMO_SPEED)


def sandbox_orders(environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    return int(environ.get("ORDERFLOW_SANDBOX_ORDERS") or DEMO_ORDERS)


def sandbox_args(environ: dict[str, str] | None = None) -> list[str]:
    """Options of ``orderflow sandbox serve`` under ``orderflow run`` besides its port: the
    SMTP sink's port, the clock speed (``ORDERFLOW_SANDBOX_SPEED``, default
    :data:`DEMO_SPEED`), the orders of a day it generates (``ORDERFLOW_SANDBOX_ORDERS``,
    default :data:`DEMO_ORDERS`) and — for a driven run such as ``orderflow soak`` — the
    simulated start (``ORDERFLOW_SANDBOX_START``, ISO)."""
    environ = os.environ if environ is None else environ
    args = [
        "--smtp-port",
        str(SMTP_PORT),
        "--speed",
        f"{sandbox_speed(environ):g}",
        "--orders",
        str(sandbox_orders(environ)),
    ]
    if start := environ.get("ORDERFLOW_SANDBOX_START"):
        args += ["--start", start]
    return args


#: What bounds the work a killed Celery worker holds up (docker-compose.yaml sets the same).
CELERY_WORKER_LOSS = {
    # One message reserved per slot: a killed worker holds no queued task hostage (an
    # unacknowledged message comes back only after the visibility timeout).
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    # A task whose message a killed worker had taken, but which had not yet reported
    # running, stays queued until the scheduler requeues it after this timeout (Airflow's
    # default: 600 s, checked every 120 s). One such task of a DAG that runs one run at a
    # time (fulfilment_events) wedged it for a whole short soak.
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "240",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "30",
}


@dataclass(frozen=True)
class Executor:
    """Which executor the local stack runs, from the environment.

    ``ORDERFLOW_EXECUTOR``: ``local`` (default, LocalExecutor) or ``celery`` (CeleryExecutor
    with ``ORDERFLOW_CELERY_WORKERS`` workers, default 2, each running
    ``ORDERFLOW_CELERY_CONCURRENCY`` tasks at a time, default 4, on the broker
    ``ORDERFLOW_CELERY_BROKER_URL``, default Redis at 127.0.0.1:6379/0; results in the
    stack's own ``airflow`` database). ``ORDERFLOW_CELERY_QUEUE`` (default ``default``)
    names the queue: two stacks sharing one broker must use different queues, or one's
    workers run the other's tasks.
    """

    kind: str = "local"
    workers: int = 2
    concurrency: int = 4
    broker_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "default"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Executor:
        environ = os.environ if environ is None else environ
        kind = (environ.get("ORDERFLOW_EXECUTOR") or "local").strip().lower()
        if kind not in ("local", "celery"):
            raise ValueError(f"ORDERFLOW_EXECUTOR must be 'local' or 'celery', not {kind!r}")
        workers = int(environ.get("ORDERFLOW_CELERY_WORKERS") or cls.workers)
        concurrency = int(environ.get("ORDERFLOW_CELERY_CONCURRENCY") or cls.concurrency)
        if workers < 1 or concurrency < 1:
            raise ValueError("ORDERFLOW_CELERY_WORKERS and _CONCURRENCY must be at least 1")
        return cls(
            kind=kind,
            workers=workers,
            concurrency=concurrency,
            broker_url=environ.get("ORDERFLOW_CELERY_BROKER_URL") or cls.broker_url,
            queue=environ.get("ORDERFLOW_CELERY_QUEUE") or cls.queue,
        )

    def describe(self) -> str:
        if self.kind == "local":
            return "LocalExecutor"
        return (
            f"CeleryExecutor: {self.workers} workers × {self.concurrency} on {self.broker_url}"
            f" (queue {self.queue})"
        )

    def env(self, dbs: Databases) -> dict[str, str]:
        if self.kind == "local":
            return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            # Celery's database result backend on the stack's own metadata database.
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + dbs.airflow_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            **CELERY_WORKER_LOSS,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
        }

    def worker_commands(self, state_dir: Path) -> list[tuple[str, list[str]]]:
        """``(name, argv)`` of each Celery worker process (none for LocalExecutor)."""
        if self.kind != "celery":
            return []
        airflow = str(Path(sys.executable).parent / "airflow")
        run_dir = state_dir / "run"
        out = []
        for n in range(1, self.workers + 1):
            name = f"celery-worker-{n}"
            out.append(
                (
                    name,
                    [
                        airflow,
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}.{self.queue}@%h",
                        "--concurrency",
                        str(self.concurrency),
                        "--queues",
                        self.queue,
                        # several workers on one machine: no log server port (task logs
                        # are files the API server reads), one pid file each
                        "--skip-serve-logs",
                        "--pid",
                        str(run_dir / f"{name}.pid"),
                        "--without-gossip",
                        "--without-mingle",
                    ],
                )
            )
        return out


def airflow_users() -> str:
    """The local stack's Airflow logins: ``admin``, and every other user the roles file
    (``orderflow.access``) names, with Airflow's ``user`` role: they may act on DAGs, and
    their OrderFlow roles decide which Required Actions and desk items they may resolve.
    Passwords are generated at the API server's first start (``passwords.json``)."""
    from orderflow import access

    others = sorted(u for u in access.mapping() if u != ADMIN_USER)
    return ",".join([f"{ADMIN_USER}:admin", *(f"{u}:user" for u in others)])


def component_env(dbs: Databases, state_dir: Path = settings.STATE_DIR) -> dict[str, str]:
    """Environment for every Airflow component of the local stack (LocalExecutor, or
    CeleryExecutor with ``ORDERFLOW_EXECUTOR=celery``: see :class:`Executor`)."""
    sec = _secrets(state_dir)
    home = airflow_home(state_dir)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "ORDERFLOW_HOME": str(settings.PROJECT_ROOT),
        "ORDERFLOW_STATE_DIR": str(state_dir),
        # components spawn `airflow ...` by name: the venv must come first on PATH
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": dbs.airflow_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.DAGS_DIR),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PLUGINS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **Executor.from_env().env(dbs),
        # 2 CPUs run ≈8 task instances/s whatever the parallelism; 8 keeps memory low.
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
        # Local development: scheduled micro-batch DAGs should run as soon as they are seen.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": airflow_users(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{API_PORT}",
        "AIRFLOW__API__SECRET_KEY": sec["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # An unchanged DAG file is parsed again every 5 minutes, not every 30 s: the DAG
        # processor took 13 % of a core re-parsing unchanged files in a soak. A file whose
        # mtime changed is parsed at the next refresh all the same (sort mode modified_time).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
        # A running task's heartbeat every 5 s (Airflow's default; was 1 s): the 30 s
        # timeout below still finds a killed worker's tasks, with a fifth of the API calls.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        # A task's calls to the Execution API (API server, one process) wait up to 30 s, not
        # 5 s: on a busy 2-core machine a start-up call timed out and failed the attempt.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        # A killed worker's task is failed after 30 s without a heartbeat (checked every 5 s)
        # and retried after its DAG's retry delay (10-15 s for processing and intake). At 40 s
        # a Celery worker's task ran again after 91 s in the drill (the restarted worker's own
        # start-up counts too); 30 s is what a retry after ~33 s was measured with.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # Every running DAG run examined in every scheduler loop (waiting approvals are
        # running runs): see settings.SCHEDULER_RUNS_PER_LOOP.
        "AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE": str(
            settings.SCHEDULER_RUNS_PER_LOOP
        ),
        # Tasks orphaned by a scheduler that died are reset by the next scheduler's orphan
        # check, once the dead one missed its health threshold (30 s): every 20 s instead
        # of 300 s keeps that recovery inside the budget of a killed worker (≤ 75 s).
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(state_dir / "logs" / "tasks"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
            state_dir / "logs" / "dag_processor"
        ),
        "ORDERFLOW_SANDBOX_URL": f"http://127.0.0.1:{SANDBOX_PORT}",
        "ORDERFLOW_SANDBOX_DIR": str(state_dir / "sandbox"),
        "PYTHONUNBUFFERED": "1",
        **push_env(sec["push_secret"], state_dir),
    }
    return env


#: The Redis the pushed-events wake-up goes through (``ORDERFLOW_REDIS_URL`` overrides it).
REDIS_URL = "redis://127.0.0.1:6379/0"


def own_redis_port(environ: dict[str, str] | None = None) -> int | None:
    """The port of the stack's own Redis for the pushed-event wake-ups, or None.

    ``ORDERFLOW_REDIS=own`` (``orderflow soak`` always sets it): the supervisor runs a
    ``redis-server`` of the stack's own — nothing on disk, restarted when it dies, and a
    service a drill can take down (``queue_down``) without touching the machine's Redis,
    which is also the Celery broker. It listens on ``ORDERFLOW_OWN_REDIS_PORT`` (the soak
    gives a free port; default 6380). Otherwise (``make run``'s default) the wake-ups use
    :func:`redis_url`, the machine's Redis."""
    environ = os.environ if environ is None else environ
    if (environ.get("ORDERFLOW_REDIS") or "").strip().lower() != "own":
        return None
    return int(environ.get("ORDERFLOW_OWN_REDIS_PORT") or 6380)


def redis_url(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if (port := own_redis_port(environ)) is not None:
        return f"redis://127.0.0.1:{port}/0"
    return environ.get("ORDERFLOW_REDIS_URL") or REDIS_URL


def own_redis_argv(port: int, state_dir: Path = settings.STATE_DIR) -> list[str]:
    """``redis-server`` in the foreground on ``port`` (loopback only), no persistence: the
    wake-ups are nudges, nothing in them needs keeping across a restart."""
    import shutil

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "ORDERFLOW_REDIS=own needs redis-server (Debian's redis-server; make deps installs it)"
        )
    work = state_dir / "run" / "redis"
    work.mkdir(parents=True, exist_ok=True)
    return [
        exe,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(work),
    ]  # fmt: skip


def hold_dir(state_dir: Path = settings.STATE_DIR) -> Path:
    """The supervisor's hold folder: a file named after a service keeps it down."""
    return state_dir / "run" / "hold"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Does a Redis answer PING at ``url``? (At start only: the stack works without one.)"""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except Exception:
        return False


def push_env(secret: str, state_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Pushed events in the local stack: the sandbox WMS and carrier push their events, the
    portal and marketplace their new-order notices, to the api-server's
    ``/orderflow/api/events/{source}`` signed with ``secret`` (the ``fulfilment_push``
    Connection's password); the receiver wakes the fulfilment DAG (or the intake DAG of the
    notice) through ``redis_default`` on channels of this stack's own (two stacks may share
    one Redis). Without a Redis answering at start the watchers are left out
    (``ORDERFLOW_PUSH_WAKE=off``): events are still pushed and stored, and the DAGs' polls
    take everything. The stack's own
    Redis (:func:`own_redis_port`) is started by the supervisor before everything else, so
    the watcher is always on with it."""
    import hashlib
    from urllib.parse import urlparse

    url = redis_url(environ)
    u = urlparse(url)
    db = (u.path or "/0").strip("/") or "0"
    wake = own_redis_port(environ) is not None or redis_answers(url)
    if not wake:
        log.warning("no Redis at %s: pushed events wait for the 2-minute poll", url)
    stack_id = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return {
        "AIRFLOW_CONN_FULFILMENT_PUSH": json.dumps(
            {
                "conn_type": "generic",
                "password": secret,
                "description": "The webhooks' shared secret (WMS, carrier, portal, marketplace)",
            }
        ),
        "AIRFLOW_CONN_REDIS_DEFAULT": json.dumps(
            {
                "conn_type": "redis",
                "host": u.hostname or "127.0.0.1",
                "port": u.port or 6379,
                **({"password": u.password} if u.password else {}),
                "extra": {"db": int(db)},
            }
        ),
        "ORDERFLOW_FULFILMENT_WAKE_CHANNEL": f"orderflow.{stack_id}.fulfilment.events",
        "ORDERFLOW_INTAKE_WAKE_CHANNEL": f"orderflow.{stack_id}.intake",
        "ORDERFLOW_PUSH_WAKE": "on" if wake else "off",
        "ORDERFLOW_SANDBOX_PUSH_URL": f"http://127.0.0.1:{API_PORT}/orderflow/api/events/{{source}}",
        "ORDERFLOW_SANDBOX_PUSH_SECRET": secret,
    }


def connection_specs(store_url: str, sandbox_url: str, sandbox_dir: Path) -> dict[str, dict]:
    """The Connections the DAGs use: the store, and every external system at the sandbox.

    The endpoint set is the committed fixture ``include/connections/sandbox.json``; pointing
    OrderFlow at real systems means editing these Connections (UI, CLI or a secrets backend).
    """
    from orderflow.store.db import connection_env

    text = (settings.INCLUDE_DIR / "connections" / "sandbox.json").read_text()
    from urllib.parse import urlparse

    text = text.replace("{sandbox_url}", sandbox_url.rstrip("/"))
    text = text.replace("{sandbox_host}", urlparse(sandbox_url).hostname or "127.0.0.1")
    text = text.replace("{sandbox_dir}", str(sandbox_dir))
    specs: dict[str, dict] = json.loads(text)
    if "smtp_default" in specs:
        specs["smtp_default"]["port"] = SMTP_PORT
    specs[settings.STORE_CONN_ID] = json.loads(next(iter(connection_env(store_url).values())))
    return specs


def run_airflow(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env={**os.environ, **env},
        check=True,
        **kwargs,
    )


def bootstrap(dbs: Databases, env: dict[str, str], state_dir: Path = settings.STATE_DIR) -> None:
    """Create and migrate both databases and make sure the Connections exist."""
    for url in (dbs.airflow_url, dbs.store_url):
        pg.ensure_database(url)
    airflow_home(state_dir).mkdir(parents=True, exist_ok=True)
    log.info("migrating Airflow metadata database")
    if not migrate_airflow(dbs, env, state_dir):
        log.info("Airflow metadata database already up to date")
    log.info("migrating OrderFlow operational store")
    from orderflow.store import migrations

    migrations.upgrade(dbs.store_url)
    specs = connection_specs(
        dbs.store_url, env["ORDERFLOW_SANDBOX_URL"], Path(env["ORDERFLOW_SANDBOX_DIR"])
    )
    import_connections(specs, env, state_dir)


def import_connections(specs: dict[str, dict], env: dict[str, str], state_dir: Path) -> None:
    """Add missing Connections to the metadata DB; never overwrite ones a user edited,
    except the store's, which always follows the configured database."""
    path = state_dir / "connections.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(specs))
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "orderflow.dev.airflow_connections",
                str(path),
                "--overwrite",
                settings.STORE_CONN_ID,
            ],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        path.unlink(missing_ok=True)


def migrate_airflow(dbs: Databases, env: dict[str, str], state_dir: Path) -> bool:
    """``airflow db migrate`` unless this database is already at the revision the last
    successful migrate of this Airflow version left (a cheap query instead of ≈7 s)."""
    from importlib.metadata import version

    airflow_version = version("apache-airflow")  # not `import airflow`: that costs seconds
    stamp = airflow_home(state_dir) / "migrated.json"
    current = _airflow_revision(dbs.airflow_url)
    if stamp.exists():
        seen = json.loads(stamp.read_text())
        if seen == {"airflow": airflow_version, "revision": current} and current:
            return False
    run_airflow(["db", "migrate"], env, stdout=subprocess.DEVNULL)
    stamp.write_text(
        json.dumps({"airflow": airflow_version, "revision": _airflow_revision(dbs.airflow_url)})
    )
    return True


def _airflow_revision(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(pg.libpq_url(url)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


def admin_password(env: dict[str, str]) -> str | None:
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(ADMIN_USER)


def embedded_alive(state_dir: Path = settings.STATE_DIR) -> bool:
    """Whether the embedded PostgreSQL's postmaster runs (its pid file names a live process)."""
    import psutil

    pidfile = state_dir / "pgdata" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


def restart_embedded(state_dir: Path = settings.STATE_DIR) -> None:
    """Start the embedded PostgreSQL again after it died (in a child process: the wheel
    remembers, per process, a server it started once and would not start it again). Its
    output goes to ``logs/postgres.log``; raises when it did not come up."""
    log_path = state_dir / "logs" / "postgres.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from orderflow.dev import pg; "
                "pg.start_embedded(Path(sys.argv[1]))",
                str(state_dir),
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
