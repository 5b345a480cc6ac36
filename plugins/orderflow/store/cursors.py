"""Persisted cursors and watermarks (portal feed, event feeds, master-data changed-since),
plus a session advisory lock so only one reader advances a cursor at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def get(conn: psycopg.Connection, name: str, default: str | None = None) -> str | None:
    row = conn.execute(
        "SELECT value FROM orderflow.sync_cursor WHERE cursor_name = %s", (name,)
    ).fetchone()
    return row[0] if row else default


def get_with_key(conn: psycopg.Connection, name: str) -> tuple[str | None, str | None]:
    """(value, last_key): the cursor and the natural key of the last item read before it."""
    row = conn.execute(
        "SELECT value, last_key FROM orderflow.sync_cursor WHERE cursor_name = %s", (name,)
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def put(
    conn: psycopg.Connection,
    name: str,
    value: str,
    run_id: str | None = None,
    last_key: str | None = None,
) -> None:
    conn.execute(
        """
        INSERT INTO orderflow.sync_cursor (cursor_name, value, updated_by_run, last_key)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (cursor_name) DO UPDATE
            SET value = EXCLUDED.value, updated_at = now(),
                updated_by_run = EXCLUDED.updated_by_run, last_key = EXCLUDED.last_key
        """,
        (name, value, run_id, last_key),
    )


class CursorBusy(RuntimeError):
    """Another reader holds this cursor."""


@contextmanager
def exclusive(conn: psycopg.Connection, name: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold a session advisory lock on ``name`` for the block; when another run holds it, wait
    up to ``wait_s`` seconds for it (a short reader ahead of us), then raise
    :class:`CursorBusy`."""
    import time

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    deadline = time.monotonic() + wait_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        if time.monotonic() >= deadline:
            raise CursorBusy(f"cursor {name!r} is being read by another run; try again later")
        time.sleep(0.5)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
