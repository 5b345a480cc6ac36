"""Test-wide fixtures: a real PostgreSQL, a fresh database per test run, Airflow configured
for tests before anything imports it.

The server is ``ORDERFLOW_TEST_DATABASE_URL`` when set (reused as asked: CI and this machine
use the local PostgreSQL on 127.0.0.1:5432; it is neither started nor stopped here). Otherwise
the run starts an embedded server of its own under ``.orderflow/test-state/runs/<run>`` and
stops and deletes it when the run ends — also when tests fail, on Ctrl-C, SIGTERM or SIGHUP.
Each run creates its own ``orderflow_test_<id>`` / ``airflow_test_<id>`` databases and drops
them at the end, so leftovers never leak between runs.

Every process the tests start inherits ``ORDERFLOW_TEST_RUN`` (see ``leftovers.py``): what is
still running when the run ends is stopped and named in the output, and ``make test`` checks
afterwards that nothing of the run is left.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import leftovers
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
# `make test` names the run (and checks it afterwards); a bare `pytest` gets its own name.
RUN_MARKER = re.sub(r"[^A-Za-z0-9_.-]", "_", os.environ.get(leftovers.MARKER) or "")[:24]
RUN_MARKER = RUN_MARKER or f"p{os.getpid()}"
os.environ[leftovers.MARKER] = RUN_MARKER
_TMP = Path(tempfile.mkdtemp(prefix="orderflow-tests-"))
_EMBEDDED: Path | None = None  # the state directory of the server this run started
_stopped = False
_REAPED: list[str] = []  # what earlier runs that died had left, cleaned up by this one


def _owner_tag() -> str:
    """Who owns a run directory: this process (pid + start time) in this pid namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{os.getpid()} {psutil.Process().create_time()} {namespace}"


def _owner_alive(state: Path) -> bool:
    try:
        pid, started, namespace = (state / "owner").read_text().split()
    except (OSError, ValueError):
        # Being created right now, or by something this code does not know: leave it alone
        # unless it is clearly old.
        return time.time() - state.stat().st_mtime < 600
    if namespace != _owner_tag().split()[2]:
        return True  # another pid namespace: cannot tell, never touch it
    try:
        return psutil.Process(int(pid)).create_time() == float(started)
    except (psutil.NoSuchProcess, ValueError):
        return False


def _reap_dead_runs() -> None:
    """Stop and delete what earlier runs that died without cleaning up (SIGKILL) left."""
    if not leftovers.RUNS_DIR.is_dir():
        return
    for state in leftovers.RUNS_DIR.iterdir():
        if not state.is_dir() or _owner_alive(state):
            continue
        left = leftovers.find(state.name)
        leftovers.stop(left)
        shutil.rmtree(state, ignore_errors=True)
        _REAPED.append(
            f"removed {state} of a test run that died"
            + (f" and stopped its {len(left)} process(es)" if left else "")
        )


#: ``make test-fast`` (and the unit/DAG half of ``make test``) run with no PostgreSQL at all:
#: nothing is started, and a test that asks for a database fails saying so.
NO_DATABASE = os.environ.get("ORDERFLOW_TEST_NO_DATABASE") == "1"
_NOWHERE = "postgresql://no-database.invalid/postgres"
#: The embedded server a run started, for its pytest-xdist workers (each has databases of
#: its own on it: ``RUN_ID`` is per process).
_RUN_SERVER = "ORDERFLOW_TEST_RUN_SERVER"
if NO_DATABASE:
    # The unit tests fit and score scikit-learn models on a few hundred rows, one prediction
    # at a time: OpenMP's worker threads only wait for each other there, and on a shared
    # 2-core machine their spinning cost the fast tier ~20 s of CPU (a fit of 60 rows: 1.5 s
    # instead of 0.02 s). Set before anything loads the OpenMP runtime; the flows that train
    # (orderflow.ai.training, .evaluate) already run under threadpool_limits(1).
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _needs_database(what: str) -> None:
    if NO_DATABASE:
        pytest.fail(
            f"{what} needs PostgreSQL, but this run has none (ORDERFLOW_TEST_NO_DATABASE=1: "
            "tests/unit and tests/dags run without a database); move the test to "
            "tests/integration or drop the fixture",
            pytrace=False,
        )


