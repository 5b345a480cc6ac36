"""The outbox under failures of our own, through the real sender and the sandbox:

1. the WMS accepts a release but answers with a release id another shipment already carries
   (the sandbox's ``reuse_id_rate`` fault): the row is recorded as sent, the follow-up is a
   typed dead letter with an exception on the order's desk, and every other row of the same
   run is sent; after the fix the follow-up is replayed once;
2. a malformed row (an unexpected error, not an HTTP one) counts toward its attempts and
   does not stop the rows behind it;
3. a send task that claimed rows and sent none of them fails visibly (no silent success);
4. an e-mail interrupted mid-send is never sent blindly again: it becomes ``unknown`` and
   waits for a person; a keyed row interrupted the same way is sent again and the receiver
   answers by key (one delivery); at stack start every stale lease is expired.
"""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb
from test_fulfilment_store import released_order
from test_processing_store import shared_master_data  # noqa: F401 (autouse fixture)

from orderflow import rules
from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch, tmp_path):
    roles = tmp_path / "roles.yaml"  # who may override a side effect here
    roles.write_text("users:\n  wms-team@example: [integration]\n  cs@example: [integration]\n")
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(roles))
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []}).raise_for_status()
    yield
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []}).raise_for_status()


def _stock(sandbox, n: int) -> list[tuple[str, str]]:
    """(item, DC) pairs the sandbox WMS has plenty of."""
    rows = sandbox.client.get("/wms/inventory").json()["items"]
    good = [(r["item_id"], r["dc_id"]) for r in rows if r["on_hand"] - r.get("reserved", 0) > 50]
    assert len(good) >= n
    return good[:n]


def _releases(store, book, sandbox, n: int) -> list[tuple[str, str]]:
    """``n`` released orders whose queued WMS release names stock the sandbox WMS has:
    (order id, shipment id)."""
    out = []
    for item, dc in _stock(sandbox, n):
        r = released_order(store, book, link=False)
        with db.transaction(store):
            store.execute(
                "UPDATE orderflow.outbox SET payload = payload || %s "
                "WHERE order_id = %s AND action = 'wms_release'",
                (
                    Jsonb(
                        {
                            "dc_id": dc,
                            "lines": [{"line_no": 1, "item_id": item, "quantity": 1}],
                        }
                    ),
                    r.order_id,
                ),
            )
        out.append((r.order_id, r.shipment_id))
    return out


def _only_due(store, order_ids: list[str], actions: list[str]) -> None:
    """Rows of earlier tests (other orders) wait: this test's run sees only its own."""
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() + interval '1 day' "
        "WHERE action = ANY(%s) AND status IN ('pending', 'failed') "
        "AND (order_id IS NULL OR NOT (order_id = ANY(%s)))",
        (actions, order_ids),
    )


def _row(store, key_like: str) -> dict:
    cur = store.execute(
        "SELECT idempotency_key, status, attempts, last_error, followup_status, "
        "followup_attempts, followup_error, response FROM orderflow.outbox "
        "WHERE idempotency_key LIKE %s",
        (key_like,),
    )
    names = [c.name for c in cur.description]
    (row,) = cur.fetchall()
    return dict(zip(names, row, strict=True))


def _queue_997(store, key: str, partner: str, payload: dict | None = None) -> None:
    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key=key,
            action="edi_997",
            target_conn_id="edi_default",
            payload=payload or {"partner_id": partner, "document_type": "997", "body": "ISA*~"},
        )


