"""Fulfilment decisions, pure: what a WMS milestone or carrier event does to a shipment,
where an order stands given its shipments, and what an invoice bills.

Events may arrive late, twice or out of order. State only moves forward (a ``picked`` after
``shipped`` records its quantities and time but never moves the shipment back); a repeated
event has the same key and is a no-op before it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from orderflow.domain.reference import Hold

ZERO = Decimal("0")
CENTS = Decimal("0.01")

SHIPMENT_RANK = {
    "planned": 0,
    "released": 1,
    "picked": 2,
    "packed": 3,
    "shipped": 4,
    "in_transit": 5,
    "delivered": 6,
}
WMS_KINDS = ("released", "picked", "short_picked", "packed", "shipped")
CARRIER_KINDS = ("in_transit", "delayed", "delivered", "exception")


def event_key(source: str, event: dict) -> str:
    """The natural key of a feed event: the same event delivered twice has the same key."""
    if source == "wms":
        return f"{event.get('release_id')}:{event.get('milestone')}"
    return f"{event.get('tracking_number')}:{event.get('status')}:{event.get('occurred_at')}"


def event_kind(source: str, event: dict) -> str:
    return str(event.get("milestone") if source == "wms" else event.get("status"))


@dataclass(frozen=True, slots=True)
class Effect:
    """What one event does to its shipment."""

    status: str | None = None  # the shipment's new status (only ever forward)
    stamp: str | None = None  # the milestone time to record (first occurrence wins)
    quantities: str | None = None  # "picked" | "shipped": line quantities to record
    short_picked: bool = False
    notify: tuple[str, ...] = ()  # notification events to queue
    hold: Hold | None = None  # an exception to open on the order
    note: str = ""  # why nothing moved, for the event log

    @property
    def changes(self) -> bool:
        return bool(self.status or self.stamp or self.quantities or self.hold or self.notify)


def effect(source: str, kind: str, current: str, event: dict) -> Effect:
    """The effect of an event of ``kind`` on a shipment in status ``current``."""
    rank = SHIPMENT_RANK.get(current, 0)

    def forward(to: str) -> str | None:
        return to if SHIPMENT_RANK[to] > rank else None

    if source == "wms":
        if kind == "released":
            return Effect(stamp="released_at")
        if kind == "short_picked":
            return Effect(
                status=forward("picked"), stamp="picked_at", quantities="picked", short_picked=True
            )
        if kind == "picked":
            return Effect(status=forward("picked"), stamp="picked_at", quantities="picked")
        if kind == "packed":
            return Effect(status=forward("packed"), stamp="packed_at")
        if kind == "shipped":
            # The glue sends the 856, notice and invoice on the first shipped event only.
            return Effect(
                status=forward("shipped"),
                stamp="shipped_at",
                quantities="shipped",
                notify=("shipment_shipped",),
            )
    else:
        if kind == "in_transit":
            return Effect(status=forward("in_transit"), stamp="in_transit_at")
        if kind == "delayed":
            if current == "delivered":
                return Effect(note="delay reported after delivery")
            return Effect(stamp="delayed_at", notify=("shipment_delayed",))
        if kind == "delivered":
            to = forward("delivered")
            return Effect(
                status=to, stamp="delivered_at", notify=("shipment_delivered",) if to else ()
            )
        if kind == "exception":
            reason = str(event.get("reason") or "unspecified")
            return Effect(
                stamp="delayed_at",
                hold=Hold(
                    "delivery_exception",
                    f"carrier reported a delivery exception ({reason}) for tracking "
                    f"{event.get('tracking_number')}; contact the carrier, then reship or "
                    "credit the customer",
                    details={"reason": reason, "tracking_number": event.get("tracking_number")},
                ),
            )
    return Effect(note=f"{source} event {kind!r} is not one OrderFlow acts on")


# --------------------------------------------------------------------------- order status
def order_target(shipment_statuses: Sequence[str], invoiced: bool) -> str | None:
    """Where an order stands given its live shipments (the slowest one decides) and whether
    every shipment that shipped something has a posted invoice."""
    live = [s for s in shipment_statuses if s != "cancelled"]
    if not live:
        return None
    slowest = min(SHIPMENT_RANK.get(s, 0) for s in live)
    if slowest >= SHIPMENT_RANK["delivered"]:
        return "INVOICED" if invoiced else "DELIVERED"
    if slowest >= SHIPMENT_RANK["shipped"]:
        return "SHIPPED"
    if slowest >= SHIPMENT_RANK["picked"]:
        return "PICKED"
    return None


# --------------------------------------------------------------------------- invoicing
@dataclass(frozen=True, slots=True)
class BillLine:
    """One shipment line as the invoice sees it."""

    line_no: int
    item_id: str
    ordered_item_id: str | None
    uom: str
    released: Decimal
    picked: Decimal | None
    shipped: Decimal | None
    unit_price: Decimal | None  # the contract price used at validation (else the order's)


@dataclass(slots=True)
class Bill:
    lines: list[tuple[BillLine, Decimal]] = field(default_factory=list)  # (line, qty billed)
    mismatches: list[Hold] = field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        return sum(
            ((q * (ln.unit_price or ZERO)).quantize(CENTS) for ln, q in self.lines), ZERO
        ).quantize(CENTS)


def bill(
    lines: Sequence[BillLine], extra: Sequence[str] = (), overship_pct: Decimal = ZERO
) -> Bill:
    """What to invoice for a shipment: its shipped quantities at the validated price.

    Short shipments bill what shipped (zero-quantity lines are left off). A disagreement
    between what was released, picked and shipped — or a price nobody validated — is a
    ``quantity_mismatch`` exception *before* the invoice goes out: the invoice is withheld
    until a person confirms the quantities. ``extra`` names shipped lines the release never
    had."""
    out = Bill()

    def mismatch(ln: BillLine | None, text: str, **details) -> None:
        out.mismatches.append(
            Hold(
                "quantity_mismatch",
                text + "; the invoice is withheld until billing confirms the quantities",
                line_no=ln.line_no if ln else None,
                details=details,
            )
        )

    for ln in lines:
        name = f"line {ln.line_no} ({ln.item_id})"
        if ln.shipped is None:
            mismatch(ln, f"{name}: released {ln.released} but the WMS reported no shipped quantity")
            continue
        limit = ln.released * (1 + overship_pct / 100)
        if ln.shipped > limit:
            mismatch(
                ln,
                f"{name}: shipped {ln.shipped} {ln.uom}, more than the {ln.released} released",
                released=str(ln.released),
                shipped=str(ln.shipped),
            )
            continue
        if ln.picked is not None and ln.shipped != ln.picked:
            mismatch(
                ln,
                f"{name}: picked {ln.picked} but shipped {ln.shipped} {ln.uom} (dock count "
                "differs from the pick)",
                picked=str(ln.picked),
                shipped=str(ln.shipped),
            )
            continue
        if ln.shipped == 0:
            continue
        if ln.unit_price is None:
            mismatch(ln, f"{name}: no validated price to bill")
            continue
        out.lines.append((ln, ln.shipped))
    for ref in extra:
        out.mismatches.append(
            Hold(
                "quantity_mismatch",
                f"the WMS shipped {ref}, which the release did not contain; the invoice is "
                "withheld until billing confirms the quantities",
                details={"unreleased": ref},
            )
        )
    return out


def apportion_tax(order_tax: Decimal | None, order_subtotal: Decimal, subtotal: Decimal) -> Decimal:
    """The share of the order's quoted tax that a shipment's billed subtotal carries."""
    if not order_tax or order_subtotal <= 0:
        return ZERO
    return (order_tax * subtotal / order_subtotal).quantize(CENTS)
