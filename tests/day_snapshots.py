"""The small generated day, landed (and processed) once per test run and copied per module.

Several modules start from the same state: the session's day landed through intake
(``land_day``), some of them then run ``order_processing`` over it. Rather than each module
doing that work again, the run does it once per kind, keeping the store as a template
database and the stopped sandbox's folder (its durable state: records, idempotency answers,
clock, delivered files). A module marked ``@pytest.mark.day_snapshot("landed")`` (or
``"processed"``) gets, from the ``store_url`` and ``sandbox`` fixtures, a store created from
that template (``CREATE DATABASE … TEMPLATE``) and a sandbox started on a copy of that
folder: the same state as if it had done the work itself, and its own to change.

- ``landed``: ``land_day`` (master data synced and gated, the CRM context, every channel).
- ``processed``: ``landed``, then one ``order_processing`` run (``dag.test()``) against it;
  its Airflow run id is kept (``Snapshot.run_id``: its task instances are in the run's
  Airflow database).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

KINDS = ("landed", "processed")


@dataclass(frozen=True)
class Snapshot:
    kind: str
    url: str  # the template database (no session may stay on it)
    drop: Path  # the stopped sandbox's folder
    run_id: str | None = None  # the order_processing run of "processed"
    seconds: float = 0.0  # what building it took (its own step only)


@contextmanager
def _environment() -> Iterator[None]:
    """Whatever the block (and land_day) sets in os.environ is undone after it."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class DaySnapshots:
    """Builds each kind the first time a module asks for it (``get``), once per run."""

    def __init__(
        self,
        root: Path,
        database_url: Callable[[str], str],
        migrated_url: Callable[[], str],
    ):
        self.root = root
        self._database_url, self._migrated_url = database_url, migrated_url
        self._built: dict[str, Snapshot] = {}
        self._failed: dict[str, str] = {}
        self._uses: dict[str, int] = dict.fromkeys(KINDS, 0)

    def get(self, kind: str, fixture: Callable[[str], object]) -> Snapshot:
        """The snapshot ``kind``, built now if it is the first ask; ``fixture`` is the asking
        fixture's ``request.getfixturevalue`` (the session's ``day_dir`` and ``airflow_db``)."""
        if kind not in KINDS:
            raise ValueError(f"day_snapshot: unknown kind {kind!r} (one of {KINDS})")
        if kind in self._failed:  # once is enough: every later module fails at once
            pytest.fail(f"day snapshot {kind!r} could not be built: {self._failed[kind]}")
        if kind not in self._built:
            self.day_dir = fixture("day_dir")
            try:
                if kind == "landed":
                    build = self._landed
                else:
                    landed = self.get("landed", fixture)
                    fixture("airflow_db")
                    build = lambda: self._processed(landed)  # noqa: E731
                started = time.monotonic()
                self._built[kind] = replace(build(), seconds=time.monotonic() - started)
            except BaseException as e:
                self._failed[kind] = f"{type(e).__name__}: {str(e)[:500]}"
                raise
        return self._built[kind]

    def count_use(self, kind: str) -> None:
        self._uses[kind] += 1

    def summary(self) -> list[str]:
        return [
            f"day snapshot {kind}: built in {snap.seconds:.1f} s, copied by "
            f"{self._uses[kind]} module(s)"
            for kind, snap in self._built.items()
        ]

    def copy_drop(self, kind: str, drop: Path, fixture: Callable[[str], object]) -> None:
        """The sandbox folder of ``kind`` copied to ``drop`` (for a sandbox of a module's own)."""
        shutil.copytree(self.get(kind, fixture).drop, drop, dirs_exist_ok=True)

    def drop_databases(self) -> None:
        from orderflow.dev import pg

        for kind in KINDS:  # a build cut short may have left its database too
            pg.drop_database(self._database_url(kind))

    def _landed(self) -> Snapshot:
        from tests_support import land_day, start_sandbox

        from orderflow.dev import pg
        from orderflow.store import db

        url, drop = self._database_url("landed"), self.root / "landed"
        pg.copy_database(url, self._migrated_url())
        with _environment():
            db.use_url(url)
            sb = start_sandbox(self.day_dir, drop)
            conn = db.connect()
            try:
                land_day(conn, sb)
            finally:
                conn.close()
                sb.stop()
        return Snapshot("landed", url, drop)

    def _processed(self, landed: Snapshot) -> Snapshot:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.state import DagRunState
        from tests_support import start_sandbox

        from orderflow.dev import pg
        from orderflow.settings import DAGS_DIR
        from orderflow.store import db

        url, drop = self._database_url("processed"), self.root / "processed"
        pg.copy_database(url, landed.url)
        shutil.copytree(landed.drop, drop)
        with _environment():
            db.use_url(url)
            sb = start_sandbox(self.day_dir, drop)
            try:
                os.environ.update(sb.connection_env())
                run = DagBag(str(DAGS_DIR)).get_dag("order_processing").test()
                assert run.state == DagRunState.SUCCESS, "order_processing of the day snapshot"
            finally:
                sb.stop()
        return Snapshot("processed", url, drop, run.run_id)