def test_a_failing_follow_up_leaves_the_send_recorded_and_the_rest_of_the_run_sent(
    store, book, sandbox
):
    (a, sa), (b, sb), (c, sc) = _releases(store, book, sandbox, 3)
    _only_due(store, [a], ["wms_release"])
    assert outbox.send_due(store, ["wms_release"]) == {"sent": 1}
    first_id = store.execute(
        "SELECT wms_release_id FROM orderflow.shipment WHERE shipment_id = %s", (sa,)
    ).fetchone()[0]
    assert first_id

    # The WMS lost its counter: every new release is answered with the first release's id.
    sandbox.client.put(
        "/admin/faults",
        json={"seed": 5, "rules": [{"prefix": "/wms/releases", "reuse_id_rate": 1.0}]},
    ).raise_for_status()
    store.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() "
        "WHERE order_id = ANY(%s) AND action = 'wms_release'",
        ([b, c],),
    )
    _queue_997(store, "of1:997", "P-OF1")
    res = outbox.send(store, ["wms_release", "edi_997"])
    assert (res.claimed, res.sent, res.retry, res.dead) == (3, 3, 0, 0)
    assert res.followup_dead == 2  # a constraint the answer violates: no blind retries

    for oid, sid in ((b, sb), (c, sc)):
        row = _row(store, f"wms_release:{oid}:%")
        assert row["status"] == "sent" and row["response"]["release_id"] == first_id
        assert row["followup_status"] == "dead"
        assert "UniqueViolation" in row["followup_error"]
        assert (
            store.execute(
                "SELECT wms_release_id FROM orderflow.shipment WHERE shipment_id = %s", (sid,)
            ).fetchone()[0]
            is None
        )
        letter = store.execute(
            "SELECT payload->>'action', error FROM orderflow.dead_letter "
            "WHERE source = 'outbox_followup' AND source_ref = %s",
            (row["idempotency_key"],),
        ).fetchone()
        assert letter[0] == "wms_release" and "UniqueViolation" in letter[1]
        exc = store.execute(
            "SELECT owner_role, details->>'kind', reason FROM orderflow.order_exception "
            "WHERE order_id = %s AND category = 'integration_failure' AND status = 'open'",
            (oid,),
        ).fetchone()
        assert exc[:2] == ("integration", "outbox_followup")
        assert "accepted by the receiver" in exc[2]
    assert _row(store, "of1:997")["status"] == "sent"
    assert (
        len(sandbox.client.get("/edi/outbound", params={"partner_id": "P-OF1"}).json()["items"])
        == 1
    )

    # Nothing is claimed again and nothing is sent twice on the next runs.
    assert outbox.send_due(store, ["wms_release", "edi_997"]) == {}

    # The WMS team says the first shipment carried the wrong id: clear it, replay B's follow-up.
    store.execute(
        "UPDATE orderflow.shipment SET wms_release_id = NULL WHERE shipment_id = %s", (sa,)
    )
    key_b = _row(store, f"wms_release:{b}:%")["idempotency_key"]
    assert outbox.replay_followup(store, key_b, actor="wms-team@example", reason="id confirmed")
    assert outbox.replay_followup(store, key_b, actor="wms-team@example", reason="again") is False
    assert outbox.send_due(store, ["wms_release"]) == {"followup_done": 1}
    assert (
        store.execute(
            "SELECT wms_release_id FROM orderflow.shipment WHERE shipment_id = %s", (sb,)
        ).fetchone()[0]
        == first_id
    )
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.audit_log WHERE object_type = 'outbox' AND object_id = %s",
            (key_b,),
        ).fetchone()[0]
        == 1
    )


def test_an_unexpected_error_in_one_row_counts_and_does_not_block_the_rows_behind_it(
    store, sandbox
):
    _only_due(store, [], ["edi_997"])
    _queue_997(store, "of2:bad", "P-OF2", payload={"document_type": "997", "body": "ISA*~"})
    _queue_997(store, "of2:good", "P-OF2")
    res = outbox.send(store, ["edi_997"])
    assert (res.claimed, res.sent, res.retry) == (2, 1, 1)
    bad = _row(store, "of2:bad")
    assert (bad["status"], bad["attempts"]) == ("failed", 1)
    assert bad["last_error"] == "KeyError: 'partner_id'"
    assert res.errors == ("of2:bad: KeyError: 'partner_id'",)
    assert _row(store, "of2:good")["status"] == "sent"
    # its retries are counted, and it is dead-lettered when the budget is spent
    for _ in range(outbox.MAX_ATTEMPTS - 1):
        store.execute(
            "UPDATE orderflow.outbox SET next_attempt_at = now() WHERE idempotency_key = 'of2:bad'"
        )
        outbox.send_due(store, ["edi_997"])
    bad = _row(store, "of2:bad")
    assert (bad["status"], bad["attempts"]) == ("dead", outbox.MAX_ATTEMPTS)


