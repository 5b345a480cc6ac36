"""Features of the decision-support models: what the store sees, never a label.

Both models read the same things the validation stage has — the order as validated
(``OrderView``: lines mapped and priced), its holds (``Hold``: category and details) and the
master data (``ReferenceData``) — plus a :class:`Context`: the customer's past orders and what
is on file for it (part numbers, ship-tos, pack sizes). The flow builds the context from the
store (``Context.from_rows`` over ``orderflow.store.ai.context_rows``); the evaluation builds it from generated history
as it goes, one order at a time, so a feature only ever sees the past.

Features are plain ``dict[str, float]`` (NaN: does not apply); the model's column order is
:data:`CAUSE_FEATURES` / :data:`ANOMALY_FEATURES`. Pure: no I/O, numpy only through ``math``.
"""

from __future__ import annotations

import math
from bisect import insort
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from statistics import median
from typing import Any

from orderflow.domain.reference import Hold, OrderView, ReferenceData

NAN = float("nan")

#: hold categories the cause model explains (pricing first, then the others)
CAUSE_CATEGORIES = (
    "pricing_mismatch",
    "expired_contract",
    "unknown_item",
    "ship_to_incomplete",
    "uom_invalid",
)

CAUSE_FEATURES = (
    "cat_price",
    "cat_expired",
    "cat_unknown_item",
    "cat_ship_to",
    "cat_uom",
    "price_log_ratio",
    "price_abs_log_ratio",
    "price_pow10_dist",
    "price_pack_dist",
    "price_list_dist",
    "price_ref_is_contract",
    "price_digit_edits",
    "price_same_digits",
    "price_round_pct_dist",
    "price_expired_days",
    "price_expired_dist",
    "price_cust_discount_dist",
    "price_cust_discount_seen",
    "part_similarity",
    "part_length_diff",
    "ship_to_on_file",
    "ship_to_missing",
    "ship_to_code_similarity",
    "ship_to_address_similarity",
    "uom_known",
    "uom_similarity",
    "qty_log_vs_history",
    "qty_pack_vs_history",
)

ANOMALY_FEATURES = (
    "n_orders",
    "qty_hist_lines",
    "qty_max_z",
    "qty_max_log_ratio",
    "qty_max_log_vs_max",
    "qty_pow10_dist",
    "qty_scale_max_z",
    "qty_scale_max_dev",
    "qty_scale_pow10_dist",
    "price_max_abs_log_ratio",
    "price_max_abs_log_vs_list",
    "price_hist_lines",
    "ship_to_uses",
    "ship_to_share",
    "ship_to_region_seen",
    "ship_to_new_on_file_days",
)


