"""Substitutes ranked from acceptance history (#17, model 4: ``substitute_rank``).

When an ordered item cannot be filled, allocation (``orderflow.domain.allocation``) looks for
a substitute among the ones the catalogue lists that are in stock. This model only *orders*
those candidates: by the probability that this customer accepts each one, learnt from how it
(and similar customers — the same tier — and every customer) accepted or rejected substitutes
before, with the price difference, pack size and unit, brand (the vendor part's
manufacturer) and lead time (in stock at the preferred DC or not). The substitution rules
still decide (consent, at most ``max_substitutions_per_order``): a customer with standing
consent gets the first-ranked candidate; any other is held ``substitution_needed`` with it
proposed first. The ranking is stored as a decision (action ``recommend``) and shown in the
exception's details (``ai_substitutes``); the customer's answer recorded on the desk
(:func:`record_outcome`: approve = accepted, reject = rejected) is the label of that decision
for the next training.

Features (:data:`FEATURES`) read a :class:`Context` of outcomes known *before* the offer —
never the offer's own outcome. Pure apart from :func:`record_outcome` (through governance).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

MODEL_NAME = "substitute_rank"
ACCEPTED, REJECTED = "accepted", "rejected"
NAN = float("nan")
#: smoothing of acceptance rates: ``PRIOR_N`` pseudo-offers at ``PRIOR_RATE``
PRIOR_RATE, PRIOR_N = 0.5, 2.0

FEATURES = (
    # this customer, this substitute for this item / this substitute for anything
    "cust_pair_acc",
    "cust_pair_rej",
    "cust_sub_acc",
    "cust_sub_rej",
    # this customer, the item's family / every substitute
    "cust_fam_rate",
    "cust_fam_n",
    "cust_rate",
    "cust_n",
    # this customer on past offers alike on pack/unit, brand, cheaper-or-not
    "cust_rate_pack_match",
    "cust_rate_brand_match",
    "cust_rate_price_match",
    # similar customers (same tier) and every other customer, this substitute
    "sim_sub_rate",
    "sim_sub_n",
    "all_sub_rate",
    "all_sub_n",
    # the pair and the offer
    "price_log_ratio",
    "price_down",
    "same_pack_uom",
    "pack_log_ratio",
    "same_uom",
    "same_brand",
    "at_preferred_dc",
    "catalogue_rank",
    "n_candidates",
)


@dataclass(frozen=True)
class Facts:
    """What the item master says about an item (the store's ``item`` row)."""

    uom: str
    pack_size: int
    list_price: float | None
    vendor_part: str | None

    @property
    def family(self) -> str:
        return (self.vendor_part or "").split("-", 1)[0]

    @property
    def brand(self) -> str:
        vp = self.vendor_part or ""
        return vp.rsplit("-", 1)[0] if vp.count("-") >= 2 else ""


@dataclass(frozen=True)
class Outcome:
    """A customer's answer to one offered substitute (a label, and history for features)."""

    at: datetime
    customer_id: str
    tier: str | None
    item_id: str
    substitute_id: str
    family: str
    accepted: bool
    same_pack_uom: bool
    same_brand: bool
    cheaper: bool


def _pair(a: Facts, b: Facts) -> dict[str, float]:
    same_uom = a.uom == b.uom
    d = (
        math.log(b.list_price / a.list_price)
        if a.list_price and b.list_price and a.list_price > 0 and b.list_price > 0
        else NAN
    )
    return {
        "price_log_ratio": d,
        "price_down": NAN if math.isnan(d) else min(d, 0.0),
        "same_pack_uom": float(same_uom and a.pack_size == b.pack_size),
        "pack_log_ratio": math.log(max(b.pack_size, 1) / max(a.pack_size, 1)),
        "same_uom": float(same_uom),
        "same_brand": float(bool(a.brand) and a.brand == b.brand),
    }


def outcome_of(
    at: datetime, customer_id: str, tier: str | None, item: str, sub: str, facts, accepted: bool
) -> Outcome:
    """An outcome, its pair facts from the item master (``facts``: item id → :class:`Facts`)."""
    p = _pair(facts[item], facts[sub])
    return _outcome(at, customer_id, tier, item, sub, facts[item].family, accepted, p)


def _outcome(at, customer_id, tier, item, sub, family, accepted, p) -> Outcome:
    d = p.get("price_log_ratio", NAN)
    return Outcome(
        at, customer_id, tier, item, sub, family, bool(accepted),
        bool(p.get("same_pack_uom")), bool(p.get("same_brand")),
        bool(d is not None and not math.isnan(d) and d < -0.05),
    )  # fmt: skip


def _rate(acc: float, n: float) -> float:
    return (acc + PRIOR_RATE * PRIOR_N) / (n + PRIOR_N)


@dataclass
class Context:
    """Outcomes known so far, aggregated: [accepted, offers] per key."""

    pair: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cust_sub: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cust_fam: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cust: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cust_match: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    sub_tier: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    sub_all: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    tiers: dict[str, str | None] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        a = int(o.accepted)
        c = o.customer_id
        self.tiers.setdefault(c, o.tier)
        for agg, key in (
            (self.pair, (c, o.item_id, o.substitute_id)),
            (self.cust_sub, (c, o.substitute_id)),
            (self.cust_fam, (c, o.family)),
            (self.cust, c),
            (self.cust_match, (c, "pack", o.same_pack_uom)),
            (self.cust_match, (c, "brand", o.same_brand)),
            (self.cust_match, (c, "cheaper", o.cheaper)),
            (self.sub_tier, (o.substitute_id, o.tier)),
            (self.sub_all, o.substitute_id),
        ):
            agg[key][0] += a
            agg[key][1] += 1

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Context:
        ctx = cls()
        for o in outcomes:
            ctx.add(o)
        return ctx


def features(
    ctx: Context,
    customer_id: str,
    tier: str | None,
    item: Facts,
    sub_id: str,
    sub: Facts,
    *,
    item_id: str,
    catalogue_rank: int,
    n_candidates: int,
    at_preferred_dc: bool | None,
) -> dict[str, float]:
    """The features of one candidate substitute of one short line (``ctx``: the past only)."""
    c = customer_id
    f = dict.fromkeys(FEATURES, NAN)
    pair = ctx.pair.get((c, item_id, sub_id), (0, 0))
    csub = ctx.cust_sub.get((c, sub_id), (0, 0))
    f["cust_pair_acc"], f["cust_pair_rej"] = float(pair[0]), float(pair[1] - pair[0])
    f["cust_sub_acc"], f["cust_sub_rej"] = float(csub[0]), float(csub[1] - csub[0])
    fam = ctx.cust_fam.get((c, item.family), (0, 0))
    f["cust_fam_rate"], f["cust_fam_n"] = _rate(*fam), float(fam[1])
    cu = ctx.cust.get(c, (0, 0))
    f["cust_rate"], f["cust_n"] = _rate(*cu), float(cu[1])
    p = _pair(item, sub)
    d = p["price_log_ratio"]
    cheaper = not math.isnan(d) and d < -0.05
    for name, kind, value in (
        ("cust_rate_pack_match", "pack", bool(p["same_pack_uom"])),
        ("cust_rate_brand_match", "brand", bool(p["same_brand"])),
        ("cust_rate_price_match", "cheaper", cheaper),
    ):
        f[name] = _rate(*ctx.cust_match.get((c, kind, value), (0, 0)))
    same_tier = ctx.sub_tier.get((sub_id, tier), (0, 0))
    own = csub if ctx.tiers.get(c, tier) == tier else (0, 0)
    sim = (same_tier[0] - own[0], same_tier[1] - own[1])
    f["sim_sub_rate"], f["sim_sub_n"] = _rate(*sim), float(sim[1])
    every = ctx.sub_all.get(sub_id, (0, 0))
    others = (every[0] - csub[0], every[1] - csub[1])
    f["all_sub_rate"], f["all_sub_n"] = _rate(*others), float(others[1])
    f.update(p)
    f["at_preferred_dc"] = NAN if at_preferred_dc is None else float(at_preferred_dc)
    f["catalogue_rank"] = float(catalogue_rank)
    f["n_candidates"] = float(n_candidates)
    return f


#: the direction a feature may move P(accepted) (+1 up, -1 down, 0 free): more past accepts
#: never make a candidate less likely, more rejects never more likely, an equal pack, unit
#: or brand and stock near the customer never hurt. Keeps a small history from learning noise.
MONOTONE = {
    "cust_pair_acc": 1,
    "cust_pair_rej": -1,
    "cust_sub_acc": 1,
    "cust_sub_rej": -1,
    "cust_fam_rate": 1,
    "cust_rate": 1,
    "cust_rate_pack_match": 1,
    "cust_rate_brand_match": 1,
    "cust_rate_price_match": 1,
    "sim_sub_rate": 1,
    "all_sub_rate": 1,
    "price_down": 1,
    "same_pack_uom": 1,
    "same_uom": 1,
    "same_brand": 1,
    "at_preferred_dc": 1,
}


def fit_examples(rows, labels, *, seed: int = 0, **_: Any):
    """A gradient-boosted classifier of accepted / rejected with the directions of
    :data:`MONOTONE` (``models.Trained``: stored, loaded and explained like the others)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from orderflow.ai.models import Trained

    x = np.array([[r.get(c, NAN) for c in FEATURES] for r in rows], dtype=float)
    # scikit-learn constrains the probability of the second class (sorted): "rejected"
    sign = -1 if sorted(set(labels))[-1] == REJECTED else 1
    est = HistGradientBoostingClassifier(
        max_iter=120,
        learning_rate=0.08,
        max_leaf_nodes=8,
        min_samples_leaf=20,
        l2_regularization=1.0,
        monotonic_cst=[sign * MONOTONE.get(c, 0) for c in FEATURES],
        random_state=seed,
    )
    est.fit(x, np.array(labels))
    with np.errstate(all="ignore"):
        present = (~np.isnan(x)).mean(axis=0) >= 0.5
        med = [float(np.nanmedian(x[:, j])) if present[j] else NAN for j in range(x.shape[1])]
    return Trained(est, FEATURES, tuple(str(c) for c in est.classes_), tuple(med))


def accept_scores(model, rows: list[dict[str, float]]) -> list[float]:
    """Per row, the model's probability that the customer accepts the candidate."""
    if not rows:
        return []
    if ACCEPTED not in model.classes:
        return [0.0] * len(rows)
    k = model.classes.index(ACCEPTED)
    return [float(x[k]) for x in model.proba(rows)]


def rank(scores: Sequence[float]) -> list[int]:
    """Candidate positions, most likely accepted first; ties keep the catalogue's order."""
    return sorted(range(len(scores)), key=lambda k: (-scores[k], k))


def score_examples(model, rows, labels) -> dict[str, Any]:
    """Held-out offered candidates: how well P(accepted) separates accepts from rejects (the
    gate of a new version: ``auc``), and the acceptance rate."""
    from sklearn.metrics import roc_auc_score

    truth = [lab == ACCEPTED for lab in labels]
    scores = accept_scores(model, rows)
    auc = float(roc_auc_score(truth, scores)) if 0 < sum(truth) < len(truth) else 0.5
    return {
        "auc": round(auc, 4),
        "accept_rate": round(sum(truth) / len(truth), 4) if truth else None,
        "n_eval": len(labels),
    }


# ---------------------------------------------------------------------------- the flow


@dataclass
class Ranked:
    item_id: str
    #: (candidate, P(accepted), catalogue rank, features), best first
    candidates: list[tuple[str, float, int, dict[str, float]]]


class Ranker:
    """The allocation's ranker (``domain.allocation.SubstituteRanker``) over a trained
    model: orders the in-stock candidates of a short line, remembers every ranking it made
    (``ranked``) for the decisions the flow records afterwards."""

    def __init__(
        self,
        model: Any,
        version: str,
        ctx: Context,
        facts: Mapping[str, Facts],
        tiers: Mapping[str, str | None],
    ) -> None:
        self.model, self.version, self.ctx = model, version, ctx
        self.facts, self.tiers = facts, tiers
        self.ranked: dict[tuple[str, int], Ranked] = {}

    def __call__(
        self,
        order: Any,
        line_no: int,
        item_id: str,
        candidates: Sequence[str],
        at_preferred: Mapping[str, bool],
    ) -> list[str]:
        item = self.facts.get(item_id)
        known = [s for s in candidates if s in self.facts]
        if item is None or len(known) < len(candidates) or len(candidates) < 2:
            return list(candidates)  # nothing to order, or facts missing: the catalogue's
        cid = order.customer_id or ""
        tier = self.tiers.get(cid)
        rows = [
            features(
                self.ctx, cid, tier, item, s, self.facts[s], item_id=item_id,
                catalogue_rank=k, n_candidates=len(candidates),
                at_preferred_dc=at_preferred.get(s),
            )
            for k, s in enumerate(candidates)
        ]  # fmt: skip
        scores = accept_scores(self.model, rows)
        best = rank(scores)
        self.ranked[(order.order_id, line_no)] = Ranked(
            item_id, [(candidates[k], scores[k], k, rows[k]) for k in best]
        )
        return [candidates[k] for k in best]


def evidence(r: Ranked) -> list[dict[str, Any]]:
    """The ranking as a decision's evidence and the desk's view: best first."""
    return [
        {
            "item_id": r.item_id,
            "substitute_item_id": s,
            "rank": n + 1,
            "p_accept": round(p, 4),
            "catalogue_rank": k + 1,
        }
        for n, (s, p, k, _f) in enumerate(r.candidates)
    ]


def record_outcome(
    conn: psycopg.Connection,
    order_id: str,
    *,
    accepted: bool,
    actor: str,
    actor_role: str | None = None,
    line_no: int | None = None,
) -> int:
    """The customer's answer to the substitutes proposed on ``order_id`` (the desk: approve =
    accepted, reject = rejected): the review of each ranking decision not reviewed yet (the
    latest per line), i.e. the label the next training reads. Returns how many."""
    from orderflow.ai import governance
    from orderflow.store import ai as repo

    n = 0
    for decision_id in repo.unreviewed_per_line(conn, MODEL_NAME, order_id, line_no):
        n += governance.review(
            conn,
            decision_id,
            actor=actor,
            followed=accepted,
            label=None if accepted else REJECTED,
            actor_role=actor_role,
        )
    return n


def context_from_rows(rows: Sequence[tuple]) -> Context:
    """The context from the store's outcomes (``orderflow.store.ai.substitute_outcomes``):
    (at, customer, tier, item, substitute, family, accepted, pair features)."""
    return Context.of(
        [_outcome(at, c, t, i, s, fam or "", acc, p or {}) for at, c, t, i, s, fam, acc, p in rows]
    )


# ---------------------------------------------------------------------------- history


def facts_of(items: Mapping[str, Mapping[str, Any]]) -> dict[str, Facts]:
    return {
        k: Facts(v["uom"], int(v.get("pack_size") or 1), v.get("list_price"), v.get("vendor_part"))
        for k, v in items.items()
    }


@dataclass
class OfferRows:
    """One generated offer: its candidates' features (computed before its outcome was known)."""

    offer: Any
    rows: list[dict[str, float]]


def walk(data) -> list[OfferRows]:
    """Every offer of generated history (``orderflow_sandbox.generator.substitutes.Offers``)
    with its candidates' features, oldest first; each offer's outcome joins the context only
    after its features are computed (no label leaks into a feature)."""
    facts = facts_of(data.items)
    ctx = Context()
    out = []
    for o in data.offers:
        tier = data.tiers.get(o.customer_id)
        rows = [
            features(
                ctx, o.customer_id, tier, facts[o.item_id], s, facts[s], item_id=o.item_id,
                catalogue_rank=k, n_candidates=len(o.candidates),
                at_preferred_dc=o.at_preferred.get(s),
            )
            for k, s in enumerate(o.candidates)
        ]  # fmt: skip
        out.append(OfferRows(o, rows))
        ctx.add(outcome_of(o.at, o.customer_id, tier, o.item_id, o.offered, facts, o.accepted))
    return out


def examples(data) -> list[tuple[datetime, str, dict[str, float], str]]:
    """Labelled examples: the offered candidate of each offer (at, subject, features, label);
    the subject names offer, customer, item and substitute (``offer|customer|item|sub``)."""
    return [
        (
            w.offer.at,
            f"{w.offer.offer_id}|{w.offer.customer_id}|{w.offer.item_id}|{w.offer.offered}",
            w.rows[w.offer.candidates.index(w.offer.offered)],
            ACCEPTED if w.offer.accepted else REJECTED,
        )
        for w in walk(data)
    ]


def evaluate_offers(data, cut: datetime, *, seed: int = 0) -> dict[str, Any]:
    """Train on the offers before ``cut`` (the offered candidate, its outcome), then rank the
    candidates of every later offer: ``subst_top1`` — the share of first-ranked candidates the
    customer accepts (offers with two or more candidates in stock) — beside the catalogue's
    static order (``subst_top1_catalogue``), a random pick (expected), the best possible (any
    candidate accepted) and two ceilings of a ranking: by the generator's true acceptance
    probability (``subst_top1_true_probability``: an oracle) and by that probability without
    the customer's own lasting taste for the substitute (``subst_top1_without_pair_taste``:
    every other driver known exactly — what history could at best teach before the customer
    answered that substitute)."""
    walked = walk(data)
    train = [w for w in walked if w.offer.at < cut]
    test = [w for w in walked if w.offer.at >= cut]
    rows = [w.rows[w.offer.candidates.index(w.offer.offered)] for w in train]
    labels = [ACCEPTED if w.offer.accepted else REJECTED for w in train]
    model = fit_examples(rows, labels, seed=seed)
    ranked = [w for w in test if len(w.offer.candidates) >= 2]
    top, naive, rnd, best, top_all, by_p, by_known = [], [], [], [], [], [], []
    for w in test:
        o = w.offer
        first = o.candidates[rank(accept_scores(model, w.rows))[0]]
        top_all.append(o.outcomes[first])
        if len(o.candidates) < 2:
            continue
        top.append(o.outcomes[first])
        naive.append(o.outcomes[o.candidates[0]])
        rnd.append(sum(o.outcomes.values()) / len(o.candidates))
        best.append(any(o.outcomes.values()))
        by_p.append(o.outcomes[max(o.candidates, key=lambda s: o.p[s])])
        by_known.append(o.outcomes[max(o.candidates, key=lambda s: o.p_without_taste[s])])
    held = score_examples(
        model,
        [w.rows[w.offer.candidates.index(w.offer.offered)] for w in test],
        [ACCEPTED if w.offer.accepted else REJECTED for w in test],
    )

    def share(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    return {
        "subst_top1": share(top),
        "subst_top1_catalogue": share(naive),
        "subst_top1_random": share(rnd),
        "subst_top1_best_possible": share(best),
        "subst_top1_true_probability": share(by_p),
        "subst_top1_without_pair_taste": share(by_known),
        "subst_top1_all_offers": share(top_all),
        "n_offers_ranked": len(ranked),
        "n_offers_eval": len(test),
        "train_examples": len(train),
        "train_accept_rate": round(labels.count(ACCEPTED) / len(labels), 4) if labels else None,
        "heldout_auc": held["auc"],
    }