def test_a_send_task_that_sent_nothing_of_what_it_claimed_fails(store, sandbox):
    from airflow.sdk.exceptions import AirflowFailException

    from orderflow.operators.outbox import SendOutboxOperator

    _only_due(store, [], ["edi_997"])
    _queue_997(store, "of3:997", "P-OF3")
    sandbox.client.put(
        "/admin/faults", json={"seed": 5, "rules": [{"prefix": "/edi", "error_rate": 1.0}]}
    ).raise_for_status()
    op = SendOutboxOperator(task_id="send", actions=["edi_997"])
    with pytest.raises(AirflowFailException, match="sent none of the 1 outbox rows"):
        op.execute({})
    assert _row(store, "of3:997")["status"] == "failed"
    # nothing claimed (backing off): the task has nothing to report and succeeds
    assert op.execute({}) == {}


def test_an_interrupted_email_is_never_sent_blindly_and_a_keyed_row_is_asked_again(store, sandbox):
    for action in ("email", "edi_997"):
        _only_due(store, [], [action])
    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key="email:of4:shipped",
            action="email",
            target_conn_id="smtp_default",
            payload={
                "to": "buyer-of4@example.com",
                "subject": "OF4 shipped",
                "html": "<p>shipped</p>",
                "message_id": "<of4@orderflow.local>",
                "event": "shipment_shipped",
            },
        )
    _queue_997(store, "of4:997", "P-OF4")
    # A sender takes both, hands the e-mail to the relay and the 997 to the gateway, then is
    # killed before recording either (the state a SIGKILL leaves: 'sending', lease running).
    claimed = {r[1]: r for r in outbox.claim(store, ["email", "edi_997"])}
    store.execute(
        "UPDATE orderflow.outbox SET send_started_at = now() WHERE idempotency_key = %s",
        ("email:of4:shipped",),
    )
    registry = outbox._registry()
    registry["email"]("smtp_default", claimed["email:of4:shipped"][4], "email:of4:shipped")
    registry["edi_997"]("edi_default", claimed["of4:997"][4], "of4:997")

    # The stack restarts: stale leases expire; the e-mail is settled as unknown, not resent.
    assert outbox.expire_leases(store) == 2
    assert outbox.send_due(store, ["email", "edi_997"]) == {"sent": 1}
    mail = sandbox.client.get("/mail/messages", params={"to": "buyer-of4@example.com"}).json()
    assert len(mail["items"]) == 1
    assert (
        len(sandbox.client.get("/edi/outbound", params={"partner_id": "P-OF4"}).json()["items"])
        == 1
    )
    row = _row(store, "email:of4:shipped")
    assert row["status"] == "unknown" and "cannot tell" in row["last_error"]
    assert (
        store.execute(
            "SELECT error FROM orderflow.dead_letter WHERE source = 'outbox' AND source_ref = %s",
            ("email:of4:shipped",),
        )
        .fetchone()[0]
        .startswith("outbox.ambiguous")
    )
    assert outbox.send_due(store, ["email"]) == {}  # still nothing sent blindly

    # A person saw it in the relay's log: record it as sent (audited).
    assert outbox.settle(
        store, "email:of4:shipped", "cs@example", resend=False, reason="in relay log"
    )
    assert _row(store, "email:of4:shipped")["status"] == "sent"
    assert outbox.settle(store, "email:of4:shipped", "cs@example", resend=True, reason="x") is False
    assert (
        len(
            sandbox.client.get("/mail/messages", params={"to": "buyer-of4@example.com"}).json()[
                "items"
            ]
        )
        == 1
    )


def test_a_receiver_that_answers_no_is_an_answer_not_a_failed_task(store, sandbox):
    from orderflow.operators.outbox import SendOutboxOperator

    _only_due(store, [], ["edi_997"])
    # the gateway already holds another document under this key: it refuses ours (4xx)
    outbox._registry()["edi_997"](
        "edi_default", {"partner_id": "P-OF6", "document_type": "997", "body": "ISA*A~"}, "of6:997"
    )
    _queue_997(store, "of6:997", "P-OF6")
    op = SendOutboxOperator(task_id="send", actions=["edi_997"])
    assert op.execute({}) == {"dead": 1}  # decided and dead-lettered; the task succeeds
    row = _row(store, "of6:997")
    assert row["status"] == "dead" and row["attempts"] == 1


