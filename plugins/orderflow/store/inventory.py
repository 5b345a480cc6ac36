"""Inventory-position repository: what the master-data sync does to the positions as a whole
(allocation's own reads and writes are in ``store.processing``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def lock_all_positions(conn: psycopg.Connection) -> None:
    """Lock every inventory position in key order (item, DC), as allocation locks them."""
    conn.execute("SELECT 1 FROM orderflow.inventory_position ORDER BY item_id, dc_id FOR UPDATE")
