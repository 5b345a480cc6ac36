"""A business day of orders: who orders what, when it arrives, which defects it carries and
what a perfect orchestrator should conclude about it.

Pipeline (driven by :func:`orderflow_sandbox.generator.generate`):

1. :func:`draw_orders` — clean orders: customer by Zipf-like size, channel by customer habit,
   heavy-tailed line counts, catalogue items, plausible quantities, contract or list prices.
2. :func:`pick_credit_customers` — credit defects are properties of a *customer*, so whole
   customers are put on hold / near their limit, chosen to hit the target share of orders.
3. :func:`assign_defects` — exactly ``round(rate * n)`` orders per defect category, one defect
   per order, each applied by mutating the order so that the rule really trips; then a few
   clean orders are made to need stock from both DCs (``split``).
4. :func:`schedule` — arrival times on a working-day curve, EDI transmission windows, inside-
   sales CSV exports, and cross-channel re-sends (duplicates).
5. :func:`present` — how each channel identifies items (buyer part, vendor part, UPC, ...).
6. :func:`ground_truth` — the expected decision per submission.

Decisions encoded in the ground truth (the orchestrator's policy the sandbox assumes):

* Price check: ``abs(unit_price - contract.unit_price) / contract.unit_price * 100 <=
  contract.tolerance_pct`` with the contract valid on ``po_date``; lines without any contract
  are priced at ``list_price`` exactly.
* Short stock without substitute: a customer that does not demand ``ship_complete`` and has
  other fillable lines gets the order released with the short line back-ordered; otherwise the
  order is held ``short_stock``.
* Short stock with a substitute: released with the substitution recorded when the customer
  ``accepts_substitutes``; otherwise held ``substitution_needed`` (the proposal is still listed).
* A re-send of the same customer + PO number is ``duplicate``; the first arrival is judged
  on its own merits.
* A broken EDI envelope (the file holds just that one order) is ``quarantine``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from orderflow_sandbox.generator.world import TERMS, World

CHANNELS = ("edi", "portal", "email", "csv")

# Share of (distinct) orders per defect; one defect per order. ≈18% need attention in total.
DEFECT_RATES: dict[str, float] = {
    "malformed_edi": 0.008,
    "low_confidence_extraction": 0.020,
    "expired_contract": 0.012,
    "ship_to_incomplete": 0.010,
    "pricing_mismatch": 0.030,
    "unknown_item": 0.020,
    "short_stock_substitute": 0.020,
    "short_stock": 0.015,
    "master_data_quality": 0.008,
}
CREDIT_RATES: dict[str, float] = {"credit_hold": 0.010, "credit_limit": 0.015}
DUPLICATE_RATE = 0.015  # extra submissions, relative to distinct orders
SPLIT_RATE = 0.03
MALFORMATIONS = (
    "wrong_se_count",
    "missing_iea",
    "ge_count_mismatch",
    "truncated_isa",
    "control_number_mismatch",
)
HOLD_CATEGORY = {
    "pricing_mismatch": "pricing_mismatch",
    "expired_contract": "expired_contract",
    "unknown_item": "unknown_item",
    "ship_to_incomplete": "ship_to_incomplete",
    "credit_limit": "credit_limit",
    "credit_hold": "credit_hold",
    "master_data_quality": "master_data_quality",
    "low_confidence_extraction": "low_confidence_extraction",
}

QTY_CHOICES: dict[str, tuple[float, ...]] = {
    "EA": (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 24, 25, 30, 40, 50, 100),
    "CS": (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20),
    "BX": (1, 2, 3, 4, 5, 6, 10, 12, 20, 25),
    "PK": (1, 2, 3, 4, 5, 6, 10, 12, 20),
    "FT": (10, 20, 25, 50, 100, 150, 200, 250, 500, 1000),
    "LB": (5, 10, 12.5, 15, 20, 25, 50, 100),
}
QTY_P = {
    u: (1.0 / np.arange(1, len(v) + 1) ** 0.9) / (1.0 / np.arange(1, len(v) + 1) ** 0.9).sum()
    for u, v in QTY_CHOICES.items()
}
LINES_MU = {"platinum": 1.25, "gold": 1.1, "silver": 0.85, "standard": 0.6}
LINES_SIGMA = 1.0
MAX_LINES = 80

# Relative arrivals per local hour (0..23). EDI trickles overnight; people work office hours.
HOURLY = {
    "edi": (1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 7, 8, 9, 8, 6, 4, 3, 2, 2, 1, 1, 1),
    "portal": (
        0.2,
        0.1,
        0.1,
        0.1,
        0.2,
        0.5,
        1.5,
        4,
        8,
        10,
        10,
        8,
        6,
        8,
        9,
        8,
        6,
        4,
        3,
        2.5,
        2,
        1.5,
        1,
        0.5,
    ),
    "email": (0, 0, 0, 0, 0, 0.2, 1, 4, 9, 10, 9, 7, 5, 8, 9, 7, 5, 2, 1, 0.5, 0.3, 0.2, 0, 0),
    "csv": (0, 0, 0, 0, 0, 0, 0, 0, 6, 10, 10, 8, 5, 8, 9, 8, 6, 3, 0, 0, 0, 0, 0, 0),
}
TZ = {"east": ZoneInfo("America/New_York"), "west": ZoneInfo("America/Los_Angeles")}
HQ_TZ = TZ["east"]
CSV_TEMPLATES = {"REP01": "A", "REP02": "A", "REP03": "B", "REP04": "A", "REP05": "B", "REP06": "C"}


@dataclass(slots=True)
class Line:
    line_no: int
    item: int
    quantity: float
    uom: str
    unit_price: float
    unknown_cpn: str | None = None  # unknown_item, customers with part numbers: reserved, unmapped
    unknown: bool = False  # unknown_item: the document identifies the item by a value we lack
    ids: list[tuple[str, str]] = field(default_factory=list)  # (qualifier, value) as shown
    cpn: str | None = None


@dataclass(slots=True)
class Order:
    key: int
    day_index: int
    business_date: date
    customer: int
    channel: str
    ship_to: int
    po_number: str
    po_date: date
    requested_ship_date: date
    entry_s: float
    lines: list[Line]
    defect: str | None = None
    split: bool = False
    substitutions: list[dict[str, Any]] = field(default_factory=list)
    short_lines: list[int] = field(default_factory=list)
    malformed: str | None = None
    scanned: bool = False
    png: bool = False
    layout: int = 0
    duplicate_of: Order | None = None
    arrival: datetime | None = None
    artefact: str | None = None
    client_request_id: str | None = None
    submission_id: str = ""
    order_ref: str = ""
    notes: str = ""


@dataclass(slots=True)
class Artefact:
    """One file to deliver: an EDI transmission, an e-mail or an inside-sales CSV export."""

    channel: str
    at: datetime
    orders: list[Order]
    partner: int | None = None
    # EDI: interchanges → groups → orders (indices into ``orders``)
    structure: list[list[list[int]]] = field(default_factory=list)
    template: str = "A"
    rep: str = ""
    path: str = ""


@dataclass(slots=True)
class DocLine:
    """A purchase-order line as a customer's document shows it."""

    line_no: int
    ids: list[tuple[str, str]]
    customer_part_number: str | None
    vendor_part: str | None
    item_id: str | None
    description: str
    quantity: float
    uom: str
    unit_price: float
    pack_size: int


