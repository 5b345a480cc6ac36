"""Near-duplicate orders across channels (#17, model 2): PO normalising, blocking, features,
the labelled generator, a model trained on a small generated history, and the validation
stage's ``possible_duplicate`` hold (pure: hand-built orders, no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from orderflow.ai import duplicates as nd
from orderflow.domain.reference import (
    Customer,
    Item,
    LineView,
    OrderView,
    PriorOrder,
    ReferenceData,
    ShipTo,
)
from orderflow.domain.validation import signature, validate
from orderflow.rules import load
from orderflow_sandbox.generator.duplicates import generate_labelled

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
BOOK = load(at=NOW)
D = Decimal


def doc(oid, po, lines, *, channel="portal", at=NOW, customer="C1", ship_to="C1-ST1"):
    """``lines``: (item id or None, parts, description, quantity, price)."""
    return nd.Doc.of(oid, customer, ship_to, channel, po, at, lines)


BASKET = [
    ("IT1", ["FST-458-00001"], "HEX BOLT 3/8-16 X 2 GR5 250/PK", 4, 16.65),
    ("IT2", ["JAN-101-00004"], "MOP HEAD 33 GAL WHITE 6/CS", 2, 31.20),
    ("IT3", ["SAF-356-00153"], "N95 RESPIRATOR ONE SIZE BLUE", 10, 9.80),
]


# ---------------------------------------------------------------------------- PO numbers


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("4500012345", "PO# 0045-0001 2345"),
        ("4500012345", "PO4500012345"),
        ("PO-2026-041448", "po 2026 041448"),
        ("067504-36", "06750436"),
        ("B12012887", "PO# b12012887"),
        ("0013598", "PO OO13598"),  # OCR read the zeros as letters
        ("PO-2026-049898", "PO-PO2026049898"),  # a translator's prefix on a PO that had one
    ],
)
def test_reformatted_po_numbers_normalise_alike(a, b):
    assert nd.normalise_po(a) == nd.normalise_po(b)


def test_next_po_numbers_of_a_sequence_are_neighbours_not_reformattings():
    a, b = doc("A", "PO-2026-041448", BASKET), doc("B", "PO-2026-041457", BASKET)
    f = dict(zip(nd.FEATURES, nd.features(a, b).values, strict=True))
    assert (f["po_equal_lines"], f["po_neighbour"], f["po_typo_lines"]) == (0.0, 1.0, 0.0)
    resend = doc("C", "PO# 2026-041448", BASKET, channel="edi")
    f = dict(zip(nd.FEATURES, nd.features(a, resend).values, strict=True))
    assert (f["po_equal_lines"], f["po_neighbour"]) == (1.0, 0.0)
    slip = doc("D", "PO-2026-014448", BASKET, channel="csv")  # two digits swapped by hand
    f = dict(zip(nd.FEATURES, nd.features(a, slip).values, strict=True))
    assert (f["po_equal_lines"], f["po_neighbour"], f["po_typo_lines"]) == (0.0, 0.0, 1.0)


def _po_features(po_a, po_b):
    a, b = doc("A", po_a, BASKET), doc("B", po_b, BASKET, channel="csv")
    f = dict(zip(nd.FEATURES, nd.features(a, b).values, strict=True))
    return f["po_neighbour"], f["po_typo_lines"], f["po_slip_or_step_lines"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # the next PO of the sequence, one of them reformatted (the dashes dropped, a suffix
        # kept): still neighbours, not unrelated numbers
        ("8597731", "085988-31", (1.0, 0.0, 0.0)),
        ("PO-03951027", "039516-27", (1.0, 0.0, 0.0)),
        ("0063384", "0063387", (1.0, 0.0, 0.0)),  # one digit changed: the next order
        # a slip that no sequence step explains: a copy typed by hand
        ("0047870", "004787", (0.0, 1.0, 0.0)),  # a digit left out
        ("B07048085", "B70048085", (0.0, 1.0, 0.0)),  # the branch swapped
        ("PO-2026-041448", "PO-2026-014448", (0.0, 1.0, 0.0)),
        # two last digits swapped that are also a few numbers apart: either; its own feature
        ("0056018", "0056081", (0.0, 0.0, 1.0)),
        ("0047870", "0047807", (0.0, 0.0, 1.0)),
        ("090595-19", "090595-91", (0.0, 0.0, 1.0)),
    ],
)
def test_sequence_steps_keying_slips_and_the_ambiguous_swap_are_told_apart(a, b, expected):
    assert _po_features(a, b) == expected
    assert _po_features(b, a) == expected


def test_an_order_one_slip_from_a_candidate_is_not_new_in_the_sequence():
    earlier = [doc("A", "0047870", BASKET), doc("B", "0047875", BASKET)]
    slip = nd.in_context(doc("C", "0047807", BASKET), earlier)  # a swap of A's last digits
    assert not slip.po_new_in_sequence
    new = nd.in_context(doc("D", "0047878", BASKET), earlier)
    assert new.po_new_in_sequence


# ---------------------------------------------------------------------------- blocking


def test_blocking_keeps_the_customers_orders_of_the_window_only():
    order = doc("O", "1", BASKET)
    inside = doc("A", "2", BASKET, at=NOW - timedelta(hours=100))
    later = doc("B", "3", BASKET, at=NOW + timedelta(hours=2))
    too_old = doc("C", "4", BASKET, at=NOW - timedelta(hours=200))
    other = doc("D", "5", BASKET, customer="C2")
    cands = nd.block(order, [order, inside, later, too_old, other], timedelta(hours=168))
    assert [c.order_id for c in cands] == ["A", "B"]
    assert nd.block(doc("X", "1", BASKET, customer=None), [inside], timedelta(days=9)) == []


# ---------------------------------------------------------------------------- lines


def test_ocr_read_lines_match_by_part_number_and_description():
    """An e-mailed PDF: OCR mangled part numbers (so the lines are not mapped to items) and
    descriptions; the lines still pair with the portal order's."""
    portal = doc("P", "4500012345", BASKET)
    ocr = doc(
        "E",
        "PO 45OOO12345",
        [
            (None, ["FST-458-0O001"], "HEX B0LT 3/8-16 X 2 GR5 250PK", 4, 16.65),
            (None, ["JAN-1O1-00004"], "MOP HEAD 33 GAL WHlTE 6/CS", 2, 31.20),
            ("IT3", ["SAF-356-00153"], "N95 RESPIRATOR ONE SIZE BLUE", 10, 9.80),
        ],
        channel="email",
        at=NOW + timedelta(hours=3),
    )
    pair = nd.features(portal, ocr)
    f = dict(zip(nd.FEATURES, pair.values, strict=True))
    assert pair.matched_lines == 3 and f["qty_equal"] == 1.0 and f["po_equal_lines"] == 1.0
    assert f["line_match_min"] == 1.0 and f["price_equal"] == 1.0


