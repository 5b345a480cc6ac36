"""Seeding for the decision-support tests (``tests/e2e/test_ai_dags.py``)."""

from __future__ import annotations

from orderflow.store import db


def seed_customer_item(conn, tag: str) -> tuple[str, str]:
    """A customer (one ship-to, credit) and a 12-pack item sold per each at 10.00 by contract."""
    cid, item = f"C-AI-{tag}", f"IT-AI-{tag}"
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "dq_passed) VALUES (%s, %s, 'standard', 'NET30', true, true)",
            (cid, f"Customer {cid}"),
        )
        conn.execute(
            "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
            "region, postal_code, country, zone, dq_passed) VALUES (%s, %s, %s, '1 Main St', "
            "'Albany', 'NY', '12207', 'US', 'Z3', true)",
            (f"{cid}-ST1", cid, cid),
        )
        conn.execute(
            "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
            "VALUES (%s, 1000000, 0, false)",
            (cid,),
        )
        conn.execute(
            "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
            "list_price, unit_cost, dq_passed) VALUES (%s, %s, 'EA', 12, 1.0, 11.00, 6.00, true)",
            (item, f"Widget {item}"),
        )
        conn.execute(
            "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, unit_price, "
            "uom, effective_from, expires_on, tolerance_pct) "
            "VALUES (%s, %s, %s, 10.00, 'EA', '2025-01-01', NULL, 1.0)",
            (f"K-{cid}", cid, item),
        )
    return cid, item