@dataclass(slots=True)
class PurchaseOrderDoc:
    """Everything a rendered PO (X12, PDF, CSV row, e-mail) needs, resolved from the world."""

    key: int
    po_number: str
    po_date: date
    requested_ship_date: date
    currency: str
    customer_id: str
    customer_name: str
    buyer_name: str
    buyer_phone: str
    buyer_email: str
    domain: str
    terms_code: str
    terms: tuple[float, int, int]
    bill_to: dict[str, Any]
    ship_to: dict[str, Any]
    carrier: tuple[str, str] | None
    lines: list[DocLine]


CARRIER_HINTS = (("UPSN", "UPS GROUND"), ("FDEG", "FEDEX GROUND"), ("ODFL", "OLD DOMINION"))


# ---------------------------------------------------------------------------- drawing


def business_days(first: date, days: int) -> list[date]:
    """``days`` consecutive weekdays starting at ``first`` (rolled forward off a weekend)."""
    out: list[date] = []
    d = first
    while len(out) < days:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


class PoNumbers:
    """Per-customer PO numbering in the customer's own style; strictly increasing, so a PO
    number never repeats for a customer unless we re-send it on purpose."""

    def __init__(self, rng: np.random.Generator, n_customers: int):
        self.style = rng.integers(0, 5, n_customers)
        self.counter = rng.integers(1000, 90000, n_customers)
        self.branch = rng.integers(1, 40, n_customers)

    def next(self, rng: np.random.Generator, cust: int, year: int) -> str:
        self.counter[cust] += int(rng.integers(1, 4))
        n = int(self.counter[cust])
        style = int(self.style[cust])
        if style == 0:
            return f"45{n:08d}"
        if style == 1:
            return f"PO-{year}-{n:06d}"
        if style == 2:
            return f"{n:07d}"
        if style == 3:
            return f"B{int(self.branch[cust]):02d}{n:06d}"
        return f"{n:06d}-{int(self.branch[cust]):02d}"


