"""``store.outbox.deferred``: enqueues on a connection collected and queued in one statement
at the end of the block — the same rows, in the same order, keys already queued skipped;
nothing queued when the block fails; other connections unaffected."""

import uuid

import pytest

from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db]


def _rows(conn, prefix: str) -> list[tuple]:
    return conn.execute(
        "SELECT idempotency_key, order_id, action, version, target_conn_id, payload, status "
        "FROM orderflow.outbox WHERE idempotency_key LIKE %s ORDER BY outbox_id",
        (prefix + "%",),
    ).fetchall()


def _queue_all(conn, prefix: str) -> None:
    outbox_store.enqueue(
        conn,
        idempotency_key=f"{prefix}a",
        action="email",
        target_conn_id="smtp_default",
        payload={"to": "x@example.com", "n": 1},
    )
    outbox_store.enqueue(
        conn,
        idempotency_key=f"{prefix}b",
        action="webhook",
        target_conn_id="portal_default",
        payload={"event": "order_confirmed", "data": {"q": "1.5"}},
        order_id=None,
        version=3,
    )
    outbox_store.enqueue(  # the same key again: skipped, as one at a time skips it
        conn,
        idempotency_key=f"{prefix}a",
        action="email",
        target_conn_id="smtp_default",
        payload={"to": "other@example.com"},
    )
    outbox_store.enqueue(
        conn,
        idempotency_key=f"{prefix}c",
        action="email",
        target_conn_id="smtp_default",
        payload={"to": "y@example.com"},
    )


def test_deferred_enqueues_are_the_rows_one_at_a_time_queues(store):
    one, many = f"def-{uuid.uuid4().hex[:6]}-", f"def-{uuid.uuid4().hex[:6]}-"
    with db.transaction(store):
        _queue_all(store, one)
    with db.transaction(store):
        with outbox_store.deferred(store):
            _queue_all(store, many)
            assert _rows(store, many) == []  # collected, not queued yet
        assert len(_rows(store, many)) == 3
    strip = lambda rows, p: [(r[0].removeprefix(p), *r[1:]) for r in rows]  # noqa: E731
    assert strip(_rows(store, many), many) == strip(_rows(store, one), one)


def test_a_failing_block_queues_nothing_and_other_connections_are_not_collected(store):
    prefix = f"def-{uuid.uuid4().hex[:6]}-"
    other = db.connect()
    try:
        with pytest.raises(RuntimeError), db.transaction(store), outbox_store.deferred(store):
            with db.transaction(other):
                assert outbox_store.enqueue(
                    other,
                    idempotency_key=f"{prefix}other",
                    action="email",
                    target_conn_id="smtp_default",
                    payload={},
                )
            _queue_all(store, prefix)
            raise RuntimeError
        assert [r[0] for r in _rows(store, prefix)] == [f"{prefix}other"]
    finally:
        other.close()
