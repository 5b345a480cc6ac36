"""Planning: one shipment per DC an order ships from, each with a carrier service chosen by
the carrier rules and the rate tables (master data), the tax quoted for the order, and the
restricted-party screening of the parties it ships to.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from orderflow.domain.reference import Hold, Item
from orderflow.rules import CarrierRules

ZERO = Decimal("0")


@dataclass(frozen=True, slots=True)
class CarrierService:
    carrier_id: str
    service_code: str
    mode: str
    transit_days: int
    max_weight_kg: Decimal | None
    hazmat_allowed: bool
    base_rate: Decimal
    per_kg: Decimal


@dataclass(frozen=True, slots=True)
class ShipmentPlan:
    dc_id: str
    weight_kg: Decimal
    hazmat: bool
    carrier_id: str
    service_code: str
    mode: str
    transit_days: int
    rate: Decimal
    ship_date: date
    promise_met: bool
    #: the service an on-time plan (on the day the order arrived) would have used, and what
    #: the chosen one costs more because the order was late: expedited freight
    baseline_service: str | None = None
    expedite_cost: Decimal = ZERO
    #: the date the customer was promised: its requested delivery date, else the ship date
    #: plus the default promise (what a delivery is judged late against)
    promised_date: date | None = None


@dataclass(slots=True)
class Plan:
    order_id: str
    shipments: list[ShipmentPlan] = field(default_factory=list)
    hold: Hold | None = None


def business_days(start: date, end: date) -> int:
    """Weekdays after ``start`` up to and including ``end`` (carriers do not move at weekends)."""
    days, d = 0, start
    while d < end:
        d += timedelta(days=1)
        days += d.weekday() < 5
    return days


def add_business_days(start: date, days: int) -> date:
    """The weekday ``days`` business days after ``start`` (before it when ``days`` is
    negative)."""
    d, step = start, 1 if days >= 0 else -1
    while days:
        d += timedelta(days=step)
        days -= step * (d.weekday() < 5)
    return d


def zone_number(zone: str | None) -> int:
    digits = "".join(c for c in (zone or "") if c.isdigit())
    return int(digits) if digits else 4


def rate(service: CarrierService, weight_kg: Decimal, zone: int, rules: CarrierRules) -> Decimal:
    surcharge = 1 + rules.zone_factor * zone
    return (service.base_rate + service.per_kg * weight_kg * surcharge).quantize(Decimal("0.01"))


def choose_service(
    services: Sequence[CarrierService],
    weight_kg: Decimal,
    hazmat: bool,
    zone: int,
    promise_days: int,
    customer_id: str | None,
    rules: CarrierRules,
) -> tuple[CarrierService, Decimal, bool] | None:
    """The cheapest eligible service that meets the promise, else the fastest eligible one.
    Eligible: hazmat allowed when needed, within its weight limit, parcel vs LTL by weight,
    and on the customer's routing guide when it has one."""
    eligible = _eligible(services, weight_kg, hazmat, zone, customer_id, rules, ltl_minimum=True)
    if not eligible:
        # e.g. a light hazmat shipment no parcel service takes: LTL at its minimum charge
        eligible = _eligible(services, weight_kg, hazmat, zone, customer_id, rules, False)
    if not eligible:
        return None
    in_time = [(s, r) for s, r in eligible if s.transit_days + (zone > 5) <= promise_days]
    if in_time:
        s, r = min(in_time, key=lambda sr: (sr[1], sr[0].transit_days, sr[0].carrier_id))
        return s, r, True
    s, r = min(eligible, key=lambda sr: (sr[0].transit_days, sr[1], sr[0].carrier_id))
    return s, r, False


def _eligible(services, weight_kg, hazmat, zone, customer_id, rules, ltl_minimum: bool):
    guide = rules.routing_guides.get(customer_id or "")
    eligible = []
    for s in services:
        if hazmat and not s.hazmat_allowed:
            continue
        if s.max_weight_kg is not None and weight_kg > s.max_weight_kg:
            continue
        if s.mode == "parcel" and weight_kg > rules.parcel_max_kg:
            continue
        if s.mode == "ltl" and ltl_minimum and weight_kg < rules.ltl_min_kg:
            continue
        if s.mode not in ("parcel", "ltl"):
            continue
        if guide and s.carrier_id not in guide:
            continue
        billed = max(weight_kg, rules.ltl_min_kg) if s.mode == "ltl" else weight_kg
        eligible.append((s, rate(s, billed, zone, rules)))
    return eligible


