"""The sandbox driven over real HTTP, as OrderFlow's hooks will drive it: a separate
`orderflow sandbox serve` process on a free port, serving a small generated day."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from tests_support import START

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def no_faults(sandbox):
    sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    yield
    sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()


def _stocked(c: httpx.Client, minimum: float = 10) -> dict:
    items = c.get("/wms/inventory").json()["items"]
    return next(p for p in items if p["available"] >= minimum)


def test_openapi_lists_every_endpoint(sandbox):
    paths = set(sandbox.client.get("/openapi.json").json()["paths"])
    for p in [
        "/erp/{entity}",
        "/erp/customers/{customer_id}/exposure",
        "/erp/orders",
        "/erp/invoices",
        "/wms/inventory",
        "/wms/reservations",
        "/wms/reservations/{reservation_id}",
        "/wms/releases",
        "/wms/milestones",
        "/carrier/rates",
        "/carrier/shipments",
        "/carrier/tracking",
        "/tax/quote",
        "/credit/check",
        "/screening/check",
        "/portal/orders",
        "/edi/outbound",
        "/admin/faults",
        "/admin/clock",
        "/admin/state",
        "/admin/master/{entity}/{key}",
    ]:
        assert p in paths, p
    assert sandbox.client.get("/docs").status_code == 200


def test_master_data_extract_pages_and_changed_since(sandbox):
    c = sandbox.client
    first = c.get("/erp/customers", params={"limit": 50}).json()
    assert first["total"] >= 100
    assert len(first["items"]) == 50
    assert first["next_offset"] == 50
    cust = first["items"][0]
    before = c.get("/admin/clock").json()["now"]
    c.put("/admin/clock", json={"advance_minutes": 1})
    c.patch(
        f"/admin/master/customers/{cust['customer_id']}", json={"name": "Renamed Co"}
    ).raise_for_status()
    changed = c.get("/erp/customers", params={"changed_since": before}).json()
    assert [r["customer_id"] for r in changed["items"]] == [cust["customer_id"]]
    assert changed["items"][0]["name"] == "Renamed Co"


def test_release_requires_a_key_and_a_duplicate_key_never_picks_twice(sandbox):
    c = sandbox.client
    pos = _stocked(c)
    body = {
        "order_id": "ORD-T1",
        "dc_id": pos["dc_id"],
        "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 2}],
    }
    assert c.post("/wms/releases", json=body).status_code == 400
    first = c.post("/wms/releases", json=body, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    again = c.post("/wms/releases", json=body, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    after = next(
        p
        for p in c.get(
            "/wms/inventory", params={"item_id": pos["item_id"], "dc_id": pos["dc_id"]}
        ).json()["items"]
    )
    assert after["available"] == pytest.approx(pos["available"] - 2)  # reserved once
    other = {**body, "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 3}]}
    clash = c.post("/wms/releases", json=other, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    assert clash.status_code == 422
    assert "different request body" in clash.json()["detail"]


def test_invoice_posting_is_idempotent_and_moves_ar_once(sandbox):
    c = sandbox.client
    cust = c.get("/erp/credit_accounts", params={"limit": 1}).json()["items"][0]["customer_id"]
    ar0 = c.get(f"/erp/customers/{cust}/exposure").json()["open_ar"]
    inv = {
        "order_id": "ORD-T2",
        "customer_id": cust,
        "tax": 5.0,
        "lines": [{"line_no": 1, "item_id": "X", "quantity": 10, "unit_price": 9.5}],
    }
    assert c.post("/erp/invoices", json=inv).status_code == 400
    a = c.post("/erp/invoices", json=inv, headers={"Idempotency-Key": "ORD-T2:invoice:v1"})
    b = c.post("/erp/invoices", json=inv, headers={"Idempotency-Key": "ORD-T2:invoice:v1"})
    assert a.status_code == 201
    assert b.status_code == 200
    assert a.json()["invoice_number"] == b.json()["invoice_number"]
    ar1 = c.get(f"/erp/customers/{cust}/exposure").json()["open_ar"]
    assert ar1 == pytest.approx(ar0 + 100.0)


def test_concurrent_reservations_never_oversell(sandbox):
    c = sandbox.client
    pos = _stocked(c, minimum=20)
    available = pos["available"]
    qty = max(1.0, float(int(available // 15)))
    attempts = int(available // qty) * 2 + 5

    def reserve(i):
        with httpx.Client(base_url=sandbox, timeout=10) as cl:
            return cl.post(
                "/wms/reservations",
                json={
                    "item_id": pos["item_id"],
                    "dc_id": pos["dc_id"],
                    "quantity": qty,
                    "reference": f"T3-{i}",
                },
            ).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(reserve, range(attempts)))
    assert set(codes) <= {201, 409}
    assert codes.count(201) == int(available // qty)
    final = next(
        p
        for p in c.get(
            "/wms/inventory", params={"item_id": pos["item_id"], "dc_id": pos["dc_id"]}
        ).json()["items"]
    )
    assert final["available"] >= 0
    assert final["available"] == pytest.approx(available - codes.count(201) * qty)


def test_milestones_progress_with_time_and_tracking_follows(sandbox):
    c = sandbox.client
    pos = _stocked(c)
    rel = c.post(
        "/wms/releases",
        headers={"Idempotency-Key": "ORD-T4:release:v1"},
        json={
            "order_id": "ORD-T4",
            "dc_id": pos["dc_id"],
            "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 1}],
        },
    ).json()

    def events(path):
        out, cursor = [], 0
        while True:
            page = c.get(path, params={"cursor": cursor, "limit": 500}).json()
            out += page["items"]
            if page["next_cursor"] == cursor:
                return out
            cursor = page["next_cursor"]

    mine = [e for e in events("/wms/milestones") if e["release_id"] == rel["release_id"]]
    assert [e["milestone"] for e in mine] == ["released"]
    c.put("/admin/clock", json={"advance_minutes": 3 * 24 * 60})
    mine = [
        e["milestone"] for e in events("/wms/milestones") if e["release_id"] == rel["release_id"]
    ]
    assert [m for m in mine if m != "short_picked"] == ["released", "picked", "packed", "shipped"]
    c.put("/admin/clock", json={"advance_minutes": 7 * 24 * 60})
    track = [
        e["status"] for e in events("/carrier/tracking") if e["release_id"] == rel["release_id"]
    ]
    assert track[0] == "in_transit"
    assert track[-1] in {"delivered", "exception"}


def test_portal_feed_cursor_has_no_gaps_or_repeats_and_files_are_delivered(sandbox, day_dir):
    c = sandbox.client
    c.put("/admin/clock", json={"now": (START + timedelta(days=1)).isoformat()})
    seen, cursor = [], 0
    while True:
        page = c.get("/portal/orders", params={"cursor": cursor, "limit": 17}).json()
        seen += [o["client_request_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    expected = [
        json.loads(line)["client_request_id"]
        for line in (day_dir / "orders.jsonl").read_text().splitlines()
        if json.loads(line)["channel"] == "portal"
    ]
    assert seen == expected
    assert len(seen) == len(set(seen)) > 0
    deliveries = [
        json.loads(line) for line in (day_dir / "deliveries.jsonl").read_text().splitlines()
    ]
    assert c.get("/admin/state").json()["deliveries"]["delivered"] == len(deliveries)
    assert len(list((sandbox.drop / "edi" / "inbound").rglob("*.x12"))) == sum(
        d["channel"] == "edi" for d in deliveries
    )
    assert len(list((sandbox.drop / "mailbox" / "new").glob("*.eml"))) == sum(
        d["channel"] == "email" for d in deliveries
    )


def test_credit_tax_screening_answer(sandbox, day_dir):
    c = sandbox.client
    acct = c.get("/erp/credit_accounts", params={"limit": 1}).json()["items"][0]
    ok = c.post("/credit/check", json={"customer_id": acct["customer_id"], "amount": 1}).json()
    huge = c.post(
        "/credit/check",
        json={"customer_id": acct["customer_id"], "amount": acct["credit_limit"] * 10},
    ).json()
    assert ok["decision"] in {"approve", "decline"}
    assert huge["decision"] in {"refer", "decline"}
    tax = c.post(
        "/tax/quote",
        json={"customer_id": "C1", "region": "CA", "lines": [{"line_no": 1, "amount": 100}]},
    ).json()
    assert tax["total_tax"] == pytest.approx(7.25)
    party = json.loads((day_dir / "world.json").read_text())["restricted_parties"][0]
    hit = c.post(
        "/screening/check", json={"name": party["name"], "country": party["country"]}
    ).json()
    assert hit["status"] == "review"
    assert hit["hits"]
    clear = c.post(
        "/screening/check", json={"name": "Plain Hardware Supply", "country": "US"}
    ).json()
    assert clear["status"] == "clear"


def _rules(c, **rule):
    c.put("/admin/faults", json={"seed": 3, "rules": [rule]}).raise_for_status()


def test_fault_error_rate_is_observable_and_deterministic(sandbox):
    c = sandbox.client

    def run():
        _rules(c, prefix="/tax", error_rate=0.5)
        return [
            c.post("/tax/quote", json={"customer_id": "C", "region": "CA", "lines": []}).status_code
            for _ in range(30)
        ]

    a, b = run(), run()
    assert a == b
    assert set(a) == {200, 503}


def test_fault_latency_timeout_and_reset(sandbox):
    c = sandbox.client
    body = {"customer_id": "C", "region": "CA", "lines": []}
    _rules(c, prefix="/tax", latency_ms=300)
    t0 = time.perf_counter()
    assert c.post("/tax/quote", json=body).status_code == 200
    assert time.perf_counter() - t0 >= 0.3
    _rules(c, prefix="/tax", timeout_rate=1.0, timeout_s=5)
    with pytest.raises(httpx.ReadTimeout):
        c.post("/tax/quote", json=body, timeout=0.5)
    _rules(c, prefix="/tax", reset_rate=1.0)
    # A reset surfaces as "server disconnected" or "connection reset by peer",
    # depending on whether the kernel saw the RST before the client read.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{sandbox}/tax/quote", json=body, timeout=5)


def test_fault_duplicates_and_out_of_order_in_feeds(sandbox):
    c = sandbox.client
    c.put("/admin/clock", json={"now": (START + timedelta(days=1)).isoformat()})
    _rules(c, prefix="/portal", duplicate_rate=1.0)
    ids = [
        o["client_request_id"]
        for o in c.get("/portal/orders", params={"limit": 10}).json()["items"]
    ]
    assert len(ids) == 20
    assert len(set(ids)) == 10
    _rules(c, prefix="/wms/milestones", out_of_order_rate=1.0)
    seqs = [e["seq"] for e in c.get("/wms/milestones", params={"limit": 50}).json()["items"]]
    assert len(seqs) > 3
    assert seqs != sorted(seqs)
