"""Customer notifications: every template renders with a subject line, escapes what
customers typed, and the rules decide who hears what."""

from decimal import Decimal

import pytest

from orderflow import notifications, rules

CTX = {
    "order_id": "POR-1",
    "po_number": "PO <77>",
    "customer_name": "Acme & Sons",
    "lines": [
        {
            "line_no": 1,
            "item_id": "A",
            "quantity": Decimal("2"),
            "uom": "EA",
            "status": "open",
            "backordered": Decimal("1"),
        }
    ],
    "ship_date": "2026-11-30",
    "dc_id": "DC-EAST",
    "carrier_id": "UPSN",
    "service_code": "GND",
    "tracking_number": "1Z999",
    "short": True,
    "reason": "weather",
}


@pytest.mark.parametrize(
    "event", ["order_confirmed", "order_backordered", "shipment_shipped", "shipment_delayed"]
)
def test_templates_render_with_subject_and_escaping(event):
    subject, body = notifications.render(event, CTX)
    assert "PO <77>" in subject  # a subject is plain text
    assert "PO &lt;77&gt;" in body and "Acme &amp; Sons" in body
    assert "{{" not in body


def test_shipped_notice_names_the_tracking_number():
    subject, body = notifications.render("shipment_shipped", CTX)
    assert "1Z999" in subject and "shipped short" in body


def test_message_id_is_stable_per_key():
    a = notifications.message_id("email:shipment_shipped:S1")
    assert a == notifications.message_id("email:shipment_shipped:S1")
    assert a != notifications.message_id("email:shipment_shipped:S2")
    assert a.startswith("<") and a.endswith("@orderflow.local>")


def test_rules_send_edi_customers_x12_instead_of_order_emails():
    n = rules.load().fulfilment.notifications
    assert not n.emails("order_confirmed", "edi") and n.emails("order_confirmed", "portal")
    assert n.emails("shipment_shipped", "edi")
    assert n.webhooks("shipment_delivered", "portal") and not n.webhooks(
        "shipment_delivered", "csv"
    )