def test_an_armed_reuse_fault_hits_exactly_the_next_new_releases(store, book, sandbox):
    """The soak's deterministic form of the fault: the next N new releases, whenever they
    come, are answered with an id given out before; the sandbox lists each hit."""
    pairs = _releases(store, book, sandbox, 3)
    ids = [oid for oid, _ in pairs]
    _only_due(store, ids, ["wms_release"])
    assert outbox.send_due(store, ["wms_release"], limit=1) == {"sent": 1}  # the first: own id
    armed = sandbox.client.post("/admin/faults/reuse-release-ids", json={"count": 1})
    assert armed.json()["armed"] == 1
    res = outbox.send(store, ["wms_release"])
    assert (res.sent, res.followup_dead) == (2, 1)  # one hit, the other its own id
    state = sandbox.client.get("/admin/faults/reuse-release-ids").json()
    assert state["armed"] == 0
    (hit,) = [h for h in state["hits"] if h["order_id"] in ids]
    row = _row(store, hit["key"])
    assert (row["status"], row["followup_status"]) == ("sent", "dead")
    assert row["response"]["release_id"] == hit["answered"]
    others = [oid for oid in ids if oid != hit["order_id"]]
    for oid in others:
        assert _row(store, f"wms_release:{oid}:%")["followup_status"] == "done"
    sandbox.client.post("/admin/faults/reuse-release-ids", json={"count": 0})


# ---------------------------------------------------------------------------- refused releases
def _refuse_next(store, order_ids: list[str]) -> None:
    """The WMS cannot cover these releases: far more than any position holds."""
    store.execute(
        "UPDATE orderflow.outbox SET payload = jsonb_set(payload, '{lines,0,quantity}', "
        "'1000000'::jsonb), next_attempt_at = now() "
        "WHERE order_id = ANY(%s) AND action = 'wms_release'",
        (order_ids,),
    )


def _status(store, order_id: str) -> str:
    return store.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


def test_a_release_the_wms_cannot_cover_sends_the_order_round_again(store, book, sandbox):
    (oid, sid), (other, _) = _releases(store, book, sandbox, 2)
    _only_due(store, [oid, other], ["wms_release"])
    _refuse_next(store, [oid])
    res = outbox.send(store, ["wms_release"])
    assert (res.sent, res.dead, res.rejected) == (1, 1, 1)  # the other order is unaffected
    row = _row(store, f"wms_release:{oid}:%")
    assert row["status"] == "dead" and "409" in row["last_error"]
    # not stuck: processed again from the start, its stock given back, the letter handled
    assert _status(store, oid) == "RECEIVED"
    assert _status(store, other) == "RELEASED"
    assert store.execute(
        "SELECT status FROM orderflow.shipment WHERE shipment_id = %s", (sid,)
    ).fetchone() == ("cancelled",)
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.reservation WHERE order_id = %s "
            "AND status IN ('held', 'released')",
            (oid,),
        ).fetchone()[0]
        == 0
    )
    event = store.execute(
        "SELECT reason_codes, actor_id FROM orderflow.order_event WHERE order_id = %s "
        "ORDER BY event_id DESC LIMIT 1",
        (oid,),
    ).fetchone()
    assert event == (["wms_refused_release"], "orderflow.release_refusals")
    handled = store.execute(
        "SELECT replayed_by FROM orderflow.dead_letter WHERE source = 'outbox' AND source_ref = %s",
        (row["idempotency_key"],),
    ).fetchone()[0]
    assert handled == "orderflow.release_refusals (reprocess)"
    # its next release carries the next version: a new key, never the refused one
    version = store.execute(
        'SELECT release_version FROM orderflow."order" WHERE order_id = %s', (oid,)
    ).fetchone()[0]
    assert row["idempotency_key"].endswith(f":r{version}")


