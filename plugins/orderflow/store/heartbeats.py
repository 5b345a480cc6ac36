"""Heartbeat repository: proof that a scheduled run reached the store."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def record(
    conn: psycopg.Connection, *, dag_id: str, run_id: str, logical_date: datetime | None, host: str
) -> int:
    """Write the heartbeat of one run; a retry or rerun of the same run only counts an attempt.

    Returns the number of attempts recorded for this run.
    """
    row = conn.execute(
        """
        INSERT INTO orderflow.heartbeat (dag_id, run_id, logical_date, host)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (dag_id, run_id) DO UPDATE
            SET attempts = orderflow.heartbeat.attempts + 1, written_at = now(), host = EXCLUDED.host
        RETURNING attempts
        """,
        (dag_id, run_id, logical_date, host),
    ).fetchone()
    return row[0]
