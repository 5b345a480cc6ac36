"""The CRM end to end, through the real DAGs and the sandbox: the account context is synced
(``crm_sync``), order processing checks a customer's quote and special price agreement
before calling a price a mismatch, an expired quote holds with its cause and goes to the
account's team, and an approval decided in the CRM resolves the hold exactly once."""

import json

import pytest

from orderflow.store import db

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.day_snapshot("landed"),
]


def _run(dag_id):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag(dag_id).test()
    assert run.state == DagRunState.SUCCESS
    return run


def _labelled(day_dir):
    subs = {
        s["submission_id"]: s
        for s in map(json.loads, (day_dir / "orders.jsonl").read_text().splitlines())
    }
    out = {"quote": [], "agreement": [], "quote_expired": []}
    for t in map(json.loads, (day_dir / "ground_truth.jsonl").read_text().splitlines()):
        s = subs[t["submission_id"]]
        if t["expected"] == "duplicate" or t.get("change"):
            continue
        for e in t.get("price_explanations", []):
            out[e["source"]].append((s, e))
        if t.get("pricing_cause") == "quote_expired":
            out["quote_expired"].append((s, t))
    return out


def _order(conn, sub):
    return conn.execute(
        'SELECT order_id, status FROM orderflow."order" WHERE customer_id = %s AND po_number = %s '
        "AND parent_order_id IS NULL",
        (sub["customer_id"], sub["po_number"]),
    ).fetchone()


@pytest.fixture(scope="module")
def processed(store_url, sandbox, day_dir, airflow_db):
    import os

    os.environ.update(sandbox.connection_env())
    conn = db.connect()  # the day is landed (day_snapshot)
    _run("crm_sync")  # account context (incremental on top of the landing's full sync)
    _run("order_processing")
    _run("crm_sync")  # the approval requests validation queued go to the CRM
    yield conn, _labelled(day_dir)
    conn.close()


def test_the_account_context_is_synced(processed, sandbox):
    conn, _ = processed
    state = sandbox.client.get("/crm/accounts", params={"limit": 1}).json()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM orderflow.crm_account), "
        "(SELECT count(*) FROM orderflow.crm_quote), "
        "(SELECT count(*) FROM orderflow.crm_price_agreement)"
    ).fetchone()
    assert counts[0] == state["total"] > 0
    assert counts[1] > 0 and counts[2] > 0


@pytest.mark.parametrize("source", ["quote", "agreement"])
def test_a_crm_document_explains_a_price_difference(processed, source):
    conn, labelled = processed
    assert labelled[source], f"the generated day has no price difference a {source} explains"
    for sub, expl in labelled[source]:
        order_id, status = _order(conn, sub)
        assert status == "RELEASED", (sub["submission_id"], status)
        held = conn.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s", (order_id,)
        ).fetchone()[0]
        assert held == 0
        line = conn.execute(
            "SELECT price_source, price_document_id, unit_price, contract_price "
            "FROM orderflow.order_line WHERE order_id = %s AND line_no = %s",
            (order_id, expl["line_no"]),
        ).fetchone()
        assert line[:2] == (source, expl["document_id"])
        if source == "quote":
            assert line[3] == line[2]  # the quoted (customer's) price is charged
        details = conn.execute(
            "SELECT details FROM orderflow.order_event WHERE order_id = %s "
            "AND to_status = 'VALIDATED'",
            (order_id,),
        ).fetchone()[0]
        assert {
            "line_no": expl["line_no"],
            "source": source,
            "document_id": expl["document_id"],
        } in (details["price_sources"])


def test_an_expired_quote_holds_with_its_cause_for_the_account_team(processed, sandbox):
    conn, labelled = processed
    assert labelled["quote_expired"]
    accounts = {
        a["customer_id"]: a
        for a in sandbox.client.get("/crm/accounts", params={"limit": 10000}).json()["items"]
    }
    for sub, truth in labelled["quote_expired"]:
        order_id, status = _order(conn, sub)
        assert status == "ON_HOLD"
        row = conn.execute(
            "SELECT category, line_no, details, owner_team, account_owner "
            "FROM orderflow.exception_desk WHERE order_id = %s",
            (order_id,),
        ).fetchall()
        assert len(row) == 1
        category, line_no, details, team, owner = row[0]
        assert (category, line_no) == ("pricing_mismatch", truth["line_no"])
        assert details["cause"] == "quote_expired" and details["quote_id"] == truth["quote_id"]
        account = accounts[sub["customer_id"]]
        assert (team, owner) == (account["team"], account["owner"])


def _request(conn, sandbox, sub):
    order_id, _ = _order(conn, sub)
    row = conn.execute(
        "SELECT a.request_id, a.exception_id FROM orderflow.crm_approval a WHERE a.order_id = %s",
        (order_id,),
    ).fetchone()
    assert row is not None, f"no CRM approval request for {order_id}"
    crm = sandbox.client.get(f"/crm/approval-requests/{row[0]}").json()
    assert crm["reference"] == str(row[1]) and crm["status"] == "open"
    return order_id, row[0], row[1], crm