def draw_orders(
    rng: np.random.Generator, world: World, pos: PoNumbers, day_index: int, n: int, key0: int
) -> list[Order]:
    """``n`` clean orders for one business day (defects are applied afterwards)."""
    bdate = world.business_dates[day_index]
    custs = rng.choice(len(world.customers), size=n, p=world.cust_weight)
    orders: list[Order] = []
    for k, c in enumerate(custs.tolist()):
        channel = CHANNELS[int(rng.choice(4, p=world.cust_channel_p[c]))]
        sts = world.cust_ship_tos[c]
        ship_to = (
            sts[0] if len(sts) == 1 or rng.random() < 0.4 else sts[int(rng.integers(len(sts)))]
        )
        po_date = bdate - timedelta(days=int(rng.choice([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])))
        rsd = bdate + timedelta(days=int(rng.choice([0, 1, 1, 2, 2, 3, 5, 7, 10])))
        hours = np.asarray(HOURLY[channel], dtype=float)
        hour = int(rng.choice(24, p=hours / hours.sum()))
        orders.append(
            Order(
                key=key0 + k,
                day_index=day_index,
                business_date=bdate,
                customer=c,
                channel=channel,
                ship_to=ship_to,
                po_number=pos.next(rng, c, po_date.year),
                po_date=po_date,
                requested_ship_date=rsd,
                entry_s=hour * 3600 + float(rng.uniform(0, 3600)),
                lines=_draw_lines(rng, world, c),
            )
        )
    return orders


def _draw_lines(rng: np.random.Generator, world: World, c: int) -> list[Line]:
    cat = world.catalogs[c]
    tier = world.customers[c]["tier"]
    n = 1 + int(np.floor(rng.lognormal(LINES_MU[tier], LINES_SIGMA)))
    n = max(1, min(n, MAX_LINES, len(cat)))
    picks = rng.choice(len(cat), size=n, replace=False, p=world.catalog_p[c])
    big = tier in ("platinum", "gold")
    return [
        Line(
            line_no=i + 1,
            item=int(cat[j]),
            quantity=_qty(rng, world, int(cat[j]), big),
            uom=_order_uom(world, int(cat[j])),
            unit_price=_clean_price(rng, world, c, int(cat[j])),
        )
        for i, j in enumerate(picks.tolist())
    ]


def _order_uom(world: World, item: int) -> str:
    row = world.items[item]
    return row.get("_true_uom", row["uom"])


def _qty(rng: np.random.Generator, world: World, item: int, big: bool) -> float:
    uom = _order_uom(world, item)
    q = QTY_CHOICES[uom][int(rng.choice(len(QTY_CHOICES[uom]), p=QTY_P[uom]))]
    if big and rng.random() < 0.35:
        q *= int(rng.choice([2, 3, 5, 10]))
    return int(q) if float(q).is_integer() else float(q)


def _clean_price(rng: np.random.Generator, world: World, c: int, item: int) -> float:
    """Contract price (sometimes off by well under the tolerance, as real POs are) or list."""
    contract = world.active_contract.get((c, item))
    if contract is None:
        return world.items[item]["list_price"]
    price = contract["unit_price"]
    if rng.random() < 0.2:
        tol = contract["tolerance_pct"]
        cand = round(price * (1 + float(rng.uniform(-0.6, 0.6)) * tol / 100), 2)
        if cand > 0 and abs(cand - price) / price * 100 <= tol * 0.9:
            return cand
    return price


# ---------------------------------------------------------------------------- defects


def pick_credit_customers(
    rng: np.random.Generator, world: World, orders: list[Order]
) -> dict[str, set[int]]:
    """Choose whole customers for credit hold / near-limit so that their orders make up the
    target share. Very big customers are skipped (one of them would blow the mix)."""
    counts = np.bincount([o.customer for o in orders], minlength=len(world.customers))
    total = len(orders)
    cap = max(2, int(0.004 * total))
    candidates = [int(c) for c in rng.permutation(len(counts)) if 0 < counts[c] <= cap]
    chosen: dict[str, set[int]] = {}
    for kind, rate in CREDIT_RATES.items():
        target = rate * total
        got = 0
        picked: set[int] = set()
        while candidates and got < target:
            c = candidates.pop()
            if got + counts[c] - target > counts[c] / 2:
                continue
            picked.add(c)
            got += int(counts[c])
        chosen[kind] = picked
    return chosen