def test_a_refused_part_of_a_split_order_waits_as_a_backorder(store, book, sandbox):
    (oid, sid), (_, _) = _releases(store, book, sandbox, 2)
    # the order has a second shipment the WMS already accepted (a split across DCs)
    store.execute(
        "INSERT INTO orderflow.shipment (shipment_id, order_id, dc_id, release_version, "
        "carrier_id, service_code, mode, weight_kg, freight_rate, ship_date, promise_met, "
        "status) SELECT shipment_id || '-W', order_id, 'DC-WEST', release_version, carrier_id, "
        "service_code, mode, weight_kg, freight_rate, ship_date, promise_met, 'released' "
        "FROM orderflow.shipment WHERE shipment_id = %s",
        (sid,),
    )
    _only_due(store, [oid], ["wms_release"])
    _refuse_next(store, [oid])
    res = outbox.send(store, ["wms_release"])
    assert (res.dead, res.rejected) == (1, 1)
    assert _status(store, oid) == "RELEASED"
    line = store.execute(
        "SELECT backordered_qty, status FROM orderflow.order_line WHERE order_id = %s "
        "AND line_no = 1",
        (oid,),
    ).fetchone()
    assert line == (1000000, "BACKORDERED")
    audit = store.execute(
        "SELECT action FROM orderflow.audit_log WHERE object_type = 'order' AND object_id = %s",
        (oid,),
    ).fetchall()
    assert ("wms_release_refused_backordered",) in audit


_SEND_IN_A_PROCESS = """
from orderflow.integrations import outbox
from orderflow.store import db
outbox.send(db.connect(), ["wms_release"], limit=500)
"""


def test_a_sender_killed_mid_batch_leaves_at_most_two_slices_sent_but_unrecorded(
    store, book, sandbox
):
    """The set-based sender records its batched sends a slice (``RECORD_EVERY_BATCHED``
    rows: the WMS takes releases in one request) at a time, and sends the next slice while
    it records one: a worker SIGKILLed in the middle of a run leaves at most those two
    slices at the WMS without being recorded (``SENT_UNRECORDED_MAX``; sent again by key
    after the lease), never more (a soak once found 200 such rows in a sender that recorded
    a whole claim of several requests at its end). The kill lands after more than two
    slices reached the WMS, so a sender that recorded later than that would fail here."""
    import os
    import subprocess
    import sys
    import time

    n = 5 * outbox.RECORD_EVERY_BATCHED
    pairs = _stock(sandbox, 8)
    ids = []
    for k in range(n):
        item, dc = pairs[k % len(pairs)]
        r = released_order(store, book, link=False)
        with db.transaction(store):
            store.execute(
                "UPDATE orderflow.outbox SET payload = payload || %s "
                "WHERE order_id = %s AND action = 'wms_release'",
                (
                    Jsonb({"dc_id": dc, "lines": [{"line_no": 1, "item_id": item, "quantity": 1}]}),
                    r.order_id,
                ),
            )
        ids.append(r.order_id)
    with db.transaction(store):
        _only_due(store, ids, ["wms_release"])
    # slow WMS: the batch takes seconds, so the kill lands in its middle
    sandbox.client.put(
        "/admin/faults",
        json={"seed": 5, "rules": [{"prefix": "/wms/releases", "latency_ms": 150}]},
    ).raise_for_status()

    def recorded() -> int:
        return store.execute(
            "SELECT count(*) FROM orderflow.outbox WHERE action = 'wms_release' "
            "AND status = 'sent' AND order_id = ANY(%s)",
            (ids,),
        ).fetchone()[0]

    def received() -> int:
        keys = sandbox.client.get("/admin/idempotency/release").json()["keys"]
        return sum(1 for k in keys if any(f":{o}:" in k for o in ids))

    # killed once the WMS has more than the two slices a sender may leave unrecorded
    enough = outbox.SENT_UNRECORDED_MAX + outbox.RECORD_EVERY_BATCHED // 2
    proc = subprocess.Popen([sys.executable, "-c", _SEND_IN_A_PROCESS], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while received() < enough and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(1)  # requests in flight at the kill finish on the WMS's side
    got, stored = received(), recorded()
    assert enough <= got < n, f"the kill did not land mid-batch: {got} of {n} received"
    assert got - stored <= outbox.SENT_UNRECORDED_MAX, (got, stored)
