"""#12 part 3: partners' 997s about what we sent reach the exception desk.

Against the real store and a real sandbox (its EDI gateway receives our documents and its
partner answers each group with a 997 in the drop folder, rejecting what is structurally
broken); the 997 files are ingested through EDI intake as ``make run`` does:

1. a document the partner rejects (AK5 R 4 / AK9 R) opens ``edi_rejected`` on its order for
   the EDI team with the partner's codes; *Resend* on the desk is refused without the role,
   and with it queues one new document (new control number, version + 1, audited) that goes
   out once however often it is clicked, and that the partner accepts;
2. a sent document without a 997 past its partner's window opens ``edi_ack_overdue`` on the
   watch run (a longer window or a partner that sends no 997s: not overdue); the late 997
   resolves it.
"""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi import HTTPException
from test_fulfilment_store import released_order
from test_processing_store import shared_master_data  # noqa: F401 (autouse fixture)

from orderflow import edi_acks, rules, watch
from orderflow.intake import drops
from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.ui import pages
from orderflow.ui.app import User

pytestmark = [pytest.mark.db, pytest.mark.sandbox]

ROLES = {"eddie.edi": ["edi"], "carla.credit": ["credit"], "olga": ["operations_manager"]}


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture
def wired(sandbox, tmp_path, monkeypatch):
    """Connections to the sandbox, and this test's role mapping."""
    for name, value in sandbox.connection_env().items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "roles.yaml"
    path.write_text(json.dumps({"users": ROLES}))
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))
    # partners refuse 1 % of well-formed groups, seeded by control numbers that depend on
    # what ran before: here every refusal must come from the document itself
    sandbox.client.put("/admin/partners", json={"refusal_rate": 0}).raise_for_status()
    yield sandbox
    sandbox.client.put("/admin/partners", json={"refusal_rate": 0.01}).raise_for_status()


def _user(name: str) -> User:
    return User(name=name, airflow_role=None, roles=frozenset(ROLES.get(name, ())))