def test_a_dropped_line_and_a_changed_quantity_show_in_the_features():
    portal = doc("P", "4500012345", BASKET)
    rekeyed = doc(
        "K",
        "4500012345",
        [BASKET[0], ("IT2", ["IT2"], "MOP HEAD 33 GAL WHITE 6/CS", 3, 31.20)],
        channel="csv",
    )
    pair = nd.features(portal, rekeyed)
    f = dict(zip(nd.FEATURES, pair.values, strict=True))
    assert (pair.matched_lines, pair.qty_equal) == (2, 1)
    assert f["line_match_min"] == pytest.approx(2 / 3) and f["line_match_max"] == 1.0
    assert f["qty_equal"] == 0.5 and f["qty_log_ratio"] > 0


def test_different_items_never_pair_even_when_described_alike():
    a = doc("A", "1", [("IT1", ["FST-1"], "HEX BOLT 3/8-16 X 2", 4, 1.0)])
    b = doc("B", "2", [("IT9", ["FST-9"], "HEX BOLT 3/8-16 X 2-1/2", 4, 1.0)])
    assert nd.features(a, b).matched_lines == 0


# ---------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_keeps_labels_out_of_the_orders():
    a = generate_labelled(5, 6, customers=12, items=120, orders_per_day=30)
    b = generate_labelled(5, 6, customers=12, items=120, orders_per_day=30)
    assert a.orders == b.orders and a.duplicate_of == b.duplicate_of
    assert a.duplicate_of, "re-submissions are generated"
    keys = {k for o in a.orders for k in o}
    assert keys == {
        "order_id",
        "customer_id",
        "ship_to_id",
        "channel",
        "po_number",
        "received_at",
        "lines",
    }
    by_id = {o["order_id"]: o for o in a.orders}
    for dup, orig in a.duplicate_of.items():
        assert by_id[orig]["received_at"] < by_id[dup]["received_at"]
        assert by_id[orig]["customer_id"] == by_id[dup]["customer_id"]
    # hard negatives: distinct orders of one customer to one ship-to with the same items
    baskets: dict[tuple, int] = {}
    for o in a.orders:
        if o["order_id"] not in a.duplicate_of:
            key = (o["customer_id"], o["ship_to_id"], frozenset(ln["item_id"] for ln in o["lines"]))
            baskets[key] = baskets.get(key, 0) + 1
    assert max(baskets.values()) >= 3


# ---------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def small():
    """A model trained on two and a half weeks of a small generated history, and the week
    after."""
    data = generate_labelled(11, 17, customers=15, items=120, orders_per_day=35)
    window = timedelta(hours=168)
    docs = [nd.from_generated(o) for o in data.orders]
    train_ids = {o["order_id"] for o in data.period(0, 11)}
    pairs = nd.training_pairs(
        [d for d in docs if d.order_id in train_ids], data.duplicate_of, window
    )
    return nd.train(pairs, version="test"), data, docs


