"""A poison message never stops a channel, and what the model accepts the store accepts
(issue #13: D1, D9; real PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orderflow.domain import models
from orderflow.domain.models import Channel, Order, OrderLine, Provenance
from orderflow.intake import drops
from orderflow.intake import portal as portal_intake
from orderflow.intake.core import ParseResult, ingest
from orderflow.store import db, intake

pytestmark = pytest.mark.db


# ---------------------------------------------------------------- one source of bounds


def test_store_columns_are_the_models_bounds(store):
    cols = {
        (r[0], r[1]): (r[2], r[3])
        for r in store.execute(
            "SELECT table_name, column_name, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = 'orderflow' "
            "AND (table_name, column_name) IN "
            "(('order_line', 'quantity'), ('order_line', 'unit_price'), ('order', 'order_total'))"
        ).fetchall()
    }
    assert cols == {
        ("order_line", "quantity"): (models.QUANTITY_PRECISION, models.QUANTITY_SCALE),
        ("order_line", "unit_price"): (models.PRICE_PRECISION, models.PRICE_SCALE),
        ("order", "order_total"): (models.TOTAL_PRECISION, models.TOTAL_SCALE),
    }
    checks = dict(
        store.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname LIKE 'order%%_bounds' OR conname = 'order_currency_iso'"
        ).fetchall()
    )
    assert str(models.MAX_ID_CHARS) in checks["order_po_number_bounds"]
    assert str(models.MAX_CODE_CHARS) in checks["order_line_uom_bounds"]
    assert models.CURRENCY_PATTERN in checks["order_currency_iso"]


STORABLE = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
#: identifiers up to the bound, 4-byte characters included (the index entry size)
IDENT = st.one_of(
    st.text(alphabet=STORABLE, min_size=1, max_size=models.MAX_ID_CHARS),
    st.sampled_from(["\U0001d518" * models.MAX_ID_CHARS, "é" * models.MAX_ID_CHARS, "=1+1"]),
)
HOSTILE = st.sampled_from(["", "a\x00b", "\ud800", "x" * (models.MAX_ID_CHARS + 1)])


def _maybe_hostile(valid):
    """Mostly valid values (so the store sees what the model accepts), sometimes hostile."""
    return st.one_of(valid, valid, valid, HOSTILE)


def _decimals(precision: int, scale: int):
    whole = precision - scale
    largest = Decimal(10) ** whole - Decimal(1).scaleb(-scale)
    valid = st.one_of(
        st.decimals(min_value=Decimal(1).scaleb(-scale), max_value=largest, places=scale),
        st.decimals(min_value=Decimal(1).scaleb(-scale), max_value=1000, places=scale),
        st.sampled_from([largest, Decimal(1).scaleb(-scale), Decimal("1.0000"), Decimal("1E+2")]),
    )
    hostile = st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True),
        st.sampled_from([Decimal(1).scaleb(-scale - 1), Decimal(10) ** whole, Decimal("1e308")]),
    )
    return st.one_of(valid, valid, valid, hostile)


@st.composite
def candidate_orders(draw) -> dict:
    lines = [
        {
            "line_no": n + draw(st.sampled_from([1, 1, 1, 0, -1, 2**31 - 4])),
            "quantity": draw(_decimals(models.QUANTITY_PRECISION, models.QUANTITY_SCALE)),
            "uom": draw(_maybe_hostile(st.text(alphabet=STORABLE, min_size=1, max_size=35))),
            "unit_price": draw(
                st.one_of(st.none(), _decimals(models.PRICE_PRECISION, models.PRICE_SCALE))
            ),
            "customer_part_number": draw(st.one_of(st.none(), _maybe_hostile(IDENT))),
            "item_id": draw(st.one_of(st.none(), _maybe_hostile(IDENT))),
            "description": draw(st.one_of(st.none(), _maybe_hostile(st.text(STORABLE)))),
            "product_ids": [{"qualifier": "BP", "value": draw(_maybe_hostile(IDENT))}],
        }
        for n in range(draw(st.integers(1, 3)))
    ]
    return {
        "order_id": "T-" + draw(st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)),
        "po_number": draw(_maybe_hostile(IDENT)),
        "customer_id": draw(st.one_of(st.none(), _maybe_hostile(IDENT))),
        "currency": draw(st.sampled_from(["USD", "eur", "CAD", "EURO", "U$D", "12A", "€"])),
        "notes": [draw(_maybe_hostile(st.text(STORABLE)))],
        "references": {"rep": draw(_maybe_hostile(st.text(STORABLE)))},
        "ship_to": {"party_id": draw(_maybe_hostile(IDENT))},
        "lines": lines,
        "provenance": {"channel": "api", "partner_id": draw(_maybe_hostile(IDENT))},
    }


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(candidate_orders())
def test_whatever_the_model_accepts_the_store_accepts(store, fields):
    try:
        order = Order.model_validate(fields)
    except ValidationError:
        return  # refused by the model: the channel reports it with the field named
    with pytest.raises(_Rollback), db.transaction(store):
        created = intake.insert_orders(store, [order], message_id=None, actor_id="test")
        assert created == [order.order_id]
        raise _Rollback


class _Rollback(Exception):
    pass


# ---------------------------------------------------------------- isolation per order (D1)


def _order(po: str, qty: str = "1", line_no: int = 1) -> Order:
    return Order(
        order_id=f"T-{po}",
        po_number=po,
        customer_id="C-POISON",
        lines=[OrderLine(line_no=line_no, quantity=Decimal(qty), uom="EA")],
        provenance=Provenance(channel=Channel.API, partner_id="poison"),
    )


def test_an_order_the_store_refuses_is_quarantined_alone(store):
    """Model and store drifted apart (an order built without validation): the store's refusal
    of one order rolls back to its savepoint; the message's other orders are created."""
    bad = Order.model_construct(
        **{
            **_order("PO-STORE-BAD").__dict__,
            "lines": [
                OrderLine.model_construct(
                    line_no=1,
                    quantity=Decimal("0.0001"),
                    uom="EA",
                    product_ids=[],
                    confidence={},
                    unit_price=None,
                    item_id=None,
                    customer_part_number=None,
                    source_line_id=None,
                    description=None,
                    price_basis=None,
                    pack=None,
                    requested_ship_date=None,
                )
            ],
        }
    )
    good = [_order("PO-STORE-GOOD-1"), _order("PO-STORE-GOOD-2")]

    out = ingest(
        store,
        channel="api",
        partner_id="poison",
        source_ref="mixed",
        raw=b"three orders",
        parse=lambda data, stored: ParseResult(orders=[good[0], bad, good[1]]),
    )
    assert out.outcome == "orders_created"
    assert set(out.order_ids) == {"T-PO-STORE-GOOD-1", "T-PO-STORE-GOOD-2"}
    (err,) = out.errors
    assert err.code == "intake.order_refused_by_store"
    assert "order_line_quantity_check" in err.message and "PO-STORE-BAD" in err.where
    assert store.execute(
        'SELECT count(*) FROM orderflow."order" WHERE order_id = %s', ("T-PO-STORE-BAD",)
    ).fetchone() == (0,)