def _server_url() -> str:
    global _EMBEDDED
    if NO_DATABASE:
        return _NOWHERE
    url = os.environ.get("ORDERFLOW_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get(leftovers.WORKER):
        # A pytest-xdist worker: the controller started the run's embedded server (one per
        # run, its state directory is the run's) before it started the workers.
        url = os.environ.get(_RUN_SERVER)
        if not url:
            raise pytest.UsageError(
                "pytest-xdist worker without the run's server: the controller did not "
                f"start one ({_RUN_SERVER} is not set)"
            )
        return url
    from orderflow.dev import pg

    _reap_dead_runs()
    state = leftovers.run_dir(RUN_MARKER)
    if state.exists():  # a name reused after a run that died: what it left goes first
        leftovers.stop(leftovers.find(RUN_MARKER))
        shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    (state / "owner").write_text(_owner_tag())
    _EMBEDDED = state
    atexit.register(_stop_what_this_run_started)
    url = pg.start_embedded(state).url("postgres")
    os.environ[_RUN_SERVER] = url  # for the pytest-xdist workers this process starts
    return url


def _stop_what_this_run_started() -> None:
    """Stop the embedded server this run started and any process the tests left running.

    Runs once: at ``pytest_unconfigure`` (after every fixture's teardown), or from ``atexit``
    when pytest did not get that far."""
    global _stopped
    if _stopped:
        return
    _stopped = True
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    if _EMBEDDED is not None:
        from orderflow.dev import pg

        pg.stop_embedded(_EMBEDDED)
    # A pytest-xdist worker stops only what its own tests started: the controller and the
    # other workers carry the same run marker and may still be running.
    left = leftovers.find(RUN_MARKER, os.environ.get(leftovers.WORKER))
    if left:
        print(
            f"\norderflow tests: stopping {len(left)} process(es) the tests left running:",
            *(f"  {leftovers.describe(p)}" for p in left),
            sep="\n",
            file=sys.stderr,
        )
        leftovers.stop(left)
    if _EMBEDDED is not None:
        shutil.rmtree(_EMBEDDED, ignore_errors=True)
        print(
            f"orderflow tests: stopped and removed this run's embedded PostgreSQL ({_EMBEDDED})",
            file=sys.stderr,
        )
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(
            signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        )


def _interrupted(signum, frame):
    # pytest.exit ends the session the way Ctrl-C does: fixtures are torn down, the summary
    # is printed, then pytest_unconfigure stops what the run started.
    pytest.exit(f"interrupted by {signal.Signals(signum).name}", returncode=128 + signum)


for _signum in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) is signal.SIG_DFL:
        signal.signal(_signum, _interrupted)


def _with_db(url: str, database: str, driver: str) -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(url)
        .set(database=database, drivername=driver)
        .render_as_string(hide_password=False)
    )


SERVER_URL = _server_url()
STORE_URL = _with_db(SERVER_URL, f"orderflow_test_{RUN_ID}", "postgresql+psycopg")
AIRFLOW_DB_URL = _with_db(SERVER_URL, f"airflow_test_{RUN_ID}", "postgresql+psycopg2")

# Airflow reads its configuration at import: set it before any test module imports airflow.
os.environ.update(
    {
        "AIRFLOW_HOME": str(_TMP / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": AIRFLOW_DB_URL,
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_TMP / "logs"),
        "ORDERFLOW_HOME": str(ROOT),
    }
)
from orderflow.store.db import use_url  # noqa: E402

use_url(STORE_URL)

# Skip reasons whose fix is not obvious from the reason alone: what to do about them.
_SKIP_HINTS = {
    "x12 corpus": "set ORDERFLOW_X12_CORPUS to a directory of X12 interchanges",
    "po_docs": "set ORDERFLOW_PO_DOCS to the directory of sample purchase-order documents",
    "tesseract": "install the test prerequisites: make deps",
    "chromium": "install the test prerequisites: make deps",
}


def pytest_report_header(config):
    if NO_DATABASE:
        db = "no database (ORDERFLOW_TEST_NO_DATABASE=1): tests that need one fail"
    elif _EMBEDDED is not None:
        db = f"embedded PostgreSQL of this run only ({_EMBEDDED.relative_to(ROOT)}), stopped at the end"
    else:
        from sqlalchemy.engine import make_url

        db = (
            f"ORDERFLOW_TEST_DATABASE_URL={make_url(SERVER_URL).render_as_string()} "
            "(reused as asked: neither started nor stopped by this run)"
        )
    return [
        f"test database: {db}",
        f"test run: {leftovers.MARKER}={RUN_MARKER}",
    ]


