"""The outbox sender against the sandbox EDI gateway: at most once per key through retries,
crashes mid-send and 5xx; rejections dead-letter and can be replayed."""

import pytest

from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/faults", json={"seed": 4, "rules": []})


def _queue(store, key, partner="P-TEST", body="ISA*...~"):
    with db.transaction(store):
        return outbox_store.enqueue(
            store,
            idempotency_key=key,
            action="edi_997",
            target_conn_id="edi_default",
            payload={"partner_id": partner, "document_type": "997", "body": body},
        )


def _received(sandbox, partner):
    return sandbox.client.get("/edi/outbound", params={"partner_id": partner}).json()["items"]


def _status(store, key):
    return store.execute(
        "SELECT status, attempts FROM orderflow.outbox WHERE idempotency_key = %s", (key,)
    ).fetchone()


def test_send_once_even_when_queued_twice_and_sent_again(store, sandbox):
    assert _queue(store, "t1:997") is True
    assert _queue(store, "t1:997") is False  # a rerun of the decision queues nothing new
    assert outbox.send_due(store, ["edi_997"]) == {"sent": 1}
    assert outbox.send_due(store, ["edi_997"]) == {}
    assert len(_received(sandbox, "P-TEST")) == 1
    assert _status(store, "t1:997") == ("sent", 1)


def test_a_sender_killed_mid_send_is_recovered_without_a_second_delivery(store, sandbox):
    _queue(store, "t2:997", partner="P-CRASH")
    claimed = outbox.claim(store, ["edi_997"])
    assert [r[1] for r in claimed] == ["t2:997"]
    # it sent, then died before recording: the partner has it, the row is still 'sending'
    outbox._registry()["edi_997"]("edi_default", claimed[0][4], "t2:997")
    assert outbox.send_due(store, ["edi_997"]) == {}  # lease not expired: nobody else takes it
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET next_attempt_at = now() - interval '1 s' "
            "WHERE idempotency_key = 't2:997'"
        )
    assert outbox.send_due(store, ["edi_997"]) == {"sent": 1}
    assert len(_received(sandbox, "P-CRASH")) == 1


def test_transient_failures_back_off_then_send(store, sandbox):
    _queue(store, "t3:997", partner="P-FLAKY")
    sandbox.client.put(
        "/admin/faults", json={"seed": 4, "rules": [{"prefix": "/edi", "error_rate": 1.0}]}
    )
    assert outbox.send_due(store, ["edi_997"]) == {"retry": 1}
    status, attempts = _status(store, "t3:997")
    assert (status, attempts) == ("failed", 1)
    sandbox.client.put("/admin/faults", json={"seed": 4, "rules": []})
    assert outbox.send_due(store, ["edi_997"]) == {}  # not due yet: backing off
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET next_attempt_at = now() WHERE idempotency_key = 't3:997'"
        )
    assert outbox.send_due(store, ["edi_997"]) == {"sent": 1}
    assert len(_received(sandbox, "P-FLAKY")) == 1


def test_rejection_dead_letters_and_replay_requeues(store, sandbox, monkeypatch, tmp_path):
    _queue(store, "t4:997", partner="P-REJECT")
    # the gateway refuses: a reused key with another body is a 422
    sandbox.client.post(
        "/edi/outbound",
        content=b"other",
        headers={"Idempotency-Key": "t4:997", "X-Partner-Id": "P-REJECT", "X-Document-Type": "997"},
    )
    assert outbox.send_due(store, ["edi_997"]) == {"dead": 1}
    row = store.execute(
        "SELECT error FROM orderflow.dead_letter WHERE source_ref = 't4:997'"
    ).fetchone()
    assert "422" in row[0]
    roles = tmp_path / "roles.yaml"
    roles.write_text("users:\n  ops@example: [integration]\n  cs@example: [customer_service]\n")
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(roles))
    # every override of a side effect is role-checked, whatever the entry point: refused
    # (and audited) without the integration role
    with pytest.raises(outbox.ReplayRefused, match="needs the integration role"):
        outbox.settle(store, "t4:997", "cs@example", resend=True, reason="try")
    with pytest.raises(outbox.ReplayRefused):
        outbox.replay_followup(store, "t4:997", "cs@example", reason="try")
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.audit_log WHERE action = 'outbox_replay_refused' "
            "AND actor = 'cs@example' AND object_id = 't4:997'"
        ).fetchone()[0]
        == 2
    )
    assert _status(store, "t4:997")[0] == "dead"
    assert outbox.settle(store, "t4:997", "ops@example", resend=True, reason="fixed") is True
    assert _status(store, "t4:997")[0] == "pending"