@dataclass
class Context:
    """What the store knows about the partition's customers beyond the orders themselves:
    their past lines and ship-tos (for history features), and what is on file for them."""

    #: (customer, item) → past lines: (quantity, charged price or None)
    lines: dict[tuple[str, str], list[tuple[float, float | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: customer → past price ratios (paid / reference) that were off the reference by > 1 %
    off_ratios: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: customer → ship-to → orders sent there; customer → regions shipped to
    ship_to_uses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    regions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    n_orders: Counter = field(default_factory=Counter)
    #: on file: customer → part numbers; customer → ship-tos (id, address text, region, since)
    parts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ship_tos: dict[str, list[tuple[str, str, str | None, date | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pack_size: dict[str, int] = field(default_factory=dict)
    #: item → past log quantities, sorted (every customer); customer → its past log
    #: quantities relative to each item's median, sorted (its own scale)
    item_logs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cust_rel: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def from_rows(cls, rows: dict[str, list[tuple]]) -> Context:
        """The context from the store's rows (``orderflow.store.ai.context_rows``)."""
        from orderflow.domain.reference import LineView

        ctx = cls()
        by_order: dict[str, list[tuple]] = {}
        for r in rows["lines"]:
            by_order.setdefault(r[0], []).append(r)
        for oid, lines in by_order.items():
            _, cid, st, region, at = lines[0][:5]
            view = OrderView(
                order_id=oid, status="", channel="", customer_id=cid, ship_to_id=st,
                po_number="", po_date=None, received_at=at, requested_ship_date=None,
                requested_delivery_date=None, currency="USD",
                lines=tuple(
                    LineView(line_no=r[5], quantity=r[7], uom="", unit_price=r[8],
                             item_id=r[6], contract_price=r[9])
                    for r in lines
                ),
            )  # fmt: skip
            ctx.add(view, region)
        for cid, cpn in rows["parts"]:
            ctx.parts[cid].append(cpn)
        for sid, cid, line1, city, postal, region, since in rows["ship_tos"]:
            text = " ".join(str(v or "") for v in (line1, city, postal)).upper()
            ctx.ship_tos[cid].append((sid, text, region, since))
        ctx.pack_size = {item: int(pack) for item, pack in rows["packs"]}
        return ctx

    def add(self, order: OrderView, region: str | None) -> None:
        """Remember a validated order (the evaluation's history grows one order at a time)."""
        cid = order.customer_id or ""
        self.n_orders[cid] += 1
        if order.ship_to_id:
            self.ship_to_uses[cid][order.ship_to_id] += 1
        if region:
            self.regions[cid].add(region)
        for ln in order.lines:
            if not ln.item_id:
                continue
            charged = _f(ln.contract_price)
            q = float(ln.quantity)
            self.lines[(cid, ln.item_id)].append((q, charged))
            if q > 0:
                logs = self.item_logs[ln.item_id]
                if logs:
                    insort(self.cust_rel[cid], math.log(q) - _pct(logs, 0.5))
                insort(logs, math.log(q))
            paid = _f(ln.unit_price)
            if paid and charged and abs(paid / charged - 1) > 0.01:
                self.off_ratios[cid].append(paid / charged)


def _pct(xs: list[float], p: float) -> float:
    """Percentile of a sorted list (nearest rank)."""
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _sim(a: str, b: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(a, b) / 100.0


def _edits(a: str, b: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.distance(a, b))


def _pow10_dist(log_ratio: float) -> float:
    x = abs(log_ratio) / math.log(10)
    return abs(x - round(x)) if x >= 0.5 else NAN


def _address_text(a: dict[str, Any] | None) -> str:
    a = a or {}
    return " ".join(str(a.get(k) or "") for k in ("address_line1", "city", "postal_code")).upper()


# ---------------------------------------------------------------------------- causes


def cause_features(
    hold: Hold, order: OrderView, ref: ReferenceData, ctx: Context, valid_uoms: frozenset[str]
) -> dict[str, float]:
    """The features of one held line (or order) for the root-cause model."""
    f = dict.fromkeys(CAUSE_FEATURES, NAN)
    cat = hold.category
    f["cat_price"] = float(cat in ("pricing_mismatch", "expired_contract"))
    f["cat_expired"] = float(cat == "expired_contract")
    f["cat_unknown_item"] = float(cat == "unknown_item")
    f["cat_ship_to"] = float(cat == "ship_to_incomplete")
    f["cat_uom"] = float(cat == "uom_invalid")
    cid = order.customer_id or ""
    line = next((ln for ln in order.lines if ln.line_no == hold.line_no), None)
    d = hold.details
    if f["cat_price"] and d.get("order_price") not in (None, "None"):
        _price_features(f, d, order, line, ref, ctx)
    elif cat == "unknown_item" and line is not None:
        cpn = line.customer_part_number or ""
        known = [p for p in ctx.parts.get(cid, []) if p != cpn]
        if cpn and known:
            best = max(known, key=lambda p: _sim(cpn, p))
            f["part_similarity"] = _sim(cpn, best)
            f["part_length_diff"] = float(abs(len(cpn) - len(best)))
        else:
            f["part_similarity"] = 0.0
    elif cat == "ship_to_incomplete":
        st = ref.ship_tos.get(order.ship_to_id or "")
        on_file = st is not None and st.customer_id == order.customer_id
        f["ship_to_on_file"] = float(on_file)
        f["ship_to_missing"] = float(len(d.get("missing") or []))
        others = [s for s in ctx.ship_tos.get(cid, []) if s[0] != order.ship_to_id]
        code = order.ship_to_id or ""
        f["ship_to_code_similarity"] = max((_sim(code, s[0]) for s in others), default=0.0)
        sent = _address_text(order.ship_to_address)
        f["ship_to_address_similarity"] = max((_sim(sent, s[1]) for s in others), default=0.0)
    elif cat == "uom_invalid" and line is not None:
        item_uom = str(d.get("item_uom") or "")
        sent = (line.uom or "").upper()
        f["uom_known"] = float(sent in valid_uoms)
        f["uom_similarity"] = _sim(sent, item_uom.upper())
        past = [q for q, _ in ctx.lines.get((cid, line.item_id or ""), [])]
        if past:
            m = median(past)
            pack = ctx.pack_size.get(line.item_id or "", 1)
            f["qty_log_vs_history"] = math.log(float(line.quantity) / m)
            f["qty_pack_vs_history"] = math.log(float(line.quantity) * pack / m)
    return f


def _price_features(f, d, order: OrderView, line, ref: ReferenceData, ctx: Context) -> None:
    paid = float(d["order_price"])
    refp = float(d["reference_price"])
    if paid <= 0 or refp <= 0:
        return
    lr = math.log(paid / refp)
    f["price_log_ratio"] = lr
    f["price_abs_log_ratio"] = abs(lr)
    f["price_pow10_dist"] = _pow10_dist(lr)
    item_id = d.get("item_id") or (line.item_id if line else None) or ""
    pack = ctx.pack_size.get(item_id, 1)
    if pack > 1:
        f["price_pack_dist"] = min(abs(lr - math.log(pack)), abs(lr + math.log(pack)))
    item = ref.items.get(item_id)
    contract_ref = d.get("contract_id") is not None and d.get("contract_expires_on") is None
    f["price_ref_is_contract"] = float(contract_ref)
    if item is not None and item.list_price:
        f["price_list_dist"] = abs(math.log(paid / float(item.list_price)))
    a, b = f"{paid:.2f}", f"{refp:.2f}"
    f["price_digit_edits"] = _edits(a, b)
    f["price_same_digits"] = float(sorted(a) == sorted(b))
    pct = (1 - paid / refp) * 100
    f["price_round_pct_dist"] = abs(pct - round(pct)) if 0 < pct < 40 else NAN
    if d.get("contract_expires_on"):
        day = order.po_date or order.received_at.date()
        f["price_expired_days"] = float((day - date.fromisoformat(d["contract_expires_on"])).days)
        for contracts in ref.contracts.values():
            for c in contracts:
                if c.contract_id == d.get("contract_id"):
                    f["price_expired_dist"] = abs(math.log(paid / float(c.unit_price)))
    ratio = paid / refp
    past = ctx.off_ratios.get(order.customer_id or "", [])
    if past:
        f["price_cust_discount_dist"] = min(abs(ratio - r) for r in past)
        f["price_cust_discount_seen"] = float(sum(abs(ratio - r) < 0.005 for r in past))
    else:
        f["price_cust_discount_seen"] = 0.0


# ---------------------------------------------------------------------------- anomalies


def anomaly_features(
    order: OrderView, ref: ReferenceData, ctx: Context, at: datetime | None = None
) -> dict[str, float]:
    """The features of one arriving order (validated: lines mapped and priced) for the
    anomaly model; also ``line_values`` — each line's value at the charged price — for the
    policy (see :func:`line_values`)."""
    f = dict.fromkeys(ANOMALY_FEATURES, NAN)
    cid = order.customer_id or ""
    f["n_orders"] = float(ctx.n_orders.get(cid, 0))
    zs, lrs, vs_max, p10, plr = [], [], [], [], []
    nq = np_ = 0
    rel = ctx.cust_rel.get(cid, [])
    devs: list[tuple[float, float]] = []
    vs_list: list[float] = []
    for ln in order.lines:
        logs = ctx.item_logs.get(ln.item_id or "", [])
        if logs and len(rel) >= 5 and ln.quantity > 0:
            dev = math.log(float(ln.quantity)) - _pct(logs, 0.5) - _pct(rel, 0.5)
            spread = (_pct(rel, 0.75) - _pct(rel, 0.25)) / 1.349
            devs.append((dev / max(spread, 0.3), dev))
        past = ctx.lines.get((cid, ln.item_id or ""), []) if ln.item_id else []
        qs = [q for q, _ in past if q > 0]
        q = float(ln.quantity)
        if qs and q > 0:
            nq += len(qs)
            logs = [math.log(x) for x in qs]
            m = median(logs)
            mad = median(abs(x - m) for x in logs)
            lr = math.log(q) - m
            zs.append(lr / max(mad * 1.4826, 0.25))
            lrs.append(lr)
            vs_max.append(math.log(q / max(qs)))
            p10.append((abs(lr), _pow10_dist(lr)))
        prices = [p for _, p in past if p]
        charged = _f(ln.contract_price) or _f(ln.unit_price)
        item = ref.items.get(ln.item_id or "")
        if charged and item is not None and item.list_price:
            vs_list.append(abs(math.log(charged / float(item.list_price))))
        if prices and charged:
            np_ += len(prices)
            plr.append(abs(math.log(charged / median(prices))))
    f["qty_hist_lines"] = float(nq)
    if zs:
        f["qty_max_z"] = max(zs)
        f["qty_max_log_ratio"] = max(lrs)
        f["qty_max_log_vs_max"] = max(vs_max)
        f["qty_pow10_dist"] = max(p10)[1]
    if devs:
        z, dev = max(devs)
        f["qty_scale_max_z"] = z
        f["qty_scale_max_dev"] = dev
        f["qty_scale_pow10_dist"] = _pow10_dist(dev)
    f["price_hist_lines"] = float(np_)
    if plr:
        f["price_max_abs_log_ratio"] = max(plr)
    if vs_list:
        f["price_max_abs_log_vs_list"] = max(vs_list)
    uses = ctx.ship_to_uses.get(cid, Counter())
    n = sum(uses.values())
    f["ship_to_uses"] = float(uses.get(order.ship_to_id or "", 0))
    f["ship_to_share"] = f["ship_to_uses"] / n if n else NAN
    st = ref.ship_tos.get(order.ship_to_id or "")
    if st is not None and ctx.regions.get(cid):
        f["ship_to_region_seen"] = float(st.region in ctx.regions[cid])
    since = next((s[3] for s in ctx.ship_tos.get(cid, []) if s[0] == order.ship_to_id), None)
    if since is not None:
        day = (at or order.received_at).date()
        f["ship_to_new_on_file_days"] = float(max((day - since).days, 0))
    return f


def line_values(order: OrderView) -> list[float]:
    """Each line's value at the price we would charge."""
    return [
        float(ln.quantity) * (_f(ln.contract_price) or _f(ln.unit_price) or 0.0)
        for ln in order.lines
    ]


def as_row(features: dict[str, float], columns: tuple[str, ...]) -> list[float]:
    return [features.get(c, NAN) for c in columns]


def jsonable(features: dict[str, float]) -> dict[str, float | None]:
    """NaN as null (JSON has no NaN), rounded: what a decision stores and hashes."""
    return {k: (None if v != v else round(v, 6)) for k, v in features.items()}
