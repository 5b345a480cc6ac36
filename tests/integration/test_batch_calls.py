"""Batch requests to the external systems (issue #16), against the sandbox over HTTP: the plan
stage's screening and tax (``ScreeningHook.check_many``, ``TaxHook.quote_many``) and the
outbox sender's keyed sends (``WmsHook.release_many``, ``CarrierHook.book_many``,
``EdiGatewayHook.send_many``). Each answers every item as its own call does — keyed sends
under the item's own key, so a key first sent alone is answered in a batch with its first
answer and the other way round — and a system without the batch endpoint makes the caller
ask one by one."""

import json
import os
import uuid

import pytest

from orderflow.integrations.http import ExternalRejected
from orderflow.integrations.systems import (
    CarrierHook,
    EdiGatewayHook,
    ScreeningHook,
    TaxHook,
    WmsHook,
)

pytestmark = pytest.mark.sandbox


@pytest.fixture
def hooks(sandbox):
    """The hooks' Connections on the sandbox, plus ``*_nobatch``: each system's
    Connection on a base URL that has no batch endpoint of that name."""
    nobatch = {
        "AIRFLOW_CONN_SCREENING_NOBATCH": f"{sandbox}/tax",
        "AIRFLOW_CONN_TAX_NOBATCH": f"{sandbox}/screening",
        "AIRFLOW_CONN_WMS_NOBATCH": f"{sandbox}/carrier",
        "AIRFLOW_CONN_CARRIER_NOBATCH": f"{sandbox}/wms",
        "AIRFLOW_CONN_EDI_NOBATCH": f"{sandbox}/wms",
    }
    env = {
        **sandbox.connection_env(),
        **{
            k: json.dumps({"conn_type": "http", "host": v, "extra": {"timeout": 5}})
            for k, v in nobatch.items()
        },
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


def _key(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ plan: screening, tax
def test_screening_a_batch_answers_each_party_as_its_own_call_does(sandbox, hooks, day_dir):
    world = json.loads((day_dir / "world.json").read_text())
    names = [(p["name"], p.get("country") or "US") for p in world["restricted_parties"][:3]]
    asked = [*names, ("Acme Industrial Supply", "US"), ("Nobody Ltd", "CA"), *names[:1]]
    hook = ScreeningHook()
    hook.batch_size = 2  # several requests, the last one short
    batch = hook.check_many(asked)
    assert batch == [hook.check(n, c) for n, c in asked]
    assert {a["status"] for a in batch} == {"review", "clear"}


def test_tax_a_batch_answers_each_quote_as_its_own_call_does(sandbox, hooks):
    quotes = [
        {
            "customer_id": f"C{i}",
            "region": region,
            "country": country,
            "lines": [{"line_no": j + 1, "amount": 10.0 * (i + 1) + j} for j in range(i % 3 + 1)],
        }
        for i, (region, country) in enumerate(
            [("CA", "US"), ("TX", "US"), ("NY", "US"), ("ON", "CA"), ("ZZ", "US")]
        )
    ]
    hook = TaxHook()
    hook.batch_size = 2
    batch = hook.quote_many(quotes)
    assert batch == [hook.quote(q) for q in quotes]
    assert len({a["rate"] for a in batch}) > 1


def test_plan_services_without_a_batch_endpoint_are_asked_one_by_one(sandbox, hooks):
    assert ScreeningHook("screening_nobatch").check_many([("Acme", "US")]) is None
    assert (
        TaxHook("tax_nobatch").quote_many([{"customer_id": "C", "region": "CA", "lines": []}])
        is None
    )
    assert ScreeningHook().check_many([]) == []


# ------------------------------------------------------------------ keyed sends
def _stock_line(sandbox) -> tuple[str, str]:
    items = sandbox.client.get("/wms/inventory").json()["items"]
    row = max(items, key=lambda r: r["on_hand"])
    return row["item_id"], row["dc_id"]


def _release(item_id: str, dc_id: str, order_id: str, qty: float = 1.0) -> dict:
    return {
        "order_id": order_id,
        "dc_id": dc_id,
        "shipment_id": f"{order_id}:{dc_id}:r1",
        "lines": [{"line_no": 1, "item_id": item_id, "quantity": qty}],
    }


def test_wms_releases_in_a_batch_are_each_keyed(sandbox, hooks):
    item_id, dc_id = _stock_line(sandbox)
    hook = WmsHook()
    alone_key = _key("wms_release")
    alone = hook.release(_release(item_id, dc_id, "B-ALONE"), idempotency_key=alone_key)
    keys = [_key("wms_release") for _ in range(3)]
    bodies = [_release(item_id, dc_id, f"B-{i}") for i in range(3)]
    bad = _release(item_id, "NO-SUCH-DC", "B-BAD")
    batch = hook.release_many(
        [(b, k) for b, k in zip(bodies, keys, strict=True)]
        + [(bad, _key("wms_release")), (_release(item_id, dc_id, "B-ALONE"), alone_key)]
    )
    answers = [a for a, _ in batch[:3]]
    assert all(exc is None for _, exc in batch[:3])
    assert len({a["release_id"] for a in answers}) == 3
    # the key sent alone first: answered in the batch with its first answer
    assert batch[4] == (alone, None)
    # each batch key, asked alone afterwards: the batch's answer, not a second release
    assert [
        hook.release(b, idempotency_key=k) for b, k in zip(bodies, keys, strict=True)
    ] == answers
    # a refused item: the error its own call gives, the others unaffected
    with pytest.raises(ExternalRejected) as single:
        hook.release(bad, idempotency_key=_key("wms_release"))
    answer, exc = batch[3]
    assert answer is None and isinstance(exc, ExternalRejected)
    assert (str(exc), exc.status) == (str(single.value), single.value.status)


def test_carrier_bookings_in_a_batch_are_each_keyed_and_refusals_are_409(sandbox, hooks):
    shipment = {
        "order_id": "B-SHIP",
        "carrier_id": "UPS",
        "service_code": "GROUND",
        "weight_kg": 12.5,
        "dc_id": "DC-EAST",
        "zone": "Z3",
    }
    hook = CarrierHook()
    quotes = sandbox.client.post(
        "/carrier/rates", json={"weight_kg": 12.5, "dc_id": "DC-EAST", "zone": "Z3"}
    ).json()["quotes"]
    offered = quotes[0]
    shipment.update(carrier_id=offered["carrier_id"], service_code=offered["service_code"])
    unknown = {**shipment, "service_code": "NO-SUCH-SERVICE"}
    k1, k2 = _key("carrier_tender"), _key("carrier_tender")
    batch = hook.book_many([(shipment, k1), (unknown, k2), (shipment, k1)])
    (first, e1), (none, e2), (again, e3) = batch
    assert e1 is None and e3 is None and again == first  # the same key: the first answer
    assert hook.book(shipment, idempotency_key=k1) == first
    with pytest.raises(ExternalRejected) as single:
        hook.book(unknown, idempotency_key=_key("carrier_tender"))
    assert none is None and (str(e2), e2.status) == (str(single.value), single.value.status)
    assert e2.status == 409


def test_edi_documents_in_a_batch_are_each_keyed(sandbox, hooks):
    hook = EdiGatewayHook()
    partner = f"P-{uuid.uuid4().hex[:6]}"
    docs = [(partner, "855", f"ISA*{i}~", _key("edi_855")) for i in range(3)]
    batch = hook.send_many(docs)
    assert all(exc is None for _, exc in batch)
    assert [hook.send(p, t, b, idempotency_key=k) for p, t, b, k in docs] == [a for a, _ in batch]
    received = sandbox.client.get("/edi/outbound", params={"partner_id": partner}).json()["items"]
    assert len(received) == 3  # each once, however often asked
    # the same key with another body: refused as its own call would refuse it
    _, exc = hook.send_many([(partner, "855", "ISA*other~", docs[0][3])])[0]
    with pytest.raises(ExternalRejected) as single:
        hook.send(partner, "855", "ISA*other~", idempotency_key=docs[0][3])
    assert (str(exc), exc.status) == (str(single.value), single.value.status)


def test_keyed_sends_without_a_batch_endpoint_are_sent_one_by_one(sandbox, hooks):
    assert WmsHook("wms_nobatch").release_many([({"order_id": "X"}, _key("w"))]) is None
    assert CarrierHook("carrier_nobatch").book_many([({"order_id": "X"}, _key("c"))]) is None
    assert EdiGatewayHook("edi_nobatch").send_many([("P", "855", "ISA~", _key("e"))]) is None
    assert WmsHook().release_many([]) == []


def test_a_batch_the_service_cannot_take_fails_every_item_as_transient(sandbox, hooks):
    sandbox.client.put(
        "/admin/faults", json={"seed": 7, "rules": [{"prefix": "/edi", "error_rate": 1.0}]}
    ).raise_for_status()
    hook = EdiGatewayHook(retries=1)
    out = hook.send_many([("P-X", "855", "ISA~", _key("e")), ("P-X", "855", "ISA*2~", _key("e"))])
    assert [a for a, _ in out] == [None, None]
    assert all(exc is not None and exc.transient for _, exc in out)
