"""Substitute offers with a hidden acceptance, over a generated history (#17, model 4).

An ordered item runs short; the catalogue lists two to four substitutes for it (same family,
in the catalogue's static order); some of them are in stock, at the preferred DC or only at
the other one. The desk offers one (mostly the catalogue's first in stock, sometimes another
it prefers), and the customer accepts or rejects it. Whether a customer *would* accept each
candidate is decided here by drivers a store could come to know, plus noise:

- the customer: a general openness to substitutes and a segment — strict about pack size and
  unit, loyal to a brand, averse to a cheaper (lesser) item, or open — that leans on its tier
  (similar customers decide alike);
- the substitute: a quality of its own that every customer feels a little (other customers'
  acceptances show it), and a lasting taste of this customer for this substitute and for the
  family (its own past accepts and rejects show them);
- the pair: the price difference (list prices), pack size and unit equal or not, the same
  brand (manufacturer) or not, and the lead time (in stock at the preferred DC or not);
- habit: a customer's answer to an offered substitute for an item often becomes a standing
  rule of that customer (``HABIT_SHARE`` of answers: "always send X for Y", "never send X for
  Y" — the customer-specific inclusions and exclusions of a distributor's ERP); the next
  offers of that substitute for that item are accepted with ``HABIT_P`` (or rejected with it)
  whatever the drivers above say. People are not deterministic: a standing rule is still
  broken one time in ten, and half the answers leave no rule at all (docs/ai.md).

Imbalanced (roughly four offers in ten are accepted from the catalogue's order) and noisy (an
acceptance is a draw from the customer's probability, not the probability). The outcome of
*every* candidate of an offer is drawn (``Offer.outcomes``), so an evaluation can ask what
the customer would have said to the first candidate another ranking put forward; only the
offered candidate's outcome (``Offer.accepted``) is history a store would have seen. Nothing
an offer exposes as data (``customer_id``, ``item_id``, ``candidates``, ``at_preferred``,
``offered``) records a driver; the drivers live in the generator's state only.

Master data as the store would see it is in :attr:`Offers.items`: every item's unit, pack
size, list price and vendor part (``FAMILY-MAKER-NNNNN``: family and manufacturer), and the
catalogue's substitute lists (:attr:`Offers.catalogue`). Deterministic by the history's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

SEGMENTS = ("pack_strict", "brand_loyal", "quality", "open")
#: tier → how likely each segment is (similar customers decide alike)
TIER_SEGMENTS = {
    "platinum": (0.45, 0.25, 0.2, 0.1),
    "gold": (0.3, 0.4, 0.2, 0.1),
    "silver": (0.15, 0.2, 0.45, 0.2),
}
OTHER_TIER = (0.1, 0.15, 0.25, 0.5)
#: segment → (pack/unit mismatch penalty, same-brand bonus, cheaper-item penalty, openness)
WEIGHTS = {
    "pack_strict": (3.0, 0.5, 0.8, -0.2),
    "brand_loyal": (0.8, 2.6, 0.8, -0.2),
    "quality": (0.8, 0.5, 3.0, -0.1),
    "open": (0.5, 0.4, 0.5, 0.8),
}
MAKERS_PER_FAMILY = 3
#: the share of answers that become a standing rule of the customer for (item, substitute),
#: and how firmly the rule holds afterwards (P(accepted) under "always", 1 - under "never")
HABIT_SHARE, HABIT_P = 0.5, 0.9


@dataclass
class Offer:
    offer_id: str
    at: datetime
    order_id: str
    line_no: int
    customer_id: str
    item_id: str
    #: the substitutes in stock, in the catalogue's order
    candidates: list[str]
    #: candidate → in stock at the DC nearest the ship-to (else: a longer lead time)
    at_preferred: dict[str, bool]
    #: the candidate the desk offered, and whether the customer accepted it (history)
    offered: str
    accepted: bool
    #: hidden: every candidate's outcome and probability (for evaluation only)
    outcomes: dict[str, bool] = field(repr=False, default_factory=dict)
    p: dict[str, float] = field(repr=False, default_factory=dict)
    #: hidden: every candidate's probability without this customer's own lasting taste for
    #: the substitute (what a store that knew every other driver exactly would estimate
    #: before the customer ever answered this substitute: a ceiling for a learned ranking)
    p_without_taste: dict[str, float] = field(repr=False, default_factory=dict)


@dataclass
class Offers:
    seed: int
    offers: list[Offer]
    #: item id → {uom, pack_size, list_price, vendor_part} (master data)
    items: dict[str, dict[str, Any]]
    #: item id → its substitutes in the catalogue's order (master data)
    catalogue: dict[str, list[str]]
    #: customer id → tier (master data)
    tiers: dict[str, str]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def generate_offers(hist, *, short_rate: float = 0.12, listed_share: float = 0.4) -> Offers:
    """Substitute offers on ``hist``'s order lines (an item short: ``short_rate`` of the lines
    of an item the catalogue lists substitutes for; ``listed_share`` of the items)."""
    rng = np.random.default_rng([hist.seed, 4])
    w = hist.world
    n_items = len(w.items)
    fam = list(w.item_category)
    maker = rng.integers(0, MAKERS_PER_FAMILY, n_items)
    items = {
        it["item_id"]: {
            "uom": it["uom"],
            "pack_size": int(it.get("pack_size") or 1),
            "list_price": float(it["list_price"]),
            "vendor_part": f"{fam[i]}-M{int(maker[i])}-{i + 1:05d}",
        }
        for i, it in enumerate(w.items)
    }
    by_family: dict[str, list[int]] = {}
    for i in range(n_items):
        by_family.setdefault(fam[i], []).append(i)
    catalogue: dict[str, list[str]] = {}
    for i in range(n_items):
        # a buyer lists items of the family near in price, mostly in the same unit and pack
        price = w.items[i]["list_price"]
        peers = [
            j
            for j in by_family[fam[i]]
            if j != i and 0.6 <= w.items[j]["list_price"] / price <= 1.7
        ]
        if len(peers) < 2 or rng.random() >= listed_share:
            continue
        alike = np.array(
            [
                (w.items[j]["uom"], w.items[j]["pack_size"])
                == (w.items[i]["uom"], w.items[i]["pack_size"])
                for j in peers
            ]
        )
        weight = np.where(alike, 3.0, 1.0)
        k = min(len(peers), int(rng.choice([2, 3, 4], p=[0.35, 0.4, 0.25])))
        pick = rng.choice(len(peers), size=k, replace=False, p=weight / weight.sum())
        catalogue[w.items[i]["item_id"]] = [w.items[peers[j]]["item_id"] for j in pick]
    # hidden drivers
    quality = {it["item_id"]: float(rng.normal(0, 0.9)) for it in w.items}
    tiers = {c["customer_id"]: c["tier"] for c in w.customers}
    segment, openness = {}, {}
    for c in w.customers:
        p = TIER_SEGMENTS.get(c["tier"], OTHER_TIER)
        segment[c["customer_id"]] = SEGMENTS[int(rng.choice(len(SEGMENTS), p=p))]
        openness[c["customer_id"]] = float(rng.normal(-0.3, 0.6))
    taste: dict[tuple[str, str], float] = {}
    fam_taste: dict[tuple[str, str], float] = {}
    cpn_item = {(w.customers[c]["customer_id"], cpn): w.items[i]["item_id"]
                for (c, i), cpn in w.xrefs.items()}  # fmt: skip

    def utility(cid: str, item: str, sub: str, at_pref: bool, *, own_taste: bool = True) -> float:
        a, b = items[item], items[sub]
        k_pack, g_brand, q_down, bias = WEIGHTS[segment[cid]]
        same_pack = a["uom"] == b["uom"] and a["pack_size"] == b["pack_size"]
        same_brand = a["vendor_part"].rsplit("-", 1)[0] == b["vendor_part"].rsplit("-", 1)[0]
        d = math.log(b["list_price"] / a["list_price"])
        if (cid, sub) not in taste:
            taste[(cid, sub)] = float(rng.normal(0, 1.4))
        f = a["vendor_part"].split("-", 1)[0]
        if (cid, f) not in fam_taste:
            fam_taste[(cid, f)] = float(rng.normal(0, 0.6))
        return (
            1.3
            + openness[cid]
            + bias
            - k_pack * (not same_pack)
            + g_brand * same_brand
            + q_down * max(-1.2, 1.2 * min(d, 0.0))
            + 0.3 * min(max(d, 0.0), 1.0)
            - 0.6 * (not at_pref)
            + quality[sub]
            + (taste[(cid, sub)] if own_taste else 0.0)
            + fam_taste[(cid, f)]
        )

    # the habit draws have a stream of their own: every other draw is the one it was
    habit_rng = np.random.default_rng([hist.seed, 5])
    standing: dict[tuple[str, str, str], bool] = {}

    def prob(cid: str, item: str, sub: str, at_pref: bool) -> float:
        rule = standing.get((cid, item, sub))
        p = _sigmoid(utility(cid, item, sub, at_pref))  # drawn either way (the taste stream)
        return p if rule is None else (HABIT_P if rule else 1.0 - HABIT_P)

    offers: list[Offer] = []
    for row in hist.orders:
        cid = row["customer_id"]
        for ln in row["lines"]:
            item = ln["item_id"] or cpn_item.get((cid, ln["customer_part_number"]))
            subs = catalogue.get(item or "")
            if not subs or rng.random() >= short_rate:
                continue
            cands = [s for s in subs if rng.random() < 0.8]
            if not cands:
                continue
            at_pref = {s: bool(rng.random() < 0.65) for s in cands}
            p = {s: prob(cid, item, s, at_pref[s]) for s in cands}
            outcomes = {s: bool(rng.random() < p[s]) for s in cands}
            known = {s: _sigmoid(utility(cid, item, s, at_pref[s], own_taste=False))
                     for s in cands}  # fmt: skip
            # the desk offers the catalogue's first in stock, now and then one it prefers
            offered = cands[0] if rng.random() < 0.7 else cands[int(rng.integers(len(cands)))]
            if (cid, item, offered) not in standing and habit_rng.random() < HABIT_SHARE:
                standing[(cid, item, offered)] = outcomes[offered]
            offers.append(
                Offer(
                    offer_id=f"S{hist.seed}-{len(offers):06d}",
                    at=row["received_at"] + timedelta(hours=float(rng.uniform(2, 30))),
                    order_id=row["order_id"],
                    line_no=ln["line_no"],
                    customer_id=cid,
                    item_id=item,
                    candidates=cands,
                    at_preferred=at_pref,
                    offered=offered,
                    accepted=outcomes[offered],
                    outcomes=outcomes,
                    p=p,
                    p_without_taste=known,
                )
            )
    offers.sort(key=lambda o: (o.at, o.offer_id))
    return Offers(hist.seed, offers, items, catalogue, tiers)