def test_a_small_model_finds_the_later_periods_resubmissions(small):
    model, data, docs = small
    later = {o["order_id"] for o in data.period(12)}
    result = nd.measure(model, docs, data.duplicate_of, later, timedelta(hours=168))
    assert result["true_positives"] >= 5
    assert result["dup_precision"] >= 0.8 and result["dup_recall"] >= 0.8, result
    assert 0 < model.threshold < 1 and model.metrics["positive_pairs"] > 0


def test_score_names_the_original_with_evidence(small):
    model, _, _ = small
    portal = doc("P", "4500012345", BASKET, at=NOW - timedelta(hours=3))
    resend = doc("E", "PO# 4500-0123-45", BASKET, channel="edi")
    reorder = doc("W", "4500012352", BASKET, at=NOW - timedelta(days=5))
    found = nd.score(model, resend, [portal, reorder], threshold=0)
    assert found[0][0] == "P" and found[0][1] >= model.threshold
    ev = found[0][2]
    assert ev["channels"] == ["portal", "edi"] and ev["po_same_after_normalising"]
    assert ev["lines_matched"] == "3 of 3 / 3" and len(ev["input_hash"]) == 64
    assert ev["top_features"] and {"feature", "weight"} <= set(ev["top_features"][0])
    # the weekly re-order of the same basket is a new order
    assert nd.score(model, reorder, [], threshold=0) == []
    assert nd.score(model, doc("W2", "4500012352", BASKET), [portal])[:1] == []


def test_a_model_stored_before_a_feature_was_added_scores_on_the_features_it_knows(small):
    """After an upgrade adds a feature, the active model (trained before it) still scores in
    the validation stage until the next training: each row is read by the model's own
    feature names, not by position."""
    import numpy as np
    from sklearn.base import clone

    model, _, _ = small
    old_features = tuple(f for f in nd.FEATURES if f != "po_slip_or_step_lines")
    rng = np.random.default_rng(0)
    fitted = clone(model.estimator).fit(rng.normal(size=(40, len(old_features))), [0, 1] * 20)
    old = replace(model, features=old_features, estimator=fitted)
    portal = doc("P", "4500012345", BASKET, at=NOW - timedelta(hours=3))
    resend = doc("E", "PO# 4500-0123-45", BASKET, channel="edi")
    (found,) = nd.score(old, resend, [portal], threshold=0)
    pair = nd.features(nd.in_context(resend, [portal]), portal)
    by_name = dict(zip(nd.FEATURES, pair.values, strict=True))
    expected = fitted.predict_proba(np.asarray([[by_name[f] for f in old_features]]))[0, 1]
    assert found[0] == "P" and found[1] == round(float(expected), 4)
    assert {f["feature"] for f in found[2]["top_features"]} <= set(old_features)


def test_a_model_survives_bytes_and_the_registrys_hash_check(small):
    import hashlib

    from orderflow.ai import models

    model, _, _ = small
    again = nd.loads(nd.dumps(model))
    assert (again.version, again.threshold, again.features) == (
        "test",
        model.threshold,
        nd.FEATURES,
    )
    with pytest.raises(ValueError, match="not a near-duplicate model"):
        nd.loads(_joblib_bytes({"x": 1}))
    # the store's artifact: loaded only when its bytes match the recorded hash
    blob = models.dumps(model)
    assert models.loads(blob, hashlib.sha256(blob).hexdigest()).pinned == "near_duplicate@test"
    with pytest.raises(ValueError, match="SHA-256"):
        models.loads(blob, "0" * 64)


def test_the_registry_trains_it_from_labelled_pair_examples(small):
    from orderflow.ai import registry

    _, data, docs = small
    ex = nd.examples(docs, data.duplicate_of, timedelta(hours=168))
    assert {lab for *_, lab in ex} == {nd.DUPLICATE, nd.DISTINCT}
    assert all(set(f) == set(nd.FEATURES) for _, _, f, _ in ex)
    spec = registry.get(nd.MODEL_NAME)
    cut = int(len(ex) * 0.8)
    model = spec.fit(
        [f for _, _, f, _ in ex[:cut]],
        [lab for *_, lab in ex[:cut]],
        times=[at for _, at, _, _ in ex[:cut]],
        subjects=[s for s, *_ in ex[:cut]],
        version="reg",
    )
    assert model.pinned == "near_duplicate@reg" and 0 < model.threshold < 1
    m = spec.score(model, [f for _, _, f, _ in ex[cut:]], [lab for *_, lab in ex[cut:]])
    assert m[spec.gate_metric] > 0.5 and m["n_duplicate"] > 0


