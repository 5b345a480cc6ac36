"""EDI intake stores the light orders of sets read whole (``fast850.LightOrder``, issue #13
D5) exactly as it stores their pydantic models: the same order, line and event rows, the
same canonical JSON (as jsonb and as text), whatever the store reads of them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from orderflow.channels.x12 import FastSet, TransactionResult, X12Stream
from orderflow.store import intake

pytestmark = [pytest.mark.db]

NOW = datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)


def _file(partner: str) -> bytes:
    head = (
        f"ISA*00*          *00*          *ZZ*{partner:<15}*ZZ*SELLER         *261128*0930*U*"
        "00401*000000001*0*P*>~\nGS*PO*BUYER*SELLER*20261128*0930*1*X*004010~\n"
    )
    sets = []
    for n in range(1, 4):
        body = [
            f"BEG*00*SA*PO{n}-{partner}**20261128*CT{n}",
            "REF*IA*V 1",
            'PER*BD*A "B"*TE*555 0100',
            "DTM*002*20261205",
            "N1*ST*STORE 12*92*0012",
            "N3*1200 INDUSTRIAL PKWY",
            "N4*SPRINGFIELD*IL*62701*US",
            "N1*BT*HQ",
            *[
                s
                for k in range(1, n + 2)
                for s in (f"PO1*{k}*{k}.5*EA*1.2500*PE*BP*P\\{k}*VN*V{k}", f"PID*F****W {k}")
            ],
            "PO4*12*1.5*LB*BOX",
            f"CTT*{n + 1}",
        ]
        segs = [f"ST*850*{n:04d}", *body, f"SE*{len(body) + 2}*{n:04d}"]
        sets.append("".join(s + "~\n" for s in segs))
    return (head + "".join(sets) + "GE*3*1~\nIEA*1*000000001~\n").encode()


def _stored(conn, order_ids: list[str]) -> tuple:
    orders = conn.execute(
        "SELECT order_id, source_message_id, channel, partner_id, customer_id, po_number, "
        "ship_to_id, currency, order_total, requested_ship_date, received_at, canonical, "
        'canonical::text FROM orderflow."order" WHERE order_id = ANY(%s) ORDER BY order_id',
        (order_ids,),
    ).fetchall()
    lines = conn.execute(
        "SELECT order_id, line_no, item_id, customer_part_number, quantity, uom, unit_price, "
        "canonical, canonical::text FROM orderflow.order_line WHERE order_id = ANY(%s) "
        "ORDER BY order_id, line_no",
        (order_ids,),
    ).fetchall()
    events = conn.execute(
        "SELECT order_id, from_status, to_status, reason_codes, actor_type, actor_id, details "
        "FROM orderflow.order_event WHERE order_id = ANY(%s) ORDER BY order_id",
        (order_ids,),
    ).fetchall()
    return orders, lines, events


def test_light_orders_are_stored_as_their_models_are(store):
    partner = f"P{secrets.token_hex(3)}"
    data = _file(partner)
    kw = {"partner_id": partner, "source_ref": f"drop/{partner}/po.x12", "received_at": NOW}
    light = [e.order for e in X12Stream(data, light_orders=True, **kw) if type(e) is FastSet]
    models = [
        e.order
        for e in X12Stream(data, **kw)
        if isinstance(e, TransactionResult) and e.order is not None
    ]
    assert len(light) == len(models) == 3  # every set read whole, else this proves little
    for o in (*light, *models):  # as intake sets them
        o.customer_id = o.customer_id or "CUST-1"
        o.provenance.message_id = None
    ids = [o.order_id for o in models]
    got = []
    for orders in (light, models):
        with pytest.raises(_Rollback), store.transaction():
            assert intake.insert_orders(store, orders, message_id=None, actor_id="t") == ids
            got.append(_stored(store, ids))
            raise _Rollback
    assert got[0] == got[1]
    assert len(got[0][0]) == 3 and len(got[0][1]) == 2 + 3 + 4


class _Rollback(Exception):
    pass
