"""``POST /orderflow/api/check`` over HTTP against a real ``airflow api-server`` carrying the
plugin: Airflow's JWT decides who asks (401 without one), the OrderFlow role mapping whether
they may (sales, customer_service, operations_manager; 403 otherwise); the answer prices from
the contract, places the lines on a DC with a promised date, states credit headroom and the
holds with their category and owner role — and asking changes nothing in the store."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from orderflow.store import db

pytestmark = [pytest.mark.db, pytest.mark.airflow_db]

USERS = {"sam.sales": "viewer", "cs.casey": "op", "pat.pricing": "op", "boss": "admin"}
ROLES = {
    "sam.sales": ["sales"],
    "cs.casey": ["customer_service"],
    "pat.pricing": ["pricing"],  # may resolve pricing holds, not ask the check
    "boss": ["operations_manager"],
}


@pytest.fixture(scope="module")
def seeded(store_url):
    conn = db.connect()
    with db.transaction(conn):
        conn.execute(
            """
            INSERT INTO orderflow.distribution_center
                (dc_id, name, region, timezone, zones, postal_code, country)
            VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', '{Z1,Z2,Z3}', '08817', 'US'),
                   ('DC-WEST', 'West DC', 'CA', 'America/Los_Angeles', '{Z6,Z7,Z8}', '91761', 'US')
            """
        )
        conn.execute(
            """
            INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, transit_days,
                max_weight_kg, hazmat_allowed, active, base_rate, per_kg)
            VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.85),
                   ('ODFL', 'LTL', 'ltl', 4, 9000, true, true, 120.00, 0.22)
            """
        )
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "ship_complete, accepts_substitutes, dq_passed) "
            "VALUES ('C-API', 'Acme Hardware', 'standard', 'NET30', true, false, false, true)"
        )
        conn.execute(
            "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
            "region, postal_code, country, zone, dq_passed) VALUES ('C-API-ST1', 'C-API', "
            "'Acme Albany', '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)"
        )
        conn.execute(
            "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
            "VALUES ('C-API', 5000, 1200, false)"
        )
        for item, east, west in (("IT-A", 100, 0), ("IT-B", 5, 50), ("IT-C", 0, 0)):
            conn.execute(
                "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
                "list_price, unit_cost, dq_passed) VALUES (%s, %s, 'EA', 1, 1.0, 12.00, 6.00, "
                "true)",
                (item, f"Widget {item}"),
            )
            conn.execute(
                "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
                "VALUES (%s, 'DC-EAST', %s), (%s, 'DC-WEST', %s)",
                (item, east, item, west),
            )
        conn.execute(
            "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, unit_price, "
            "uom, effective_from, expires_on, tolerance_pct) "
            "VALUES ('K-API-A', 'C-API', 'IT-A', 10.00, 'EA', '2025-01-01', NULL, 1.0)"
        )
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def api(seeded, airflow_db, tmp_path_factory):
    from orderflow.dev.api_server import start_api_server

    server = start_api_server(tmp_path_factory.mktemp("api"), USERS, ROLES)
    yield server
    server.stop()


def draft(**over) -> dict:
    return {
        "customer_id": "C-API",
        "ship_to_id": "C-API-ST1",
        "po_number": "PO-ASK-1",
        "lines": [
            {"item_id": "IT-A", "quantity": 10, "unit_price": "10.00"},
            {"item_id": "IT-B", "quantity": 20},
        ],
        **over,
    }


def ask(api, user: str | None, body: dict) -> httpx.Response:
    headers = api.headers(user) if user else {}
    return httpx.post(f"{api.base}/orderflow/api/check", json=body, headers=headers, timeout=30)


def _fingerprint(conn) -> tuple:
    return conn.execute(
        'SELECT (SELECT count(*) FROM orderflow."order"), '
        "(SELECT count(*) FROM orderflow.order_exception), "
        "(SELECT count(*) FROM orderflow.reservation), "
        "(SELECT coalesce(sum(allocated), 0) FROM orderflow.inventory_position)"
    ).fetchone()


def test_without_a_token_the_check_answers_401(api):
    r = ask(api, None, draft())
    assert r.status_code == 401
    forged = httpx.post(
        f"{api.base}/orderflow/api/check",
        json=draft(),
        headers={"Authorization": "Bearer not-a-jwt"},
        timeout=30,
    )
    assert forged.status_code == 401


def test_a_role_without_the_check_gets_403(api):
    r = ask(api, "pat.pricing", draft())
    assert r.status_code == 403
    assert "sales" in r.json()["detail"]


@pytest.mark.parametrize("user", ["sam.sales", "cs.casey", "boss"])
def test_sales_customer_service_and_operations_may_ask(api, user, seeded):
    before = _fingerprint(seeded)
    r = ask(api, user, draft())
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["outcome"] == "would_release" and answer["holds"] == []
    a, b = answer["lines"]
    assert (a["price_source"], a["contract_id"], Decimal(a["unit_price"])) == (
        "contract",
        "K-API-A",
        Decimal("10.00"),
    )
    assert (b["price_source"], Decimal(b["unit_price"])) == ("list", Decimal("12.00"))
    # no DC holds both (IT-A only East, IT-B 5 East + 50 West): IT-B is split over two DCs
    assert a["status"] == "allocated" and [p["dc_id"] for p in a["placements"]] == ["DC-EAST"]
    assert b["status"] == "split"
    assert {p["dc_id"] for p in b["placements"]} == {"DC-EAST", "DC-WEST"}
    assert a["promised_date"] and answer["promised_date"] >= a["promised_date"]
    credit = answer["credit"]
    assert Decimal(credit["headroom"]) == Decimal("3800")  # 5000 − 1200 AR − 0 open orders
    assert Decimal(credit["order_amount"]) == Decimal("340.00")
    assert credit["decision"] == "approve"
    assert {d["check"] for d in answer["deferred"]} == {"credit_service", "screening", "tax"}
    assert _fingerprint(seeded) == before  # asking writes nothing, reserves nothing


def test_holds_come_with_category_owner_role_and_reason(api):
    r = ask(
        api,
        "sam.sales",
        draft(
            lines=[
                {"item_id": "IT-A", "quantity": 10, "unit_price": "7.00"},  # contract says 10
                {"item_id": "IT-C", "quantity": 1},  # none anywhere
            ]
        ),
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["outcome"] == "would_hold" and answer["first_hold_stage"] == "validate"
    by_cat = {h["category"]: h for h in answer["holds"]}
    assert by_cat["pricing_mismatch"]["stage"] == "validate"
    assert by_cat["pricing_mismatch"]["line_no"] == 1
    assert by_cat["pricing_mismatch"]["owner_role"] == "pricing"
    assert "contract K-API-A" in by_cat["pricing_mismatch"]["reason"]
    # what the next stage would say once the price is settled: IT-C is backordered
    lines = {ln["line_no"]: ln for ln in answer["lines"]}
    assert lines[2]["status"] == "backordered" and Decimal(lines[2]["backordered"]) == 1


def test_credit_headroom_is_exceeded_before_submitting(api):
    r = ask(api, "sam.sales", draft(lines=[{"item_id": "IT-A", "quantity": 90}]))
    answer = r.json()
    assert answer["credit"]["decision"] == "approve"  # 900 < 3800
    big = ask(api, "sam.sales", draft(lines=[{"item_id": "IT-A", "quantity": 400}]))
    answer = big.json()
    assert answer["credit"]["decision"] == "hold"
    assert Decimal(answer["credit"]["headroom_after"]) == Decimal("-200.00")
    first = answer["holds"][0]
    assert (first["stage"], first["category"], first["owner_role"]) == (
        "credit",
        "credit_limit",
        "credit",
    )


def test_a_malformed_draft_is_refused_with_422(api):
    r = ask(api, "sam.sales", {"customer_id": "C-API", "lines": []})
    assert r.status_code == 422
    r = ask(api, "sam.sales", draft(lines=[{"item_id": "IT-A", "quantity": -1}]))
    assert r.status_code == 422


def test_a_role_taken_away_applies_at_once_though_the_token_is_kept(api):
    """The worker keeps a token it accepted for a few seconds (not asking Airflow's metadata
    database again); the OrderFlow roles are still read on every request."""
    import os

    roles_file = api.log.parent / "roles.yaml"
    original = roles_file.read_text()
    assert ask(api, "sam.sales", draft()).status_code == 200  # the token is kept now
    try:
        roles_file.write_text(json.dumps({"users": {**ROLES, "sam.sales": ["pricing"]}}))
        st = roles_file.stat()
        os.utime(roles_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        r = ask(api, "sam.sales", draft())
        assert r.status_code == 403, r.text
    finally:
        roles_file.write_text(original)
        st = roles_file.stat()
        os.utime(roles_file, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert ask(api, "sam.sales", draft()).status_code == 200


def test_the_answer_is_json_as_the_openapi_schema_documents_it(api):
    r = ask(api, "cs.casey", draft())
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    from orderflow.ordercheck.models import CheckAnswer

    answer = CheckAnswer.model_validate_json(r.content)
    assert answer.lines[0].contract_id == "K-API-A"
    spec = httpx.get(f"{api.base}/orderflow/openapi.json", timeout=30)  # the plugin app's
    assert spec.status_code == 200
    post = spec.json()["paths"]["/api/check"]["post"]
    assert "CheckAnswer" in json.dumps(post["responses"]["200"])
    assert "DraftOrder" in json.dumps(post["requestBody"])
