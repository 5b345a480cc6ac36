"""The credit stage asks the credit service for a partition's customers in one call
(``CreditHook.check_many`` → the sandbox's ``POST /credit/check/batch``, issue #16): the same
answers and refusals as one call per customer, and one call per customer again where a
service has no batch endpoint."""

import json
import os

import pytest

from orderflow.integrations.http import ExternalRejected
from orderflow.integrations.systems import CreditHook

pytestmark = pytest.mark.sandbox


@pytest.fixture
def hooks(sandbox):
    """The hooks' Connections on the sandbox, plus ``credit_nobatch``: a credit service
    without a batch endpoint (the sandbox's tax engine, which has none)."""
    env = {
        **sandbox.connection_env(),
        "AIRFLOW_CONN_CREDIT_NOBATCH": json.dumps(
            {"conn_type": "http", "host": f"{sandbox}/tax", "extra": {"timeout": 5}}
        ),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _asked(sandbox, n: int) -> list[tuple[str, float]]:
    accounts = sandbox.client.get("/erp/credit_accounts", params={"limit": n}).json()["items"]
    # small, large and very large amounts: approvals and referrals both
    return [(a["customer_id"], [0.0, 125.5, 1e9][i % 3]) for i, a in enumerate(accounts)]


def test_a_batch_answers_each_check_as_its_own_call_does(sandbox, hooks):
    asked = _asked(sandbox, 23)
    hook = CreditHook()
    hook.batch_size = 5  # several requests, the last one short
    batch = hook.check_many(asked)
    single = [hook.check(c, a) for c, a in asked]
    assert batch == single
    assert {a["decision"] for a in batch} >= {"approve", "refer"}


def test_a_check_the_service_refuses_raises_as_its_own_call_does(sandbox, hooks):
    [(known, _)] = _asked(sandbox, 1)
    hook = CreditHook()
    with pytest.raises(ExternalRejected) as single:
        hook.check("NO-SUCH-CUSTOMER", 1.0)
    with pytest.raises(ExternalRejected) as batch:
        hook.check_many([(known, 1.0), ("NO-SUCH-CUSTOMER", 1.0)])
    assert (str(batch.value), batch.value.status) == (str(single.value), single.value.status)


def test_a_service_without_a_batch_endpoint_is_asked_one_by_one(sandbox, hooks):
    assert CreditHook("credit_nobatch").check_many(_asked(sandbox, 3)) is None
    assert CreditHook().check_many([]) == []
