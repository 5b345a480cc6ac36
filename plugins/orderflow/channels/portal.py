"""B2B portal orders (JSON from the portal feed) → canonical orders.

The portal knows the customer and the ship-to (the buyer is logged in), so orders arrive
with ``customer_id``; lines carry the customer's part numbers or our ids as typed.

One feed item is one message and one order — or one change to an order sent before
(``"type": "cancel"`` / ``"change"``, :func:`parse_change`); whatever is wrong with it (not JSON, a missing
field, a value outside the store's bounds — quantity scale, price size, NUL characters, a
currency that is not three letters, a repeated line number) is a ``portal.invalid`` error
naming the field, never an exception. Free text a spreadsheet would evaluate is stored with
a leading apostrophe.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from orderflow.domain.changes import ChangeKind, LineChange, LineChangeKind, OrderChange
from orderflow.domain.models import (
    Address,
    Channel,
    Code,
    CurrencyCode,
    Ident,
    IntakeError,
    LineNo,
    Order,
    OrderLine,
    ProductId,
    Provenance,
    Quantity,
    Text,
    UnitPrice,
    check_storable,
    order_id_for,
    spreadsheet_safe,
)


class _Feed(BaseModel):
    """Feed values the store cannot hold are refused where they are (``order.lines[0]…``)."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v):
        check_storable(v)
        return v


class _PortalLine(_Feed):
    model_config = ConfigDict(extra="ignore")
    line_no: LineNo
    customer_part_number: Ident | None = None
    id_qualifier: Code | None = None
    id_value: Ident | None = None
    description: Text | None = None
    quantity: Quantity
    uom: Code = Field(min_length=1)
    unit_price: UnitPrice | None = None


