"""The order check's question and answer (pydantic: validated at the edge, documented in the
app's OpenAPI schema)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_LINES = 500


class ProductId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qualifier: str = Field(description="X12 235/234 qualifier: BP customer part, UP UPC, VP …")
    value: str


class DraftLine(BaseModel):
    """One line as a customer or sales rep would type it: our item, or the customer's part
    number, or product ids; the price only when the customer states one (checked against the
    contract or list price as the batch would)."""

    model_config = ConfigDict(extra="forbid")
    line_no: int | None = Field(None, ge=1, description="default: position, from 1")
    item_id: str | None = None
    customer_part_number: str | None = None
    product_ids: list[ProductId] = Field(default_factory=list)
    quantity: Decimal = Field(gt=0)
    uom: str = "EA"
    unit_price: Decimal | None = Field(None, ge=0)


class DraftOrder(BaseModel):
    """An order not (yet) submitted. ``order_id`` re-checks an order already in the store:
    it is left out of its own duplicate search."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str
    ship_to_id: str | None = None
    ship_to_address: dict[str, Any] = Field(default_factory=dict)
    po_number: str | None = None
    po_date: date | None = None
    requested_ship_date: date | None = None
    requested_delivery_date: date | None = None
    currency: str = "USD"
    payment_terms: str | None = None
    order_id: str | None = None
    lines: list[DraftLine] = Field(min_length=1, max_length=MAX_LINES)


class HoldAnswer(BaseModel):
    stage: Literal["validate", "credit", "allocate", "plan"]
    category: str
    severity: str
    owner_role: str
    line_no: int | None = None
    reason: str


class Placement(BaseModel):
    dc_id: str
    item_id: str
    quantity: Decimal
    substitute: bool = False
    ship_date: date | None = None
    promised_date: date | None = None


class RankedSubstitute(BaseModel):
    """One in-stock candidate as the active ``substitute_rank`` model ranked it."""

    substitute_item_id: str
    rank: int
    p_accept: float = Field(description="the model's probability that the customer accepts it")
    catalogue_rank: int


class LineAnswer(BaseModel):
    line_no: int
    item_id: str | None = Field(description="our item (None: no item matches the line)")
    matched_by: str
    quantity: Decimal
    uom: str
    unit_price: Decimal | None = Field(description="the price we would charge")
    price_source: Literal["contract", "list", "as_sent", "none"]
    contract_id: str | None = None
    extended: Decimal | None = None
    available: Decimal | None = Field(None, description="at every DC, now")
    status: Literal["allocated", "substituted", "split", "backordered", "short", "not_checked"]
    substitute_item_id: str | None = None
    backordered: Decimal = Decimal("0")
    placements: list[Placement] = Field(default_factory=list)
    promised_date: date | None = None
    substitute_ranking: list[RankedSubstitute] | None = Field(
        None,
        description="the short line's in-stock substitutes ranked by the active "
        "substitute_rank model, best first (what allocation proposes or ships); None: no "
        "ranking (the catalogue's order)",
    )
    substitute_model: str | None = Field(None, description="model@version that ranked them")


class CreditAnswer(BaseModel):
    limit: Decimal
    open_ar: Decimal
    open_orders: Decimal
    headroom: Decimal = Field(description="limit − open AR − open orders, before this order")
    order_amount: Decimal
    headroom_after: Decimal
    decision: Literal["approve", "hold"]
    hold_category: str | None = None


class ShipmentAnswer(BaseModel):
    dc_id: str
    carrier_id: str
    service_code: str
    ship_date: date
    transit_days: int
    promised_date: date
    promise_met: bool
    freight: Decimal


class DelayRiskAnswer(BaseModel):
    """What the planning stage's ``delay_risk`` model would say of the plan in this answer."""

    model: str = Field(description="delay_risk@version")
    model_version: str
    probability: float = Field(description="P(the order misses its promised date)")
    flagged: bool = Field(description="at or above the ai rules' delay.flag_threshold")
    threshold: float
    customer_notice: bool = Field(
        description="the early order_delayed notice would be queued (ai rules' notify policy)"
    )
    assumes: str = Field(
        description="what the check takes for what planning would know only when it runs"
    )


class Deferred(BaseModel):
    check: str
    reason: str


class CheckAnswer(BaseModel):
    """What the batch would decide for this order, now."""

    customer_id: str
    as_of: datetime
    outcome: Literal["would_release", "would_hold"]
    #: the stage whose holds the batch would open (it stops there); later stages' holds
    #: are what a person's resolution would run into next
    first_hold_stage: str | None = None
    holds: list[HoldAnswer] = Field(default_factory=list)
    lines: list[LineAnswer]
    amount: Decimal
    currency: str
    credit: CreditAnswer | None = None
    shipments: list[ShipmentAnswer] = Field(default_factory=list)
    promised_date: date | None = None
    evaluated: list[str] = Field(description="stages decided")
    not_evaluated: list[Deferred] = Field(default_factory=list)
    deferred: list[Deferred] = Field(
        default_factory=list, description="checks left to the batch (external services)"
    )
    delay_risk: DelayRiskAnswer | None = Field(
        None,
        description="when the delay_risk model is enabled and active and the order would be "
        "planned",
    )
    rule_set_version: str
