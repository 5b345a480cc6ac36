"""Connections to the operational store and the one transaction helper.

Inside Airflow the store is the ``orderflow_db`` Connection, reached through ``PostgresHook``
(psycopg 3). The ``orderflow`` CLI and tests use the same code: they define the Connection as
an ``AIRFLOW_CONN_ORDERFLOW_DB`` environment variable (see :func:`use_url`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import msgspec

from orderflow.settings import STORE_CONN_ID

if TYPE_CHECKING:
    import psycopg


def connection_env(url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_ORDERFLOW_DB`` for a libpq/SQLAlchemy URL (socket hosts included)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    host = u.host or u.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    conn = {
        "conn_type": "postgres",
        "host": host,
        "port": u.port or 5432,
        "login": u.username or "postgres",
        "password": u.password or "",
        "schema": u.database,
    }
    return {f"AIRFLOW_CONN_{STORE_CONN_ID.upper()}": json.dumps(conn)}


def use_url(url: str) -> None:
    """Point this process's ``orderflow_db`` Connection at ``url`` (CLI and tests)."""
    os.environ.update(connection_env(url))


def sqlalchemy_url(conn_id: str = STORE_CONN_ID) -> str:
    """The store URL as SQLAlchemy wants it (psycopg 3 driver), from the Connection."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_uri()


def connect(conn_id: str = STORE_CONN_ID) -> psycopg.Connection:
    """An autocommit psycopg 3 connection; group writes with :func:`transaction`."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.autocommit = True
    fast_adapters(conn)
    return conn


def fast_adapters(conn: psycopg.Connection) -> None:
    """Lists sent as array parameters (``= ANY(%s)``, ``unnest``) are written by
    :func:`_fast_list_dumper` on ``conn``, and ``json``/``jsonb`` values read by
    :func:`_json_loads`: the same values, several times less CPU."""
    from psycopg.types.json import set_json_loads

    global _LIST_DUMPER
    if _LIST_DUMPER is None:
        _LIST_DUMPER = _fast_list_dumper()
    conn.adapters.register_dumper(list, _LIST_DUMPER)
    set_json_loads(_json_loads, conn)


_decode = msgspec.json.Decoder().decode


def _json_loads(data: bytes):
    """A ``json``/``jsonb`` value as ``json.loads`` reads it, decoded by msgspec: about five
    times less CPU, and a stage reads several values an order (line identifiers, documents,
    details). Integers of any size stay exact, as with ``json.loads``. A number beyond a
    double's range (``1e400``) or nesting deeper than msgspec goes takes the standard
    library's path, so such a value reads as it did."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(data)


_LIST_DUMPER: type | None = None


def _fast_list_dumper() -> type:
    """psycopg's text-format list dumper with a faster way to write a flat list: each element
    dumped as psycopg dumps it, then all of them quoted and escaped in one pass over the
    joined bytes (instead of a regular-expression test, and for JSON an escape, per element).
    Quoting an element that would not need it is the same array to PostgreSQL (a quoted
    element is taken as written, then given to the element type's input). Nested lists, an
    element with a NUL or the ``\\x02`` byte that marks None here, a delimiter other than a
    comma or an encoding other than UTF-8 take psycopg's own path, unchanged."""
    from psycopg.types.array import ListDumper

    class FastListDumper(ListDumper):
        def dump(self, obj: list):
            sub = self.sub_dumper
            if (
                sub is None
                or not obj
                or self.delimiter != b","
                or self._tx.encoding != "utf-8"
                or any(type(x) is list for x in obj)
            ):
                return super().dump(obj)
            dump = sub.dump
            parts = [b"\x02" if x is None else dump(x) for x in obj]
            nulls = obj.count(None)
            if None in parts:  # an element dumped as NULL
                return super().dump(obj)
            text = b"\x00".join(parts)
            if text.count(b"\x00") != len(obj) - 1 or text.count(b"\x02") != nulls:
                return super().dump(obj)
            text = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            text = b'{"' + text.replace(b"\x00", b'","') + b'"}'
            return text.replace(b'"\x02"', b"NULL") if nulls else text

    return FastListDumper


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The one transaction boundary: commits on success, rolls back on any exception."""
    with conn.transaction():
        yield conn


@contextmanager
def session(conn_id: str = STORE_CONN_ID) -> Iterator[psycopg.Connection]:
    """Open a connection, run one transaction, close. For short-lived callers."""
    conn = connect(conn_id)
    try:
        with transaction(conn):
            yield conn
    finally:
        conn.close()


def savepoint(conn: psycopg.Connection, name: str) -> None:
    """Open the named savepoint ``name`` (a name from our code) in the caller's transaction,
    for scopes that do not nest as ``with`` blocks (a streamed parse's interchanges)."""
    conn.execute(f"SAVEPOINT {name}")


def release_savepoint(conn: psycopg.Connection, name: str) -> None:
    """Keep what was done since the savepoint ``name``."""
    conn.execute(f"RELEASE SAVEPOINT {name}")


def rollback_to_savepoint(conn: psycopg.Connection, name: str) -> None:
    """Undo what was done since the savepoint ``name`` (the savepoint stays open)."""
    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
