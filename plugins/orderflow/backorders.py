"""Backordered lines filled as stock arrives.

Each ``order_processing`` run (every 5 minutes, and whenever master data — the WMS's
inventory with it — is published) first looks at the lines that wait for stock on orders
already released, best priority first (``domain.backorders``). What it can fill now becomes a
*backorder release*: an order of its own, ``<order>-B<n>``, allocated with the stock that
arrived (reserved under the positions' locks, like any allocation) and claimed by the same
run for planning and release. The customer's order keeps what still waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orderflow.store import db
from orderflow.store import processing as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)


def fill(conn: psycopg.Connection, book: RuleBook, limit: int = 5000) -> dict[str, int]:
    from orderflow import rules
    from orderflow.domain import backorders as domain

    book = rules.in_force(conn, book)  # a promoted sourcing version decides fills too
    with db.transaction(conn):
        waiting = repo.waiting_backorders(conn, book.sourcing, limit)
        if not waiting:
            return {"waiting": 0, "filled": 0, "releases": 0}
        available = repo.lock_inventory(conn, {w.item_id for w in waiting})
        fills = domain.fill(
            waiting, available, tuple(book.sourcing.dcs), book.sourcing.max_split_dcs
        )
        created = repo.create_backorder_releases(conn, fills, book.tag("sourcing", "substitution"))
    if created:
        log.info("%d backordered lines filled into %d backorder releases", len(fills), len(created))
    return {"waiting": len(waiting), "filled": len(fills), "releases": len(created)}
