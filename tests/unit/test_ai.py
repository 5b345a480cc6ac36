"""Decision support (#17) without a database: the history generator (deterministic, labels
never in the data), the features (what the store sees), the models' evidence and artifact
safety, the registry, and the governance rules (the policy and the kill switch)."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orderflow import rules
from orderflow.ai import features as fx
from orderflow.ai import governance, registry
from orderflow.domain.reference import (
    Contract,
    Customer,
    Hold,
    Item,
    LineView,
    OrderView,
    ReferenceData,
    ShipTo,
)
from orderflow_sandbox.generator.history import CAUSES, generate

SMALL = {"days": 15, "orders_per_day": 20, "customers": 20, "items": 120}


@pytest.fixture(scope="module")
def hist():
    return generate(7, **SMALL)


def test_history_is_deterministic_by_seed(hist):
    again = generate(7, **SMALL)
    assert again.orders == hist.orders
    assert again.causes == hist.causes and again.anomalies == hist.anomalies
    assert generate(8, **SMALL).orders != hist.orders


def test_history_has_labelled_causes_and_anomalies_but_no_label_in_the_data(hist):
    labels = set(hist.causes.values())
    assert labels <= {c for causes in CAUSES.values() for c in causes}
    assert {"contract_expired", "item_master", "keying_error"} <= labels
    every_label = labels | set(hist.anomalies.values())
    for row in hist.orders[:500]:
        values = {v for v in row.values() if isinstance(v, str)}
        values |= {v for ln in row["lines"] for v in ln.values() if isinstance(v, str)}
        assert not values & every_label, row["order_id"]
        assert set(row) == {"order_id", "customer_id", "ship_to_id", "ship_to_address", "channel",
                            "received_at", "po_number", "po_date", "lines"}  # fmt: skip
        for ln in row["lines"]:
            assert set(ln) == {"line_no", "item_id", "customer_part_number", "quantity", "uom",
                               "unit_price"}  # fmt: skip
    # imbalanced: most orders are clean
    assert len(hist.causes) + len(hist.anomalies) < 0.35 * len(hist.orders)


def _order(price: str, qty: str = "3", uom: str = "EA") -> OrderView:
    return OrderView(
        order_id="O1", status="RECEIVED", channel="api", customer_id="C1", ship_to_id="C1-ST1",
        po_number="PO1", po_date=date(2026, 6, 1), received_at=datetime(2026, 6, 1, tzinfo=UTC),
        requested_ship_date=None, requested_delivery_date=None, currency="USD",
        lines=(LineView(1, Decimal(qty), uom, Decimal(price), item_id="IT1",
                        contract_price=Decimal("10.00")),),
    )  # fmt: skip


REF = ReferenceData(
    customers={"C1": Customer("C1", "C one")},
    ship_tos={"C1-ST1": ShipTo("C1-ST1", "C1", "C one", "1 Main", "Albany", "NY", "1", "US")},
    items={"IT1": Item("IT1", "EA", Decimal("11.00"))},
    contracts={
        ("C1", "IT1"): [
            Contract("K1", "C1", "IT1", Decimal("10.00"), "EA", date(2025, 1, 1), None, None)
        ]
    },
)


def _hold(price: str) -> Hold:
    return Hold(
        "pricing_mismatch",
        "x",
        line_no=1,
        details={
            "order_price": price,
            "reference_price": "10.00",
            "contract_id": "K1",
            "contract_expires_on": None,
            "item_id": "IT1",
        },
    )


def test_price_features_see_a_pack_size_a_decimal_shift_and_a_discount():
    ctx = fx.Context(pack_size={"IT1": 12})
    uoms = frozenset({"EA"})
    pack = fx.cause_features(_hold("120.00"), _order("120.00"), REF, ctx, uoms)
    assert pack["price_pack_dist"] == pytest.approx(0, abs=1e-9)
    assert pack["cat_price"] == 1 and math.isnan(pack["part_similarity"])
    shift = fx.cause_features(_hold("100.00"), _order("100.00"), REF, ctx, uoms)
    assert shift["price_pow10_dist"] == pytest.approx(0, abs=1e-9)
    ctx.off_ratios["C1"] += [0.9, 0.9]
    disc = fx.cause_features(_hold("9.00"), _order("9.00"), REF, ctx, uoms)
    assert disc["price_cust_discount_seen"] == 2 and disc["price_round_pct_dist"] < 1e-6


def test_anomaly_features_compare_with_the_customers_own_history():
    ctx = fx.Context()
    for _ in range(8):
        ctx.add(_order("10.00", qty="5"), "NY")
    usual = fx.anomaly_features(_order("10.00", qty="5"), REF, ctx)
    tenfold = fx.anomaly_features(_order("10.00", qty="50"), REF, ctx)
    assert usual["n_orders"] == 8 and usual["ship_to_uses"] == 8
    assert abs(usual["qty_max_log_ratio"]) < 1e-9
    assert tenfold["qty_max_log_ratio"] == pytest.approx(math.log(10))
    assert tenfold["qty_pow10_dist"] == pytest.approx(0, abs=1e-9)


def test_models_explain_and_refuse_an_artifact_whose_hash_does_not_match():
    import hashlib

    from orderflow.ai import models

    rows = [{"a": float(i % 2), "b": float(i % 3)} for i in range(60)]
    labels = ["x" if r["a"] else "y" for r in rows]
    m = models.fit(rows, labels, ("a", "b"))
    [(label, p, evidence)] = m.predict([{"a": 1.0, "b": 0.0}])
    assert label == "x" and p > 0.5 and evidence[0]["feature"] == "a"
    blob = models.dumps(m)
    assert models.loads(blob, hashlib.sha256(blob).hexdigest()).classes == m.classes
    with pytest.raises(ValueError, match="SHA-256"):
        models.loads(blob, "0" * 64)


def test_every_model_has_a_registry_entry_and_a_policy():
    book = rules.load()
    for name, spec in registry.MODELS.items():
        assert spec.columns and spec.gate_metric
        assert name in book.ai.models
    assert set(book.routing.causes) == {c for causes in CAUSES.values() for c in causes}
    assert book.routing.route("anomaly").owner_role


@pytest.mark.parametrize("action", ["approve", "release", "waive", "resolve", "reprice", "x"])
def test_a_model_never_acts_beyond_recommending(action):
    with pytest.raises(governance.PolicyViolation, match="person's decision"):
        governance.check_action(action)


@pytest.mark.parametrize("action", sorted(governance.ALLOWED_ACTIONS))
def test_a_model_may_recommend_route_flag_or_hold(action):
    governance.check_action(action)


def test_the_kill_switch_is_a_rule_set_version(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), copy)
    assert governance.enabled(rules.load(), "exception_cause")
    (copy / "ai" / "2026.12.9.yaml").write_text(
        'version: "2026.12.9"\neffective_from: "2026-06-01T00:00:00Z"\n'
        "models:\n  exception_cause: {enabled: false}\n  arrival_anomaly: {enabled: true}\n"
    )
    before = rules.load(at=datetime(2026, 5, 1, tzinfo=UTC), directory=copy)
    after = rules.load(at=datetime(2026, 7, 1, tzinfo=UTC), directory=copy)
    assert governance.enabled(before, "exception_cause")
    assert not governance.enabled(after, "exception_cause")
    assert governance.enabled(after, "arrival_anomaly")
    assert not governance.enabled(after, "a_model_not_named")  # unnamed: never asked


# the whole `orderflow ai evaluate`: every model trained on 40 days, and the near-duplicate
# evaluation on its own 60 generated business days (~100k candidate pairs scored in pure
# Python: ~8 s of CPU, most of it there)
@pytest.mark.slow
def test_evaluate_measures_near_duplicates_on_a_period_it_did_not_train_on():
    from orderflow.ai import evaluate

    out = evaluate.evaluate(4, days=40, orders_per_day=20)
    dup = out["detail"]["near_duplicate"]
    assert out["dup_precision"] == dup["dup_precision"] is not None
    assert out["dup_recall"] == dup["dup_recall"] is not None
    assert 0 <= out["dup_precision"] <= 1 and 0 <= out["dup_recall"] <= 1
    assert dup["judged_orders"] > 0 and dup["train_orders"] > 0
    assert "dup_precision" not in out["not_built"] and "dup_recall" not in out["not_built"]