def assign_defects(
    rng: np.random.Generator, world: World, orders: list[Order], credit: dict[str, set[int]]
) -> None:
    """Label and apply one defect per selected order, then make a few clean ones split."""
    for o in orders:
        for kind, custs in credit.items():
            if o.customer in custs:
                o.defect = kind
    n = len(orders)
    free = [o for o in orders if o.defect is None]
    for kind, rate in DEFECT_RATES.items():
        want = round(rate * n)
        eligible = [o for o in free if o.defect is None and _eligible(world, o, kind)]
        if not eligible:
            continue
        idx = rng.choice(len(eligible), size=min(want, len(eligible)), replace=False)
        for j in sorted(idx.tolist()):
            o = eligible[j]
            o.defect = kind
            APPLY[kind](rng, world, o)
    clean = [
        o
        for o in orders
        if o.defect is None
        and len(o.lines) >= 2
        and not world.customers[o.customer]["ship_complete"]
    ]
    want = min(len(clean), round(SPLIT_RATE * n))
    for j in sorted(rng.choice(len(clean), size=want, replace=False).tolist()):
        _make_split(rng, world, clean[j])


def _eligible(world: World, o: Order, kind: str) -> bool:
    if kind == "malformed_edi":
        return o.channel == "edi"
    if kind == "low_confidence_extraction":
        return o.channel == "email"
    if kind == "expired_contract":
        return bool(world.expired_items[o.customer])
    if kind == "ship_to_incomplete":
        return bool(world.cust_bad_ship_tos[o.customer])
    if kind == "pricing_mismatch":
        return any((o.customer, ln.item) in world.active_contract for ln in o.lines)
    return True


def _replace_line_item(
    rng: np.random.Generator,
    world: World,
    o: Order,
    pool: np.ndarray | list[int],
    price: float | None = None,
) -> Line | None:
    """Point one random line at an item from ``pool`` (not already on the order)."""
    have = {ln.item for ln in o.lines}
    for _ in range(20):
        item = int(pool[int(rng.integers(len(pool)))])
        if item not in have:
            break
    else:
        return None
    ln = o.lines[int(rng.integers(len(o.lines)))]
    ln.item = item
    ln.uom = _order_uom(world, item)
    ln.quantity = _qty(rng, world, item, False)
    ln.unit_price = world.items[item]["list_price"] if price is None else price
    return ln


def _apply_pricing(rng: np.random.Generator, world: World, o: Order) -> None:
    lines = [ln for ln in o.lines if (o.customer, ln.item) in world.active_contract]
    ln = lines[int(rng.integers(len(lines)))]
    contract = world.active_contract[(o.customer, ln.item)]
    base, tol = contract["unit_price"], contract["tolerance_pct"]
    sign = -1 if rng.random() < 0.6 else 1
    for _ in range(10):
        cand = round(base * (1 + sign * (tol + float(rng.uniform(1.5, 15))) / 100), 2)
        if cand > 0 and abs(cand - base) / base * 100 > tol:
            break
    else:  # tiny prices: a full cent step is already far outside
        cand = round(base + 0.05 * sign, 2) if base > 0.05 else round(base + 0.05, 2)
    ln.unit_price = cand
    o.notes = f"line {ln.line_no}: {cand} vs contract {contract['contract_id']} {base} (±{tol}%)"


def _apply_expired(rng: np.random.Generator, world: World, o: Order) -> None:
    pool = world.expired_items[o.customer]
    ln = _replace_line_item(rng, world, o, pool)
    if ln is None:  # every expired pair is already on the order: use it
        ln = next(ln for ln in o.lines if ln.item in pool)
    contract = world.expired_contract[(o.customer, ln.item)]
    ln.unit_price = contract["unit_price"]
    o.notes = f"line {ln.line_no}: priced from {contract['contract_id']}, expired {contract['expires_on']}"


def _apply_unknown(rng: np.random.Generator, world: World, o: Order) -> None:
    ln = o.lines[int(rng.integers(len(o.lines)))]
    ln.unknown = True
    if world.cust_uses_cpn[o.customer]:
        ln.unknown_cpn = world.new_cpn(rng, o.customer)  # reserved, never mapped by an xref
        o.notes = f"line {ln.line_no}: customer part {ln.unknown_cpn} has no cross-reference"
    else:
        o.notes = f"line {ln.line_no}: item number on the document does not exist"


def _apply_ship_to(rng: np.random.Generator, world: World, o: Order) -> None:
    bad = world.cust_bad_ship_tos[o.customer]
    o.ship_to = bad[int(rng.integers(len(bad)))]
    o.notes = f"ship-to {world.ship_tos[o.ship_to]['ship_to_id']} is incomplete"


