"""Seeding shared by the decision-support e2e modules (``tests/e2e/test_ai_dags.py``,
``test_ai_delay_flow.py``, ``test_ai_substitutes_flow.py``): a store trained by the
``train_models`` DAG on imported history, customers, items and contracts, and orders taken in
through the API channel's path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from orderflow.store import db


def run_dag(dag_id: str, **conf):
    """``dag.test()`` of one DAG of ``dags/``; asserts that the run succeeded."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag(dag_id).test(run_conf=conf or None)
    assert run.state == DagRunState.SUCCESS
    return run


def trained_store(seed: int, days: int, orders_per_day: int, models: str | None = None):
    """A connection to the test store after generated history was imported as labelled
    examples and the ``train_models`` DAG trained ``models`` (all of them when None), and
    the example counts per model."""
    from orderflow.ai import evaluate

    conn = db.connect()
    counts = evaluate.import_history(conn, seed=seed, days=days, orders_per_day=orders_per_day)
    run_dag("train_models", **({"models": models} if models else {}))
    return conn, counts


def seed_customer(
    conn,
    cid: str,
    *,
    tier: str = "standard",
    email: str | None = None,
    accepts_substitutes: bool = False,
) -> str:
    """A customer with one ship-to (``<cid>-ST1``, Albany NY, zone Z3) and ample credit."""
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "email, accepts_substitutes, dq_passed) VALUES (%s, %s, %s, 'NET30', true, %s, %s, "
            "true)",
            (cid, f"Customer {cid}", tier, email, accepts_substitutes),
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
    return cid


def seed_item(
    conn,
    item: str,
    *,
    pack_size: int = 12,
    list_price: str = "11.00",
    unit_cost: str = "6.00",
    vendor_part: str | None = None,
    substitutes: Sequence[str] = (),
    stock: Mapping[str, int] | None = None,
) -> str:
    """An item sold per each (``EA``), with ``stock`` on hand per DC (none when None)."""
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
            "list_price, unit_cost, vendor_part, substitute_item_ids, dq_passed) "
            "VALUES (%s, %s, 'EA', %s, 1.0, %s, %s, %s, %s, true)",
            (
                item,
                f"Widget {item}",
                pack_size,
                Decimal(list_price),
                Decimal(unit_cost),
                vendor_part,
                list(substitutes),
            ),
        )
        for dc, on_hand in (stock or {}).items():
            conn.execute(
                "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
                "VALUES (%s, %s, %s)",
                (item, dc, on_hand),
            )
    return item


def seed_contract(conn, cid: str, item: str) -> None:
    """The customer's contract for ``item``: 10.00 per each, 1 % tolerance, no expiry."""
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, "
            "unit_price, uom, effective_from, expires_on, tolerance_pct) "
            "VALUES (%s, %s, %s, 10.00, 'EA', '2025-01-01', NULL, 1.0)",
            (f"K-{cid}", cid, item),
        )


def seed_customer_item(conn, tag: str) -> tuple[str, str]:
    """A customer (one ship-to, credit) and a 12-pack item sold per each at 10.00 by contract."""
    cid, item = seed_customer(conn, f"C-AI-{tag}"), seed_item(conn, f"IT-AI-{tag}")
    seed_contract(conn, cid, item)
    return cid, item


def take_order(conn, oid: str, cid: str, item: str, qty, price: str, received_at=None) -> str:
    """One order of ``qty`` × ``item`` at ``price`` from the customer, through the API
    channel's intake (status RECEIVED); returns its id."""
    from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
    from orderflow.store import intake

    order = Order(
        order_id=oid,
        po_number=f"PO-{oid}",
        customer_id=cid,
        ship_to=Address(
            name=cid,
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country="US",
        ),
        lines=[
            OrderLine(line_no=1, item_id=item, quantity=Decimal(qty), uom="EA", unit_price=price)
        ],
        provenance=Provenance(
            channel=Channel.API, partner_id=f"P-{cid}", received_at=received_at or datetime.now(UTC)
        ),
    )
    with db.transaction(conn):
        intake.insert_orders(conn, [order], message_id=None, actor_id="test.intake")
    return oid


def seed_east_dc(conn) -> None:
    """DC-EAST and the UPSN ground service the planner picks for the seeded orders."""
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.distribution_center (dc_id, name, region, timezone, zones, "
            "postal_code, country) VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', "
            "'{Z1,Z2,Z3}', '08817', 'US') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, "
            "transit_days, max_weight_kg, hazmat_allowed, active, base_rate, per_kg) "
            "VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.8500) "
            "ON CONFLICT (carrier_id, service_code) DO UPDATE SET active = true"
        )