def test_same_po_twice_in_one_message_is_one_order_and_a_flagged_repeat(store):
    """D9: e.g. the same PDF attached many times, or two ST sets with one BEG03."""
    orders = [_order("PO-TWICE")] + [
        _order("PO-TWICE").model_copy(update={"order_id": f"T-PO-TWICE-{i}"}) for i in range(29)
    ]
    out = ingest(
        store,
        channel="api",
        partner_id="poison",
        source_ref="thirty",
        raw=b"thirty copies",
        parse=lambda data, stored: ParseResult(orders=orders),
    )
    assert out.outcome == "orders_created" and out.order_ids == ("T-PO-TWICE",)
    assert [e.code for e in out.errors] == ["intake.duplicate_po_in_message"] * 29
    assert store.execute(
        "SELECT count(*) FROM orderflow.\"order\" WHERE po_number = 'PO-TWICE'"
    ).fetchone() == (1,)


# ---------------------------------------------------------------- poison between good ones

ISA = (
    "ISA*00*          *00*          *ZZ*POISONBUY      *ZZ*ORDERFLOW      "
    "*261128*0930*U*00401*{icn:09d}*0*P*>~\n"
)


def _x12(icn: int, pos: list[tuple[str, str]]) -> bytes:
    """One interchange, one group, one 850 per (PO number, PO1 quantity)."""
    body = ""
    for n, (po, qty) in enumerate(pos, start=1):
        segs = [f"BEG*00*SA*{po}**20261127~", f"PO1*1*{qty}*EA*2.50*PE*BP*CUST-1~", "CTT*1~"]
        body += f"ST*850*{n:04d}~\n" + "\n".join(segs) + f"\nSE*{len(segs) + 2}*{n:04d}~\n"
    return (
        ISA.format(icn=icn)
        + f"GS*PO*POISONBUY*ORDERFLOW*20261128*0930*{icn}*X*004010~\n"
        + body
        + f"GE*{len(pos)}*{icn}~\nIEA*1*{icn:09d}~\n"
    ).encode()