def _apply_sub(rng: np.random.Generator, world: World, o: Order) -> None:
    ln = _replace_line_item(rng, world, o, world.pools["sub_short"])
    if ln is None:
        raise RuntimeError("no substitutable item left")
    item = world.items[ln.item]
    sub = item["substitute_item_ids"][0]
    o.substitutions = [
        {"line_no": ln.line_no, "item_id": item["item_id"], "substitute_item_id": sub}
    ]
    state = "discontinued" if item["discontinued"] else "out of stock"
    o.notes = f"line {ln.line_no}: {item['item_id']} {state}, substitute {sub}"


def _apply_short(rng: np.random.Generator, world: World, o: Order) -> None:
    ln = _replace_line_item(rng, world, o, world.pools["short"])
    if ln is None:
        raise RuntimeError("no short item left")
    o.short_lines = [ln.line_no]
    o.notes = f"line {ln.line_no}: {world.items[ln.item]['item_id']} out of stock at both DCs, no substitute"


def _apply_mdq(rng: np.random.Generator, world: World, o: Order) -> None:
    """Either a line on an item with broken master data, or two overlapping contracts."""
    item = None if rng.random() < 0.6 else _unused_clean_item(rng, world, o)
    if item is None:
        ln = _replace_line_item(rng, world, o, world.pools["bad"])
        if ln is None:
            raise RuntimeError("no item with defective master data left for this order")
        o.notes = (
            f"line {ln.line_no}: item {world.items[ln.item]['item_id']} has defective master data"
        )
        return
    key = (o.customer, item)
    first = world.first_date
    list_price = world.items[item]["list_price"]
    a = world.add_contract(
        rng, o.customer, item, list_price * 0.85, first - timedelta(days=200), None, 1.0
    )
    b = world.add_contract(
        rng,
        o.customer,
        item,
        list_price * 0.78,
        first - timedelta(days=40),
        world.last_date + timedelta(days=200),
        1.0,
    )
    world.overlap_contracts[key] = [a, b]
    world.master_data_defects.append(
        {
            "entity": "contract",
            "id": b["contract_id"],
            "kind": "contract_overlap",
            "detail": f"overlaps {a['contract_id']} for {a['customer_id']}/{a['item_id']} with a different price",
        }
    )
    ln = o.lines[int(rng.integers(len(o.lines)))]
    ln.item, ln.uom = item, _order_uom(world, item)
    ln.quantity = _qty(rng, world, item, False)
    ln.unit_price = a["unit_price"]
    o.notes = f"line {ln.line_no}: contracts {a['contract_id']} and {b['contract_id']} overlap"


def _unused_clean_item(rng: np.random.Generator, world: World, o: Order) -> int | None:
    """A clean item this customer has no contract of any kind for and does not buy."""
    catalog = set(world.catalogs[o.customer].tolist()) | set(world.expired_items[o.customer])
    have = {ln.item for ln in o.lines}
    clean = world.pools["clean"]
    for _ in range(50):
        item = int(clean[int(rng.integers(len(clean)))])
        if (
            item not in catalog
            and item not in have
            and (o.customer, item) not in world.contracted_pairs
        ):
            return item
    return None


def _apply_malformed(rng: np.random.Generator, world: World, o: Order) -> None:
    o.malformed = MALFORMATIONS[int(rng.integers(len(MALFORMATIONS)))]
    o.notes = f"EDI envelope broken: {o.malformed}"


def _apply_scanned(rng: np.random.Generator, world: World, o: Order) -> None:
    o.scanned = True
    o.png = bool(rng.random() < 0.25)
    o.notes = "scanned PO image without text layer" + (" (PNG attachment)" if o.png else "")


APPLY = {
    "pricing_mismatch": _apply_pricing,
    "expired_contract": _apply_expired,
    "unknown_item": _apply_unknown,
    "ship_to_incomplete": _apply_ship_to,
    "short_stock_substitute": _apply_sub,
    "short_stock": _apply_short,
    "master_data_quality": _apply_mdq,
    "malformed_edi": _apply_malformed,
    "low_confidence_extraction": _apply_scanned,
}


