"""Canonical objects of OrderFlow (pydantic v2). Every channel parser produces these; every
stage decides on these. Money is ``Decimal`` with a currency; quantities carry a unit of
measure; times are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


class Channel(StrEnum):
    EDI = "edi"
    PORTAL = "portal"
    EMAIL = "email"
    CSV = "csv"
    API = "api"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)


class Provenance(_Model):
    """Where an order came from, precisely enough to find and replay the source."""

    channel: Channel
    partner_id: str | None = None
    message_id: int | None = Field(None, description="orderflow.channel_message id")
    source_ref: str | None = Field(None, description="file name, mail id, feed cursor")
    document_sha256: str | None = None
    interchange_control_number: str | None = Field(None, description="ISA13")
    group_control_number: str | None = Field(None, description="GS06")
    transaction_control_number: str | None = Field(None, description="ST02")
    client_request_id: str | None = None
    received_at: AwareDatetime | None = None
    extraction_model: str | None = Field(None, description="model@version for extracted documents")


class Address(_Model):
    """A party: buyer, ship-to, bill-to. ``party_id`` is the sender's code for it (N104)."""

    name: str | None = None
    party_id: str | None = None
    party_id_qualifier: str | None = None
    address_lines: list[str] = Field(default_factory=list)
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


class ProductId(_Model):
    """One product identifier as sent, e.g. (BP, buyer part) or (UP, UPC) from PO1."""

    qualifier: str
    value: str


class Charge(_Model):
    """An allowance or charge (X12 SAC)."""

    indicator: str = Field(description="A allowance, C charge, N no allowance or charge")
    code: str | None = None
    amount: Decimal | None = None
    description: str | None = None


class OrderLine(_Model):
    line_no: int = Field(gt=0)
    source_line_id: str | None = Field(None, description="PO101 / the document's own line id")
    product_ids: list[ProductId] = Field(default_factory=list)
    customer_part_number: str | None = None
    item_id: str | None = Field(None, description="Our item, once mapped (None at intake)")
    description: str | None = None
    quantity: Decimal = Field(gt=0)
    uom: str
    unit_price: Decimal | None = Field(None, ge=0)
    price_basis: str | None = Field(None, description="PO105, e.g. PE per each")
    pack: str | None = Field(None, description="PO4 pack/size/uom, as sent")
    requested_ship_date: date | None = None
    confidence: dict[str, Confidence] = Field(default_factory=dict)

    def product_id(self, *qualifiers: str) -> str | None:
        for q in qualifiers:
            for pid in self.product_ids:
                if pid.qualifier == q:
                    return pid.value
        return None


class Order(_Model):
    """A customer purchase order in canonical form, whatever channel it came from."""

    order_id: str
    po_number: str = Field(min_length=1)
    po_date: date | None = None
    purpose: str = Field("original", description="original | replace | cancel | confirmation")
    order_type: str | None = Field(None, description="BEG02, e.g. SA stand-alone, DS drop ship")
    customer_id: str | None = Field(None, description="Our customer, when the channel knows it")
    buyer: Address | None = None
    ship_to: Address | None = None
    bill_to: Address | None = None
    currency: str = Field("USD", min_length=3, max_length=3)
    requested_ship_date: date | None = None
    requested_delivery_date: date | None = None
    cancel_after: date | None = None
    carrier_routing: str | None = Field(None, description="TD5 routing / carrier request")
    payment_terms: str | None = None
    references: dict[str, str] = Field(default_factory=dict)
    contacts: list[str] = Field(default_factory=list)
    charges: list[Charge] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    lines: list[OrderLine] = Field(min_length=1)
    declared_line_count: int | None = Field(None, description="CTT01 as sent")
    provenance: Provenance
    confidence: dict[str, Confidence] = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def total(self) -> Decimal | None:
        if any(ln.unit_price is None for ln in self.lines):
            return None
        return sum((ln.quantity * ln.unit_price for ln in self.lines), Decimal("0"))

    @property
    def min_confidence(self) -> float:
        values = list(self.confidence.values()) + [
            v for ln in self.lines for v in ln.confidence.values()
        ]
        return min(values, default=1.0)


def order_id_for(channel: str, partner_id: str | None, po_number: str, discriminator: str) -> str:
    """A stable order id: the same source document always yields the same id, so a replay
    or a rerun upserts instead of duplicating. ``discriminator`` separates distinct orders
    that reuse a PO number (e.g. the ST02 or the message hash)."""
    digest = hashlib.sha256(
        f"{channel}|{partner_id or ''}|{po_number}|{discriminator}".encode()
    ).hexdigest()[:12]
    return f"{channel.upper()[:3]}-{digest}"


class ChannelMessageOutcome(StrEnum):
    PENDING = "pending"
    ORDERS_CREATED = "orders_created"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"


class IntakeError(_Model):
    """A human-actionable reason a message (or part of it) was not accepted."""

    code: str = Field(description="machine code, e.g. x12.se_count_mismatch")
    message: str = Field(description="what is wrong, in words a person can act on")
    where: str | None = Field(None, description="segment/line/field, e.g. 'ST 0001 / SE01'")
    action: str | None = Field(None, description="what to do about it")