def _drop(folder, name: str, data: bytes, mtime: int) -> None:
    import os

    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    os.utime(folder / name, (mtime, mtime))


def _outcomes(store, channel: str) -> dict[str, tuple[str, str | None]]:
    rows = store.execute(
        "SELECT source_ref, outcome, error FROM orderflow.channel_message WHERE channel = %s",
        (channel,),
    ).fetchall()
    return {r[0]: (r[1], r[2][0]["code"] if r[2] else None) for r in rows}


def test_edi_poison_between_good_files(store, tmp_path):
    with db.transaction(store):
        store.execute(
            "INSERT INTO orderflow.trading_partner (partner_id, customer_id) "
            "VALUES ('poisonbuy', 'C-EDI') ON CONFLICT DO NOTHING"
        )
    inbox = tmp_path / "edi"
    _drop(inbox / "poisonbuy", "a_good.x12", _x12(901, [("PO-EDI-1", "5")]), 1_000)
    _drop(inbox / "poisonbuy", "b_poison.x12", _x12(902, [("PO-EDI-2", "0.0001")]), 2_000)
    _drop(inbox / "poisonbuy", "c_good.x12", _x12(903, [("PO-EDI-3", "7")]), 3_000)

    stats = drops.ingest_folder(store, inbox, "edi")
    assert stats.outcomes == {"orders_created": 2, "quarantined": 1}
    outcomes = _outcomes(store, "edi")
    assert outcomes["a_good.x12"][0] == outcomes["c_good.x12"][0] == "orders_created"
    # refused by the X12 element checks or by the canonical model (the store's bounds)
    assert outcomes["b_poison.x12"][0] == "quarantined"
    assert outcomes["b_poison.x12"][1] in ("x12.850_value_out_of_range", "x12.850_invalid")
    # the negative acknowledgment for the poison file is queued
    (ack,) = store.execute(
        "SELECT payload->>'body' FROM orderflow.outbox WHERE idempotency_key LIKE %s",
        ("edi_997:poisonbuy:%:902",),
    ).fetchone()
    assert "AK5*R" in ack and "AK9*R" in ack
    # the next run moves on: nothing is waiting, a new good file goes straight through
    _drop(inbox / "poisonbuy", "d_good.x12", _x12(904, [("PO-EDI-4", "1")]), 4_000)
    assert drops.ingest_folder(store, inbox, "edi").outcomes == {"orders_created": 1}