def _docs(store, order_id: str) -> list[dict]:
    cur = store.execute(
        "SELECT d.idempotency_key, d.version, d.interchange_control_number, "
        "d.group_control_number, d.ack_status, d.ack_detail, d.resent_as, d.resend_of, "
        "o.status, o.payload->>'body' AS body FROM orderflow.outbound_document d "
        "JOIN orderflow.outbox o USING (idempotency_key) WHERE d.order_id = %s "
        "ORDER BY o.outbox_id",
        (order_id,),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def _exceptions(store, order_id: str, category: str) -> list[tuple]:
    return store.execute(
        "SELECT exception_id, status, owner_role, escalation_role, reason, details, resolution, "
        "resolved_by, resolution_note FROM orderflow.order_exception "
        "WHERE order_id = %s AND category = %s ORDER BY exception_id",
        (order_id, category),
    ).fetchall()


def _send(store) -> dict:
    return outbox.send_due(store, ["edi_855"], limit=100)


def _partner_acks(sandbox, partner_id: str, tmp_path, minutes: int = 31) -> list[dict]:
    """Let the sandbox's clock pass so its partner's 997s are delivered, and ingest this
    partner's through EDI intake (a drop folder of its own: the day's other files stay)."""
    sandbox.client.put("/admin/clock", json={"advance_minutes": minutes}).raise_for_status()
    acks = sandbox.client.get("/edi/acknowledgments", params={"partner_id": partner_id}).json()
    folder = tmp_path / "edi" / partner_id
    folder.mkdir(parents=True, exist_ok=True)
    for a in acks["items"]:
        src = sandbox.drop / a["path"]
        if a["delivered"] and src.exists():
            shutil.copyfile(src, folder / src.name)
            src.unlink()
    return acks["items"]


def _ingest(store, tmp_path) -> drops.IngestStats:
    return drops.ingest_folder(store, tmp_path / "edi", "edi")


def _corrupt_se01(body: str) -> str:
    """Our 855 with SE01 one more than its segments: what the partner's translator rejects
    (AK5 R 4) — a defect on our side the resend's envelope corrects."""
    segs = body.split("~")
    i = next(n for n, s in enumerate(segs) if s.strip().startswith("SE*"))
    count = segs[i].strip().split("*")[1]
    segs[i] = segs[i].replace(f"SE*{count}*", f"SE*{int(count) + 1}*")
    return "~".join(segs)


def test_a_rejected_855_opens_edi_rejected_and_resend_sends_once(store, book, wired, tmp_path):
    sandbox = wired
    r = released_order(store, book, edi=True)
    partner = f"P-{r.customer_id}"
    (doc,) = _docs(store, r.order_id)
    assert doc["status"] == "pending" and doc["version"] == 1
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET payload = jsonb_set(payload, '{body}', to_jsonb(%s::text)) "
            "WHERE idempotency_key = %s",
            (_corrupt_se01(doc["body"]), doc["idempotency_key"]),
        )
    assert _send(store) == {"sent": 1}

    acks = _partner_acks(sandbox, partner, tmp_path)
    assert [a["status"] for a in acks] == ["R"]
    stats = _ingest(store, tmp_path)
    assert stats.outcomes == {"acknowledgment": 1}, stats

    (doc,) = _docs(store, r.order_id)
    assert doc["ack_status"] == "R"
    codes = doc["ack_detail"]["codes"]
    assert codes["ak9"] == {"status": "R", "codes": []}
    assert codes["sets"] == [
        {"set_id": "855", "control": "0001", "notes": [], "status": "R", "codes": ["4"]}
    ]
    (exc,) = _exceptions(store, r.order_id, "edi_rejected")
    eid, status, owner, escalation, reason, details, *_ = exc
    assert (status, owner, escalation) == ("open", "edi", "operations_manager")
    assert f"{partner} did not accept our 855 (ISA13 {doc['interchange_control_number']}" in reason
    assert "AK5 R: 4 number of included segments does not match actual count" in reason
    (listed,) = details["documents"]
    assert listed["key"] == doc["idempotency_key"] and listed["codes"] == codes
    # the order itself is not held: it stays released
    assert store.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (r.order_id,)
    ).fetchone() == ("RELEASED",)
    desk = pages.desk(store, category="edi_rejected")
    (row,) = [x for x in desk["rows"] if x["exception_id"] == eid]
    assert [a for a, _ in row["actions"]] == ["resend", "keep"]

    # Without the role: refused, nothing queued. An order hold's action: refused too.
    with pytest.raises(HTTPException) as refused:
        pages.resolve(store, eid, "resend", "fixed our writer", _user("carla.credit"))
    assert refused.value.status_code == 403
    with pytest.raises(HTTPException) as wrong:
        pages.resolve(store, eid, "reject", "no", _user("eddie.edi"))
    assert wrong.value.status_code == 409
    assert len(_docs(store, r.order_id)) == 1

    out = pages.resolve(store, eid, "resend", "SE01 fixed in our writer", _user("eddie.edi"))
    assert out["applied"] and out["order_id"] == r.order_id
    # clicked again, retried, or called directly: nothing more
    with pytest.raises(HTTPException) as again:
        pages.resolve(store, eid, "resend", "again", _user("eddie.edi"))
    assert again.value.status_code == 409
    assert edi_acks.resend(store, eid, actor="olga", reason="again")["applied"] is False

    old, new = _docs(store, r.order_id)
    assert new["idempotency_key"] == f"{old['idempotency_key']}:resend1"
    assert (new["version"], new["resend_of"], old["resent_as"]) == (
        2,
        old["idempotency_key"],
        new["idempotency_key"],
    )
    assert new["interchange_control_number"] != old["interchange_control_number"]
    assert out["resent"][0]["new_control_number"] == new["interchange_control_number"]
    # same content, new envelope: the segments between ST and SE are the old ones
    assert edi_acks.read_sent(new["body"]).sets == edi_acks.read_sent(old["body"]).sets
    assert f"*{int(new['group_control_number'])}*X*" in new["body"]
    (exc,) = _exceptions(store, r.order_id, "edi_rejected")
    assert exc[1:2] == ("resolved",) and exc[6:8] == ("fixed", "eddie.edi")
    assert new["idempotency_key"] in exc[8]
    audit = store.execute(
        "SELECT actor, actor_role, before, after, reason FROM orderflow.audit_log "
        "WHERE action = 'edi_resend' AND object_id = %s",
        (str(eid),),
    ).fetchall()
    assert len(audit) == 1
    actor, role, before, after, why = audit[0]
    assert (actor, role, why) == ("eddie.edi", "edi", "SE01 fixed in our writer")
    assert before["documents"][0]["interchange_control_number"] == old["interchange_control_number"]
    assert after["resent"][0]["new_key"] == new["idempotency_key"]
    assert after["resent"][0]["version"] == 2

    # It goes out once; the partner accepts it; nothing is open any more.
    gateway = sandbox.client.get("/edi/outbound", params={"partner_id": partner}).json()["items"]
    assert _send(store) == {"sent": 1}
    assert _send(store) == {}
    after_send = sandbox.client.get("/edi/outbound", params={"partner_id": partner}).json()
    assert len(after_send["items"]) == len(gateway) + 1
    acks = _partner_acks(sandbox, partner, tmp_path)
    assert sorted(a["status"] for a in acks) == ["A", "R"]
    assert _ingest(store, tmp_path).outcomes == {"acknowledgment": 1}
    old, new = _docs(store, r.order_id)
    assert (old["ack_status"], new["ack_status"]) == ("R", "A")
    assert [e[1] for e in _exceptions(store, r.order_id, "edi_rejected")] == ["resolved"]
    # the rejected original is resent, not overdue; the accepted one is acknowledged
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET sent_at = now() - interval '3 days' WHERE order_id = %s",
            (r.order_id,),
        )
    watch.run(store, book)
    assert _exceptions(store, r.order_id, "edi_ack_overdue") == []


