"""Inventory-position repository: what the master-data sync does to the positions as a whole
(allocation's own reads and writes are in ``store.processing``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def lock_all_positions(conn: psycopg.Connection) -> None:
    """Lock every inventory position in key order (item, DC), as allocation locks them, for
    a new WMS snapshot: after the snapshot lock (``store.processing.SNAPSHOT_LOCK``), which
    a WMS receipt being recorded holds shared while it reads the positions' ``as_of``."""
    from orderflow.store.processing import SNAPSHOT_LOCK

    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SNAPSHOT_LOCK,))
    conn.execute("SELECT 1 FROM orderflow.inventory_position ORDER BY item_id, dc_id FOR UPDATE")
