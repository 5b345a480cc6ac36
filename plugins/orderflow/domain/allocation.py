"""Allocation: which DC ships which quantity of which item, when stock is shared and short.

Works on an availability snapshot the caller holds locked (``available[(item, dc)]``) and
consumes it as it decides, so the reservations it returns can never exceed the stock.
Orders are served by priority (customer tier, how soon they must ship, margin), not by
arrival. Per order: an item that cannot be filled anywhere is substituted (with consent or
held ``substitution_needed``), back-ordered (customers who accept partial shipments), or
holds the order ``short_stock``; fillable lines ship from the preferred DC of the ship-to,
from one other DC when that fills the whole order, else split across DCs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from orderflow.domain.reference import Customer, Hold, Item, OrderView
from orderflow.rules import SourcingRules, SubstitutionRules

ZERO = Decimal("0")

#: orders the in-stock substitutes of a short line, best first (a model's ranking, #17):
#: (order, line, ordered item, candidates in the catalogue's order, candidate → in stock at
#: the preferred DC) → the same candidates in another order. It only orders: allocation takes
#: no candidate it did not offer, and consent still decides whether the first one ships.
SubstituteRanker = Callable[[OrderView, int, str, Sequence[str], Mapping[str, bool]], Sequence[str]]


@dataclass(frozen=True, slots=True)
class Reservation:
    line_no: int
    item_id: str
    dc_id: str
    quantity: Decimal
    is_substitute: bool = False


@dataclass(slots=True)
class Allocation:
    order_id: str
    reservations: list[Reservation] = field(default_factory=list)
    backorders: list[dict] = field(default_factory=list)  # {line_no, item_id, quantity}
    substitutions: list[dict] = field(
        default_factory=list
    )  # {line_no, item_id, substitute_item_id}
    hold: Hold | None = None
    priority: float = 0.0

    @property
    def dcs(self) -> list[str]:
        return sorted({r.dc_id for r in self.reservations})


def priority(
    order: OrderView,
    customer: Customer | None,
    items: dict[str, Item],
    today: date,
    rules: SourcingRules,
) -> float:
    """Higher is served first: tier, urgency of the requested ship date, margin."""
    w = rules.priority
    score = w.tier.get(customer.tier if customer else "standard", 0.0)
    if order.requested_ship_date is not None:
        days = (order.requested_ship_date - today).days
        key = "overdue" if days < 0 else "today" if days == 0 else "tomorrow" if days == 1 else None
        score += w.days_to_requested_ship.get(key, 0.0) if key else 0.0
    margin = ZERO
    for ln in order.lines:
        item = items.get(ln.item_id or "")
        price = ln.contract_price if ln.contract_price is not None else ln.unit_price
        if item and item.unit_cost is not None and price is not None:
            margin += (price - item.unit_cost) * ln.quantity
    return score + float(margin) / 1000.0 * w.per_1000_margin


def allocate(
    orders: Sequence[OrderView],
    customers: dict[str, Customer],
    items: dict[str, Item],
    regions: dict[str, str | None],
    available: dict[tuple[str, str], Decimal],
    sourcing: SourcingRules,
    substitution: SubstitutionRules,
    today: date,
    ranker: SubstituteRanker | None = None,
) -> list[Allocation]:
    """Allocate a partition; ``available`` is consumed in place. ``regions``: order → ship-to
    state/province (for the preferred DC). ``ranker``: orders a short line's in-stock
    substitutes (else the catalogue's order)."""
    ranked = sorted(
        orders,
        key=lambda o: (
            -priority(o, customers.get(o.customer_id or ""), items, today, sourcing),
            o.received_at,
            o.order_id,
        ),
    )
    out = []
    for order in ranked:
        cust = customers.get(order.customer_id or "")
        result = _allocate_one(
            order,
            cust,
            items,
            regions.get(order.order_id),
            available,
            sourcing,
            substitution,
            ranker,
        )
        result.priority = priority(order, cust, items, today, sourcing)
        out.append(result)
    return out


def _total(available: dict, item_id: str, dcs: Sequence[str]) -> Decimal:
    return sum((available.get((item_id, dc), ZERO) for dc in dcs), ZERO)


def _allocate_one(
    order: OrderView,
    cust: Customer | None,
    items: dict[str, Item],
    region: str | None,
    available: dict[tuple[str, str], Decimal],
    sourcing: SourcingRules,
    substitution: SubstitutionRules,
    ranker: SubstituteRanker | None = None,
) -> Allocation:
    dcs = list(sourcing.dcs)
    preferred = sourcing.preferred_dc(region)
    result = Allocation(order.order_id)
    ship_complete = bool(cust and cust.ship_complete) or not sourcing.allow_backorder
    consent = (
        bool(cust and cust.accepts_substitutes)
        or not substitution.require_customer_consent
        or "substitution_needed" in order.approvals  # the customer agreed for this order
    )
    demand: list[tuple[int, str, Decimal, bool]] = []  # (line, item, qty, substitute?)
    short: list[dict] = []
    proposals: list[dict] = []
    for ln in order.lines:
        item = items.get(ln.item_id or "")
        if item is None:  # validated orders always have items; be explicit if not
            short.append(
                {"line_no": ln.line_no, "item_id": ln.item_id, "quantity": str(ln.quantity)}
            )
            continue
        have = _total(available, item.item_id, dcs)
        if have >= ln.quantity and not item.discontinued:
            demand.append((ln.line_no, item.item_id, ln.quantity, False))
            continue
        feasible = [
            s
            for s in dict.fromkeys(item.substitutes)
            if s in items and not items[s].discontinued and _total(available, s, dcs) >= ln.quantity
        ]
        if (
            ranker is not None
            and len(feasible) > 1
            and len(proposals) < substitution.max_substitutions_per_order
        ):
            near = {s: available.get((s, preferred), ZERO) >= ln.quantity for s in feasible}
            ranked = [
                s
                for s in dict.fromkeys(ranker(order, ln.line_no, item.item_id, feasible, near))
                if s in feasible
            ]
            feasible = ranked + [s for s in feasible if s not in ranked]
        sub = feasible[0] if feasible else None
        if sub is not None and len(proposals) < substitution.max_substitutions_per_order:
            proposals.append(
                {"line_no": ln.line_no, "item_id": item.item_id, "substitute_item_id": sub}
            )
            demand.append((ln.line_no, sub, ln.quantity, True))
            continue
        short.append(
            {
                "line_no": ln.line_no,
                "item_id": item.item_id,
                "quantity": str(ln.quantity),
                "available": str(have),
                "discontinued": item.discontinued,
            }
        )
    if proposals and not consent:
        listed = "; ".join(
            f"line {p['line_no']}: {p['item_id']} → {p['substitute_item_id']}" for p in proposals
        )
        result.hold = Hold(
            "substitution_needed",
            f"{listed} — customer {order.customer_id} has no standing consent to substitutes; "
            "get the customer's approval (or back-order / cancel the line)",
            line_no=proposals[0]["line_no"],
            details={"proposals": proposals, "short": short},
        )
        return result
    if short and (ship_complete or not demand):
        why = "ships complete only" if ship_complete and demand else "has nothing else to ship"
        listed = ", ".join(f"line {s['line_no']} ({s['item_id']})" for s in short)
        result.hold = Hold(
            "short_stock",
            f"not enough stock at any DC for {listed}, no substitute; the order {why}. "
            "Expedite a purchase order, or agree a back-order with the customer",
            line_no=short[0]["line_no"],
            details={"short": short},
        )
        return result
    plan = _source(demand, available, [preferred] + [d for d in dcs if d != preferred], sourcing)
    if plan is None:
        result.hold = Hold(
            "short_stock",
            f"the stock cannot cover every line from at most {sourcing.max_split_dcs} DC(s); "
            "approve a split or a back-order, or wait for stock",
            details={"lines": [d[0] for d in demand]},
        )
        return result
    for r in plan:
        available[(r.item_id, r.dc_id)] -= r.quantity
    result.reservations = plan
    result.substitutions = proposals
    result.backorders = short
    return result


def _source(
    demand: list[tuple[int, str, Decimal, bool]],
    available: dict[tuple[str, str], Decimal],
    order_of_dcs: list[str],
    sourcing: SourcingRules,
) -> list[Reservation] | None:
    """Reservations for ``demand``: one DC that fills everything (preferred first), else a
    split in preference order, at most ``max_split_dcs`` DCs."""
    need: dict[str, Decimal] = {}
    for _, item, qty, _ in demand:  # two lines may ask for the same item
        need[item] = need.get(item, ZERO) + qty
    for dc in order_of_dcs:
        if all(available.get((item, dc), ZERO) >= qty for item, qty in need.items()):
            return [Reservation(ln, item, dc, qty, sub) for ln, item, qty, sub in demand]
    plan: list[Reservation] = []
    left_at = {(item, dc): available.get((item, dc), ZERO) for item in need for dc in order_of_dcs}
    for ln, item, qty, sub in demand:
        left = qty
        for dc in order_of_dcs:
            take = min(left, left_at[(item, dc)])
            if take > 0:
                plan.append(Reservation(ln, item, dc, take, sub))
                left_at[(item, dc)] -= take
                left -= take
            if left == 0:
                break
        if left > 0:  # the same item on several lines, more than the DCs hold together
            return None
    if len({r.dc_id for r in plan}) > sourcing.max_split_dcs:
        return None
    return plan