def _age_sent(store, order_id: str, hours: float) -> None:
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.outbox SET sent_at = now() - make_interval(secs => %s) "
            "WHERE order_id = %s AND action = 'edi_855'",
            (hours * 3600, order_id),
        )


def test_a_document_without_a_997_past_the_window_opens_edi_ack_overdue_until_it_comes(
    store, book, wired, tmp_path
):
    sandbox = wired
    late = released_order(store, book, edi=True)
    patient = released_order(store, book, edi=True)  # this partner may take 48 h
    silent = released_order(store, book, edi=True)  # this partner sends no 997s
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.trading_partner SET ack_window_hours = 48 WHERE partner_id = %s",
            (f"P-{patient.customer_id}",),
        )
        store.execute(
            "UPDATE orderflow.trading_partner SET ack_window_hours = NULL WHERE partner_id = %s",
            (f"P-{silent.customer_id}",),
        )
    assert store.execute(
        "SELECT ack_window_hours FROM orderflow.trading_partner WHERE partner_id = %s",
        (f"P-{late.customer_id}",),
    ).fetchone() == (24,)
    assert _send(store) == {"sent": 3}
    for r in (late, patient, silent):
        _age_sent(store, r.order_id, 25)

    out = watch.run(store, book)
    assert (out.acks_overdue, out.acks_overdue_opened) == (1, 1)
    (exc,) = _exceptions(store, late.order_id, "edi_ack_overdue")
    eid, status, owner, _, reason, details, *_ = exc
    assert (status, owner) == ("open", "edi")
    (doc,) = _docs(store, late.order_id)
    assert f"has not acknowledged our 855 (ISA13 {doc['interchange_control_number']}" in reason
    assert "(window 24 h)" in reason and "25 h ago" in reason
    assert details["documents"][0]["key"] == doc["idempotency_key"]
    assert _exceptions(store, patient.order_id, "edi_ack_overdue") == []
    assert _exceptions(store, silent.order_id, "edi_ack_overdue") == []
    # run again: still one, not a second
    again = watch.run(store, book)
    assert (again.acks_overdue, again.acks_overdue_opened) == (1, 0)
    assert len(_exceptions(store, late.order_id, "edi_ack_overdue")) == 1
    desk = pages.desk(store, category="edi_ack_overdue")
    assert [x["exception_id"] for x in desk["rows"]] == [eid]

    # The partner's 997 comes late (accepted): the overdue exception resolves itself.
    acks = _partner_acks(sandbox, f"P-{late.customer_id}", tmp_path)
    assert [a["status"] for a in acks] == ["A"]
    assert _ingest(store, tmp_path).outcomes == {"acknowledgment": 1}
    (exc,) = _exceptions(store, late.order_id, "edi_ack_overdue")
    assert (exc[1], exc[6], exc[7]) == ("resolved", "auto_resolved", "orderflow.edi_acks")
    assert _exceptions(store, late.order_id, "edi_rejected") == []
    assert watch.run(store, book).acks_overdue == 0

    # Past 48 h the patient partner's document is overdue too; a resend settles it once.
    _age_sent(store, patient.order_id, 49)
    assert watch.run(store, book).acks_overdue_opened == 1
    ((eid, *_),) = _exceptions(store, patient.order_id, "edi_ack_overdue")
    out = pages.resolve(store, eid, "resend", "partner lost it", _user("olga"))
    assert out["resent"][0]["version"] == 2
    assert watch.run(store, book).acks_overdue == 0  # the original is superseded
    assert _send(store) == {"sent": 1}
    assert _send(store) == {}
    with pytest.raises(HTTPException):
        pages.resolve(store, eid, "resend", "again", _user("olga"))
    assert len(_docs(store, patient.order_id)) == 2


