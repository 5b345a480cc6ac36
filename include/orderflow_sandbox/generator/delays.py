"""Shipments and their milestones for generated order history: promised vs actual dates, for
the delay-risk model (#17, model 3).

Built over a :class:`~orderflow_sandbox.generator.history.History` (its orders, ship-tos,
items and carriers), with a random stream of its own (the history itself is unchanged by it).
Each order is planned some time after it arrived (most within hours; a held one days later):
one shipment per DC it ships from (nearest DC, now and then split across both), a carrier
service chosen the way planning chooses one (cheapest that meets the promise, else fastest;
some customers keep a routing guide), a ship date and a promised date: a distributor's day
mixes service levels — some parcel orders are wanted the next business day or in two
(expedited: a line down, a job site waiting), some carry the customer's requested delivery
date, the rest the default promise in business days — so orders differ in how much slack
they have, and some must leave on today's truck.

What makes a shipment late, each a driver the store can see at plan time, with noise:

- **DC backlog**: each DC works its queue first in, first out at a capacity that wanders
  (staffing, a short Monday); when the queue outgrows it, shipments leave days late;
- **the cutoff**: planned after the DC's cutoff (15:00 local), a shipment joins tomorrow's
  queue, though its promise is counted from today;
- **carrier and lane performance**: every carrier service has its own late rate, every lane
  (service × zone) an offset, and both drift week by week;
- **slack**: a promise tighter than the service's transit leaves no margin;
- **split shipments** (the order is late if any part is), **hazmat** (a day of paperwork now
  and then), **weekday** (a Friday pickup misses more often).

And what it cannot see: weather days per destination region, a truck missed at random.

Only store-visible data is emitted (:class:`Shipment`: plan, dates, and the actual shipped
and delivered dates that the store learns later — a feature may only use those of shipments
delivered before the order's plan time). Deterministic by seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

DC_TZ = {"DC-EAST": "America/New_York", "DC-WEST": "America/Los_Angeles"}
CUTOFF = time(15, 0)
#: local time a DC's trucks leave (a shipment is open at its DC until then on its ship day)
DEPARTURE = time(18, 0)
DEFAULT_PROMISE_DAYS = 5
PARCEL_MAX_KG = 68.0
#: share of orders whose customer asked for a delivery date
P_REQUESTED = 0.35
#: shares of orders the customer wants delivered the next business day / in two (expedited:
#: a line down, a job site waiting) — offered for parcel shipments without dangerous goods
#: (air services), the promise then the service's transit from the day it can leave (the
#: next business day when planned after the cutoff); the rest as any other order
P_NEXT_DAY = 0.1
P_TWO_DAY = 0.12
#: share of orders planned days after they arrived (held, then released by a person)
P_HELD = 0.12
#: share of multi-line orders split across both DCs (stock short at the nearest)
P_SPLIT = 0.1


@dataclass
class Shipment:
    shipment_id: str
    order_id: str
    dc_id: str
    carrier_id: str
    service_code: str
    mode: str
    transit_days: int
    zone: int
    weight_kg: float
    hazmat: bool
    received_at: datetime
    planned_at: datetime  # UTC
    ship_date: date  # planned
    promised_date: date
    #: what the store learns later (WMS and carrier milestones)
    shipped_at: datetime
    delivered_on: date

    @property
    def shipped_on(self) -> date:
        """The day it left, at the DC."""
        return self.shipped_at.astimezone(ZoneInfo(DC_TZ[self.dc_id])).date()

    @property
    def late(self) -> bool:
        return self.delivered_on > self.promised_date


@dataclass
class Shipments:
    seed: int
    #: every shipment, by plan time
    rows: list[Shipment] = field(default_factory=list)

    def late_orders(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for s in self.rows:
            out[s.order_id] = out.get(s.order_id, False) or s.late
        return out


def add_business_days(d: date, n: int) -> date:
    while n > 0:
        d += timedelta(days=1)
        n -= d.weekday() < 5
    return d


def next_business_day(d: date) -> date:
    return add_business_days(d, 1)


def _on_business_day(d: date) -> date:
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def generate_shipments(hist: Any) -> Shipments:
    """Plans, queues and deliveries for every order of ``hist`` (oldest first)."""
    rng = np.random.default_rng([hist.seed, 173])
    # the service level each order asks for: a stream of its own (the other draws unchanged)
    levels = np.random.default_rng([hist.seed, 173, 1])
    w = hist.world
    out = Shipments(hist.seed)
    ship_tos = {s["ship_to_id"]: s for s in hist.ship_tos()}
    first_st = {}
    for s in w.ship_tos:
        first_st.setdefault(s["customer_id"], s)
    items = {it["item_id"]: it for it in w.items}
    by_cpn = {(w.customers[c]["customer_id"], cpn): w.items[i] for (c, i), cpn in w.xrefs.items()}
    services = w.carriers
    cust_ids = sorted({c["customer_id"] for c in w.customers})
    guides = {}
    carriers = sorted({s["carrier_id"] for s in services})
    for cid in cust_ids:
        if rng.random() < 0.4:
            k = int(rng.integers(2, 4))
            guides[cid] = set(rng.choice(carriers, size=k, replace=False).tolist())
    lanes = _Lanes(rng, services, hist.first, hist.last)
    weather: dict[str, dict[date, bool]] = {"east": {}, "west": {}}
    region_of: dict[str, str] = {}

    # 1. plans
    plans: list[Shipment] = []
    for row in hist.orders:
        st = ship_tos.get(row["ship_to_id"]) or first_st.get(row["customer_id"])
        if st is None:
            continue
        zone = int("".join(ch for ch in str(st.get("zone") or "Z4") if ch.isdigit()) or 4)
        region = st.get("_region") or "east"
        near = "DC-EAST" if region == "east" else "DC-WEST"
        far = "DC-WEST" if near == "DC-EAST" else "DC-EAST"
        lines = []
        for ln in row["lines"]:
            it = items.get(ln["item_id"] or "") or by_cpn.get(
                (row["customer_id"], ln["customer_part_number"] or "")
            )
            weight = float(it["weight_kg"]) if it and it.get("weight_kg") else 1.0
            lines.append((max(weight, 0.01) * max(float(ln["quantity"]), 1.0),
                          bool(it and it.get("hazmat"))))  # fmt: skip
        received = row["received_at"]
        lag = timedelta(hours=float(rng.exponential(1.5)) + 0.1)
        planned = received + lag
        if rng.random() < P_HELD:
            d = add_business_days(received.date(), int(rng.integers(1, 4)))
            planned = datetime.combine(d, time(13), UTC) + timedelta(hours=float(rng.uniform(0, 9)))
        requested = None
        level = levels.random()
        expedited = 1 if level < P_NEXT_DAY else 2 if level < P_NEXT_DAY + P_TWO_DAY else 0
        if rng.random() < P_REQUESTED:
            requested = add_business_days(received.date(), int(rng.integers(2, 9)))
        groups = {near: lines}
        if len(lines) >= 2 and rng.random() < P_SPLIT:
            k = int(rng.integers(1, len(lines)))
            groups = {near: lines[:k], far: lines[k:]}
        guide = guides.get(row["customer_id"])
        for dc, part in sorted(groups.items()):
            tz = ZoneInfo(DC_TZ[dc])
            local = planned.astimezone(tz)
            day = local.date()
            if day.weekday() >= 5:  # planned at a weekend: Monday morning
                day = _on_business_day(day)
                local = datetime.combine(day, time(8), tz) + timedelta(
                    minutes=float(rng.uniform(0, 90))
                )
            weight = round(sum(x for x, _ in part), 3)
            hazmat = any(h for _, h in part)
            z = zone if dc == near else min(8, zone + 3)
            if expedited and weight <= PARCEL_MAX_KG and not hazmat:
                # "order by the cutoff for next-day delivery": after it, counted from tomorrow
                start = day if local.time() < CUTOFF else next_business_day(day)
                promise = expedited + (z > 5)
                promised = add_business_days(start, promise)
            elif requested is not None:
                promise = max(1, _bdays(day, requested))
                promised = max(requested, next_business_day(day))
            else:
                promise = DEFAULT_PROMISE_DAYS
                promised = add_business_days(day, promise)
            svc = _choose(services, weight, hazmat, z, promise, guide)
            plans.append(
                Shipment(
                    shipment_id=f"{row['order_id']}:{dc}",
                    order_id=row["order_id"],
                    dc_id=dc,
                    carrier_id=svc["carrier_id"],
                    service_code=svc["service_code"],
                    mode=svc["mode"],
                    transit_days=int(svc["transit_days"]),
                    zone=z,
                    weight_kg=weight,
                    hazmat=hazmat,
                    received_at=received,
                    planned_at=local.astimezone(UTC),
                    ship_date=day,
                    promised_date=promised,
                    shipped_at=local.astimezone(UTC),  # set by the queue below
                    delivered_on=promised,
                )
            )
        region_of[row["order_id"]] = region  # the destination (for its weather; not emitted)
    plans.sort(key=lambda s: s.planned_at)

    # 2. each DC's queue, first in first out, at a capacity that wanders
    for dc in DC_TZ:
        mine = [s for s in plans if s.dc_id == dc]
        if not mine:
            continue
        tz = ZoneInfo(DC_TZ[dc])
        days = sorted({s.ship_date for s in mine})
        per_day = len(mine) / max(len(days), 1)
        base = per_day * 1.3
        ready: dict[date, list[Shipment]] = {}
        for s in mine:
            local = s.planned_at.astimezone(tz)
            join = s.ship_date if local.time() < CUTOFF else next_business_day(s.ship_date)
            ready.setdefault(join, []).append(s)
        queue: list[Shipment] = []
        x = 0.0
        d = days[0]
        end = days[-1] + timedelta(days=30)
        while d <= end and (queue or any(k >= d for k in ready)):
            if d.weekday() < 5:
                x = 0.8 * x + float(rng.normal(0, 0.13))
                cap = base * math.exp(x) * (0.85 if d.weekday() == 0 else 1.0)
                if rng.random() < 0.04:
                    cap *= 0.5  # a short-staffed day
                queue.extend(ready.pop(d, []))
                n = int(cap) + int(rng.random() < cap - int(cap))
                done, queue = queue[:n], queue[n:]
                for s in done:
                    ship = d
                    if s.hazmat and rng.random() < 0.25:
                        ship = next_business_day(d)  # dangerous-goods paperwork
                    s.shipped_at = datetime.combine(ship, DEPARTURE, tz).astimezone(UTC)
            d += timedelta(days=1)

    # 3. transit: the lane's late rate this week, Fridays, weather, a missed truck
    for s in plans:
        shipped = s.shipped_on
        region = region_of[s.order_id] if region_of[s.order_id] in weather else "east"
        p = lanes.p_late(s.carrier_id, s.service_code, s.zone, shipped)
        if shipped.weekday() == 4:
            p = min(0.95, p * 1.5)
        extra = 0
        if rng.random() < p:
            extra = 1 + int(rng.geometric(0.6)) - 1
        # a region's weather on a day is shared by every shipment into it
        wx = weather[region].get(shipped)
        if wx is None:
            wx = weather[region][shipped] = bool(rng.random() < 0.04)
        if wx and rng.random() < 0.7:
            extra += 1
        if rng.random() < 0.02:
            extra += 1  # a missed truck
        s.delivered_on = add_business_days(shipped, s.transit_days + (s.zone > 5) + extra)
    out.rows = plans
    return out


def _bdays(start: date, end: date) -> int:
    n, d = 0, start
    while d < end:
        d += timedelta(days=1)
        n += d.weekday() < 5
    return n


def _rate(s: dict, weight: float, zone: int) -> float:
    billed = max(weight, 150.0) if s["mode"] == "ltl" else weight
    return float(s["base_rate"]) + float(s["per_kg"]) * billed * (1 + 0.05 * zone)


def _choose(services, weight: float, hazmat: bool, zone: int, promise: int, guide) -> dict:
    """As planning chooses: eligible (hazmat, weight, mode, routing guide), the cheapest that
    meets the promise, else the fastest."""

    def eligible(ltl_min: bool, use_guide: bool):
        out = []
        for s in services:
            if hazmat and not s["hazmat_allowed"]:
                continue
            if s["max_weight_kg"] is not None and weight > float(s["max_weight_kg"]):
                continue
            if s["mode"] == "parcel" and weight > PARCEL_MAX_KG:
                continue
            if s["mode"] == "ltl" and ltl_min and weight < PARCEL_MAX_KG:
                continue
            if use_guide and guide and s["carrier_id"] not in guide:
                continue
            out.append(s)
        return out

    cands = (
        eligible(True, True) or eligible(False, True) or eligible(False, False) or list(services)
    )
    in_time = [s for s in cands if s["transit_days"] + (zone > 5) <= promise]
    if in_time:
        return min(in_time, key=lambda s: (_rate(s, weight, zone), s["transit_days"]))
    return min(cands, key=lambda s: (s["transit_days"], _rate(s, weight, zone)))


class _Lanes:
    """Every carrier service's late rate, every lane's offset, both drifting week by week."""

    def __init__(self, rng, services, first: date, last: date):
        self.rng = rng
        self.first = first
        self.weeks = (last - first).days // 7 + 8
        self.service: dict[tuple[str, str], np.ndarray] = {}
        for s in services:
            base = math.log(p := float(rng.uniform(0.03, 0.22))) - math.log(1 - p)
            self.service[(s["carrier_id"], s["service_code"])] = base + self._walk(0.18)
        self.lane: dict[tuple[str, str, int], np.ndarray] = {}

    def _walk(self, step: float) -> np.ndarray:
        x, out = 0.0, []
        for _ in range(self.weeks):
            x = 0.85 * x + float(self.rng.normal(0, step))
            out.append(x)
        return np.array(out)

    def p_late(self, carrier: str, service: str, zone: int, day: date) -> float:
        key = (carrier, service, zone)
        if key not in self.lane:
            self.lane[key] = float(self.rng.normal(0.1 * (zone - 4), 0.45)) + self._walk(0.3)
        k = min(max((day - self.first).days // 7, 0), self.weeks - 1)
        x = self.service[(carrier, service)][k] + self.lane[key][k]
        return 1 / (1 + math.exp(-x))