def _make_split(rng: np.random.Generator, world: World, o: Order) -> None:
    """Two lines move to items stocked in one DC each, so no single DC can fill the order."""
    a, b = (int(x) for x in rng.choice(len(o.lines), size=2, replace=False))
    for idx, pool in ((a, "east_only"), (b, "west_only")):
        ln = o.lines[idx]
        items = world.pools[pool]
        ln.item = int(items[int(rng.integers(len(items)))])
        ln.uom = _order_uom(world, ln.item)
        ln.quantity = _qty(rng, world, ln.item, False)
        ln.unit_price = world.items[ln.item]["list_price"]
    o.split = True
    o.notes = f"lines {o.lines[a].line_no}/{o.lines[b].line_no} stocked only in DC-EAST/DC-WEST"


# ---------------------------------------------------------------------------- schedule


def _local(world: World, o: Order) -> ZoneInfo:
    return TZ[world.cust_region[o.customer]]


def _at(day: date, seconds: float, tz: ZoneInfo) -> datetime:
    """Local wall-clock seconds after midnight on ``day`` → aware UTC datetime (whole seconds)."""
    local = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(seconds=int(seconds))
    return local.astimezone(UTC)


def schedule(
    rng: np.random.Generator, world: World, orders: list[Order], key0: int
) -> tuple[list[Order], list[Artefact]]:
    """Arrival times and artefacts for one day's orders; returns (duplicates, artefacts)."""
    artefacts: list[Artefact] = []
    artefacts += _schedule_edi(rng, world, [o for o in orders if o.channel == "edi"])
    artefacts += _schedule_csv(rng, world, [o for o in orders if o.channel == "csv"])
    for o in orders:
        if o.channel in ("portal", "email"):
            o.arrival = _at(
                o.business_date,
                o.entry_s + (rng.uniform(0, 180) if o.channel == "email" else 0),
                _local(world, o),
            )
            if o.channel == "email":
                artefacts.append(Artefact("email", o.arrival, [o]))
    dups = _duplicates(rng, world, orders, key0)
    for d in dups:
        if d.channel == "edi":
            artefacts.append(
                Artefact(
                    "edi", d.arrival, [d], partner=world.cust_partner[d.customer], structure=[[[0]]]
                )
            )
        elif d.channel == "email":
            artefacts.append(Artefact("email", d.arrival, [d]))
        elif d.channel == "csv":
            rep = world.cust_rep[d.customer]
            artefacts.append(Artefact("csv", d.arrival, [d], template=CSV_TEMPLATES[rep], rep=rep))
    return dups, artefacts


