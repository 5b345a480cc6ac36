"""Labelled history for near-duplicate orders across channels (#17, model 2).

Weeks of orders from the sandbox's world (customers, ship-tos, catalogues, customer part
numbers, contract prices), as the validation stage sees them — channel, PO number, ship-to,
arrival time and lines (the identifiers the channel shows, our item once mapped, the
description, quantity, unit and price) — with re-submissions of some of them:

* **EDI re-send** of an order placed on the portal or e-mailed: the same lines, the PO
  number reformatted by the partner's translator (a ``PO`` prefix, dashes, zero padding,
  leading zeros dropped).
* **E-mailed PDF** of an order already placed: read by OCR, so descriptions and part numbers
  carry character confusions (``0/O``, ``1/I``, ``5/S``, ``8/B``), dropped or doubled
  characters; a line whose part number OCR mangled is not mapped to an item.
* **Portal re-entry** by another buyer: the same PO typed with different spacing or case.
* **Re-keyed by inside sales** from a phone call or a fax: the customer's PO typed by hand
  (sometimes with a typo, sometimes replaced by a reference of the rep's own), a line
  dropped or a quantity changed, contract prices in place of the customer's.

Among many orders that are *not* duplicates and look alike — the hard negatives: customers
re-ordering the same basket every week (or twice a week) to the same ship-to with the next
PO number of their sequence, and same-day top-up orders of the same items in other
quantities.

Deterministic by seed. The labels (:attr:`Labelled.duplicate_of`) are kept apart from the
orders: no field of an order says whether it is a duplicate (order ids are random, arrival
order is the only order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from orderflow_sandbox.generator.day import (
    CHANNELS,
    HOURLY,
    TZ,
    PoNumbers,
    _clean_price,
    _draw_lines,
    business_days,
)
from orderflow_sandbox.generator.world import World, build_world

__all__ = ["Labelled", "generate_labelled"]

#: characters OCR confuses in both directions
_OCR_SWAPS = {
    "0": "O",
    "O": "0",
    "1": "I",
    "I": "1",
    "5": "S",
    "S": "5",
    "8": "B",
    "B": "8",
    "2": "Z",
    "Z": "2",
    "6": "G",
    "L": "1",
}
_ABBREV = {
    "SCREW": "SCR",
    "BOLT": "BLT",
    "STAINLESS": "SS",
    "WHITE": "WHT",
    "BLACK": "BLK",
    "GALLON": "GAL",
    "INCH": "IN",
    "CLEANER": "CLNR",
    "PAPER": "PPR",
    "GLOVES": "GLV",
    "NITRILE": "NITR",
}


@dataclass
class Labelled:
    """Generated orders (oldest arrival first) and, apart from them, the labels."""

    seed: int
    business_dates: list[date]
    #: one dict per order: order_id, customer_id, ship_to_id, channel, po_number, received_at
    #: (aware, UTC) and lines (line_no, item_id or None, parts, description, quantity, uom,
    #: unit_price) — nothing in them says what the labels say
    orders: list[dict[str, Any]]
    #: duplicate order id → the order it re-submits (the first submission)
    duplicate_of: dict[str, str] = field(default_factory=dict)
    #: duplicate order id → how it was made (edi_resend, email_ocr, portal_reentry, rekeyed)
    kind: dict[str, str] = field(default_factory=dict)

    def period(self, first: int, last: int | None = None) -> list[dict[str, Any]]:
        """The orders received from business day ``first`` up to the start of the business
        day after ``last`` (indices; ``None``: to the end)."""
        lo = _midnight(self.business_dates[first])
        hi = (
            _midnight(self.business_dates[last + 1])
            if last is not None and last + 1 < len(self.business_dates)
            else None
        )
        return [
            o
            for o in self.orders
            if o["received_at"] >= lo and (hi is None or o["received_at"] < hi)
        ]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def generate_labelled(
    seed: int,
    days: int,
    *,
    start: date = date(2026, 6, 1),
    customers: int = 50,
    items: int = 400,
    orders_per_day: int = 80,
    duplicate_rate: float = 0.06,
) -> Labelled:
    """``days`` business days of orders from ``start``; ``duplicate_rate``: re-submissions
    relative to distinct orders (a high share, so that a test period has enough of them)."""
    rng = np.random.default_rng(seed)
    dates = business_days(start, days)
    world = build_world(rng, seed, dates, customers, items)
    gen = _Gen(rng, world)
    baskets = gen.standing_baskets()
    distinct: list[dict[str, Any]] = []
    for d, day in enumerate(dates):
        distinct += gen.standing_orders(baskets, d, day)
        n = max(0, orders_per_day - sum(1 for o in distinct if o["_day"] == day))
        distinct += gen.adhoc_orders(day, n)
    dups: list[dict[str, Any]] = []
    for j in rng.permutation(len(distinct)).tolist():
        if len(dups) >= round(duplicate_rate * len(distinct)):
            break
        dup = gen.resubmit(distinct[j])
        if dup is not None:
            dups.append(dup)
    orders = sorted(distinct + dups, key=lambda o: (o["received_at"], o["order_id"]))
    out = Labelled(seed, dates, orders)
    for o in dups:
        out.duplicate_of[o["order_id"]] = o["_original"]
        out.kind[o["order_id"]] = o["_kind"]
    for o in orders:  # the generator's own bookkeeping (true items, labels) stays here
        for key in [k for k in o if k.startswith("_")]:
            del o[key]
    return out


class _Gen:
    def __init__(self, rng: np.random.Generator, world: World):
        self.rng = rng
        self.world = world
        self.pos = PoNumbers(rng, len(world.customers))
        # how each customer writes our descriptions on its own documents (0: as ours)
        self.desc_style = rng.integers(0, 3, len(world.customers))

    # ------------------------------------------------------------------ distinct orders

    def standing_baskets(self) -> list[dict[str, Any]]:
        """Per customer (more for big ones), baskets re-ordered every week or twice a week."""
        w = self.world
        out = []
        for c in range(len(w.customers)):
            share = float(w.cust_weight[c]) * len(w.customers)
            n = int(self.rng.poisson(min(3.0, 0.4 + 0.6 * share)))
            for _ in range(n):
                sts = w.cust_ship_tos[c]
                out.append(
                    {
                        "customer": c,
                        "ship_to": sts[int(self.rng.integers(len(sts)))],
                        "channel": self._channel(c),
                        "lines": [(ln.item, ln.quantity, ln.uom) for ln in self._lines(c)],
                        "every": int(self.rng.choice([5, 5, 5, 2, 3, 10])),  # business days
                        "offset": int(self.rng.integers(0, 5)),
                        "hour": float(self.rng.uniform(7, 16)),
                    }
                )
        return out

    def standing_orders(
        self, baskets: list[dict[str, Any]], d: int, day: date
    ) -> list[dict[str, Any]]:
        out = []
        for b in baskets:
            if (d + b["offset"]) % b["every"] or self.rng.random() < 0.1:
                continue
            c = b["customer"]
            lines = []
            for item, qty, uom in b["lines"]:
                r = self.rng.random()
                if r < 0.08:
                    continue  # not needed this week
                if r < 0.3:  # a little more or less this time
                    qty = max(1, round(qty * float(self.rng.choice([0.5, 2, 1.5, 3]))))
                lines.append((item, qty, uom))
            if self.rng.random() < 0.15:
                extra = self._lines(c)[0]
                lines.append((extra.item, extra.quantity, extra.uom))
            if not lines:
                continue
            hour = b["hour"] + float(self.rng.normal(0, 1.0))
            out.append(self._order(c, b["ship_to"], b["channel"], day, hour, lines))
            if self.rng.random() < 0.08:  # forgot something: a same-day top-up of the basket
                top = [
                    (i, max(1, round(q * float(self.rng.choice([0.5, 1, 2])))), u)
                    for i, q, u in lines
                    if self.rng.random() < 0.6
                ] or lines[:1]
                out.append(
                    self._order(
                        c,
                        b["ship_to"],
                        self._channel(c),
                        day,
                        hour + float(self.rng.uniform(0.5, 6)),
                        top,
                    )
                )
        return out

    def adhoc_orders(self, day: date, n: int) -> list[dict[str, Any]]:
        w = self.world
        out = []
        for c in self.rng.choice(len(w.customers), size=n, p=w.cust_weight).tolist():
            sts = w.cust_ship_tos[c]
            st = sts[0] if len(sts) == 1 or self.rng.random() < 0.5 else sts[-1]
            channel = self._channel(c)
            hours = np.asarray(HOURLY[channel], dtype=float)
            hour = int(self.rng.choice(24, p=hours / hours.sum())) + float(self.rng.random())
            lines = [(ln.item, ln.quantity, ln.uom) for ln in self._lines(c)]
            out.append(self._order(c, st, channel, day, hour, lines))
        return out

    def _channel(self, c: int) -> str:
        return CHANNELS[int(self.rng.choice(4, p=self.world.cust_channel_p[c]))]

    def _lines(self, c: int):
        lines = _draw_lines(self.rng, self.world, c)
        return lines[:25]

    def _order(
        self,
        c: int,
        ship_to: int,
        channel: str,
        day: date,
        hour: float,
        lines: list[tuple[int, float, str]],
    ) -> dict[str, Any]:
        w = self.world
        tz = TZ[w.cust_region[c]]
        local = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(
            hours=min(23.9, max(0.0, hour))
        )
        po = self.pos.next(self.rng, c, day.year)
        rows = [
            self._line(c, channel, n + 1, item, qty, uom, _clean_price(self.rng, w, c, item))
            for n, (item, qty, uom) in enumerate(lines)
        ]
        return {
            "order_id": self._id(channel),
            "customer_id": w.customers[c]["customer_id"],
            "ship_to_id": w.ship_tos[ship_to]["ship_to_id"],
            "channel": channel,
            "po_number": po,
            "received_at": local.astimezone(UTC).replace(microsecond=0),
            "lines": rows,
            "_day": day,
            "_c": c,
            "_ship_to": ship_to,
            "_items": [(item, qty, uom) for item, qty, uom in lines],
        }

    def _id(self, channel: str) -> str:
        return f"{channel.upper()[:3]}-{int(self.rng.integers(0, 2**48)):012x}"

    def _line(
        self,
        c: int,
        channel: str,
        line_no: int,
        item: int,
        qty: float,
        uom: str,
        price: float,
        *,
        ocr: bool = False,
    ) -> dict[str, Any]:
        """A line as ``channel`` shows it: the identifiers it carries, our item when they
        map, the description as the customer (or we) write it."""
        w = self.world
        row = w.items[item]
        cpn = w.cpn_for(self.rng, c, item)
        if channel == "edi":
            parts = [cpn] if cpn else [row["vendor_part"]]
            if self.rng.random() < 0.3:
                parts.append(row["upc"])
        elif channel == "portal":
            parts = [cpn] if cpn and self.rng.random() < 0.3 else [row["vendor_part"]]
        elif channel == "email":
            parts = [cpn, row["vendor_part"]] if cpn else [row["vendor_part"]]
        else:
            parts = [row["item_id"]] if self.rng.random() < 0.6 else [row["vendor_part"]]
        ours = channel in ("portal", "csv")
        desc = row["description"] if ours else _their_description(row["description"], c, self)
        mapped = True
        if ocr:
            noisy = [_ocr(self.rng, p, 0.12) for p in parts]
            mapped = any(n == p for n, p in zip(noisy, parts, strict=True))
            parts, desc = noisy, _ocr(self.rng, desc, 0.06)
        return {
            "line_no": line_no,
            "item_id": row["item_id"] if mapped else None,
            "parts": parts,
            "description": desc,
            "quantity": qty,
            "uom": uom,
            "unit_price": price,
        }

    # ------------------------------------------------------------------ re-submissions

    def resubmit(self, o: dict[str, Any]) -> dict[str, Any] | None:
        """A re-submission of ``o`` on another channel (or None when ``o`` does not lend
        itself to one: e.g. an EDI re-send for a customer without EDI)."""
        w = self.world
        c = o["_c"]
        has_edi = w.cust_partner[c] is not None
        kinds = ["email_ocr", "portal_reentry", "rekeyed"]
        if has_edi and o["channel"] != "edi" and self.rng.random() < 0.6:
            kind = "edi_resend"  # the partner's system sends what the buyer also keyed
        else:
            kind = kinds[int(self.rng.integers(len(kinds)))]
        channel = {
            "edi_resend": "edi",
            "email_ocr": "email",
            "portal_reentry": "portal",
            "rekeyed": "csv",
        }[kind]
        if channel == o["channel"] and self.rng.random() < 0.7:
            return None  # mostly across channels; a few same-channel re-entries stay
        gap_h = {
            "edi_resend": self.rng.uniform(0.3, 8),
            "email_ocr": self.rng.uniform(0.1, 30),
            "portal_reentry": self.rng.uniform(0.5, 48),
            "rekeyed": self.rng.uniform(1, 72),
        }[kind]
        items = list(o["_items"])
        prices = [ln["unit_price"] for ln in o["lines"]]
        po = o["po_number"]
        if kind == "edi_resend":
            po = _reformat_po(self.rng, po)
        elif kind == "email_ocr":
            po = _reformat_po(self.rng, po) if self.rng.random() < 0.5 else po
            if self.rng.random() < 0.3:
                po = _ocr(self.rng, po, 0.15)
        elif kind == "portal_reentry":
            po = _respace(self.rng, po)
        else:  # re-keyed by hand
            r = self.rng.random()
            if r < 0.2:
                po = _typo(self.rng, po)
            elif r < 0.3:
                po = f"PH{o['received_at']:%m%d}-{int(self.rng.integers(1, 99)):02d}"
            elif r < 0.6:
                po = _reformat_po(self.rng, po)
            if len(items) > 1 and self.rng.random() < 0.3:
                k = int(self.rng.integers(len(items)))
                del items[k]
                del prices[k]
            elif self.rng.random() < 0.35:
                k = int(self.rng.integers(len(items)))
                item, qty, uom = items[k]
                items[k] = (item, qty + float(self.rng.choice([1, 2, -1, 5, 10])) or qty, uom)
            prices = [
                w.active_contract.get((c, i), {}).get("unit_price", p)
                for (i, _, _), p in zip(items, prices, strict=True)
            ]
        order = list(range(len(items)))
        if kind in ("rekeyed", "portal_reentry") and self.rng.random() < 0.3:
            order = self.rng.permutation(len(items)).tolist()
        lines = [
            self._line(
                c,
                channel,
                n + 1,
                items[k][0],
                max(1, items[k][1]),
                items[k][2],
                prices[k],
                ocr=kind == "email_ocr",
            )
            for n, k in enumerate(order)
        ]
        return {
            "order_id": self._id(channel),
            "customer_id": o["customer_id"],
            "ship_to_id": o["ship_to_id"],
            "channel": channel,
            "po_number": po,
            "received_at": o["received_at"] + timedelta(seconds=int(gap_h * 3600)),
            "lines": lines,
            "_day": o["_day"],
            "_c": c,
            "_ship_to": o["_ship_to"],
            "_items": items,
            "_original": o["order_id"],
            "_kind": kind,
        }


# ---------------------------------------------------------------------------- noise


def _their_description(desc: str, c: int, gen: _Gen) -> str:
    """Our description as the customer's own system writes it (per customer style)."""
    style = int(gen.desc_style[c])
    if style == 0:
        return desc
    words = desc.split()
    if style == 1:
        return " ".join(_ABBREV.get(wd, wd) for wd in words)
    return " ".join(words[:-1]).title() if len(words) > 2 else desc.title()


