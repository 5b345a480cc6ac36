"""#12 part 5: outbound X12 control numbers under real parallelism.

``release_to_wms`` partitions run in parallel, each in one transaction, and a partition
queues an 855 for every EDI order it releases — through ``outbound.queue_x12``, which takes
the partner's next control number. When the number was a row of ``control_number`` updated
in the caller's transaction, a partition held the row of every partner it had queued for
until it committed: two partitions meeting the same partners in different orders waited on
each other (``DeadlockDetected … relation "control_number"``). Numbers now come from one
sequence per partner, which no transaction holds.

These tests run real threads, each with its own connection and transaction, on the real
store. Every number stays unique per partner (ISA13 / GS06 / ST02); a rolled-back
transaction may leave a gap, which X12 allows.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter, defaultdict
from decimal import Decimal

import psycopg
import pytest

from orderflow import outbound
from orderflow.channels.x12.po855 import AckLine, build_855
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.store import control_numbers, db, intake

pytestmark = [pytest.mark.db]


def _partners(conn, tag: str, n: int) -> list[str]:
    ids = [f"TP-CN-{tag}-{i}" for i in range(n)]
    with db.transaction(conn):
        for i, pid in enumerate(ids):
            conn.execute(
                "INSERT INTO orderflow.trading_partner (partner_id, isa_qualifier, isa_id, "
                "gs_id, x12_version) VALUES (%s, 'ZZ', %s, %s, '004010')",
                (pid, f"CN{tag}{i}", f"CN{tag}{i}"),
            )
    return ids


def _orders(conn, tag: str, partners: list[str], per_partner: int) -> dict[str, list[Order]]:
    out: dict[str, list[Order]] = defaultdict(list)
    for pid in partners:
        for k in range(per_partner):
            out[pid].append(
                Order(
                    order_id=f"O-CN-{tag}-{pid[-1]}-{k}",
                    po_number=f"PO-{tag}-{pid[-1]}-{k}",
                    customer_id=f"C-{pid}",
                    ship_to=Address(name="Dock 4", party_id="ST1", country="US"),
                    lines=[
                        OrderLine(
                            line_no=1,
                            item_id="ITM-1",
                            quantity=Decimal(3),
                            uom="EA",
                            unit_price="2.50",
                        )
                    ],
                    provenance=Provenance(channel=Channel.EDI, partner_id=pid),
                )
            )
    with db.transaction(conn):
        intake.insert_orders(
            conn, [o for os_ in out.values() for o in os_], message_id=None, actor_id="test"
        )
    return out


def _queue_855(conn, order: Order) -> bool:
    line = order.lines[0]
    return outbound.queue_x12(
        conn,
        partner_id=order.provenance.partner_id,
        kind="855",
        functional_id="PR",
        key=f"edi_855:{order.order_id}:r1",
        build=lambda env: build_855(
            order, [AckLine(1, "accepted", line.quantity, line.uom, Decimal("2.50"))], **env
        ),
        order_id=order.order_id,
    )


def _numbers(conn, partners: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for pid, isa, gs, sts in conn.execute(
        "SELECT partner_id, interchange_control_number, group_control_number, "
        "set_control_numbers FROM orderflow.outbound_document WHERE partner_id = ANY(%s)",
        (partners,),
    ):
        assert int(isa) == int(gs)  # one interchange, one group per document
        assert len(sts) == 1
        out[pid].append(int(isa))
    return out


def _run_threads(target, args_per_thread) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(*args):
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=a) for a in args_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread is still waiting on a lock"
    return errors


def test_partitions_meeting_the_same_partners_in_different_orders_never_deadlock(store):
    """Four partitions, four partners: partition i queues its first 855 for partner i, waits
    until every partition has queued one, then goes round the others (i+1, i+2, …) — the
    cycle that deadlocked when each transaction held its partners' counter rows."""
    tag = uuid.uuid4().hex[:6].upper()
    n = 4
    partners = _partners(store, tag, n)
    orders = _orders(store, tag, partners, per_partner=n)
    barrier = threading.Barrier(n, timeout=30)

    def partition(i: int) -> None:
        conn = db.connect()
        try:
            with db.transaction(conn):
                for step in range(n):
                    pid = partners[(i + step) % n]
                    assert _queue_855(conn, orders[pid][i])
                    if step == 0:
                        barrier.wait()  # every partition now holds whatever its first 855 took
        finally:
            conn.close()

    errors = _run_threads(partition, [(i,) for i in range(n)])
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    numbers = _numbers(store, partners)
    for pid in partners:
        assert len(numbers[pid]) == n
        assert len(set(numbers[pid])) == n, (pid, numbers[pid])  # unique per partner


