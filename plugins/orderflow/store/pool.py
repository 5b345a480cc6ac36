"""A small pool of store connections for request/response callers (the order-check API).

The UI pages open a connection per request (``db.connect``: resolve the Connection, TCP and
authentication, ≈ 5–10 ms); a synchronous API answering hundreds of requests a second cannot
pay that each time. ``psycopg_pool`` is not among our dependencies, and a pool of a few
autocommit connections needs little: a LIFO of idle connections, a bound on how many exist,
and a connection that saw an error is closed rather than reused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orderflow.settings import STORE_CONN_ID

if TYPE_CHECKING:
    import psycopg


class PoolTimeout(RuntimeError):
    """Every connection stayed busy for the whole wait: the store is overloaded or down."""


class ConnectionPool:
    """At most ``max_size`` autocommit connections to the ``conn_id`` store.

    :param conn_id: the store's Airflow Connection (resolved once, at the first use).
    :param max_size: connections open at most; callers beyond it wait up to ``timeout`` s.
    :param timeout: seconds to wait for a free connection before :class:`PoolTimeout`.
    """

    def __init__(self, conn_id: str = STORE_CONN_ID, max_size: int = 8, timeout: float = 5.0):
        self.conn_id = conn_id
        self.max_size = max_size
        self.timeout = timeout
        self._idle: list[psycopg.Connection] = []
        self._open = 0
        self._conninfo: str | None = None
        self._cond = threading.Condition()

    def _connect(self) -> psycopg.Connection:
        import psycopg
        from psycopg.conninfo import make_conninfo

        if self._conninfo is None:
            from orderflow.store import db

            first = db.connect(self.conn_id)  # the Connection's own parameters, once
            self._conninfo = make_conninfo(first.info.dsn, password=first.info.password or None)
            return first
        return psycopg.connect(self._conninfo, autocommit=True)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection for the block; back to the pool after, closed if the block failed
        in a way that may have left it unusable."""
        conn = self._take()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self._give(conn, reuse=ok or (not conn.closed and not conn.broken))

    def _take(self) -> psycopg.Connection:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._idle or self._open < self.max_size, timeout=self.timeout
            ):
                raise PoolTimeout(
                    f"no free store connection within {self.timeout}s ({self.max_size} busy)"
                )
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _give(self, conn: psycopg.Connection, reuse: bool) -> None:
        from psycopg.pq import TransactionStatus

        if reuse and conn.info.transaction_status != TransactionStatus.IDLE:
            reuse = False  # a transaction left open must not leak into the next caller
        if not reuse:
            try:
                conn.close()
            finally:
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
            return
        with self._cond:
            self._idle.append(conn)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn in idle:
            conn.close()