def _ocr(rng: np.random.Generator, text: str, rate: float) -> str:
    out = []
    for ch in text:
        r = rng.random()
        if r < rate and ch.upper() in _OCR_SWAPS:
            out.append(_OCR_SWAPS[ch.upper()])
        elif r < rate * 1.15:
            continue  # dropped
        elif r < rate * 1.3 and ch != " ":
            out.append(ch + ch)  # doubled
        else:
            out.append(ch)
    return "".join(out) or text


def _reformat_po(rng: np.random.Generator, po: str) -> str:
    """The same PO number as another system writes it."""
    digits = "".join(ch for ch in po if ch.isdigit())
    r = int(rng.integers(6))
    if r == 0:
        return f"PO{po}"
    if r == 1:
        return f"PO-{po.replace('-', '')}"
    if r == 2:
        return digits.zfill(12) if digits else f"PO#{po}"
    if r == 3:
        return digits.lstrip("0") or po
    if r == 4:
        return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4)) or po
    return f"PO# {po.lower()}"


def _respace(rng: np.random.Generator, po: str) -> str:
    r = int(rng.integers(3))
    if r == 0:
        return f" {po.lower()} ".strip() if po.lower() != po else f"{po} "
    if r == 1:
        return po.replace("-", " ") if "-" in po else f"#{po}"
    return po.replace("-", "") if "-" in po else f"PO {po}"


def _typo(rng: np.random.Generator, po: str) -> str:
    """One keying slip: two neighbours swapped, or one character dropped."""
    if len(po) < 3:
        return po
    k = int(rng.integers(len(po) - 1))
    if rng.random() < 0.6:
        return po[:k] + po[k + 1] + po[k] + po[k + 2 :]
    return po[:k] + po[k + 1 :]
