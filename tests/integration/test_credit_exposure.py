"""Credit is judged on the ERP's current exposure, through the real credit stage, the ERP hook
and the sandbox ERP over HTTP: an order placed minutes after a large invoice posts is held on
it although our synced copy of the account does not know the invoice yet; with the ERP down
the synced figures decide and the decision says so."""

from __future__ import annotations

from decimal import Decimal

import pytest
from test_processing_store import (
    CTX,
    _tag,
    insert,
    make_order,
    seed_contract,
    seed_item,
    shared_master_data,  # noqa: F401 (autouse fixture)
    statuses,
)

from orderflow import processing, rules
from orderflow.integrations.systems import ErpHook
from orderflow.store import db

pytestmark = [pytest.mark.db, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []}).raise_for_status()
    yield
    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []}).raise_for_status()


def _erp_account(sandbox) -> dict:
    """A sandbox ERP customer in good standing, with its credit account."""
    rows = sandbox.client.get("/erp/credit_accounts", params={"limit": 1000}).json()["items"]
    good = [r for r in rows if not r["on_hold"] and r["credit_limit"] > 1000]
    assert good
    return good[0]


def _seed_synced_copy(conn, account: dict) -> None:
    """Our synced copy of the account as the last master-data sync left it (no invoice)."""
    cid = account["customer_id"]
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "ship_complete, accepts_substitutes, dq_passed) "
            "VALUES (%s, %s, 'standard', 'NET30', true, false, false, true) "
            "ON CONFLICT (customer_id) DO UPDATE SET tier = 'standard', active = true, "
            "payment_terms = 'NET30', dq_passed = true",
            (cid, f"Customer {cid}"),
        )
        conn.execute(
            "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, "
            "city, region, postal_code, country, zone, dq_passed) "
            "VALUES (%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true) "
            "ON CONFLICT DO NOTHING",
            (f"{cid}-ST1", cid, f"{cid} Albany"),
        )
        conn.execute(
            "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
            "VALUES (%s, %s, %s, false) ON CONFLICT (customer_id) DO UPDATE "
            "SET credit_limit = EXCLUDED.credit_limit, open_ar = EXCLUDED.open_ar, "
            "on_hold = false",
            (cid, Decimal(str(account["credit_limit"])), Decimal(str(account["open_ar"]))),
        )


def _validated_order(conn, book, cid: str) -> str:
    tag = _tag()
    item = f"I-EXP-{tag}"
    with db.transaction(conn):
        seed_item(conn, item, east=50, west=50)
        seed_contract(conn, cid, item)
    (order_id,) = insert(conn, [make_order(f"O-EXP-{tag}", cid, [(item, 2)])])
    assert processing.validate(conn, [order_id], CTX, book).passed == 1
    return order_id


def _credit_details(conn, order_id: str) -> dict:
    return conn.execute(
        "SELECT details FROM orderflow.order_event WHERE order_id = %s "
        "AND details->>'stage' = 'credit' ORDER BY event_id DESC LIMIT 1",
        (order_id,),
    ).fetchone()[0]


def test_an_invoice_posted_minutes_ago_counts_at_credit_time(store, book, sandbox):
    account = _erp_account(sandbox)
    cid = account["customer_id"]
    _seed_synced_copy(store, account)
    headroom = Decimal(str(account["credit_limit"])) - Decimal(str(account["open_ar"]))
    erp = ErpHook("erp_default")
    # A large invoice posts in the ERP (our copy is synced hourly: it does not know yet)
    erp.post_invoice(
        {
            "order_id": f"O-ELSEWHERE-{_tag()}",
            "customer_id": cid,
            "lines": [{"line_no": 1, "item_id": "X", "quantity": 1, "unit_price": float(headroom)}],
            "tax": 0,
        },
        idempotency_key=f"test-exposure:{_tag()}",
    )
    assert erp.exposures([cid])[cid]["open_ar"] >= float(headroom)

    order_id = _validated_order(store, book, cid)
    out = processing.check_credit(store, [order_id], CTX, book, None, erp.exposures)
    assert out.held == {"credit_limit": 1}, out
    assert statuses(store, [order_id])[order_id] == "ON_HOLD"
    reason = store.execute(
        "SELECT reason FROM orderflow.order_exception WHERE order_id = %s "
        "AND category = 'credit_limit' AND status = 'open'",
        (order_id,),
    ).fetchone()[0]
    assert "open AR" in reason

    # the same order on our synced copy alone would have passed
    other = _validated_order(store, book, cid)
    alone = processing.check_credit(store, [other], CTX, book, None, None)
    assert alone.passed == 1


def test_with_the_erp_down_the_synced_figures_decide_and_say_so(store, book, sandbox):
    account = _erp_account(sandbox)
    cid = account["customer_id"]
    _seed_synced_copy(store, account)
    # room for the test order on our copy whatever the earlier test posted in the ERP
    store.execute("UPDATE orderflow.credit_account SET open_ar = 0 WHERE customer_id = %s", (cid,))
    sandbox.client.put(
        "/admin/faults",
        json={"seed": 5, "rules": [{"prefix": "/erp/exposure", "error_rate": 1.0}]},
    ).raise_for_status()
    order_id = _validated_order(store, book, cid)
    erp = ErpHook("erp_default", retries=2, backoff=0.05)
    out = processing.check_credit(store, [order_id], CTX, book, None, erp.exposures)
    assert out.passed == 1, out
    details = _credit_details(store, order_id)
    assert details["exposure_source"] == "synced"
    assert "503" in details["erp_unavailable"]

    sandbox.client.put("/admin/faults", json={"seed": 5, "rules": []}).raise_for_status()
    later = _validated_order(store, book, cid)
    processing.check_credit(store, [later], CTX, book, None, erp.exposures)
    assert _credit_details(store, later)["exposure_source"] == "erp"
