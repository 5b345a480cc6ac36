"""The intake path on a real store: raw first, exactly one outcome, replays and duplicates."""

import json

import pytest

from orderflow.channels import portal
from orderflow.intake.core import ParseResult, ingest
from orderflow.store import intake

pytestmark = pytest.mark.db


def _item(request_id, po, customer="C00042", qty=3):
    return {
        "client_request_id": request_id,
        "submitted_at": "2026-11-27T10:00:00Z",
        "order": {
            "customer_id": customer,
            "ship_to_id": f"{customer}-ST01",
            "po_number": po,
            "po_date": "2026-11-27",
            "currency": "USD",
            "lines": [
                {
                    "line_no": 1,
                    "customer_part_number": "CPN-1",
                    "quantity": qty,
                    "uom": "EA",
                    "unit_price": 9.5,
                }
            ],
        },
    }


def _ingest(store, item, source=None):
    raw = portal.item_bytes(item)

    def parse(data, stored):
        order, errors = portal.parse_item(data, message_id=stored.message_id)
        return ParseResult(orders=[order] if order else [], errors=errors)

    rid = item.get("client_request_id")
    return ingest(
        store,
        channel="portal",
        partner_id="portal",
        source_ref=source or rid,
        raw=raw,
        parse=parse,
        client_request_id=rid,
    )


def test_order_is_created_with_lines_event_and_raw_message(store):
    out = _ingest(store, _item("req-1", "PO-1001"))
    assert out.outcome == "orders_created"
    assert len(out.order_ids) == 1
    oid = out.order_ids[0]
    assert store.execute(
        'SELECT status, customer_id, source_message_id FROM orderflow."order" WHERE order_id = %s',
        (oid,),
    ).fetchone() == ("RECEIVED", "C00042", out.message_id)
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_line WHERE order_id = %s", (oid,)
        ).fetchone()[0]
        == 1
    )
    ev = store.execute(
        "SELECT from_status, to_status FROM orderflow.order_event WHERE order_id = %s", (oid,)
    ).fetchall()
    assert ev == [(None, "RECEIVED")]
    raw = store.execute(
        "SELECT raw FROM orderflow.channel_message WHERE message_id = %s", (out.message_id,)
    ).fetchone()[0]
    assert json.loads(raw)["order"]["po_number"] == "PO-1001"


def test_the_same_delivery_again_is_recognised_not_restored(store):
    first = _ingest(store, _item("req-2", "PO-1002"))
    again = _ingest(store, _item("req-2", "PO-1002"))
    assert again.seen_before
    assert again.message_id == first.message_id
    assert (
        store.execute(
            "SELECT delivery_count FROM orderflow.channel_message WHERE message_id = %s",
            (first.message_id,),
        ).fetchone()[0]
        == 2
    )
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.\"order\" WHERE po_number = 'PO-1002'"
        ).fetchone()[0]
        == 1
    )


def test_same_po_resubmitted_under_a_new_request_id_is_a_duplicate(store):
    first = _ingest(store, _item("req-3", "PO-1003"))
    second = _ingest(store, _item("req-3b", "PO-1003"))
    assert second.outcome == "duplicate"
    assert second.duplicate_of == first.message_id
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.\"order\" WHERE po_number = 'PO-1003'"
        ).fetchone()[0]
        == 1
    )


def test_reused_request_id_with_other_content_is_a_duplicate_not_an_error(store):
    first = _ingest(store, _item("req-4", "PO-1004"))
    other = _ingest(store, _item("req-4", "PO-1004-X", qty=7))
    assert other.outcome == "duplicate"
    assert other.duplicate_of == first.message_id


def test_invalid_order_is_quarantined_with_where_and_what_to_do(store):
    bad = _item("req-5", "PO-1005", qty=0)
    out = _ingest(store, bad)
    assert out.outcome == "quarantined"
    err = store.execute(
        "SELECT error FROM orderflow.channel_message WHERE message_id = %s", (out.message_id,)
    ).fetchone()[0]
    assert err[0]["where"] == "order.lines[0].quantity"
    assert "greater than 0" in err[0]["message"]
    assert err[0]["action"]


def test_a_crashing_parser_quarantines_instead_of_raising(store):
    def boom(data, stored):
        raise ValueError("unexpected layout")

    out = ingest(
        store, channel="csv", partner_id="inside-sales", source_ref="x.csv", raw=b"a,b", parse=boom
    )
    assert out.outcome == "quarantined"
    assert out.errors[0].code == "intake.parser_crashed"


def test_messages_reconcile(store):
    counts = intake.reconcile(store)
    total = store.execute("SELECT count(*) FROM orderflow.channel_message").fetchone()[0]
    assert sum(counts.values()) == total
    assert counts.get("pending", 0) == 0


def test_a_stored_order_keeps_its_document_out_of_line(store):
    # Every stage rewrites the order row (its status is indexed: no HOT update); the
    # canonical document stays in the TOAST table, so a status change does not copy it.
    item = _item("req-big", "PO-BIG")
    item["order"]["lines"] = [
        {**item["order"]["lines"][0], "line_no": n, "customer_part_number": f"CPN-{n}"}
        for n in range(1, 16)
    ]
    toast = store.execute(
        "SELECT reltoastrelid::regclass::text FROM pg_class "
        "WHERE oid = 'orderflow.\"order\"'::regclass"
    ).fetchone()[0]
    before = store.execute(f"SELECT count(DISTINCT chunk_id) FROM {toast}").fetchone()[0]
    (oid,) = _ingest(store, item).order_ids
    assert store.execute(
        'SELECT octet_length(canonical::text) > 2048 FROM orderflow."order" WHERE order_id = %s',
        (oid,),
    ).fetchone()[0]
    assert (
        store.execute(f"SELECT count(DISTINCT chunk_id) FROM {toast}").fetchone()[0] == before + 1
    )
