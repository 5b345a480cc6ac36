"""A customer's change to an order they already sent: cancel it, replace it whole, or change
some of its lines. Every channel turns its own form of a change into this one model —
X12 850 with BEG01 = 01 (cancellation) or 05 (replace), X12 860 (BCH01 01 cancel / 04
change, POC lines), the portal's cancel and change items, and inside sales — and the store
keeps it in ``orderflow.order_change`` until it is applied to the order in whatever state
that order is in (``orderflow.changes``).

Pure Python (pydantic only): no Airflow, no database.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from orderflow.domain.models import (
    Channel,
    Code,
    Ident,
    LineNo,
    Order,
    ProductId,
    Quantity,
    Text,
    UnitPrice,
)


class ChangeKind(StrEnum):
    CANCEL = "cancel"  # the whole order
    REPLACE = "replace"  # a new version of the whole order (its lines replace all lines)
    CHANGE = "change"  # some lines: add, delete, quantity or price


class LineChangeKind(StrEnum):
    ADD = "add"
    DELETE = "delete"
    QUANTITY = "quantity"  # new quantity (increase or decrease)
    PRICE = "price"
    QUANTITY_AND_PRICE = "quantity_and_price"


class LineChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    line_no: LineNo
    kind: LineChangeKind
    quantity: Quantity | None = None  # the new quantity (add / quantity)
    unit_price: UnitPrice | None = None  # the new price (add / price)
    uom: Code | None = None
    item_id: Ident | None = None  # add: our item when the channel knows it
    customer_part_number: Ident | None = None
    description: Text | None = None
    #: the sender's id of the line (860 POC01 = the 850's PO101, i.e.
    #: ``OrderLine.source_line_id``); ``line_no`` is that number when it is one
    source_line_id: Ident | None = None
    #: product ids as sent (860 POC08/09 …): to identify an added line, or check a changed one
    product_ids: list[ProductId] = Field(default_factory=list)


class OrderChange(BaseModel):
    """One change request, as received. ``po_number`` (with the customer or partner) names the
    order it is for; ``replacement`` carries the whole new order for REPLACE; ``lines`` the
    line changes for CHANGE."""

    model_config = ConfigDict(extra="forbid")
    kind: ChangeKind
    po_number: Ident
    channel: Channel
    partner_id: Ident | None = None
    customer_id: Ident | None = None
    reference: Ident | None = Field(
        None, description="The sender's id for this change (860 BCH03/BCH05, portal request id)"
    )
    reason: Text | None = None
    lines: list[LineChange] = Field(default_factory=list)
    replacement: Order | None = None
    requested_by: Ident | None = Field(None, description="inside sales: who asked")