def test_many_parallel_partitions_of_the_same_partners_queue_unique_numbers(store):
    """Eight partitions, each one transaction queueing 855s for three partners interleaved
    in its own order (forwards, backwards, shuffled); one partition of every four rolls back
    at the end. Everything committed is there once, every number is unique per partner, and
    the numbers the rollbacks took are simply never used (gaps, as X12 allows)."""
    import random

    tag = uuid.uuid4().hex[:6].upper()
    partitions, per = 8, 12
    partners = _partners(store, tag, 3)
    orders = _orders(store, tag, partners, per_partner=partitions * per // len(partners))
    pool = [o for p in partners for o in orders[p]]
    rng = random.Random(7)
    rng.shuffle(pool)
    chunks = [pool[i::partitions] for i in range(partitions)]
    for i, chunk in enumerate(chunks):
        if i % 2:
            chunk.reverse()
    start = threading.Barrier(partitions, timeout=30)

    class Rollback(Exception):
        pass

    def partition(i: int, chunk: list[Order]) -> None:
        conn = db.connect()
        try:
            start.wait()
            with db.transaction(conn):
                for order in chunk:
                    assert _queue_855(conn, order)
                if i % 4 == 3:
                    raise Rollback
        except Rollback:
            pass
        finally:
            conn.close()

    errors = _run_threads(partition, list(enumerate(chunks)))
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    committed = {o.order_id for i, c in enumerate(chunks) if i % 4 != 3 for o in c}
    queued = {
        r[0]
        for r in store.execute(
            "SELECT order_id FROM orderflow.outbound_document WHERE partner_id = ANY(%s)",
            (partners,),
        )
    }
    assert queued == committed
    numbers = _numbers(store, partners)
    for pid in partners:
        dupes = [n for n, c in Counter(numbers[pid]).items() if c > 1]
        assert not dupes, (pid, dupes)
    # the body sent is the envelope recorded: ISA13 of the queued 855 is its number
    for key, body, isa in store.execute(
        "SELECT d.idempotency_key, o.payload->>'body', d.interchange_control_number "
        "FROM orderflow.outbound_document d JOIN orderflow.outbox o USING (idempotency_key) "
        "WHERE d.partner_id = ANY(%s)",
        (partners,),
    ):
        assert body.split("*")[13] == f"{int(isa):09d}", key


def test_numbers_continue_per_partner_and_wrap_after_nine_digits(store):
    tag = uuid.uuid4().hex[:6].upper()
    a, b = _partners(store, tag, 2)
    first = [control_numbers.next_number(store, a) for _ in range(3)]
    assert first == [first[0], first[0] + 1, first[0] + 2]
    assert control_numbers.next_number(store, b) == 1  # each partner counts on its own
    # a partner unknown to trading_partner (e.g. a 997 to a folder's partner) gets its own
    assert control_numbers.next_number(store, f"UNLISTED-{tag}") == 1
    assert control_numbers.next_number(store, f"UNLISTED-{tag}") == 2
    # ISA13 is nine digits: after 999999999 comes 1
    control_numbers.restart(store, a, control_numbers.ISA_MAX)
    assert control_numbers.next_number(store, a) == control_numbers.ISA_MAX
    assert control_numbers.next_number(store, a) == 1


def test_a_number_is_taken_even_when_the_transaction_rolls_back(store):
    tag = uuid.uuid4().hex[:6].upper()
    (a,) = _partners(store, tag, 1)
    with pytest.raises(psycopg.errors.DivisionByZero), db.transaction(store):
        assert control_numbers.next_number(store, a) == 1
        store.execute("SELECT 1 / 0")
    assert control_numbers.next_number(store, a) == 2  # a gap, never a reuse


def _doc(order: Order, key_suffix: str = "r1") -> dict:
    line = order.lines[0]
    return dict(
        partner_id=order.provenance.partner_id,
        kind="855",
        functional_id="PR",
        key=f"edi_855:{order.order_id}:{key_suffix}",
        build=lambda env: build_855(
            order, [AckLine(1, "accepted", line.quantity, line.uom, Decimal("2.50"))], **env
        ),
        order_id=order.order_id,
    )


def _queued(conn, partners: list[str]) -> list[tuple]:
    """What was queued for the partners, as the store keeps it (clock fields left out)."""
    import re

    rows = conn.execute(
        "SELECT d.idempotency_key, d.partner_id, d.document_type, d.functional_id, "
        "d.interchange_control_number, d.group_control_number, d.set_control_numbers, "
        "d.order_id, d.shipment_id, d.version, o.action, o.target_conn_id, o.order_id, "
        "o.version, (o.payload - 'body')::text, o.payload->>'body' "
        "FROM orderflow.outbound_document d JOIN orderflow.outbox o USING (idempotency_key) "
        "WHERE d.partner_id = ANY(%s) ORDER BY o.outbox_id",
        (partners,),
    ).fetchall()
    clock = re.compile(r"\*\d{6}\*\d{4}\*|\*\d{8}\*\d{4}\*")
    return [(*r[:-1], clock.sub("*T*", r[-1])) for r in rows]


def test_many_documents_queued_at_once_are_queued_as_one_at_a_time_queues_them(store):
    """``queue_x12_many`` (the release stage's 855s): the same rows, bodies, control numbers
    and outbox order as ``queue_x12`` document by document — partners interleaved, a key
    already queued skipped, the same key twice queued once, a partner without an envelope
    left out — and a rerun queues nothing."""
    one_tag, many_tag = uuid.uuid4().hex[:6].upper(), uuid.uuid4().hex[:6].upper()
    results = {}
    for tag, at_once in ((one_tag, False), (many_tag, True)):
        partners = _partners(store, tag, 3)
        orders = _orders(store, tag, partners, per_partner=3)
        docs = [_doc(orders[p][k]) for k in range(3) for p in partners]  # interleaved
        docs.insert(4, docs[1])  # the same key twice
        missing = orders[partners[0]][0].model_copy(
            update={"provenance": Provenance(channel=Channel.EDI, partner_id=f"NONE-{tag}")}
        )
        docs.append(_doc(missing, "r2"))
        with db.transaction(store):
            assert _queue_855(store, orders[partners[2]][0])  # queued earlier: skipped
            control_numbers.next_number(store, partners[1])  # numbers do not start at 1
            if at_once:
                assert outbound.queue_x12_many(store, docs) == 8
                assert outbound.queue_x12_many(store, docs) == 0  # a rerun
            else:
                assert sum(outbound.queue_x12(store, **d) for d in docs) == 8
                assert sum(outbound.queue_x12(store, **d) for d in docs) == 0
        got = _queued(store, partners)
        results[at_once] = [
            tuple(str(v).replace(tag, "TAG") if isinstance(v, str) else v for v in row)
            for row in got
        ]
    assert len(results[True]) == 9
    assert results[True] == results[False]
    with db.transaction(store):
        assert outbound.queue_x12_many(store, []) == 0


def test_numbers_taken_at_once_are_the_ones_taken_one_at_a_time(store):
    tag = uuid.uuid4().hex[:6].upper()
    a, b = _partners(store, tag, 2)
    assert control_numbers.next_numbers(store, a, 3) == [1, 2, 3]
    assert control_numbers.next_numbers(store, a, 0) == []
    assert control_numbers.next_number(store, a) == 4
    # over the nine-digit limit: wraps to 1 in the same place as one at a time
    control_numbers.restart(store, b, control_numbers.ISA_MAX - 1)
    assert control_numbers.next_numbers(store, b, 4) == [
        control_numbers.ISA_MAX - 1,
        control_numbers.ISA_MAX,
        1,
        2,
    ]
    # a partner without a sequence yet: created by the first
    assert control_numbers.next_numbers(store, f"UNLISTED-{tag}", 2) == [1, 2]