def test_a_crm_decided_approval_resolves_the_hold_exactly_once(processed, sandbox):
    conn, labelled = processed
    sub, _ = labelled["quote_expired"][0]
    order_id, request_id, exception_id, crm = _request(conn, sandbox, sub)
    # one request per exception, however often the DAG ran
    assert (
        conn.execute(
            "SELECT count(*) FROM orderflow.outbox WHERE action = 'crm_approval_request' "
            "AND idempotency_key = %s AND status = 'sent'",
            (f"crm-approval:{exception_id}",),
        ).fetchone()[0]
        == 1
    )
    sandbox.client.post(
        f"/crm/approval-requests/{request_id}/decision",
        json={"decision": "approved", "note": "customer keeps the quoted price this month"},
    ).raise_for_status()
    _run("crm_sync")
    _run("crm_sync")  # read again: nothing more happens

    exc = conn.execute(
        "SELECT status, resolution, resolved_by FROM orderflow.order_exception "
        "WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()
    assert exc == ("resolved", "overridden", f"crm:{crm['owner']}")
    audits = conn.execute(
        "SELECT actor, action FROM orderflow.audit_log WHERE "
        "(object_type = 'order_exception' AND object_id = %s) OR "
        "(object_type = 'crm_approval' AND object_id = %s) ORDER BY audit_id",
        (str(exception_id), request_id),
    ).fetchall()
    assert audits == [
        (f"crm:{crm['owner']}", "approve_pricing_mismatch"),
        (f"crm:{crm['owner']}", "crm_decision"),
    ]
    moves = conn.execute(
        "SELECT from_status, to_status, actor_id FROM orderflow.order_event "
        "WHERE order_id = %s AND from_status = 'ON_HOLD'",
        (order_id,),
    ).fetchall()
    assert moves == [("ON_HOLD", "VALIDATED", f"crm:{crm['owner']}")]
    applied = conn.execute(
        "SELECT status, applied_at IS NOT NULL FROM orderflow.crm_approval WHERE request_id = %s",
        (request_id,),
    ).fetchone()
    assert applied == ("approved", True)

    _run("order_processing")  # the approved price is charged and the order goes on
    assert _order(conn, sub)[1] == "RELEASED"


def test_a_crm_rejection_keeps_the_hold_and_escalates_it(processed, sandbox):
    conn, labelled = processed
    assert len(labelled["quote_expired"]) >= 2
    sub, _ = labelled["quote_expired"][1]
    _, request_id, exception_id, _ = _request(conn, sandbox, sub)
    owner, escalation = conn.execute(
        "SELECT owner_role, escalation_role FROM orderflow.order_exception WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()
    sandbox.client.post(
        f"/crm/approval-requests/{request_id}/decision",
        json={"decision": "rejected", "note": "no: the contract price stands"},
    ).raise_for_status()
    _run("crm_sync")
    row = conn.execute(
        "SELECT e.status, e.owner_role, e.escalated_at IS NOT NULL, o.status "
        'FROM orderflow.order_exception e JOIN orderflow."order" o USING (order_id) '
        "WHERE e.exception_id = %s",
        (exception_id,),
    ).fetchone()
    assert row == ("open", escalation or owner, True, "ON_HOLD")
    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM orderflow.audit_log WHERE object_id IN (%s, %s) ORDER BY audit_id",
            (str(exception_id), request_id),
        )
    ]
    assert actions == ["keep_on_hold", "crm_decision"]


def test_an_approval_by_someone_other_than_the_account_owner_is_refused(processed, sandbox):
    """An override is the account owner's to give, whatever the entry point: an approval
    entered in the CRM by someone else is recorded and refused, the hold stays."""
    conn, _ = processed
    row = conn.execute(
        "SELECT a.request_id, a.exception_id, a.owner FROM orderflow.crm_approval a "
        "JOIN orderflow.order_exception e USING (exception_id) "
        "WHERE a.applied_at IS NULL AND e.status = 'open' ORDER BY a.request_id LIMIT 1"
    ).fetchone()
    assert row is not None, "no open CRM approval request left in the generated day"
    request_id, exception_id, owner = row
    sandbox.client.post(
        f"/crm/approval-requests/{request_id}/decision",
        json={"decision": "approved", "decided_by": f"not-{owner}", "note": "looks fine"},
    ).raise_for_status()
    _run("crm_sync")
    status = conn.execute(
        "SELECT status FROM orderflow.order_exception WHERE exception_id = %s", (exception_id,)
    ).fetchone()[0]
    assert status == "open"
    audit = conn.execute(
        "SELECT actor, action FROM orderflow.audit_log WHERE object_type = 'crm_approval' "
        "AND object_id = %s",
        (request_id,),
    ).fetchall()
    assert audit == [(f"crm:not-{owner}", "crm_decision_refused")]
    outcome = conn.execute(
        "SELECT status, outcome FROM orderflow.crm_approval WHERE request_id = %s", (request_id,)
    ).fetchone()
    assert outcome[0] == "requested" and outcome[1].startswith("refused")
