"""Store rows for the governance and integration-health pages (fast and browser tests):
orders whose pricing hold flips under a looser tolerance, and outbox / outbound-document rows
with known numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from psycopg.types.json import Jsonb

from orderflow.store import db

WINDOW = (datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))
CONTRACT_PRICE = Decimal("100.00")
#: deviation from the contract price per order (%): under the shipped 1 % those beyond 1 %
#: are held pricing_mismatch; under the candidate's 3 % those within 3 % pass
DEVIATIONS = ("0", "0.5", "1.5", "2.0", "2.99", "5")
FLIPPING = ("1.5", "2.0", "2.99")


def candidate_yaml(version: str = "2026.12.9", tolerance: float = 3.0) -> str:
    """The shipped pricing rules with another default contract tolerance, as pasted YAML."""
    import yaml

    from orderflow import rules

    shipped = yaml.safe_load((rules.rules_dir() / "pricing" / "2026.11.1.yaml").read_text())
    shipped.update(rule_set="pricing", version=version, default_contract_tolerance_pct=tolerance)
    return yaml.safe_dump(shipped)


def seed_whatif(conn) -> dict[str, str]:
    """One customer with a contract on one item, stock, DCs and carriers; one order per
    deviation in ``WINDOW`` (and one outside it). Returns {order_id: deviation}."""
    from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
    from orderflow.store import intake

    tag = uuid.uuid4().hex[:6].upper()
    cid, item = f"C-UIG-{tag}", f"ITM-UIG-{tag}"
    with db.transaction(conn):
        conn.execute(
            """
            INSERT INTO orderflow.distribution_center
                (dc_id, name, region, timezone, zones, postal_code, country)
            VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', '{Z1,Z2,Z3}', '08817', 'US')
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            """
            INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, transit_days,
                max_weight_kg, hazmat_allowed, active, base_rate, per_kg)
            VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.85)
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "ship_complete, accepts_substitutes, dq_passed) "
            "VALUES (%s, %s, 'standard', 'NET30', true, false, false, true)",
            (cid, f"Customer {cid}"),
        )
        conn.execute(
            "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
            "region, postal_code, country, zone, dq_passed) "
            "VALUES (%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)",
            (f"{cid}-ST1", cid, f"{cid} Albany"),
        )
        conn.execute(
            "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
            "VALUES (%s, 10000000, 0, false)",
            (cid,),
        )
        conn.execute(
            "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
            "list_price, unit_cost, dq_passed) VALUES (%s, 'Widget', 'EA', 1, 0.5, %s, 40, true)",
            (item, CONTRACT_PRICE),
        )
        conn.execute(
            "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
            "VALUES (%s, 'DC-EAST', 100000)",
            (item,),
        )
        conn.execute(
            "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, "
            "unit_price, uom, effective_from, expires_on, tolerance_pct) "
            "VALUES (%s, %s, %s, %s, 'EA', '2025-01-01', NULL, NULL)",
            (f"K-{tag}", cid, item, CONTRACT_PRICE),
        )

    def order(oid: str, pct: str, at: datetime) -> Order:
        price = (CONTRACT_PRICE * (1 + Decimal(pct) / 100)).quantize(Decimal("0.0001"))
        return Order(
            order_id=oid,
            po_number=f"PO-{oid}",
            customer_id=cid,
            ship_to=Address(
                name=f"{cid} Albany",
                party_id=f"{cid}-ST1",
                address_lines=["1 Main St"],
                city="Albany",
                region="NY",
                postal_code="12207",
                country="US",
            ),
            lines=[
                OrderLine(line_no=1, item_id=item, quantity=Decimal(2), uom="EA", unit_price=price)
            ],
            provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}", received_at=at),
        )

    inside = {f"O-UIG-{tag}-{n}": pct for n, pct in enumerate(DEVIATIONS)}
    at = WINDOW[0] + timedelta(hours=8)
    orders = [
        order(oid, pct, at + timedelta(minutes=n)) for n, (oid, pct) in enumerate(inside.items())
    ]
    orders.append(order(f"O-UIG-{tag}-X", "2.0", WINDOW[1]))  # outside: never replayed
    with db.transaction(conn):
        intake.insert_orders(conn, orders, message_id=None, actor_id="test.intake")
    return inside


def flipping(inside: dict[str, str]) -> set[str]:
    return {oid for oid, pct in inside.items() if pct in FLIPPING}


# ---------------------------------------------------------------------------- outbox
def _outbox(
    conn,
    key,
    action,
    status,
    *,
    attempts=1,
    partner=None,
    receiver="orderflow_edi",
    created=None,
    sent_after=None,
    order_id=None,
    error=None,
    followup=None,
):
    payload = (
        {"partner_id": partner, "document_type": action[-3:], "body": "ISA*..."}
        if partner
        else {"x": 1}
    )
    created = created or datetime.now(UTC) - timedelta(hours=2)
    conn.execute(
        "INSERT INTO orderflow.outbox (idempotency_key, order_id, action, target_conn_id, "
        "payload, status, attempts, last_error, created_at, sent_at, followup_status, "
        "followup_error, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, now() + interval '1 hour')",
        (
            key,
            order_id,
            action,
            receiver,
            Jsonb(payload),
            status,
            attempts,
            error,
            created,
            created + sent_after if sent_after is not None else None,
            followup,
            "IntegrityError: duplicate release" if followup == "dead" else None,
        ),
    )
    if status == "dead" or followup == "dead":
        conn.execute(
            "INSERT INTO orderflow.dead_letter (source, source_ref, payload, error) "
            "VALUES (%s, %s, %s, %s)",
            (
                "outbox_followup" if followup == "dead" else "outbox",
                key,
                Jsonb({"action": action}),
                error or "follow-up failed",
            ),
        )


def _document(conn, key, partner, doc_type, gcn, *, ack=None, transactions=None, order_id=None):
    conn.execute(
        "INSERT INTO orderflow.outbound_document (idempotency_key, partner_id, document_type, "
        "functional_id, interchange_control_number, group_control_number, "
        "set_control_numbers, ack_status, ack_received_at, ack_detail, order_id) "
        "VALUES (%s, %s, %s, 'PR', %s, %s, '{0001}', %s, %s, %s, %s)",
        (
            key,
            partner,
            doc_type,
            gcn.zfill(9),
            gcn,
            ack,
            datetime.now(UTC) if ack else None,
            Jsonb({"transactions": transactions}) if transactions else None,
            order_id,
        ),
    )


def seed_integrations(conn) -> dict:
    """Partner A (ack window 24 h) gets five 855s: two sent at the first attempt, one at
    the third, one dead after 8 attempts, one still retrying after 2 failed attempts. Of the
    three sent, the partner accepted one, rejected one at set level (AK5 R under AK9 A) and
    has not acknowledged one sent 30 h ago (overdue). Partner B (no 997s expected): one 810
    accepted. The WMS: one release sent whose follow-up is dead. Returns the expected
    numbers."""
    tag = uuid.uuid4().hex[:6].upper()
    a, b = f"P-UI-A-{tag}", f"P-UI-B-{tag}"
    now = datetime.now(UTC)
    k = {n: f"edi_855:UI-{tag}:{n}" for n in ("ok1", "ok2", "retried", "dead", "retrying")}
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.trading_partner (partner_id, ack_window_hours) "
            "VALUES (%s, 24), (%s, NULL)",
            (a, b),
        )
        # ok1: accepted; ok2: overdue (sent 30 h ago, no 997); retried: rejected at set level
        _outbox(conn, k["ok1"], "edi_855", "sent", partner=a, sent_after=timedelta(seconds=10))
        _outbox(
            conn,
            k["ok2"],
            "edi_855",
            "sent",
            partner=a,
            created=now - timedelta(hours=30),
            sent_after=timedelta(seconds=20),
            order_id=f"O-UI-{tag}-2",
        )
        _outbox(
            conn,
            k["retried"],
            "edi_855",
            "sent",
            partner=a,
            attempts=3,
            sent_after=timedelta(minutes=3),
        )
        _outbox(
            conn,
            k["dead"],
            "edi_855",
            "dead",
            partner=a,
            attempts=8,
            error="ExternalRejected: gateway said 400",
            order_id=f"O-UI-{tag}-4",
        )
        _outbox(
            conn,
            k["retrying"],
            "edi_855",
            "failed",
            partner=a,
            attempts=2,
            error="ExternalSystemError: timeout",
        )
        _document(conn, k["ok1"], a, "855", f"1{tag[:4]}1", ack="A")
        _document(conn, k["ok2"], a, "855", f"1{tag[:4]}2", order_id=f"O-UI-{tag}-2")
        _document(conn, k["retried"], a, "855", f"1{tag[:4]}3", ack="A", transactions={"0001": "R"})
        kb = f"edi_810:UI-{tag}:1"
        _outbox(conn, kb, "edi_810", "sent", partner=b, sent_after=timedelta(seconds=30))
        _document(conn, kb, b, "810", f"2{tag[:4]}1", ack="A")
        kw = f"wms_release:UI-{tag}:1"
        _outbox(
            conn,
            kw,
            "wms_release",
            "sent",
            receiver=f"orderflow_wms_{tag}",
            sent_after=timedelta(seconds=5),
            followup="dead",
            order_id=f"O-UI-{tag}-W",
        )
    # failure rate of P-UI-A's 855s: failed attempts / finished attempts
    # ok1 1/0, ok2 1/0, retried 3/2, dead 8/8, retrying 2/2 → 12 failed of 15
    return {
        "tag": tag,
        "partner_a": a,
        "partner_b": b,
        "keys": k,
        "edi_810": kb,
        "wms": kw,
        "wms_receiver": f"orderflow_wms_{tag}",
        "a": {
            "queued": 5,
            "sent": 3,
            "attempts": 15,
            "failed_attempts": 12,
            "dead_letters": 1,
            "accepted": 1,
            "rejected": 1,
            "overdue": 1,
        },
    }
