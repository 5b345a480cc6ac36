"""Months of order history with labelled causes, for the decision-support models (#17).

Built on the day generator's world (``world.build_world``: customers, ship-tos, items,
contracts, catalogues) and its clean orders (``day.draw_orders``), then changed the way real
order books go wrong, each change decided by a *hidden cause* that is the label:

- a held line's cause (``CAUSES``): for prices, an expired contract the customer still pays,
  an item-master inconsistency (price per each vs per pack, or the list price where a
  contract applies), a customer's own discount logic (each discounting customer takes its own
  percentage off list, over and over), a keying error (a digit slipped, swapped or a decimal
  shifted); a new or mistyped customer part number; a new, mistyped or incomplete ship-to;
  a unit alias (``EACH`` for ``EA``) or a pack confusion (ordered in cases, fewer);
- an anomaly on arrival (``ANOMALY_KINDS``): a line 10× / ×pack / ×12 the customer's usual
  quantity, a price charged from a contract keyed wrong (the order sent no price), an order
  to a ship-to the customer has never used, far away.

Realistic noise: a customer reorders an item in much the same quantity, now and then 2–3×
(a first order of an item is as wide as ``day._qty`` draws it), prices drift inside
tolerance, contracts renew at a few percent more, first-time discounters have no history,
some keying errors land near a pack size, some ship-tos are new and legitimate. Imbalance:
most orders are clean; causes and anomalies are a few percent, unevenly.

Only what a store would see is emitted as data (``History.orders``, master data); the causes
and anomaly kinds are in ``History.causes`` / ``History.anomalies``, keyed by order (and
line), and nothing in an order or in the master data records them. Deterministic by seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from orderflow_sandbox.generator.day import PoNumbers, business_days, draw_orders
from orderflow_sandbox.generator.world import World, build_world

#: hold category → the causes that produce it (the label space of the cause model)
CAUSES: dict[str, tuple[str, ...]] = {
    "pricing": ("contract_expired", "item_master", "customer_discount", "keying_error"),
    "unknown_item": ("new_part_number", "part_number_typo"),
    "ship_to_incomplete": ("new_ship_to", "ship_to_code_typo", "address_incomplete"),
    "uom_invalid": ("uom_alias", "pack_confusion"),
}
#: cause → share of defective orders (imbalanced on purpose: pricing first)
CAUSE_WEIGHTS = {
    "contract_expired": 0.17,
    "item_master": 0.13,
    "customer_discount": 0.14,
    "keying_error": 0.08,
    "new_part_number": 0.09,
    "part_number_typo": 0.06,
    "new_ship_to": 0.07,
    "ship_to_code_typo": 0.05,
    "address_incomplete": 0.05,
    "uom_alias": 0.09,
    "pack_confusion": 0.07,
}
ANOMALY_KINDS = ("quantity", "price", "ship_to")
UOM_ALIASES = {
    "EA": ("EACH", "EA.", "PCS"),
    "CS": ("CASE", "CSE"),
    "BX": ("BOX", "BXS"),
    "PK": ("PACK", "PKG"),
    "FT": ("FEET", "FOOT"),
    "LB": ("LBS", "POUND"),
}
OTHER_UOM = {"EA": "CS", "CS": "EA", "BX": "EA", "PK": "EA", "FT": "EA", "LB": "EA"}


@dataclass
class History:
    """Orders as the store would hold them, master data, and the hidden labels."""

    seed: int
    first: date
    last: date
    world: World
    #: orders, oldest first: order_id, customer_id, ship_to_id, channel, received_at,
    #: po_number, po_date, lines [{line_no, item_id, customer_part_number, quantity, uom,
    #: unit_price}], ship_to_address (as sent)
    orders: list[dict[str, Any]] = field(default_factory=list)
    #: ship-tos beyond the world's (new ones a customer added): rows like ``world.ship_tos``
    extra_ship_tos: list[dict[str, Any]] = field(default_factory=list)
    #: (order_id, line_no or 0) → cause (hidden label of the held line / order)
    causes: dict[tuple[str, int], str] = field(default_factory=dict)
    #: order_id → anomaly kind (hidden label)
    anomalies: dict[str, str] = field(default_factory=dict)

    def ship_tos(self) -> list[dict[str, Any]]:
        return self.world.ship_tos + self.extra_ship_tos


def generate(
    seed: int,
    *,
    days: int = 130,
    orders_per_day: int = 40,
    customers: int = 60,
    items: int = 400,
    first: date = date(2026, 1, 5),
    defect_rate: float = 0.18,
    anomaly_rate: float = 0.03,
) -> History:
    """``days`` business days of orders from ``first`` (about six months by default)."""
    rng = np.random.default_rng(seed)
    dates = business_days(first, days)
    world = build_world(rng, seed, dates, customers, items)
    pos = PoNumbers(rng, customers)
    hist = History(seed, dates[0], dates[-1], world)
    # Per customer: a discount of its own (some customers), ship-tos it uses.
    discount = {
        c: float(rng.choice([0.05, 0.08, 0.1, 0.12, 0.15]))
        for c in range(customers)
        if rng.random() < 0.35
    }
    g = _Gen(rng, world, hist, discount)
    key = 0
    causes = list(CAUSE_WEIGHTS)
    p = np.array([CAUSE_WEIGHTS[c] for c in causes])
    p = p / p.sum()
    for d in range(len(dates)):
        n = max(1, int(rng.poisson(orders_per_day)))
        for o in draw_orders(rng, world, pos, d, n, key):
            key += 1
            row = g.row(o)
            r = rng.random()
            if r < defect_rate:
                cause = causes[int(rng.choice(len(causes), p=p))]
                g.apply_cause(row, o, cause)
            elif r < defect_rate + anomaly_rate and d >= 20:  # a history to be far from
                g.apply_anomaly(row, o, ANOMALY_KINDS[int(rng.choice(3, p=[0.5, 0.2, 0.3]))])
            hist.orders.append(row)
    hist.orders.sort(key=lambda r: r["received_at"])
    for row in hist.orders:
        # another order of the day a wrong contract was live is charged from it too
        cust = row["customer_id"]
        if row["order_id"] not in hist.anomalies and any(
            (cust, ln["_item"], row["po_date"]) in g.wrong_contracts for ln in row["lines"]
        ):
            hist.anomalies[row["order_id"]] = "price"
        for ln in row["lines"]:  # the world's row index is the generator's, not the store's
            ln.pop("_item", None)
    return hist


class _Gen:
    def __init__(self, rng, world: World, hist: History, discount: dict[int, float]):
        self.rng = rng
        self.w = world
        self.h = hist
        self.discount = discount
        self.n_extra_st = 0
        self.base_qty: dict[tuple[int, int], float] = {}
        self.seen: dict[tuple[int, int], int] = {}
        self.wrong_contracts: set[tuple[str, int, date]] = set()

    # ----------------------------------------------------------------- clean order → row
    def row(self, o) -> dict[str, Any]:
        w = self.w
        cust = w.customers[o.customer]
        st = w.ship_tos[o.ship_to]
        at = datetime.combine(o.business_date, datetime.min.time(), UTC) + timedelta(
            seconds=o.entry_s
        )
        lines = []
        for ln in o.lines:
            cpn = w.cpn_for(self.rng, o.customer, ln.item)
            # customers reorder an item in much the same quantity (now and then 2-3x)
            pair = (o.customer, ln.item)
            if pair in self.base_qty:
                q = self.base_qty[pair] * math.exp(float(self.rng.normal(0, 0.3)))
                if self.rng.random() < 0.05:
                    q *= float(self.rng.choice([2, 3]))
                ln.quantity = max(1, round(q))
            else:
                self.base_qty[pair] = float(ln.quantity)
            self.seen[pair] = self.seen.get(pair, 0) + 1
            lines.append(
                {
                    "line_no": ln.line_no,
                    "item_id": None if cpn else w.items[ln.item]["item_id"],
                    "customer_part_number": cpn,
                    "quantity": float(ln.quantity),
                    "uom": ln.uom,
                    # EDI customers often send no price (charged from the contract or list)
                    "unit_price": None
                    if o.channel == "edi" and self.rng.random() < 0.3
                    else float(ln.unit_price),
                    "_item": ln.item,
                }
            )
        return {
            "order_id": f"H{self.h.seed}-{o.key:06d}",
            "customer_id": cust["customer_id"],
            "ship_to_id": st["ship_to_id"],
            "ship_to_address": _address(st),
            "channel": o.channel,
            "received_at": at,
            "po_number": o.po_number,
            "po_date": o.po_date,
            "lines": lines,
        }

    def _line(self, row, pred) -> dict[str, Any] | None:
        cands = [ln for ln in row["lines"] if pred(ln)]
        return cands[int(self.rng.integers(len(cands)))] if cands else None

    # ----------------------------------------------------------------- causes
    def apply_cause(self, row, o, cause: str) -> None:
        """Change the order as ``cause`` would; an order the cause cannot apply to stays clean."""
        w, rng, c = self.w, self.rng, o.customer
        day = o.business_date
        key = None
        if cause == "contract_expired":
            ln = self._line(row, lambda ln: (c, ln["_item"]) not in w.active_contract)
            if ln is not None:
                item = w.items[ln["_item"]]
                old = w.expired_contract.get((c, ln["_item"]))
                if old is None or date.fromisoformat(old["expires_on"]) >= day:
                    old = w.add_contract(
                        rng,
                        c,
                        ln["_item"],
                        item["list_price"] * float(rng.uniform(0.78, 0.95)),
                        day - timedelta(days=int(rng.integers(200, 500))),
                        day - timedelta(days=int(rng.integers(1, 90))),
                        1.0,
                    )
                    w.expired_contract[(c, ln["_item"])] = old
                drift = 1 + (float(rng.uniform(-0.03, 0.03)) if rng.random() < 0.15 else 0)
                ln["unit_price"] = round(old["unit_price"] * drift, 2)
                key = ln["line_no"]
        elif cause == "item_master":
            ln = self._line(row, lambda ln: w.items[ln["_item"]]["pack_size"] > 1)
            if ln is not None:
                item = w.items[ln["_item"]]
                ref = _reference(w, c, ln["_item"], day)
                if (c, ln["_item"]) in w.active_contract and rng.random() < 0.4:
                    price = item["list_price"]  # the list price where the contract applies
                    if abs(price - ref) / ref < 0.03:
                        price = ref * item["pack_size"]
                elif rng.random() < 0.6:
                    price = ref * item["pack_size"]  # priced per pack, sold per each
                else:
                    price = ref / item["pack_size"]
                ln["unit_price"] = round(max(price, 0.01), 2)
                key = ln["line_no"]
        elif cause == "customer_discount":
            if c not in self.discount and rng.random() < 0.5:
                return  # a customer that does not discount does not start today, mostly
            d = self.discount.get(c) or float(rng.choice([0.05, 0.1]))
            ln = self._line(row, lambda ln: (c, ln["_item"]) not in w.active_contract)
            if ln is not None:
                ref = w.items[ln["_item"]]["list_price"]
                ln["unit_price"] = round(ref * (1 - d) * (1 + float(rng.normal(0, 0.002))), 2)
                key = ln["line_no"]
        elif cause == "keying_error":
            ln = self._line(row, lambda ln: True)
            if ln is not None:
                ref = _reference(w, c, ln["_item"], day)
                ln["unit_price"] = _mistype_price(rng, ref)
                key = ln["line_no"]
        elif cause in ("new_part_number", "part_number_typo"):
            if not w.cust_uses_cpn[c]:
                return
            ln = self._line(row, lambda ln: ln["customer_part_number"])
            if ln is not None:
                if cause == "new_part_number":
                    ln["customer_part_number"] = w.new_cpn(rng, c)
                else:
                    typo = _mistype(rng, ln["customer_part_number"])
                    if typo in w.cpn_taken[c]:
                        return
                    ln["customer_part_number"] = typo
                key = ln["line_no"]
        elif cause == "new_ship_to":
            st = self._new_ship_to(c, day, far=rng.random() < 0.5, on_file=False)
            row["ship_to_id"], row["ship_to_address"] = st["ship_to_id"], _address(st)
            key = 0
        elif cause == "ship_to_code_typo":
            typo = _mistype(rng, row["ship_to_id"])
            if typo in {s["ship_to_id"] for s in self.h.ship_tos()}:
                return
            row["ship_to_id"] = typo  # the address as sent is still the one on file
            key = 0
        elif cause == "address_incomplete":
            st = self._new_ship_to(c, day, far=False, on_file=True, incomplete=True)
            row["ship_to_id"], row["ship_to_address"] = st["ship_to_id"], _address(st)
            key = 0
        elif cause == "uom_alias":
            ln = self._line(row, lambda ln: ln["uom"] in UOM_ALIASES)
            if ln is not None:
                aliases = UOM_ALIASES[ln["uom"]]
                ln["uom"] = aliases[int(rng.integers(len(aliases)))]
                key = ln["line_no"]
        elif cause == "pack_confusion":
            ln = self._line(
                row,
                lambda ln: w.items[ln["_item"]]["pack_size"] > 1 and ln["uom"] in OTHER_UOM,
            )
            if ln is not None:
                pack = w.items[ln["_item"]]["pack_size"]
                other = OTHER_UOM[ln["uom"]]
                if rng.random() < 0.2:
                    other = UOM_ALIASES[other][0]  # and spelled out
                ln["uom"] = other
                ln["quantity"] = float(max(1, round(ln["quantity"] / pack)))
                key = ln["line_no"]
        if key is not None:
            self.h.causes[(row["order_id"], key)] = cause

    # ----------------------------------------------------------------- anomalies
    def apply_anomaly(self, row, o, kind: str) -> None:
        w, rng, c = self.w, self.rng, o.customer
        if kind == "quantity":
            # a unit error or an extra zero on an item the customer orders regularly
            ln = self._line(row, lambda ln: self.seen.get((c, ln["_item"]), 0) >= 4)
            if ln is None:
                return
            pack = w.items[ln["_item"]]["pack_size"]
            factor = float(rng.choice([10, 10, 10, 12, 100] + ([pack] if pack >= 6 else [])))
            ln["quantity"] = float(ln["quantity"] * factor)
        elif kind == "price":
            ln = self._line(row, lambda ln: (c, ln["_item"]) in w.active_contract)
            if ln is None:
                return
            real = w.active_contract[(c, ln["_item"])]
            factor = float(rng.choice([10, 0.1, 100, 0.01]))
            # a contract keyed wrong in the ERP, live on the PO date; the order sent no price
            w.add_contract(
                rng, c, ln["_item"], real["unit_price"] * factor, o.po_date, o.po_date, 1.0,
            )  # fmt: skip
            self.wrong_contracts.add((w.customers[c]["customer_id"], ln["_item"], o.po_date))
            ln["unit_price"] = None
        else:
            st = self._new_ship_to(c, o.business_date, far=True, on_file=True)
            row["ship_to_id"], row["ship_to_address"] = st["ship_to_id"], _address(st)
        self.h.anomalies[row["order_id"]] = kind

    def _new_ship_to(self, c, day, *, far: bool, on_file: bool, incomplete: bool = False):
        w, rng = self.w, self.rng
        own = [w.ship_tos[i] for i in w.cust_ship_tos[c]] + [
            s for s in self.h.extra_ship_tos if s["customer_id"] == w.customers[c]["customer_id"]
        ]
        base = own[0]
        pool = [
            s
            for s in w.ship_tos
            if (s["region"] != base["region"]) == far and s.get("address_line1")
        ] or [s for s in w.ship_tos if s.get("address_line1")]
        src = pool[int(rng.integers(len(pool)))]
        self.n_extra_st += 1
        st = {
            **src,
            "ship_to_id": f"{w.customers[c]['customer_id']}-ST{50 + self.n_extra_st:02d}",
            "customer_id": w.customers[c]["customer_id"],
            "name": base["name"],
            "address_line1": f"{int(rng.integers(100, 9999))} {src['address_line1'].split(' ', 1)[-1]}",
            "updated_at": (day - timedelta(days=int(rng.integers(0, 5)))).isoformat(),
        }
        if incomplete:
            st[str(rng.choice(["address_line1", "postal_code", "city"]))] = ""
        if on_file:
            self.h.extra_ship_tos.append(st)
        return st


def _address(st: dict[str, Any]) -> dict[str, Any]:
    return {
        k: st.get(k) for k in ("name", "address_line1", "city", "region", "postal_code", "country")
    }


def _reference(w: World, c: int, item: int, day: date) -> float:
    k = w.active_contract.get((c, item))
    return k["unit_price"] if k else w.items[item]["list_price"]


def _mistype(rng, text: str) -> str:
    """One slip of the fingers: a swapped pair, a changed or a dropped character."""
    s = list(text)
    digits = [i for i, ch in enumerate(s) if ch.isalnum()]
    i = digits[int(rng.integers(len(digits)))] if digits else 0
    r = rng.random()
    if r < 0.4 and i + 1 < len(s):
        s[i], s[i + 1] = s[i + 1], s[i]
    elif r < 0.8:
        s[i] = (
            str(int(rng.integers(10))) if s[i].isdigit() else chr(ord("A") + int(rng.integers(26)))
        )
    else:
        del s[i]
    out = "".join(s)
    return out if out != text else text + "1"


def _mistype_price(rng, ref: float) -> float:
    """A keyed price: a decimal shifted, a digit swapped, changed, doubled or dropped."""
    text = f"{ref:.2f}"
    for _ in range(10):
        r = rng.random()
        if r < 0.25:
            price = ref * float(rng.choice([10, 0.1]))
        else:
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            s = list(text)
            i = digits[int(rng.integers(len(digits)))]
            if r < 0.5 and i + 1 < len(s) and s[i + 1].isdigit() and s[i] != s[i + 1]:
                s[i], s[i + 1] = s[i + 1], s[i]
            elif r < 0.8:
                s[i] = str((int(s[i]) + int(rng.integers(1, 10))) % 10)
            else:
                s.insert(i, s[i])
            try:
                price = float("".join(s))
            except ValueError:
                continue
        price = round(price, 2)
        if price > 0 and abs(price - ref) / ref > 0.02:
            return price
    return round(ref * 1.5, 2)
