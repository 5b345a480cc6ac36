"""Test-wide fixtures: a real PostgreSQL, a fresh database per test run, Airflow configured
for tests before anything imports it.

The server is ``ORDERFLOW_TEST_DATABASE_URL`` when set (CI and this machine: the local
PostgreSQL on 127.0.0.1:5432), otherwise the embedded one under ``.orderflow/test-pgdata``.
Each run creates its own ``orderflow_test_<id>`` / ``airflow_test_<id>`` databases and drops
them at the end, so leftovers never leak between runs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
_TMP = Path(tempfile.mkdtemp(prefix="orderflow-tests-"))


def _server_url() -> str:
    url = os.environ.get("ORDERFLOW_TEST_DATABASE_URL")
    if url:
        return url
    from orderflow.dev import pg

    return pg.start_embedded(ROOT / ".orderflow" / "test-state").url("postgres")


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


@pytest.fixture(scope="session")
def server_url() -> str:
    return SERVER_URL


_module_dbs = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def store_url():
    """A freshly created, fully migrated operational store for each test module, so that
    modules ingesting the same generated day never see each other's messages."""
    from orderflow.dev import pg
    from orderflow.store import migrations
    from orderflow.store.db import connection_env

    url = STORE_URL.replace(
        f"orderflow_test_{RUN_ID}", f"orderflow_test_{RUN_ID}_{next(_module_dbs)}"
    )
    pg.ensure_database(url)
    migrations.upgrade(url)
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
def sandbox(day_dir, tmp_path_factory):
    """A sandbox process of this test module (its state is per module)."""
    from tests_support import start_sandbox

    sb = start_sandbox(day_dir, tmp_path_factory.mktemp("drop"))
    yield sb
    sb.stop()