def _joblib_bytes(obj) -> bytes:
    import io

    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------- validation


def _ref() -> ReferenceData:
    return ReferenceData(
        customers={"C1": Customer("C1", "Acme")},
        ship_tos={
            "C1-ST1": ShipTo("C1-ST1", "C1", "Acme", "1 Main St", "Albany", "NY", "12207", "US")
        },
        items={i: Item(i, "EA", D("10.00")) for i in ("IT1", "IT2")},
    )


def _view(oid, po, *, channel="edi", at=NOW, qty=("4", "2")) -> OrderView:
    return OrderView(
        order_id=oid,
        status="RECEIVED",
        channel=channel,
        customer_id="C1",
        ship_to_id="C1-ST1",
        po_number=po,
        po_date=date(2026, 12, 7),
        received_at=at,
        requested_ship_date=None,
        requested_delivery_date=None,
        currency="USD",
        lines=tuple(
            LineView(n, D(q), "EA", D("10.00"), item_id=i, description=f"Widget {i}")
            for n, (i, q) in enumerate(zip(("IT1", "IT2"), qty, strict=True), start=1)
        ),
    )


class Stub:
    """A matcher that scores by PO number alone (the domain's side of the contract)."""

    pinned = "near_duplicate@stub"
    threshold = 0.5

    def __init__(self):
        self.asked: list[list[str]] = []

    def best(self, order, candidates):
        self.asked.append([c.order_id for c in candidates])
        same = [
            c
            for c in candidates
            if nd.normalise_po(c.po_number) == nd.normalise_po(order.po_number)
        ]
        return (
            (same[0].order_id, 0.9, {"input_hash": "h"})
            if same
            else (candidates[0].order_id, 0.1, {})
        )


def _prior(v: OrderView) -> PriorOrder:
    return PriorOrder(
        v.order_id,
        v.customer_id,
        v.po_number,
        v.ship_to_id,
        v.received_at,
        signature(v),
        v.channel,
        v.lines,
    )


def test_a_near_duplicate_is_held_possible_duplicate_with_the_matched_order():
    ref = _ref()
    portal = _view("P", "4500012345", channel="portal", at=NOW - timedelta(hours=3))
    old = _view("OLD", "4500000001", at=NOW - timedelta(days=9))  # outside the window
    ref.prior_orders = [_prior(portal), _prior(old)]
    stub = Stub()
    (v,) = validate([_view("E", "PO# 4500-0123-45")], ref, BOOK.validation, BOOK.pricing, near=stub)
    assert [h.category for h in v.holds] == ["possible_duplicate"]
    d = v.holds[0].details
    assert (d["duplicate_of"], d["match"], d["score"], d["model"]) == (
        "P",
        "model",
        0.9,
        stub.pinned,
    )
    assert d["threshold"] == 0.5 and d["input_hash"] == "h"
    assert stub.asked == [["P"]]  # blocked: the customer's orders of the window only
    assert "portal" in v.holds[0].reason and "4500012345" in v.holds[0].reason


def test_below_the_threshold_exact_first_and_off_switch():
    ref = _ref()
    ref.prior_orders = [
        _prior(_view("P", "4500012345", channel="portal", at=NOW - timedelta(hours=3)))
    ]
    # a new PO of the sequence: the model's score is below the threshold
    (v,) = validate([_view("W", "4500012399")], ref, BOOK.validation, BOOK.pricing, near=Stub())
    assert v.ok
    # the same PO string: the exact check holds it, the model is not asked
    stub = Stub()
    (v,) = validate([_view("S", "4500012345")], ref, BOOK.validation, BOOK.pricing, near=stub)
    assert [h.category for h in v.holds] == ["duplicate_suspect"] and stub.asked == []
    # switched off in the ai rules, or no model (the stage passes no matcher): as without it
    (v,) = validate([_view("E", "PO# 4500-0123-45")], ref, BOOK.validation, BOOK.pricing)
    assert v.ok
    # a person approved it as an order of its own: revalidating it does not hold it again
    approved = replace(_view("E", "PO# 4500-0123-45"), approvals=frozenset({"possible_duplicate"}))
    (v,) = validate([approved], ref, BOOK.validation, BOOK.pricing, near=Stub())
    assert v.ok


def test_the_shipped_rules_enable_it_and_older_versions_hash_as_before():
    assert BOOK.ai.enabled("near_duplicate")
    assert not load(at=datetime(2026, 11, 27, tzinfo=UTC)).ai.enabled("near_duplicate")
    assert BOOK.validation.near_duplicates.enabled
    assert BOOK.validation.near_duplicates.min_score is None  # the model's calibrated threshold
    before = load(at=datetime(2026, 11, 27, tzinfo=UTC)).validation
    assert not before.near_duplicates.enabled
    assert "near_duplicates" not in before.content()