def test_edi_two_st_sets_with_one_beg03_make_one_order(store, tmp_path):
    inbox = tmp_path / "edi"
    _drop(inbox / "poisonbuy", "twice.x12", _x12(905, [("PO-EDI-9", "5"), ("PO-EDI-9", "6")]), 1)
    stats = drops.ingest_folder(store, inbox, "edi")
    assert stats.outcomes == {"orders_created": 1} and stats.orders == 1
    (errors,) = store.execute(
        "SELECT error FROM orderflow.channel_message WHERE source_ref = 'twice.x12'"
    ).fetchone()
    assert [e["code"] for e in errors] == ["intake.duplicate_po_in_message"]
    assert "ST02 0002" in errors[0]["where"]


def test_csv_poison_between_good_files(store, tmp_path):
    header = "po;cust;item;qty;uom;price\n"
    inbox = tmp_path / "csv"
    _drop(inbox, "a.csv", (header + "PO-CSV-1;C1;I1;1,5;KG;12,50\n").encode(), 1_000)
    poison = "po\tcust\tln\titem\tqty\tuom\n" + "PO-CSV-2\tC1\t1\tI1\t1\tEA\n" * 2
    poison += "PO-CSV-3\tC1\t1\tI\x001\t1\tEA\n"  # UTF-16 "Unicode Text", tab-separated
    _drop(inbox, "b.csv", poison.encode("utf-16"), 2_000)
    _drop(inbox, "c.csv", (header + "PO-CSV-4;C1;I1;2;EA;3\n").encode(), 3_000)

    stats = drops.ingest_folder(store, inbox, "csv")
    assert stats.outcomes == {"orders_created": 2, "quarantined": 1}
    outcomes = _outcomes(store, "csv")
    assert outcomes["b.csv"] == ("quarantined", "csv.duplicate_line_no")
    (errors,) = store.execute(
        "SELECT error FROM orderflow.channel_message WHERE source_ref = 'b.csv'"
    ).fetchone()
    assert [e["code"] for e in errors] == ["csv.duplicate_line_no", "csv.nul_character"]
    (qty, price) = store.execute(
        'SELECT quantity, unit_price FROM orderflow.order_line l JOIN orderflow."order" o '
        "USING (order_id) WHERE o.po_number = 'PO-CSV-1'"
    ).fetchone()
    assert (qty, price) == (Decimal("1.5"), Decimal("12.50"))
    assert drops.ingest_folder(store, inbox, "csv").files == 0  # nothing left waiting


class _Feed:
    """The portal feed as the hook returns it (one page)."""

    http_conn_id = "portal_poison"

    def __init__(self, items):
        self.items = items

    def orders_page(self, cursor, size):
        items = self.items[cursor : cursor + size]
        return {"items": items, "next_cursor": cursor + len(items), "has_more": False}


def _item(rid: str, po: str, **order):
    return {
        "client_request_id": rid,
        "order": {
            "customer_id": "C-PORTAL",
            "po_number": po,
            "lines": [{"line_no": 1, "quantity": 2, "uom": "EA"}],
            **order,
        },
    }


def test_portal_poison_between_good_items(store):
    feed = _Feed(
        [
            _item("p-1", "PO-P-1"),
            _item("p-2", "PO-P-2", currency="EURO"),
            _item("p-3", "PO-P-3", lines=[{"line_no": 1, "quantity": "0.0001", "uom": "EA"}]),
            _item("p-4\u0000" + "x" * 5000, "PO-P-4"),
            _item("p-5", "PO-P-5"),
        ]
    )
    stats = portal_intake.pull(store, feed, partner_id="portal-poison")
    assert stats.outcomes == {"orders_created": 2, "quarantined": 3}
    rows = store.execute(
        "SELECT outcome, error->0->>'where' FROM orderflow.channel_message "
        "WHERE partner_id = 'portal-poison' ORDER BY message_id"
    ).fetchall()
    assert rows == [
        ("orders_created", None),
        ("quarantined", "order.currency"),
        ("quarantined", "order.lines[0].quantity"),
        ("quarantined", "client_request_id"),
        ("orders_created", None),
    ]
    # the next run moves on from the cursor
    feed.items.append(_item("p-6", "PO-P-6"))
    assert portal_intake.pull(store, feed, partner_id="portal-poison").outcomes == {
        "orders_created": 1
    }
    assert json.dumps(stats.summary())


