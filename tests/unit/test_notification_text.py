"""Every notification has a text/plain body from the same context as its HTML one (#18)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orderflow import notifications
from orderflow.settings import INCLUDE_DIR

TEMPLATES = INCLUDE_DIR / "templates" / "notifications"
EVENTS = sorted(p.stem for p in TEMPLATES.glob("*.html"))

CTX = {
    "order_id": "POR-1",
    "po_number": "PO <77>",
    "customer_name": "Acme & Sons",
    "lines": [
        {
            "line_no": 1,
            "item_id": "ITM-000-LONG-IDENTIFIER-THAT-MUST-NOT-BE-SPLIT",
            "quantity": Decimal("2"),
            "uom": "EA",
            "status": "open",
            "backordered": Decimal("1"),
            "unit_price": Decimal("9.50"),
        }
    ],
    "ship_date": "2026-11-30",
    "promised_date": "2026-12-04",
    "dc_id": "DC-EAST",
    "carrier_id": "UPSN",
    "service_code": "GND",
    "tracking_number": "1Z999",
    "short": True,
    "reason": "weather",
    "reference": "CHG-9",
    "asked": "change line 1 to 3 EA",
    "why": "picking has started",
    "exception_id": 42,
    "category": "credit_hold",
    "subject": "order POR-1",
    "sla_due_at": "2026-11-30 14:00 UTC",
    "owner_role": "credit",
    "escalation_role": "operations_manager",
}


def test_every_html_template_has_a_text_twin():
    assert EVENTS
    assert sorted(p.stem for p in TEMPLATES.glob("*.txt")) == EVENTS


@pytest.mark.parametrize("event", EVENTS)
def test_the_text_body_names_the_order_and_its_status_unescaped(event):
    text = notifications.render_text(event, CTX)
    assert "Status:" in text
    assert ("POR-1" in text) if not event.startswith("sla_") else ("42 (credit_hold)" in text)
    assert "&lt;" not in text and "&amp;" not in text and "<p>" not in text
    assert "{{" not in text and "{%" not in text
    assert all(len(ln) <= notifications.TEXT_WIDTH for ln in text.splitlines() if "ITM" not in ln)
    assert text.endswith("\n") and "\n\n\n" not in text


def test_text_lines_stay_whole_and_the_summary_keeps_its_layout():
    text = notifications.render_text("order_confirmed", CTX)
    assert "  1. ITM-000-LONG-IDENTIFIER-THAT-MUST-NOT-BE-SPLIT: 2 EA (open)" in text
    assert "  Our order:          POR-1\n" in text
    assert "  Status:             confirmed, released to our warehouse\n" in text


def test_an_optional_paragraph_is_left_out_cleanly():
    shipped = notifications.render_text("shipment_shipped", {**CTX, "short": False})
    assert "shipped short" not in shipped and shipped.endswith("\n") and "\n\n\n" not in shipped


def test_text_from_html_reads_as_text():
    _, html = notifications.render("order_confirmed", CTX)
    text = notifications.text_from_html(html)
    assert text.startswith("Hello Acme & Sons,\n\nWe have accepted your purchase order PO <77>")
    assert "  Line | Item | Quantity | Status\n" in text
    assert "Planned ship date: 2026-11-30." in text
