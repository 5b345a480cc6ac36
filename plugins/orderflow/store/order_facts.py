"""``orderflow.order_fact``, one row per order (milestones, touches, perfect order): what
is read of it outside the KPI computation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def count(conn: psycopg.Connection) -> int:
    """How many orders have a fact row."""
    return conn.execute("SELECT count(*) FROM orderflow.order_fact").fetchone()[0]
