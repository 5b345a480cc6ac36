"""Lists sent as array parameters by the store's connections (``store.db.fast_adapters``: one
pass over the joined elements instead of a test and an escape per element) arrive as the
same arrays as psycopg's own dumper sends them — every element type the store sends; and
``json``/``jsonb`` values they read (decoded by msgspec) come back as ``json.loads`` reads
them."""

from datetime import date
from decimal import Decimal

import psycopg
import pytest
from psycopg import pq
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from orderflow.domain.lifecycle import OrderStatus
from orderflow.store.db import _json_loads

TRICKY = ["", "a", "NULL", "null", " x ", "a,b", "{}", "{a}", 'a"b', "a\\b", '\\"', '"', "\\",
          "é€😀", "\t\n", "x y", "'q'", "a\x01b", "NULL,NULL"]  # fmt: skip

CASES = [
    (TRICKY, "text[]"),
    (["a", None, "b", None], "text[]"),
    ([None, "x\x02y", "\x02"], "text[]"),  # the byte the fast path marks None with
    ([None, None], "text[]"),
    ([], "text[]"),
    ([1, None, -3, 2**40], "int8[]"),
    ([1, 2, 3], "int[]"),
    ([True, None, False], "bool[]"),
    ([[1, 2], [3, 4]], "int[]"),
    ([Decimal("1.50"), None, Decimal("-0.001"), Decimal("1E+3"), Decimal("0E-7")], "numeric[]"),
    ([1.5, None, -2.25], "float8[]"),
    ([date(2026, 12, 6), None], "date[]"),
    ([OrderStatus.RECEIVED, OrderStatus.ON_HOLD], "text[]"),
    (
        [Jsonb({"a": 'q"\\x', "b": [1, None], "é": "😀\n{,}"}), None, Jsonb([]), Jsonb("NULL")],
        "jsonb[]",
    ),
]


@pytest.fixture
def plain(store):
    """A connection with psycopg's own list dumper, to the same store."""
    conn = psycopg.connect(store.info.dsn, autocommit=True)
    yield conn
    conn.close()


def test_the_store_connections_use_the_fast_list_dumper(store, plain):
    assert store.adapters.get_dumper(list, PyFormat.TEXT).__name__ == "FastListDumper"
    assert plain.adapters.get_dumper(list, PyFormat.TEXT).__name__ == "ListDumper"


@pytest.mark.parametrize(("values", "cast"), CASES, ids=[c for _, c in CASES])
def test_an_array_parameter_arrives_as_psycopg_sends_it(store, plain, values, cast):
    for query in (
        f"SELECT %s::{cast}",
        f"SELECT array(SELECT t::text FROM unnest(%s::{cast}) t)",
        f"SELECT count(*) FROM unnest(%s::{cast}) t WHERE t IS NULL",
    ):
        fast = store.execute(query, (values,)).fetchone()[0]
        own = plain.execute(query, (values,)).fetchone()[0]
        assert str(fast) == str(own), query


def test_membership_tests_see_the_same_elements(store, plain):
    for probe in TRICKY:
        query = "SELECT %s = ANY(%s::text[])"
        assert store.execute(query, (probe, TRICKY)).fetchone()[0] is True
        assert plain.execute(query, (probe, TRICKY)).fetchone()[0] is True
    assert store.execute("SELECT 'zz' = ANY(%s::text[])", (TRICKY,)).fetchone()[0] is False


JSON_VALUES = [
    '{"a": 1, "b": [1, 2.5, null, true, false, "x"], "c": {"d": "é€😀\\n\\u001f"}}',
    "123456789012345678901234567890",  # beyond 64 bits: exact, as json.loads reads it
    "-9223372036854775809",
    "0.1",
    "1e400",  # beyond a double: json.loads reads inf, msgspec refuses (the fallback)
    "12345678901234567890.123456789",
    '"plain"',
    "[]",
    "null",
    "[" * 2000 + "]" * 2000,  # deeper than msgspec goes (the fallback)
]


@pytest.mark.parametrize("text", JSON_VALUES, ids=range(len(JSON_VALUES)))
@pytest.mark.parametrize("cast", ["json", "jsonb"])
def test_a_json_value_reads_as_json_loads_reads_it(store, plain, text, cast):
    oid = store.adapters.types[cast].oid
    assert store.adapters.get_loader(oid, pq.Format.TEXT)._loads is _json_loads
    try:
        own = plain.execute(f"SELECT %s::{cast}", (text,)).fetchone()[0]
    except RecursionError:
        with pytest.raises(RecursionError):
            store.execute(f"SELECT %s::{cast}", (text,)).fetchone()
        return
    fast = store.execute(f"SELECT %s::{cast}", (text,)).fetchone()[0]
    assert fast == own
    assert repr(fast) == repr(own)  # the same types too: 1 stays an int, 1.0 a float