def pytest_sessionstart(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for note in _REAPED:
        if reporter is not None:
            reporter.write_line(f"orderflow tests: {note}")


def pytest_terminal_summary(terminalreporter):
    """Name what each group of skipped tests needs (pytest -ra lists them one by one)."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        for key, hint in _SKIP_HINTS.items():
            if key in reason.lower():
                counts[hint] = counts.get(hint, 0) + 1
    if counts:
        terminalreporter.section("what the skipped tests need")
        for hint, n in counts.items():
            terminalreporter.line(f"{n} skipped: {hint}")
    if _BUILT_TEMPLATES:
        terminalreporter.section("template stores of this run (built once, copied per module)")
        for line in _BUILT_TEMPLATES:
            terminalreporter.line(line)


def pytest_unconfigure(config):
    _stop_what_this_run_started()


@pytest.fixture(scope="session")
def server_url() -> str:
    _needs_database("the server_url fixture")
    return SERVER_URL


_module_dbs = iter(range(1, 10_000))
_MIGRATED: list[str] = []  # the run's migrated template store, made by the first module
_BUILT_TEMPLATES: list[str] = []  # what each template cost, for the summary


def _migrated_template() -> str:
    """A store migrated to head once per run: each module's store is a copy of it."""
    if not _MIGRATED:
        from orderflow.dev import pg
        from orderflow.store import migrations

        url = STORE_URL.replace(f"orderflow_test_{RUN_ID}", f"orderflow_test_{RUN_ID}_migrated")
        started = time.monotonic()
        pg.ensure_database(url)
        migrations.upgrade(url)
        _MIGRATED.append(url)
        _BUILT_TEMPLATES.append(f"migrated store: {time.monotonic() - started:.1f} s")
    return _MIGRATED[0]


@pytest.fixture(scope="session")
def _store_templates(tmp_path_factory):
    """The run's template stores: migrated, and the day snapshots (``day_snapshots.py``).
    Dropped when the run ends."""
    from day_snapshots import DaySnapshots

    snapshots = DaySnapshots(
        tmp_path_factory.mktemp("day-snapshots"),
        database_url=lambda kind: STORE_URL.replace(
            f"orderflow_test_{RUN_ID}", f"orderflow_test_{RUN_ID}_{kind}"
        ),
        migrated_url=_migrated_template,
    )
    yield snapshots
    from orderflow.dev import pg

    _BUILT_TEMPLATES.extend(snapshots.summary())
    snapshots.drop_databases()
    for url in _MIGRATED:
        pg.drop_database(url)
    _MIGRATED.clear()


def _day_snapshot_kind(request) -> str | None:
    marker = request.node.get_closest_marker("day_snapshot")
    return marker.args[0] if marker else None


@pytest.fixture(scope="module")
def day_snapshot(request, _store_templates):
    """The day snapshot this module is marked with (``@pytest.mark.day_snapshot(kind)``)."""
    kind = _day_snapshot_kind(request)
    assert kind, "day_snapshot: mark the module with @pytest.mark.day_snapshot(kind)"
    return _store_templates.get(kind, request.getfixturevalue)


@pytest.fixture(scope="module")
def store_url(request):
    """A fully migrated operational store for each test module (a copy of the run's migrated
    template), so that modules ingesting the same generated day never see each other's
    messages. A module marked ``@pytest.mark.day_snapshot(kind)`` gets a copy of that day
    snapshot's store instead (``day_snapshots.py``)."""
    _needs_database("the store_url fixture")
    from orderflow.dev import pg
    from orderflow.store.db import connection_env

    url = STORE_URL.replace(
        f"orderflow_test_{RUN_ID}", f"orderflow_test_{RUN_ID}_{next(_module_dbs)}"
    )
    kind = _day_snapshot_kind(request)
    templates = request.getfixturevalue("_store_templates")
    template = templates.get(kind, request.getfixturevalue).url if kind else _migrated_template()
    if kind:
        templates.count_use(kind)
    pg.copy_database(url, template)
    saved = {k: os.environ.get(k) for k in connection_env(url)}
    os.environ.update(connection_env(url))
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    pg.drop_database(url)


@pytest.fixture
def store(store_url):
    """An autocommit connection to the test store (group writes with store.db.transaction)."""
    from orderflow.store import db

    conn = db.connect()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata database for tests that run DAGs (``dag.test()``)."""
    _needs_database("the airflow_db fixture")
    from orderflow.dev import pg

    pg.ensure_database(AIRFLOW_DB_URL)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    yield AIRFLOW_DB_URL
    from airflow import settings as airflow_settings

    airflow_settings.dispose_orm()  # close Airflow's pool before the database goes away
    pg.drop_database(AIRFLOW_DB_URL)


@pytest.fixture
def fresh_database():
    """An empty database of its own (e.g. to run migrations from nothing)."""
    _needs_database("the fresh_database fixture")
    from orderflow.dev import pg

    url = _with_db(SERVER_URL, f"orderflow_empty_{secrets.token_hex(4)}", "postgresql+psycopg")
    pg.ensure_database(url)
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="session")
def day_dir(tmp_path_factory):
    """A small generated sandbox day (shared, read-only)."""
    from tests_support import generate_small_day

    return generate_small_day(tmp_path_factory.mktemp("day"))


@pytest.fixture(scope="module")
def sandbox(day_dir, tmp_path_factory, request):
    """A sandbox process of this test module (its state is per module). In a module marked
    ``@pytest.mark.day_snapshot(kind)`` it starts on a copy of that snapshot's sandbox folder
    (and so continues from that state)."""
    from tests_support import start_sandbox

    drop = tmp_path_factory.mktemp("drop")
    kind = _day_snapshot_kind(request)
    if kind:
        request.getfixturevalue("_store_templates").copy_drop(kind, drop, request.getfixturevalue)
    sb = start_sandbox(day_dir, drop)
    yield sb
    sb.stop()


@pytest.fixture(scope="session")
def po_day(tmp_path_factory):
    """A generated day with e-mailed and scanned purchase orders (seed 3, 27 Nov 2026),
    shared read-only by the e-mail PO modules (generated once a run, not once a module)."""
    from datetime import date

    from orderflow_sandbox.generator import generate

    out = tmp_path_factory.mktemp("po-day")
    generate(
        out, seed=3, orders_per_day=300, customers=120, items=600, business_date=date(2026, 11, 27)
    )
    return out
