"""Durable state of the sandbox: one SQLite file under its state dir.

A real WMS or ERP does not forget on restart, so neither does the sandbox. The in-memory
model (:class:`orderflow_sandbox.state.Distributor`) stays the source of answers; every
request that changes it writes the records it touched (releases, reservations, inventory
positions, idempotency answers, feed events, mail, EDI, webhooks, invoices, scheduled
events, delivered files, counters, the clock) in **one SQLite transaction before the answer
is sent**. On start the generated day is loaded as before and these records are laid over
it, so a restarted sandbox answers exactly as the killed one would have.

Records are ``(collection, key) → JSON`` rows: the model's own dicts, not a second schema
to keep in step with it. WAL with ``synchronous=NORMAL``: a commit is a ``write()`` into the
WAL, which survives the process being killed (SIGKILL included: the data is in the page
cache); ``ORDERFLOW_SANDBOX_SYNC=FULL`` adds an fsync per commit for power-loss durability
at the cost of a disk flush per request.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    coll  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (coll, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

#: bump when the record layout changes incompatibly: an older file is then set aside
FORMAT = 1


def encode_key(key) -> str:
    """Dictionary keys of the model (str, int, tuples of str) as text."""
    return json.dumps(list(key) if isinstance(key, tuple) else key, separators=(",", ":"))


def decode_key(text: str):
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


class StateStore:
    """One SQLite file; every :meth:`write` is one transaction (thread-safe)."""

    def __init__(self, path: Path, *, sync: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._open()
        sync = (sync or os.environ.get("ORDERFLOW_SANDBOX_SYNC") or "NORMAL").upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"ORDERFLOW_SANDBOX_SYNC must be NORMAL or FULL, not {sync!r}")
        self._db.execute(f"PRAGMA synchronous={sync}")

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        return db

    # ------------------------------------------------------------------ reading
    def meta(self, name: str, default=None):
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def records(self) -> Iterable[tuple[str, str, str]]:
        with self._lock:
            return self._db.execute("SELECT coll, key, value FROM records").fetchall()

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT coll, count(*) FROM records GROUP BY coll").fetchall()
        return dict(rows)

    def is_empty(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is None

    # ------------------------------------------------------------------ writing
    def write(
        self,
        upserts: list[tuple[str, str, str]] = (),
        deletes: list[tuple[str, str]] = (),
        meta: dict | None = None,
    ) -> None:
        """Upsert and delete records and set meta values, all in one transaction."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if upserts:
                    db.executemany(
                        "INSERT INTO records (coll, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (coll, key) DO UPDATE SET value = excluded.value",
                        upserts,
                    )
                if deletes:
                    db.executemany("DELETE FROM records WHERE coll = ? AND key = ?", deletes)
                if meta:
                    db.executemany(
                        "INSERT INTO meta (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        [(k, json.dumps(v, separators=(",", ":"))) for k, v in meta.items()],
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def wipe(self) -> None:
        """Forget everything (a deliberate reset)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM records")
            self._db.execute("DELETE FROM meta")
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
