"""What the processing stages decide on: a partition's orders and the master data they touch,
as plain frozen records (loaded from the store by the glue; never fetched from the ERP here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Hold:
    """One reason an order cannot proceed: a typed exception to open."""

    category: str
    reason: str  # what, where, what to do — shown to a person
    line_no: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a hold does not apply as it stands: a rule type's answer when the validation stage
    asks it about a hold in one of the categories it explains (``orderflow.rules.registry``).
    ``charge_price``: the price to charge the hold's line instead (e.g. a quoted price);
    ``instead``: a more precise hold that replaces it (e.g. the quote that priced it expired);
    ``price_source`` / ``price_document_id``: the document that priced the line (e.g.
    ``"quote"``, ``"Q00042"``), recorded on the line and the order's event."""

    reason: str  # recorded on the order's event, shown to a person
    charge_price: Decimal | None = None
    instead: Hold | None = None
    price_source: str | None = None
    price_document_id: str | None = None


@dataclass(frozen=True, slots=True)
class LineView:
    line_no: int
    quantity: Decimal
    uom: str
    unit_price: Decimal | None
    item_id: str | None = None  # set when the channel already mapped it
    customer_part_number: str | None = None
    product_ids: tuple[tuple[str, str], ...] = ()
    # decided at validation (None before): our item, the contract used, the price to charge
    contract_id: str | None = None
    contract_price: Decimal | None = None
    # where the price to charge came from: contract, list, or the document a rule type's
    # explanation named (the CRM's quote or agreement: ``domain.crm_pricing``), and which one
    price_source: str | None = None
    price_document_id: str | None = None
    #: the line's description as sent (what a near-duplicate match compares beyond ids)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    status: str
    channel: str
    customer_id: str | None
    ship_to_id: str | None
    po_number: str
    po_date: date | None
    received_at: datetime
    requested_ship_date: date | None
    requested_delivery_date: date | None
    currency: str
    lines: tuple[LineView, ...]
    partner_id: str | None = None
    ship_to_address: dict[str, Any] = field(default_factory=dict)  # as sent, when not on file
    payment_terms: str | None = None
    #: exception categories a person approved for this order (honoured by later stages)
    approvals: frozenset[str] = frozenset()

    def amount(self) -> Decimal:
        """Value at the price we will charge (contract when validated, else as typed)."""
        total = Decimal("0")
        for ln in self.lines:
            price = ln.contract_price if ln.contract_price is not None else ln.unit_price
            total += ln.quantity * (price or Decimal("0"))
        return total


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    tier: str = "standard"
    payment_terms: str | None = None
    active: bool = True
    ship_complete: bool = False
    accepts_substitutes: bool = False


@dataclass(frozen=True, slots=True)
class ShipTo:
    ship_to_id: str
    customer_id: str
    name: str | None
    address_line1: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    uom: str
    list_price: Decimal | None
    unit_cost: Decimal | None = None
    weight_kg: Decimal | None = None
    hazmat: bool = False
    discontinued: bool = False
    substitutes: tuple[str, ...] = ()
    upc: str | None = None
    vendor_part: str | None = None


@dataclass(frozen=True, slots=True)
class Contract:
    contract_id: str
    customer_id: str
    item_id: str
    unit_price: Decimal
    uom: str
    effective_from: date
    expires_on: date | None
    tolerance_pct: Decimal | None

    def valid_on(self, day: date) -> bool:
        return self.effective_from <= day and (self.expires_on is None or day <= self.expires_on)


@dataclass(frozen=True, slots=True)
class PriorOrder:
    """Another live order, for duplicate suspicion."""

    order_id: str
    customer_id: str | None
    po_number: str
    ship_to_id: str | None
    received_at: datetime
    signature: tuple[tuple[str, str, str], ...]  # sorted (item or part, quantity, uom)
    #: what a near-duplicate match compares (``orderflow.ai.duplicates``): the channel it
    #: came by and its lines (empty when not loaded)
    channel: str = ""
    lines: tuple[LineView, ...] = ()


@dataclass(slots=True)
class ReferenceData:
    """The master data a partition needs, keyed for lookups."""

    customers: dict[str, Customer] = field(default_factory=dict)
    ship_tos: dict[str, ShipTo] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    xref: dict[tuple[str, str], str] = field(default_factory=dict)
    contracts: dict[tuple[str, str], list[Contract]] = field(default_factory=dict)
    # (entity_type, entity_id) -> the open master-data-quality reason
    dq_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    prior_orders: list[PriorOrder] = field(default_factory=list)
    _by_upc: dict[str, str] | None = None
    _by_vendor_part: dict[str, str] | None = None

    def item_by_upc(self, upc: str) -> str | None:
        if self._by_upc is None:
            self._by_upc = {i.upc: i.item_id for i in self.items.values() if i.upc}
        return self._by_upc.get(upc)

    def item_by_vendor_part(self, vp: str) -> str | None:
        if self._by_vendor_part is None:
            self._by_vendor_part = {
                i.vendor_part.upper(): i.item_id for i in self.items.values() if i.vendor_part
            }
        return self._by_vendor_part.get(vp.upper())
