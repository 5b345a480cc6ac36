"""EDI intake's light orders (issue #13 D5): a set read whole by the fast path is handed to
intake as plain values (``fast850.LightOrder``), not as pydantic models, and intake stores
them as they are. What intake reads of them must be exactly what it reads of the model the
stream would have given: every value it stores (with its type), the JSON the store keeps of
the order and of each line (byte for byte), after intake sets ``customer_id`` and the
message id as it does; and the model built from the record is that model, field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_x12_fast850 import NOW, _clean_set, _interchange, mutated_files
from tests_support import _same_model, examples

from orderflow.channels.x12 import FastSet, TransactionResult, X12Stream, fast850

RECEIVED = [
    NOW,
    datetime(2026, 11, 28, 9, 30, 1, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    None,
]
# values that need JSON escapes (or look like they might): the record's own JSON route
_ODD = ['SAY "HI"', "C:\\DIR\\", "a/b", "\U0001f600 x", "x\u2028y", "\u00e9t\u00e9"]


def _rows(o) -> tuple:
    """What ``store.intake.insert_orders`` and ``intake.core`` read of an order, in order."""
    p = o.provenance
    return (
        o.order_id,
        p.channel.value,
        p.partner_id,
        o.customer_id,
        o.po_number,
        o.ship_to.party_id if o.ship_to else None,
        o.currency,
        o.total,
        o.requested_ship_date,
        p.received_at,
        o.model_dump_json(),
        p.transaction_control_number,
        p.message_id,
        len(o.lines),
        [
            (
                ln.line_no,
                ln.item_id,
                ln.customer_part_number,
                ln.quantity,
                ln.uom,
                ln.unit_price,
                ln.model_dump_json(),
            )
            for ln in o.lines
        ],
    )


def _same(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{k}]")
    else:
        assert a == b, where
        assert str(a) == str(b), where  # Decimal("2") == Decimal("2.0"), stored differently


def _check(data: bytes, received_at: datetime | None = NOW) -> int:
    """Read ``data`` with light orders and without; every set read whole gives the same rows
    and models. Returns how many sets were read whole."""
    kw = {"received_at": received_at, "source_ref": 'drop/BUYER/"po".x12', "partner_id": "BUYER"}
    light = list(X12Stream(data, light_orders=True, **kw))
    full = list(X12Stream(data, **kw))
    assert len(light) == len(full)
    # without received_at, each read stamps its own acknowledgments with the time
    return _check_pairs(light, full, stamped=received_at is None)


def _check_pairs(light: list, full: list, stamped: bool = False) -> int:
    read_whole = 0
    for k, (a, b) in enumerate(zip(light, full, strict=True)):
        if type(a) is not FastSet:
            if not stamped:
                assert a.model_dump_json() == b.model_dump_json(), k
            continue
        read_whole += 1
        assert type(b) is TransactionResult
        assert a.control == b.control_number
        o, m = a.order, b.order
        if stamped:  # received_at None: the record and the model carry their own None
            assert o.provenance.received_at is m.provenance.received_at is None
        _same_model(a.result, b, f"set {k}")  # the result built from the record
        _same(_rows(o), _rows(m), f"set {k}")
        for customer, message_id in (("CUST-1", 7), ('C"\\1', 2**63 - 1), (None, None)):
            o.customer_id = o.customer_id or customer  # as intake sets them
            m.customer_id = m.customer_id or customer
            o.provenance.message_id = message_id
            m.provenance.message_id = message_id
            _same(_rows(o), _rows(m), f"set {k}, customer {customer}")
            _same_model(o.to_model(), m, f"set {k} to_model")
    return read_whole


@pytest.mark.parametrize("received_at", RECEIVED, ids=["utc", "offset-micros", "none"])
def test_the_benchmark_shapes_give_the_same_rows(received_at):
    sets = [
        ["BEG*00*SA*PO1**20261128", "N1*ST*STORE 12*92*0012", "PO1*1*2*EA*1.50*PE*BP*P1", "CTT*1"],
        [
            "BEG*00*SA*PO2**20261128",
            "DTM*002*20261205",
            "N1*ST*STORE 12*92*0012",
            "N3*1200 INDUSTRIAL PKWY",
            "N4*SPRINGFIELD*IL*62701*US",
            *[
                s
                for k in range(1, 6)
                for s in (f"PO1*{k}*2*EA*1.50*PE*BP*PART{k:07d}", f"PID*F****WIDGET {k}")
            ],
            "CTT*5",
        ],
    ]
    assert _check(_interchange(sets), received_at) == 2


@pytest.mark.parametrize("odd", _ODD)
def test_values_that_need_json_escapes(odd):
    body = [
        f"BEG*00*SA*{odd}**20261128*{odd}",
        f"REF*IA*{odd}",
        f"PER*BD*{odd}*TE*555",
        f"N1*ST*{odd}*92*{odd}",
        f"N2*{odd}*{odd}",
        f"N3*{odd}",
        f"N4*{odd}*IL*62701*US",
        f"PO1*{odd}*2*EA*1.5*PE*BP*{odd}*VN*{odd}",
        f"PID*F****{odd}",
        "PO4*12*1.5*LB*BOX",
        "CTT*1",
    ]
    assert _check(_interchange([body])) == 1


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(_clean_set(edges=True), min_size=1, max_size=3),
    st.sampled_from(RECEIVED[:2]),
)
def test_clean_sets_give_the_same_rows(sets, received_at):
    _check(_interchange(sets), received_at)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_mutated_sets_give_the_same_rows_and_events(data):
    _check(data)


def test_light_orders_are_only_for_the_fast_path():
    """Without the fast path, light orders change nothing: every set is a TransactionResult."""
    data = _interchange([["BEG*00*SA*PO1**20261128", "PO1*1*2*EA*1.50*PE*BP*P1", "CTT*1"]])
    fast850.ENABLED = False
    try:
        events = list(X12Stream(data, light_orders=True, received_at=NOW))
    finally:
        fast850.ENABLED = True
    assert not any(type(e) is FastSet for e in events)
    assert sum(type(e) is TransactionResult for e in events) == 1


def test_the_total_bound_is_still_checked():
    """Lines whose quantity × price could reach numeric(14, 2) get the exact sum: a total at
    the bound is left to the slow path (the model refuses it), one below is read whole."""
    over = ["BEG*00*SA*PO1**20261128", "PO1*1*99999999999*EA*9999*PE", "CTT*1"]
    under = ["BEG*00*SA*PO1**20261128", "PO1*1*9999999*EA*9999*PE", "CTT*1"]
    assert _check(_interchange([over])) == 0
    assert _check(_interchange([under])) == 1


def test_received_at_is_each_orders_own_utc():
    when = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    data = _interchange([["BEG*00*SA*PO1**20261128", "PO1*1*2*EA", "CTT*1"]])
    (fast,) = [
        e for e in X12Stream(data, light_orders=True, received_at=when) if type(e) is FastSet
    ]
    assert '"received_at":"2026-12-06T08:00:00Z"' in fast.order.model_dump_json()
