"""Canonical post-release objects: what shipped (:class:`Shipment`) and what we bill
(:class:`Invoice`). The outbound 856 and 810, the ERP invoice and the customer notifications
are all rendered from these, never from a channel's own format.

Lines carry the customer's own identifiers (``source_line_id`` = their PO101, the product ids
they sent) next to ours, so a document echoes what the buyer ordered while naming what we
actually shipped (``item_id`` is the substitute when one shipped).
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from pydantic import AwareDatetime, ConfigDict, Field, computed_field, field_validator

from orderflow.domain.models import Address, ProductId, _Model

CENTS = Decimal("0.01")


class ShippedLine(_Model):
    line_no: int = Field(gt=0, description="our order line")
    source_line_id: str | None = Field(None, description="the buyer's PO101 / line id")
    product_ids: list[ProductId] = Field(
        default_factory=list, description="what the buyer sent (BP, VP, UP …)"
    )
    item_id: str = Field(description="our item that shipped (the substitute, when one did)")
    ordered_item_id: str | None = Field(None, description="our item the line was ordered as")
    quantity_ordered: Decimal = Field(ge=0, description="released to this shipment")
    quantity_shipped: Decimal = Field(ge=0)
    uom: str


class Shipment(_Model):
    """One physical shipment of an order from one DC (a split order has several)."""

    shipment_id: str
    order_id: str
    po_number: str
    po_date: date | None = None
    customer_id: str
    dc_id: str
    ship_from: Address
    ship_to: Address
    carrier_id: str = Field(description="SCAC")
    service_code: str
    mode: str = Field(description="parcel | ltl")
    tracking_number: str | None = None
    weight_kg: Decimal = Field(ge=0)
    shipped_at: AwareDatetime
    lines: list[ShippedLine] = Field(min_length=1)


class InvoiceLine(_Model):
    # computed fields (amount) come back from a dump: ignore them on the way in
    model_config = ConfigDict(extra="ignore")

    line_no: int = Field(gt=0)
    source_line_id: str | None = None
    product_ids: list[ProductId] = Field(default_factory=list)
    item_id: str
    quantity: Decimal = Field(gt=0)
    uom: str
    unit_price: Decimal = Field(ge=0, description="the contract price used at validation")

    @computed_field
    @property
    def amount(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(CENTS, ROUND_HALF_UP)


class Invoice(_Model):
    """The bill for one shipment, from its shipped quantities."""

    model_config = ConfigDict(extra="ignore")  # subtotal/total of a dump are recomputed

    invoice_id: str = Field(description="our invoice number (per shipment and version)")
    version: int = Field(1, gt=0)
    order_id: str
    shipment_id: str
    customer_id: str
    po_number: str
    po_date: date | None = None
    invoice_date: date
    bill_to: Address | None = None
    ship_to: Address | None = None
    currency: str = Field("USD", min_length=3, max_length=3)
    payment_terms: str | None = None
    carrier_id: str | None = None
    tracking_number: str | None = None
    lines: list[InvoiceLine] = Field(min_length=1)
    tax: Decimal = Field(Decimal("0"), ge=0)
    freight: Decimal = Field(Decimal("0"), ge=0)

    @field_validator("tax", "freight")
    @classmethod
    def _cents(cls, v: Decimal) -> Decimal:
        return v.quantize(CENTS, ROUND_HALF_UP)

    @computed_field
    @property
    def subtotal(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal("0")).quantize(CENTS)

    @computed_field
    @property
    def total(self) -> Decimal:
        return (self.subtotal + self.tax + self.freight).quantize(CENTS)