def plan_shipments(
    order_id: str,
    customer_id: str | None,
    lines_by_dc: dict[str, list[tuple[str, Decimal]]],
    items: dict[str, Item],
    zone: str | None,
    requested_ship: date | None,
    requested_delivery: date | None,
    today: date,
    services: Sequence[CarrierService],
    rules: CarrierRules,
    arrived: date | None = None,
) -> Plan:
    """Shipments of one allocated order. ``lines_by_dc``: DC → [(item, quantity)].

    ``arrived``: the day the order came in. When it is planned later (it was held, or
    waited), the promise leaves fewer days and may need a faster, dearer service: each
    shipment records the service an on-time plan would have chosen and the difference in
    cost (expedited freight)."""
    plan = Plan(order_id)

    def promise(day: date) -> tuple[date, int]:
        ship = max(day, requested_ship or day)
        if requested_delivery is not None:
            return ship, max(1, business_days(ship, requested_delivery))
        return ship, rules.default_promise_days

    ship_date, promise_days = promise(today)
    promised = (
        max(requested_delivery, add_business_days(ship_date, 1))
        if requested_delivery is not None
        else add_business_days(ship_date, promise_days)
    )
    on_time_days = promise(arrived)[1] if arrived and arrived < today else promise_days
    z = zone_number(zone)
    for dc, lines in sorted(lines_by_dc.items()):
        weight = sum(
            (q * (items[i].weight_kg or ZERO) for i, q in lines if i in items), ZERO
        ).quantize(Decimal("0.001"))
        hazmat = any(items[i].hazmat for i, _ in lines if i in items)
        chosen = choose_service(services, weight, hazmat, z, promise_days, customer_id, rules)
        if chosen is None:
            plan.hold = Hold(
                "no_carrier_service",
                f"no carrier service can take the {dc} shipment ({weight} kg"
                f"{', hazmat' if hazmat else ''}); book one by hand or split the shipment",
                details={"dc_id": dc, "weight_kg": str(weight), "hazmat": hazmat},
            )
            plan.shipments = []
            return plan
        service, amount, met = chosen
        baseline, extra = None, ZERO
        if on_time_days != promise_days:
            base = choose_service(services, weight, hazmat, z, on_time_days, customer_id, rules)
            if base is not None and base[0] != service:
                baseline = f"{base[0].carrier_id}/{base[0].service_code}"
                extra = max(ZERO, amount - base[1])
        plan.shipments.append(
            ShipmentPlan(
                dc_id=dc,
                weight_kg=weight,
                hazmat=hazmat,
                carrier_id=service.carrier_id,
                service_code=service.service_code,
                mode=service.mode,
                transit_days=service.transit_days,
                rate=amount,
                ship_date=ship_date,
                promise_met=met,
                baseline_service=baseline,
                expedite_cost=extra,
                promised_date=promised,
            )
        )
    return plan


def promise_days(ship_date: date, requested_delivery: date | None, rules: CarrierRules) -> int:
    """Transit days a shipment leaving on ``ship_date`` may take (as :func:`plan_shipments`)."""
    if requested_delivery is not None:
        return max(1, business_days(ship_date, requested_delivery))
    return rules.default_promise_days


def next_service(
    services: Sequence[CarrierService],
    refused: Collection[tuple[str, str]],
    weight_kg: Decimal,
    hazmat: bool,
    zone: int,
    promise: int,
    customer_id: str | None,
    rules: CarrierRules,
) -> tuple[CarrierService, Decimal, bool] | None:
    """Re-plan a shipment whose tender the carrier refused: the service
    :func:`choose_service` picks when the refused (carrier, service) pairs are not on offer —
    the next best under the same carrier rules (eligibility, routing guide, promise, then
    cost). None when nothing eligible is left."""
    refused = set(refused)
    rest = [s for s in services if (s.carrier_id, s.service_code) not in refused]
    return choose_service(rest, weight_kg, hazmat, zone, promise, customer_id, rules)


def screening_hold(party: str, answer: dict) -> Hold | None:
    """A restricted-party hit on a party the order ships or bills to."""
    if answer.get("status") != "review":
        return None
    names = ", ".join(h.get("name", "?") for h in answer.get("hits", []))
    return Hold(
        "compliance_review",
        f"{party} matches the restricted-party list ({names}); compliance must clear or "
        "reject the order before it ships",
        details={"party": party, "hits": answer.get("hits", [])},
    )
