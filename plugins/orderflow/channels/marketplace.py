"""Marketplace orders (JSON from the marketplace's order feed) → canonical orders.

The marketplace sells our listings to business buyers whose marketplace account is linked to
one of our customer accounts: an order names that account (``buyer.account_id`` = our
customer id) and the buyer's registered ship-to; lines carry our listing's seller SKU
(our vendor part number). The marketplace's own order id is the PO number and the
idempotency key. Each order comes with the marketplace's time limits: acknowledge by,
ship by.

A feed item is one message: an order (``"type": "order"``) or a buyer's cancellation request
(``"type": "cancellation"``) of an order sent before, which becomes an
:class:`~orderflow.domain.changes.OrderChange` (cancel) and follows the order-change path.
Whatever is wrong with an item is a ``marketplace.invalid`` error naming the field, never an
exception.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from orderflow.domain.changes import ChangeKind, OrderChange
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

#: the partner id of the sandbox's marketplace (one marketplace per Connection)
DEFAULT_MARKETPLACE = "marketplace"


class _Feed(BaseModel):
    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v):
        check_storable(v)
        return v


class _Buyer(_Feed):
    model_config = ConfigDict(extra="ignore")
    account_id: Ident = Field(min_length=1)
    ship_to_id: Ident | None = None
    name: Text | None = None


class _Line(_Feed):
    model_config = ConfigDict(extra="ignore")
    line_no: LineNo
    sku: Ident = Field(min_length=1)
    title: Text | None = None
    quantity: Quantity
    uom: Code = "EA"
    unit_price: UnitPrice


class _Order(_Feed):
    model_config = ConfigDict(extra="ignore")
    type: Literal["order"] = "order"
    marketplace_order_id: Ident = Field(min_length=1)
    created_at: AwareDatetime
    acknowledge_by: AwareDatetime
    ship_by: AwareDatetime
    buyer: _Buyer
    buyer_po: Ident | None = None
    currency: CurrencyCode = "USD"
    lines: list[_Line] = Field(min_length=1)

    @field_validator("currency", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.strip().upper() if isinstance(v, str) else v


class _Cancellation(_Feed):
    model_config = ConfigDict(extra="ignore")
    type: Literal["cancellation"]
    cancellation_id: Ident = Field(min_length=1)
    marketplace_order_id: Ident = Field(min_length=1)
    account_id: Ident = Field(min_length=1)
    requested_at: AwareDatetime
    respond_by: AwareDatetime | None = None
    reason: Text | None = None


def is_cancellation(item: dict) -> bool:
    return isinstance(item, dict) and item.get("type") == "cancellation"


def request_id(item: dict) -> str | None:
    """The ingest key of a feed item: the marketplace order id, or ``cancel:<id>``."""
    if not isinstance(item, dict):
        return None
    if is_cancellation(item):
        cid = item.get("cancellation_id")
        return f"cancel:{cid}" if cid else None
    mid = item.get("marketplace_order_id")
    return str(mid) if mid else None


def order_id(marketplace_order_id: str, partner_id: str = DEFAULT_MARKETPLACE) -> str:
    """Our order id for a marketplace order (stable: the same order always maps to it)."""
    return order_id_for(Channel.MARKETPLACE, partner_id, marketplace_order_id, marketplace_order_id)


def terms(raw: bytes) -> dict | None:
    """The time limits an order or cancellation item carries (None: not readable): what
    ``marketplace_order`` keeps whatever the intake outcome."""
    try:
        item = json.loads(raw)
    except ValueError:
        return None
    try:
        if is_cancellation(item):
            c = _Cancellation.model_validate(item)
            return {
                "type": "cancellation",
                "marketplace_order_id": c.marketplace_order_id,
                "requested_at": c.requested_at,
                "respond_by": c.respond_by,
            }
        o = _Order.model_validate(item)
    except (ValidationError, ValueError, TypeError):
        return None
    return {
        "type": "order",
        "marketplace_order_id": o.marketplace_order_id,
        "ordered_at": o.created_at,
        "acknowledge_by": o.acknowledge_by,
        "ship_by": o.ship_by,
    }


def parse_item(
    raw: bytes,
    *,
    partner_id: str = DEFAULT_MARKETPLACE,
    message_id: int | None = None,
    sha: str | None = None,
) -> tuple[Order | None, list[IntakeError]]:
    """One marketplace order item (its JSON bytes) → an order, or the errors that stop it."""
    try:
        item = _Order.model_validate_json(raw)
        return _order(item, partner_id, message_id, sha), []
    except ValidationError as exc:
        return None, _errors(exc, "order")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, [_not_json(exc)]


def parse_cancellation(
    raw: bytes, *, partner_id: str = DEFAULT_MARKETPLACE
) -> tuple[OrderChange | None, list[IntakeError]]:
    """One buyer cancellation request → a cancel :class:`OrderChange` of the order it names."""
    try:
        c = _Cancellation.model_validate_json(raw)
    except ValidationError as exc:
        return None, _errors(exc, "cancellation")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, [_not_json(exc)]
    return OrderChange(
        kind=ChangeKind.CANCEL,
        po_number=c.marketplace_order_id,
        channel=Channel.MARKETPLACE,
        partner_id=partner_id,
        customer_id=c.account_id,
        reference=c.cancellation_id,
        reason=spreadsheet_safe(c.reason) if c.reason else "buyer cancellation request",
    ), []


def _order(item: _Order, partner_id, message_id, sha) -> Order:
    lines = [
        OrderLine(
            line_no=ln.line_no,
            product_ids=[ProductId(qualifier="VP", value=ln.sku)],
            description=spreadsheet_safe(ln.title) if ln.title else None,
            quantity=ln.quantity,
            uom=ln.uom.upper(),
            unit_price=ln.unit_price,
        )
        for ln in item.lines
    ]
    b = item.buyer
    return Order(
        order_id=order_id(item.marketplace_order_id, partner_id),
        po_number=item.marketplace_order_id,
        po_date=item.created_at.date(),
        customer_id=b.account_id,
        ship_to=Address(party_id=b.ship_to_id, party_id_qualifier="92") if b.ship_to_id else None,
        currency=item.currency,
        requested_ship_date=item.ship_by.date(),
        lines=lines,
        provenance=Provenance(
            channel=Channel.MARKETPLACE,
            partner_id=partner_id,
            message_id=message_id,
            source_ref=item.marketplace_order_id,
            document_sha256=sha,
            client_request_id=item.marketplace_order_id,
            received_at=item.created_at,
        ),
    )


def _errors(exc: ValidationError, what: str) -> list[IntakeError]:
    return [
        IntakeError(
            code="marketplace.not_json" if err["type"] == "json_invalid" else "marketplace.invalid",
            message=f"{_loc(err['loc']) or what}: {err['msg']}",
            where=_loc(err["loc"]) or what,
            action="The marketplace sent an item OrderFlow cannot read: report it to the "
            "marketplace's seller support, then replay this message after it is fixed.",
        )
        for err in exc.errors(include_url=False, include_input=False)[:20]
    ]


def _not_json(exc: BaseException) -> IntakeError:
    return IntakeError(
        code="marketplace.not_json",
        message=f"not a JSON object: {type(exc).__name__}: {str(exc)[:200]}",
        action="Check the marketplace feed; replay after it is fixed.",
    )


def item_bytes(item: dict) -> bytes:
    """Canonical bytes of a feed item: stable key order, so a re-read hashes the same."""
    return json.dumps(item, sort_keys=True, separators=(",", ":")).encode()


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
