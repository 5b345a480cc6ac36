"""The sandbox CRM through ``CrmHook`` (its Airflow Connection, over HTTP): the account
context extracts incrementally, an approval request is idempotent by key, a decision is
final, and the decision feed gives each decision once, in order, after a cursor."""

import pytest

from orderflow.integrations.crm import CrmHook
from orderflow.integrations.http import ExternalRejected

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)


def test_the_account_context_extracts_like_master_data(sandbox):
    hook = CrmHook()
    accounts = list(hook.extract("accounts", page_size=50))
    assert len(accounts) == 120
    assert all(a["owner"] and a["team"] for a in accounts)
    quotes = list(hook.extract("quotes"))
    assert quotes and all(q["expires_on"] >= q["quoted_on"] for q in quotes)
    newest = max(q["updated_at"] for q in quotes)
    assert list(hook.extract("quotes", changed_since=newest)) == []
    assert list(hook.extract("agreements"))


def test_requests_are_idempotent_and_decisions_final_and_fed_once(sandbox):
    hook = CrmHook()
    customer = next(iter(hook.extract("accounts")))["customer_id"]
    body = {"reference": "9001", "customer_id": customer, "order_id": "O-9001", "line_no": 1}
    first = hook.request_approval(body, idempotency_key="crm-approval:9001")
    again = hook.request_approval(body, idempotency_key="crm-approval:9001")
    assert first == again and first["status"] == "open" and first["owner"]
    with pytest.raises(ExternalRejected):  # the same key for another request
        hook.request_approval({**body, "line_no": 2}, idempotency_key="crm-approval:9001")
    with pytest.raises(ExternalRejected):  # no account, no owner to ask
        hook.request_approval({**body, "customer_id": "C99999"}, idempotency_key="k-unknown")

    cursor = hook.decisions(0)["cursor"]
    rid = first["request_id"]
    url = f"/crm/approval-requests/{rid}/decision"
    sandbox.client.post(url, json={"decision": "approved", "note": "ok"}).raise_for_status()
    assert sandbox.client.post(url, json={"decision": "approved"}).status_code == 200
    assert sandbox.client.post(url, json={"decision": "rejected"}).status_code == 409
    page = hook.decisions(cursor)
    assert [d["request_id"] for d in page["items"]] == [rid]
    assert page["items"][0]["decided_by"] == first["owner"]
    assert hook.decisions(page["cursor"])["items"] == []