def _schedule_edi(rng: np.random.Generator, world: World, orders: list[Order]) -> list[Artefact]:
    """Partners transmit in windows; everything entered in a window travels in one file.
    Malformed orders travel alone so the breakage has an unambiguous blast radius."""
    windows: dict[tuple[int, int], list[Order]] = {}
    out: list[Artefact] = []
    for o in sorted(orders, key=lambda x: x.entry_s):
        p = world.cust_partner[o.customer]
        assert p is not None
        if o.malformed:
            out.append(
                Artefact(
                    "edi",
                    _at(o.business_date, min(86399.0, o.entry_s + 60), _local(world, o)),
                    [o],
                    partner=p,
                    structure=[[[0]]],
                )
            )
            continue
        windows.setdefault((p, int(o.entry_s // (world.partner_interval_min[p] * 60))), []).append(
            o
        )
    for (p, window), group in windows.items():
        step = world.partner_interval_min[p] * 60
        end = min(86399.0, (window + 1) * step + float(rng.uniform(0, 240)))
        at = _at(group[0].business_date, end, _local(world, group[0]))
        idx = list(range(len(group)))
        r = rng.random()
        if len(group) >= 2 and r < 0.05:
            half = len(idx) // 2
            structure = [[idx[:half]], [idx[half:]]]  # two interchanges in one file
        elif len(group) >= 2 and r < 0.17:
            half = len(idx) // 2
            structure = [[idx[:half], idx[half:]]]  # two functional groups
        else:
            structure = [[idx]]
        out.append(Artefact("edi", at, group, partner=p, structure=structure))
    for a in out:
        for o in a.orders:
            o.arrival = a.at
    return out


def _schedule_csv(rng: np.random.Generator, world: World, orders: list[Order]) -> list[Artefact]:
    """Each inside-sales rep exports what they keyed in the past hour, a few minutes past it."""
    files: dict[tuple[str, int], list[Order]] = {}
    for o in sorted(orders, key=lambda x: x.entry_s):
        files.setdefault((world.cust_rep[o.customer], int(o.entry_s // 3600)), []).append(o)
    out = []
    for (rep, hour), group in sorted(files.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        at = _at(group[0].business_date, (hour + 1) * 3600 + float(rng.uniform(120, 540)), HQ_TZ)
        for o in group:
            o.arrival = at
        out.append(Artefact("csv", at, group, template=CSV_TEMPLATES[rep], rep=rep))
    return out


def _duplicates(
    rng: np.random.Generator, world: World, orders: list[Order], key0: int
) -> list[Order]:
    """Re-sends of the same customer + PO through another channel, 20 min to 4 h later."""
    want = round(DUPLICATE_RATE * len(orders))
    cands = [o for o in orders if not o.malformed and not o.scanned]
    dups: list[Order] = []
    for j in rng.permutation(len(cands)).tolist():
        if len(dups) >= want:
            break
        o = cands[j]
        tz = _local(world, o)
        at = o.arrival + timedelta(minutes=float(rng.uniform(20, 240)))
        midnight = datetime(
            o.business_date.year, o.business_date.month, o.business_date.day, tzinfo=tz
        ) + timedelta(days=1)
        if at >= midnight.astimezone(UTC) - timedelta(minutes=10):
            continue
        options = (
            ["edi", "portal", "email"]
            if world.cust_partner[o.customer] is not None
            else ["portal", "email", "csv"]
        )
        options = [ch for ch in options if ch != o.channel]
        channel = options[int(rng.integers(len(options)))]
        lines = [
            Line(
                ln.line_no, ln.item, ln.quantity, ln.uom, ln.unit_price, ln.unknown_cpn, ln.unknown
            )
            for ln in o.lines
        ]
        dup = Order(
            key=key0 + len(dups),
            day_index=o.day_index,
            business_date=o.business_date,
            customer=o.customer,
            channel=channel,
            ship_to=o.ship_to,
            po_number=o.po_number,
            po_date=o.po_date,
            requested_ship_date=o.requested_ship_date,
            entry_s=0.0,
            lines=lines,
            defect="duplicate",
            duplicate_of=o,
            arrival=at.replace(microsecond=0),
            notes=f"re-send of PO {o.po_number} via {channel}",
        )
        dups.append(dup)
    return dups


# ---------------------------------------------------------------------------- presentation


def present(rng: np.random.Generator, world: World, o: Order, template: str = "A") -> None:
    """Decide how each line identifies its item on this channel's document."""
    c = o.customer
    uses_cpn = bool(world.cust_uses_cpn[c])
    style = None
    if o.channel == "edi":
        p = world.cust_partner[c]
        style = world.partner_id_style[p] if p is not None else ("VP", ())
    if o.channel == "portal" and o.client_request_id is None:
        o.client_request_id = str(
            uuid.UUID(
                int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4
            )
        )
    for ln in o.lines:
        item = world.items[ln.item]
        if ln.unknown:
            ln.ids = [_unknown_id(world, o.channel, template, ln)]
            ln.cpn = ln.unknown_cpn
            continue
        cpn = world.cpn_for(rng, c, ln.item) if uses_cpn else None
        ln.cpn = cpn
        if style is not None:
            primary, extras = style
            quals = [primary, *extras] if cpn or primary not in ("BP", "IN") else ["VP", *extras]
            ln.ids = [(q, _id_value(item, q, cpn)) for q in dict.fromkeys(quals)]
        elif o.channel == "portal":
            ln.ids = [("BP", cpn)] if cpn and rng.random() < 0.3 else [("VP", item["vendor_part"])]
            if ln.ids[0][0] == "VP":
                ln.cpn = None
        elif o.channel == "email":
            ln.ids = (
                [("BP", cpn), ("VP", item["vendor_part"])] if cpn else [("VP", item["vendor_part"])]
            )
        elif template == "B":
            ln.ids = [("VP", item["vendor_part"])]
        else:
            ln.ids = [("SK", item["item_id"])]


def _unknown_id(world: World, channel: str, template: str, ln: Line) -> tuple[str, str]:
    """What an unresolvable line shows: an unmapped buyer part number, else a mistyped
    catalogue number (middle block changed, so it cannot exist) or a non-existent item id."""
    if ln.unknown_cpn is not None:
        return ("BP", ln.unknown_cpn)
    if channel == "csv" and template != "B":
        return ("SK", f"IT{len(world.items) + 1 + ln.item % 997:06d}")
    code, middle, suffix = world.items[ln.item]["vendor_part"].split("-")
    return ("VP", f"{code}-{(int(middle) - 100 + 1 + ln.line_no) % 900 + 100}-{suffix}")


def _id_value(item: dict[str, Any], qualifier: str, cpn: str | None) -> str:
    if qualifier in ("BP", "IN"):
        return cpn or ""
    if qualifier in ("VP", "VN"):
        return item["vendor_part"]
    if qualifier == "UP":
        return item["upc"]
    if qualifier == "EN":
        return "0" + item["upc"]
    return item["item_id"]  # SK


# ---------------------------------------------------------------------------- output rows


def order_row(world: World, o: Order) -> dict[str, Any]:
    """The ``orders.jsonl`` record for one submission."""
    p = world.cust_partner[o.customer]
    return {
        "submission_id": o.submission_id,
        "order_ref": o.order_ref,
        "channel": o.channel,
        "partner_id": world.partners[p]["partner_id"]
        if o.channel == "edi" and p is not None
        else None,
        "customer_id": world.customers[o.customer]["customer_id"],
        "ship_to_id": world.ship_tos[o.ship_to]["ship_to_id"],
        "po_number": o.po_number,
        "po_date": o.po_date.isoformat(),
        "requested_ship_date": o.requested_ship_date.isoformat(),
        "arrival_at": iso(o.arrival),
        "currency": "USD",
        "client_request_id": o.client_request_id if o.channel == "portal" else None,
        "lines": [
            {
                "line_no": ln.line_no,
                "item_id": world.items[ln.item]["item_id"],
                "customer_part_number": ln.cpn,
                "id_qualifier": ln.ids[0][0],
                "id_value": ln.ids[0][1],
                "quantity": ln.quantity,
                "uom": ln.uom,
                "unit_price": ln.unit_price,
            }
            for ln in o.lines
        ],
        "defects": [o.defect] if o.defect else [],
        "artefact": o.artefact,
        "duplicate_of": o.duplicate_of.submission_id if o.duplicate_of else None,
    }


def ground_truth(world: World, o: Order) -> dict[str, Any]:
    """What a perfect orchestrator concludes for this submission (see module docstring)."""
    cust = world.customers[o.customer]
    expected, cats = "release", []
    subs: list[dict[str, Any]] = []
    backorder: list[int] = []
    d = o.defect
    if o.duplicate_of is not None:
        expected, cats = "duplicate", ["duplicate_suspect"]
    elif d == "malformed_edi":
        expected = "quarantine"
    elif d in HOLD_CATEGORY:
        expected, cats = "hold", [HOLD_CATEGORY[d]]
    elif d == "short_stock_substitute":
        subs = list(o.substitutions)
        if not cust["accepts_substitutes"]:
            expected, cats = "hold", ["substitution_needed"]
    elif d == "short_stock":
        if cust["ship_complete"] or len(o.lines) == len(o.short_lines):
            expected, cats = "hold", ["short_stock"]
        else:
            backorder = list(o.short_lines)
    return {
        "submission_id": o.submission_id,
        "order_ref": o.order_ref,
        "expected": expected,
        "exception_categories": cats,
        "substitutions": subs,
        "split": bool(o.split and expected == "release"),
        "backorder_lines": backorder,
        "notes": o.notes,
    }


def iso(at: datetime | None) -> str:
    assert at is not None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def order_amount(o: Order) -> float:
    return round(sum(ln.quantity * ln.unit_price for ln in o.lines), 2)


def purchase_order_doc(world: World, o: Order) -> PurchaseOrderDoc:
    """Resolve an order (after :func:`present`) into a renderable purchase-order document."""
    c = o.customer
    cust = world.customers[c]
    bill = world.ship_tos[world.cust_ship_tos[c][0]]
    lines = []
    for ln in o.lines:
        item = world.items[ln.item]
        lines.append(
            DocLine(
                line_no=ln.line_no,
                ids=ln.ids,
                customer_part_number=ln.cpn,
                vendor_part=next((v for q, v in ln.ids if q in ("VP", "VN")), None),
                item_id=next((v for q, v in ln.ids if q == "SK"), None),
                description=item["description"],
                quantity=ln.quantity,
                uom=ln.uom,
                unit_price=ln.unit_price,
                pack_size=int(item["pack_size"]),
            )
        )
    buyer, phone = world.cust_buyer[c]
    return PurchaseOrderDoc(
        key=o.key,
        po_number=o.po_number,
        po_date=o.po_date,
        requested_ship_date=o.requested_ship_date,
        currency="USD",
        customer_id=cust["customer_id"],
        customer_name=cust["name"],
        buyer_name=buyer,
        buyer_phone=phone,
        buyer_email=cust["email"],
        domain=world.cust_domain[c],
        terms_code=cust["payment_terms"],
        terms=TERMS[cust["payment_terms"]],
        bill_to={**bill, "name": cust["name"]},
        ship_to=world.ship_tos[o.ship_to],
        carrier=CARRIER_HINTS[o.key % 3] if o.key % 2 == 0 else None,
        lines=lines,
    )