class _PortalOrder(_Feed):
    model_config = ConfigDict(extra="ignore")
    customer_id: Ident = Field(min_length=1)
    ship_to_id: Ident | None = None
    po_number: Ident = Field(min_length=1)
    po_date: date | None = None
    requested_ship_date: date | None = None
    currency: CurrencyCode = "USD"
    lines: list[_PortalLine] = Field(min_length=1)

    @field_validator("currency", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.strip().upper() if isinstance(v, str) else v


class _PortalItem(_Feed):
    model_config = ConfigDict(extra="ignore")
    client_request_id: Ident = Field(min_length=1)
    submitted_at: datetime | None = None
    order: _PortalOrder


class _PortalLineChange(_Feed):
    model_config = ConfigDict(extra="ignore")
    line_no: LineNo
    action: Literal["add", "delete", "quantity", "price", "quantity_and_price"]
    quantity: Quantity | None = None
    unit_price: UnitPrice | None = None
    uom: Code | None = None
    customer_part_number: Ident | None = None
    description: Text | None = None


class _PortalChange(_Feed):
    """A change item: ``{"type": "cancel" | "change", "client_request_id" (or
    "request_id"), "customer_id", "po_number", "reason", "lines": [{"line_no", "action":
    add|delete|quantity|price|quantity_and_price, "quantity", "unit_price", "uom",
    "customer_part_number", "description"}]}``."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["cancel", "change"]
    client_request_id: Ident = Field(
        min_length=1, validation_alias=AliasChoices("client_request_id", "request_id")
    )
    submitted_at: datetime | None = None
    customer_id: Ident = Field(min_length=1)
    po_number: Ident = Field(min_length=1)
    reason: Text | None = None
    lines: list[_PortalLineChange] = Field(default_factory=list)


def is_change(item: dict) -> bool:
    """A feed item that changes an order sent before (not a new order)."""
    return isinstance(item, dict) and item.get("type") in ("cancel", "change")


def parse_change(
    raw: bytes, *, partner_id: str = "portal"
) -> tuple[OrderChange | None, list[IntakeError]]:
    """One portal change item (its JSON bytes) → an :class:`OrderChange`, or the errors."""
    try:
        item = _PortalChange.model_validate_json(raw)
        if item.type == "change" and not item.lines:
            return None, [
                IntakeError(
                    code="portal.invalid",
                    message="lines: a change item must say which lines change",
                    where="lines",
                    action="Check the portal feed item; replay after it is fixed.",
                )
            ]
        lines = [
            LineChange(
                line_no=ln.line_no,
                kind=LineChangeKind(ln.action),
                quantity=ln.quantity,
                unit_price=ln.unit_price,
                uom=ln.uom.upper() if ln.uom else None,
                customer_part_number=ln.customer_part_number,
                description=spreadsheet_safe(ln.description) if ln.description else None,
            )
            for ln in item.lines
        ]
        return OrderChange(
            kind=ChangeKind.CANCEL if item.type == "cancel" else ChangeKind.CHANGE,
            po_number=item.po_number,
            channel=Channel.PORTAL,
            partner_id=partner_id,
            customer_id=item.customer_id,
            reference=item.client_request_id,
            reason=spreadsheet_safe(item.reason) if item.reason else None,
            lines=lines if item.type == "change" else [],
        ), []
    except ValidationError as exc:
        return None, [
            IntakeError(
                code="portal.not_json" if err["type"] == "json_invalid" else "portal.invalid",
                message=f"{_loc(err['loc']) or 'change'}: {err['msg']}",
                where=_loc(err["loc"]) or "change",
                action="Ask the customer to correct and resubmit the change in the portal, "
                "then replay this message.",
            )
            for err in exc.errors(include_url=False, include_input=False)[:20]
        ]
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, [
            IntakeError(
                code="portal.not_json",
                message=f"not a JSON object: {type(exc).__name__}: {str(exc)[:200]}",
                action="Check the portal feed; replay after it is fixed.",
            )
        ]


def parse_item(
    raw: bytes,
    *,
    partner_id: str = "portal",
    message_id: int | None = None,
    source_ref: str | None = None,
    sha: str | None = None,
) -> tuple[Order | None, list[IntakeError]]:
    """One portal feed item (its JSON bytes) → an order, or the errors that stop it."""
    try:
        item = _PortalItem.model_validate_json(raw)
        return _order(item, partner_id, message_id, source_ref, sha), []
    except ValidationError as exc:
        return None, [
            IntakeError(
                code="portal.not_json" if err["type"] == "json_invalid" else "portal.invalid",
                message=f"{_loc(err['loc']) or 'order'}: {err['msg']}",
                where=_loc(err["loc"]) or "order",
                action="Ask the customer to correct and resubmit the order in the portal, "
                "then replay this message.",
            )
            for err in exc.errors(include_url=False, include_input=False)[:20]
        ]
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, [
            IntakeError(
                code="portal.not_json",
                message=f"not a JSON object: {type(exc).__name__}: {str(exc)[:200]}",
                action="Check the portal feed; replay after it is fixed.",
            )
        ]


def _order(item: _PortalItem, partner_id, message_id, source_ref, sha) -> Order:
    """The canonical order (raises ValidationError, with ``order.…`` locations, for what the
    canonical model refuses beyond the feed schema, e.g. a repeated line number)."""
    o = item.order
    lines = []
    for ln in o.lines:
        pids = []
        if ln.customer_part_number:
            pids.append(ProductId(qualifier="BP", value=ln.customer_part_number))
        if ln.id_qualifier and ln.id_value and ln.id_value != ln.customer_part_number:
            pids.append(ProductId(qualifier=ln.id_qualifier, value=ln.id_value))
        lines.append(
            OrderLine(
                line_no=ln.line_no,
                product_ids=pids,
                customer_part_number=ln.customer_part_number
                or (ln.id_value if ln.id_qualifier in ("BP", "IN", "CB") else None),
                description=spreadsheet_safe(ln.description) if ln.description else None,
                quantity=ln.quantity,
                uom=ln.uom.upper(),
                unit_price=ln.unit_price,
            )
        )
    return Order(
        order_id=order_id_for(Channel.PORTAL, partner_id, o.po_number, item.client_request_id),
        po_number=o.po_number,
        po_date=o.po_date,
        customer_id=o.customer_id,
        ship_to=Address(party_id=o.ship_to_id, party_id_qualifier="92") if o.ship_to_id else None,
        currency=o.currency,
        requested_ship_date=o.requested_ship_date,
        lines=lines,
        provenance=Provenance(
            channel=Channel.PORTAL,
            partner_id=partner_id,
            message_id=message_id,
            source_ref=source_ref,
            document_sha256=sha,
            client_request_id=item.client_request_id,
            received_at=item.submitted_at,
        ),
    )


def item_bytes(item: dict) -> bytes:
    """Canonical bytes of a feed item: stable key order, so a re-read hashes the same."""
    return json.dumps(item, sort_keys=True, separators=(",", ":")).encode()


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