def test_two_people_resending_at_once_send_it_once(store, book, wired):
    """Two desk clicks in flight together (two connections): one resend, one outbox row."""
    import threading

    r = released_order(store, book, edi=True)
    assert _send(store) == {"sent": 1}
    _age_sent(store, r.order_id, 30)
    assert watch.run(store, book).acks_overdue_opened == 1
    ((eid, *_),) = _exceptions(store, r.order_id, "edi_ack_overdue")
    start = threading.Barrier(2)
    results: list = []

    def click(user: str) -> None:
        conn = db.connect()
        try:
            start.wait()
            results.append(edi_acks.resend(conn, eid, actor=user, reason="lost"))
        except Exception as exc:
            results.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=click, args=(u,)) for u in ("eddie.edi", "olga")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(x["applied"] for x in results) == [False, True], results
    docs = _docs(store, r.order_id)
    assert [d["version"] for d in docs] == [1, 2]
    assert _send(store) == {"sent": 1}
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.audit_log WHERE action = 'edi_resend' "
            "AND object_id = %s",
            (str(eid),),
        ).fetchone()[0]
        == 1
    )


def test_partner_codes_read_from_the_997_itself():
    from datetime import UTC, datetime

    from orderflow.channels.x12 import writer
    from orderflow.channels.x12.results import Delimiters

    body = [
        ["AK1", "IN", "41"],
        ["AK2", "810", "0001"],
        ["AK3", "IT1", "4", "", "8"],
        ["AK4", "2", "358", "7", "ZZ"],
        ["AK5", "R", "5"],
        ["AK9", "R", "1", "1", "0", "5"],
    ]
    st = writer.transaction_set("997", "0001", body)
    gs = writer.functional_group(
        "FA",
        sender="P",
        receiver="US",
        control_number=9,
        now=datetime.now(UTC),
        version="004010",
        sets=[st],
    )
    raw = writer.interchange(
        [gs],
        d=Delimiters(),
        sender=("ZZ", "P"),
        receiver=("ZZ", "US"),
        control_number=9,
        now=datetime.now(UTC),
    ).encode()
    codes = edi_acks.partner_codes(raw, "IN", "000000041")
    assert codes["ak9"] == {"status": "R", "codes": ["5"]}
    (s,) = codes["sets"]
    assert (s["status"], s["codes"]) == ("R", ["5"])
    assert s["notes"] == [
        {
            "segment": "IT1",
            "position": "4",
            "loop": None,
            "code": "8",
            "elements": [{"position": "2", "reference": "358", "code": "7", "value": "ZZ"}],
        }
    ]
    text = edi_acks.describe(codes, "R")
    assert "AK9 R (rejected): 5 number of included transaction sets" in text
    assert (
        "IT1 at segment 4 (segment has data element errors), element 2 invalid code value" in text
    )
    assert edi_acks.partner_codes(raw, "IN", "42") == {}
    assert edi_acks.partner_codes(b"not x12", "IN", "41") == {}
    assert edi_acks.resend_key("edi_810:INV1:v2") == "edi_810:INV1:v2:resend1"
    assert edi_acks.resend_key("edi_810:INV1:v2:resend1") == "edi_810:INV1:v2:resend2"
