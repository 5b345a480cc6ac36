"""Model 4 of #17 (``substitute_rank``): features read only the past, the ranking orders the
in-stock candidates and nothing else, and the substitution rules still decide."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from orderflow import rules
from orderflow.ai import substitutes as sb
from orderflow.domain.allocation import allocate
from orderflow.domain.reference import Customer, Item, LineView, OrderView

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def offers():
    from orderflow_sandbox.generator.history import generate
    from orderflow_sandbox.generator.substitutes import generate_offers

    return generate_offers(generate(5, days=40, orders_per_day=25))


def test_generated_offers_are_deterministic_imbalanced_and_hide_their_drivers(offers):
    from orderflow_sandbox.generator.history import generate
    from orderflow_sandbox.generator.substitutes import generate_offers

    again = generate_offers(generate(5, days=40, orders_per_day=25))
    assert [(o.offer_id, o.offered, o.accepted) for o in again.offers] == [
        (o.offer_id, o.offered, o.accepted) for o in offers.offers
    ]
    assert len(offers.offers) > 100
    rate = sum(o.accepted for o in offers.offers) / len(offers.offers)
    assert 0.2 < rate < 0.8  # neither always nor never: a label worth learning
    assert any(len(o.candidates) > 1 for o in offers.offers)
    for o in offers.offers[:50]:
        assert o.offered in o.candidates and o.accepted == o.outcomes[o.offered]
        assert set(o.candidates) <= set(offers.catalogue[o.item_id])
    # the examples name the offer and carry features only: no outcome, no probability
    for at, subject, f, label in sb.examples(offers)[:50]:
        assert set(f) == set(sb.FEATURES) and label in (sb.ACCEPTED, sb.REJECTED)
        assert subject.count("|") == 3 and at.tzinfo is not None


def test_an_offers_own_outcome_never_reaches_its_features(offers):
    """Flip one offer's outcome: its own features stay the same, a later offer of the same
    customer sees the change (the features do read history, only the past)."""
    base = sb.walk(offers)
    k = next(
        i
        for i, o in enumerate(offers.offers)
        if any(p.customer_id == o.customer_id for p in offers.offers[i + 1 :])
    )
    flipped = list(offers.offers)
    flipped[k] = dataclasses.replace(flipped[k], accepted=not flipped[k].accepted)
    after = sb.walk(dataclasses.replace(offers, offers=flipped))
    assert after[k].rows == base[k].rows
    assert all(after[i].rows == base[i].rows for i in range(k))
    later = next(
        i for i in range(k + 1, len(flipped)) if flipped[i].customer_id == flipped[k].customer_id
    )
    assert after[later].rows != base[later].rows


def _facts():
    return {
        "X": sb.Facts("EA", 12, 10.0, "FAS-M1-00001"),
        "A": sb.Facts("EA", 6, 7.0, "FAS-M2-00002"),  # cheaper, other pack, other maker
        "B": sb.Facts("EA", 12, 10.5, "FAS-M1-00003"),  # same pack, same maker
    }


def test_features_count_this_customer_similar_customers_and_the_pair():
    facts = _facts()
    ctx = sb.Context.of(
        [
            sb.outcome_of(T0, "C1", "gold", "X", "A", facts, False),
            sb.outcome_of(T0, "C1", "gold", "X", "A", facts, False),
            sb.outcome_of(T0, "C2", "gold", "X", "B", facts, True),
            sb.outcome_of(T0, "C3", "silver", "X", "B", facts, True),
        ]
    )
    kw = {"item_id": "X", "catalogue_rank": 0, "n_candidates": 2, "at_preferred_dc": True}
    fa = sb.features(ctx, "C1", "gold", facts["X"], "A", facts["A"], **kw)
    fb = sb.features(ctx, "C1", "gold", facts["X"], "B", facts["B"], **kw)
    assert (fa["cust_pair_acc"], fa["cust_pair_rej"]) == (0.0, 2.0)
    assert (fb["cust_pair_acc"], fb["cust_pair_rej"]) == (0.0, 0.0)
    assert fb["sim_sub_n"] == 1.0 and fb["sim_sub_rate"] > 0.5  # C2, same tier
    assert fb["all_sub_n"] == 2.0  # C2 and C3, not C1 itself
    assert fa["cust_n"] == 2.0 and fa["cust_rate"] < 0.5
    assert fa["same_pack_uom"] == 0.0 and fb["same_pack_uom"] == 1.0
    assert fa["same_brand"] == 0.0 and fb["same_brand"] == 1.0
    assert fa["price_down"] < 0 and fb["price_down"] == 0.0
    # the customer's own past answers are not counted as a similar customer's
    own = sb.features(ctx, "C2", "gold", facts["X"], "B", facts["B"], **kw)
    assert own["sim_sub_n"] == 0.0 and own["cust_pair_acc"] == 1.0


class _Model:
    """A model whose P(accepted) is the same_pack_uom feature (for ranking alone)."""

    classes = ("accepted", "rejected")

    def proba(self, rows):
        return [[r["same_pack_uom"] * 0.8 + 0.1, 0.9 - r["same_pack_uom"] * 0.8] for r in rows]


def _order(cid="C1"):
    return OrderView(
        order_id="O1", status="CREDIT_OK", channel="api", customer_id=cid, ship_to_id=None,
        po_number="P", po_date=None, received_at=T0, requested_ship_date=None,
        requested_delivery_date=None, currency="USD",
        lines=(LineView(line_no=1, quantity=Decimal(5), uom="EA", unit_price=Decimal(10),
                        item_id="X"),),
    )  # fmt: skip


def test_rank_is_by_acceptance_and_ties_keep_the_catalogue_order():
    assert sb.rank([0.2, 0.9, 0.9, 0.1]) == [1, 2, 0, 3]
    ranker = sb.Ranker(_Model(), "v1", sb.Context(), _facts(), {"C1": "gold"})
    assert ranker(_order(), 1, "X", ["A", "B"], {"A": True, "B": True}) == ["B", "A"]
    r = ranker.ranked[("O1", 1)]
    assert [c[0] for c in r.candidates] == ["B", "A"] and r.candidates[0][1] == pytest.approx(0.9)
    ev = sb.evidence(r)
    assert [(e["substitute_item_id"], e["rank"], e["catalogue_rank"]) for e in ev] == [
        ("B", 1, 2),
        ("A", 2, 1),
    ]
    # facts missing for a candidate: the catalogue's order, nothing recorded
    other = sb.Ranker(_Model(), "v1", sb.Context(), _facts(), {})
    assert other(_order(), 1, "X", ["A", "Z"], {}) == ["A", "Z"] and not other.ranked


def _alloc(ranker, *, consent: bool, stock_b: int = 10):
    items = {
        "X": Item("X", "EA", Decimal(10), discontinued=True, substitutes=("A", "B", "GONE")),
        "A": Item("A", "EA", Decimal(7)),
        "B": Item("B", "EA", Decimal("10.5")),
    }
    cust = Customer("C1", "C1", "gold", "NET30", True, accepts_substitutes=consent)
    # stock at the DC every sourcing rule lists first (whatever the region's preference)
    available = {("A", "DC-EAST"): Decimal(10), ("B", "DC-EAST"): Decimal(stock_b)}
    book = rules.load()
    assert book.substitution.require_customer_consent
    [a] = allocate(
        [_order()], {"C1": cust}, items, {"O1": "NY"}, available, book.sourcing,
        book.substitution, date(2026, 3, 2), ranker,
    )  # fmt: skip
    return a


def test_the_ranking_only_orders_the_candidates_and_consent_still_decides():
    ranker = sb.Ranker(_Model(), "v1", sb.Context(), _facts(), {"C1": "gold"})
    # no standing consent: held substitution_needed, the ranking's first proposed
    held = _alloc(ranker, consent=False)
    assert held.hold.category == "substitution_needed"
    assert held.hold.details["proposals"][0]["substitute_item_id"] == "B"
    assert not held.reservations
    # consent: the first-ranked substitute ships
    ok = _alloc(ranker, consent=True)
    assert ok.hold is None and ok.substitutions[0]["substitute_item_id"] == "B"
    assert [(r.item_id, r.is_substitute) for r in ok.reservations] == [("B", True)]
    # no model (switched off): the catalogue's order
    assert _alloc(None, consent=True).substitutions[0]["substitute_item_id"] == "A"
    # a candidate out of stock is never ranked nor taken; one left: no ranking asked

    def rogue(order, line_no, item_id, candidates, near):
        return ["GONE", "X", *reversed(candidates)]  # tries items it was not offered

    assert _alloc(rogue, consent=True).substitutions[0]["substitute_item_id"] == "B"
    lone = sb.Ranker(_Model(), "v1", sb.Context(), _facts(), {"C1": "gold"})
    assert _alloc(lone, consent=True, stock_b=0).substitutions[0]["substitute_item_id"] == "A"
    assert not lone.ranked


def test_evaluation_reports_the_model_beside_the_catalogue_order(offers):
    from orderflow.ai import evaluate, registry

    assert "subst_top1" not in evaluate.NOT_BUILT
    assert registry.get(sb.MODEL_NAME).fit is sb.fit_examples
    cut = offers.offers[int(len(offers.offers) * 0.6)].at
    r = sb.evaluate_offers(offers, cut, seed=1)
    assert r["train_examples"] > 50 and r["n_offers_ranked"] > 20
    for key in ("subst_top1", "subst_top1_catalogue", "subst_top1_random"):
        assert 0.0 <= r[key] <= r["subst_top1_best_possible"] <= 1.0
    assert r["train_examples"] + r["n_offers_eval"] == len(offers.offers)
    assert all(o.at < cut for o in offers.offers[: r["train_examples"]])
    assert all(o.at >= cut - timedelta(0) for o in offers.offers[r["train_examples"] :])


def _repeat_agreement(data) -> tuple[int, int]:
    """(agreeing, repeated): offers of a (customer, item, substitute) offered before whose
    answer is the one the customer gave the first time."""
    first: dict[tuple, bool] = {}
    agree = n = 0
    for o in data.offers:
        key = (o.customer_id, o.item_id, o.offered)
        if key in first:
            n += 1
            agree += o.accepted == first[key]
        else:
            first[key] = o.accepted
    return agree, n


def test_an_answer_can_become_the_customers_standing_rule(monkeypatch):
    """Habit (docs/ai.md): an answer that became a standing rule is given again; without
    habit the same substitute is answered afresh each time; the offers themselves (candidates,
    the one offered) are the same either way (the habit has a stream of its own)."""
    from orderflow_sandbox.generator import substitutes as gs
    from orderflow_sandbox.generator.history import generate

    hist = generate(5, days=40, orders_per_day=25)
    monkeypatch.setattr(gs, "HABIT_SHARE", 1.0)
    monkeypatch.setattr(gs, "HABIT_P", 1.0)
    always = gs.generate_offers(hist)
    agree, n = _repeat_agreement(always)
    assert n >= 10 and agree == n
    monkeypatch.setattr(gs, "HABIT_SHARE", 0.0)
    never = gs.generate_offers(hist)
    agree, n = _repeat_agreement(never)
    assert agree < n
    assert [(o.offer_id, o.candidates, o.offered) for o in never.offers] == [
        (o.offer_id, o.candidates, o.offered) for o in always.offers
    ]
