"""Customer e-mails reach the relay as multipart/alternative — a readable text part and the
HTML part — with the Message-ID and key they always had (#18: text-only readers, our SMTP
sink among them, showed an empty body)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orderflow import notifications, rules
from orderflow.integrations import outbox
from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db, pytest.mark.sandbox]

ORDER = {
    "order_id": "POR-MAIL-1",
    "channel": "portal",
    "customer_id": "C-MAIL",
    "customer_name": "Acme & Sons",
    "email": "buyer-mail1@example.com",
    "po_number": "PO <4711>",
}
CONTEXT = {
    "lines": [
        {
            "line_no": 1,
            "item_id": "ITM-00042",
            "quantity": Decimal("12"),
            "uom": "EA",
            "status": "released",
            "backordered": Decimal("0"),
        }
    ],
    "ship_date": "2026-11-30",
}


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)


def _mail(sandbox, to: str) -> list[dict]:
    return sandbox.client.get("/mail/messages", params={"to": to}).json()["items"]


def test_a_customer_email_has_a_text_and_an_html_part(store, sandbox):
    book = rules.load()
    with db.transaction(store):
        queued = notifications.queue(
            store,
            book.fulfilment.notifications,
            event="order_confirmed",
            ref="POR-MAIL-1:r1",
            order=ORDER,
            context=CONTEXT,
        )
    assert queued >= 1
    assert outbox.send_due(store, ["email"]).get("sent") == 1

    [m] = _mail(sandbox, ORDER["email"])
    assert m["content_type"] == "multipart/alternative"
    assert m["parts"] == ["text/plain", "text/html"]  # the richer part last, as RFC 2046 asks
    text, html = m["body"], m["html"]
    # The text part reads as text: the order, its status, the line; no markup, no entities.
    assert "Our order:          POR-MAIL-1" in text
    assert "Status:             confirmed, released to our warehouse" in text
    assert "1. ITM-00042: 12 EA (released)" in text
    assert "Hello Acme & Sons," in text and "PO <4711>" in text
    assert "<" + "p>" not in text and "&amp;" not in text
    # The HTML part is the one it always was.
    assert "PO &lt;4711&gt;" in html and "<td>ITM-00042</td>" in html
    # Same Message-ID and key as before: a receiver still tells a re-send from a new message.
    key = "email:order_confirmed:POR-MAIL-1:r1"
    assert m["key"] == key
    assert m["message_id"] == notifications.message_id(key)
    assert m["subject"] == "Order confirmed: PO PO <4711>"

    # A rerun queues nothing and sends nothing.
    with db.transaction(store):
        again = notifications.queue(
            store,
            book.fulfilment.notifications,
            event="order_confirmed",
            ref="POR-MAIL-1:r1",
            order=ORDER,
            context=CONTEXT,
        )
    assert again == 0
    assert outbox.send_due(store, ["email"]).get("sent") is None
    assert len(_mail(sandbox, ORDER["email"])) == 1


def test_an_email_queued_before_it_carried_text_gets_one_from_its_html(store, sandbox):
    subject, html = notifications.render("shipment_shipped", {**ORDER, **CONTEXT, **SHIPPED})
    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key="email:shipment_shipped:S-OLD",
            action="email",
            target_conn_id="smtp_default",
            payload={  # the payload as queued before this change: no "text"
                "event": "shipment_shipped",
                "to": "buyer-old@example.com",
                "subject": subject,
                "html": html,
                "message_id": notifications.message_id("email:shipment_shipped:S-OLD"),
            },
        )
    assert outbox.send_due(store, ["email"]).get("sent") == 1
    [m] = _mail(sandbox, "buyer-old@example.com")
    assert m["parts"] == ["text/plain", "text/html"]
    assert "Tracking number: 1Z-OLD-9" in m["body"] and "our order POR-MAIL-1" in m["body"]
    assert "1 | ITM-00042 | 12 EA" in m["body"]
    assert "<" not in m["body"].replace("PO <4711>", "")


SHIPPED = {
    "dc_id": "DC-EAST",
    "carrier_id": "UPSN",
    "service_code": "GND",
    "tracking_number": "1Z-OLD-9",
    "short": False,
}
