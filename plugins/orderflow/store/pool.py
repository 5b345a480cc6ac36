"""A pool of store connections for request/response callers (the order-check API).

The UI pages open a connection per request (``db.connect``: resolve the Connection, TCP and
authentication, ≈ 5–10 ms); a synchronous API answering hundreds of requests a second cannot
pay that each time. ``psycopg_pool`` keeps a few autocommit connections open, checks a
connection back in only when it is idle and healthy, and bounds how many exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderflow.settings import STORE_CONN_ID

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


def store_pool(
    conn_id: str = STORE_CONN_ID, max_size: int = 8, timeout: float = 5.0
) -> ConnectionPool:
    """An open pool of at most ``max_size`` autocommit connections to the ``conn_id`` store;
    callers beyond it wait up to ``timeout`` s (then ``psycopg_pool.PoolTimeout``)."""
    from psycopg.conninfo import make_conninfo
    from psycopg_pool import ConnectionPool

    from orderflow.store import db

    first = db.connect(conn_id)  # the Connection's own parameters, resolved once
    try:
        conninfo = make_conninfo(first.info.dsn, password=first.info.password or None)
    finally:
        first.close()
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True},
        name=f"orderflow-{conn_id}",
        open=True,
    )