def test_a_batch_is_inserted_set_wise_with_repeats_and_replays_taken_once(store):
    """insert_orders writes a batch in three statements: an id repeated in the batch is
    taken once (its first occurrence, its lines, one RECEIVED event), an id already stored
    (a replay) is skipped, and the ids come back in batch order."""
    tag = secrets.token_hex(3)
    stored = _order(f"PO-SET-{tag}-0")
    with db.transaction(store):
        assert intake.insert_orders(store, [stored], message_id=None, actor_id="t") == [
            stored.order_id
        ]
    a = _order(f"PO-SET-{tag}-A", qty="2")
    b = _order(f"PO-SET-{tag}-B", qty="3", line_no=7)
    again = _order(f"PO-SET-{tag}-A", qty="99")  # same order id as ``a``: the repeat
    run = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": 4}
    with db.transaction(store):
        created = intake.insert_orders(
            store, [a, stored, b, again], message_id=None, actor_id="t.batch", run=run
        )
    assert created == [a.order_id, b.order_id]
    rows = store.execute(
        "SELECT order_id, line_no, quantity FROM orderflow.order_line "
        "WHERE order_id = ANY(%s) ORDER BY order_id",
        ([a.order_id, b.order_id],),
    ).fetchall()
    assert rows == [(a.order_id, 1, Decimal("2.000")), (b.order_id, 7, Decimal("3.000"))]
    events = store.execute(
        "SELECT order_id, reason_codes, actor_id, details, dag_id, run_id, task_id, map_index "
        "FROM orderflow.order_event WHERE order_id = ANY(%s)",
        ([a.order_id, b.order_id, stored.order_id],),
    ).fetchall()
    one = {"message_id": None, "lines": 1}
    assert sorted(events) == sorted(
        [
            (a.order_id, ["intake.api"], "t.batch", one, "d", "r", "t", 4),
            (b.order_id, ["intake.api"], "t.batch", one, "d", "r", "t", 4),
            (stored.order_id, ["intake.api"], "t", one, None, None, None, None),
        ]
    )


def test_a_large_message_is_stored_byte_for_byte_and_a_redelivery_counted(store):
    """Messages of RAW_COPY_MIN bytes and more travel by COPY in chunks (libpq would
    otherwise keep a buffer the size of the file for the connection's life): the stored raw
    is the same bytes (NUL, 0xFF, a chunk boundary inside), and the same delivery again is
    the same message with its delivery count bumped."""
    raw = (bytes(range(256)) * (intake.RAW_COPY_MIN // 256 + 4097))[: intake.RAW_COPY_MIN + 12345]
    ref = f"big-{secrets.token_hex(3)}.x12"
    with db.transaction(store):
        first = intake.record_message(
            store, channel="edi", partner_id="BIG", source_ref=ref, raw=raw
        )
    with db.transaction(store):
        again = intake.record_message(
            store, channel="edi", partner_id="BIG", source_ref=ref, raw=raw
        )
    assert (again.message_id, again.seen_before, first.seen_before) == (
        first.message_id,
        True,
        False,
    )
    stored, size, count = store.execute(
        "SELECT raw, size_bytes, delivery_count FROM orderflow.channel_message "
        "WHERE message_id = %s",
        (first.message_id,),
    ).fetchone()
    assert (bytes(stored) == raw, size, count) == (True, len(raw), 2)
    small = intake.record_message(
        store, channel="edi", partner_id="BIG", source_ref=ref + ".small", raw=b"\x00ISA\xff"
    )
    assert (
        bytes(
            store.execute(
                "SELECT raw FROM orderflow.channel_message WHERE message_id = %s",
                (small.message_id,),
            ).fetchone()[0]
        )
        == b"\x00ISA\xff"
    )
