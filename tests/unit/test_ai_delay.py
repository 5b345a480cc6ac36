"""Delay risk (#17, model 3) without a database: the generated shipments (deterministic, with
lateness that has causes and noise), the features (what is known at plan time — never an
outcome of the order itself or of anything delivered later), the promised date planning now
keeps, the policy in the ``ai`` rules and the kill switch."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from orderflow import rules
from orderflow.ai import delay, registry
from orderflow_sandbox.generator.delays import generate_shipments
from orderflow_sandbox.generator.history import generate

SMALL = {"days": 40, "orders_per_day": 25, "customers": 25, "items": 150}


@pytest.fixture(scope="module")
def hist():
    return generate(11, **SMALL)


@pytest.fixture(scope="module")
def ships(hist):
    return generate_shipments(hist)


def test_shipments_are_deterministic_and_their_lateness_is_imbalanced(hist, ships):
    again = generate_shipments(generate(11, **SMALL))
    assert [(s.shipment_id, s.shipped_at, s.delivered_on) for s in again.rows] == [
        (s.shipment_id, s.shipped_at, s.delivered_on) for s in ships.rows
    ]
    late = ships.late_orders()
    assert set(late) <= {o["order_id"] for o in hist.orders}
    share = sum(late.values()) / len(late)
    assert 0.05 < share < 0.45, share  # most orders arrive on time
    for s in ships.rows[:200]:
        assert s.promised_date > s.ship_date and s.ship_date.weekday() < 5
        assert s.shipped_at > s.planned_at  # it leaves after it was planned
        assert s.delivered_on > s.shipped_on
        assert s.late == (s.delivered_on > s.promised_date)


def test_lateness_follows_its_drivers(ships):
    """Each driver the features see moves the late share the way it should."""
    rows = ships.rows

    def share(pred):
        xs = [s.late for s in rows if pred(s)]
        return sum(xs) / max(len(xs), 1)

    def slack(s):
        return delay.business_days(s.ship_date, s.promised_date) - s.transit_days - (s.zone > 5)

    assert share(lambda s: slack(s) <= 0) > share(lambda s: slack(s) >= 2)
    assert share(lambda s: s.hazmat) > share(lambda s: not s.hazmat)
    # it left later than planned (a backlog, the cutoff) — the store sees the queue, not this
    assert share(lambda s: s.shipped_on > s.ship_date) > 2 * share(
        lambda s: s.shipped_on == s.ship_date
    )


def _planned(s):
    return delay.Planned(s.dc_id, s.carrier_id, s.service_code, s.mode, s.transit_days, s.zone,
                         s.weight_kg, s.hazmat, s.ship_date, s.promised_date)  # fmt: skip


def test_no_outcome_leaks_into_the_features(ships):
    """An order's features are the same whatever happens after its plan: its own shipments'
    and every later one's departure and delivery changed, nothing moves."""
    rows = ships.rows
    mid = rows[len(rows) // 2]
    at = mid.planned_at
    mine = [s for s in rows if s.order_id == mid.order_id]
    before = delay.features(
        [_planned(s) for s in mine], delay.HistoryStats(rows).at(at), at, mid.received_at
    )

    def future_changed(s):
        left = s.shipped_at if s.shipped_at < at else s.shipped_at + timedelta(days=3)
        came = s.delivered_on if s.delivered_on < at.date() else s.delivered_on + timedelta(days=9)
        return replace(s, shipped_at=left, delivered_on=came)

    changed = [future_changed(s) for s in rows]
    assert sum(a.late != b.late for a, b in zip(rows, changed, strict=True)) > 10
    after = delay.features(
        [_planned(s) for s in mine], delay.HistoryStats(changed).at(at), at, mid.received_at
    )
    assert before.keys() == after.keys() == set(delay.FEATURES)
    assert _same(before, after)
    # and the history it does read moves them: every delivery before the plan made late
    worse = [
        replace(s, promised_date=s.ship_date) if s.delivered_on < at.date() else s for s in rows
    ]
    moved = delay.features(
        [_planned(s) for s in mine], delay.HistoryStats(worse).at(at), at, mid.received_at
    )
    assert moved["lane_late_rate"] > before["lane_late_rate"]


def _same(a: dict, b: dict) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_examples_are_one_per_order_in_plan_order_with_no_label_among_the_features(hist):
    ex = delay.examples(hist)
    assert len({e.subject for e in ex}) == len(ex)
    assert [e.at for e in ex] == sorted(e.at for e in ex)
    assert {e.label for e in ex} == {delay.LATE, delay.ON_TIME}
    for e in ex[:300]:
        assert set(e.features) == set(delay.FEATURES)
        assert all(isinstance(v, float) for v in e.features.values())


DC = "DC-EAST"
MON = date(2026, 12, 7)


def _stats(**kw) -> delay.Stats:
    base = {
        "open": {DC: 40},
        "shipped": {DC: 200},
        "lanes": {("UPS", "GND", 3): (50, 5)},
        "services": {("UPS", "GND"): (100, 10)},
        "cutoffs": {DC: ("America/New_York", time(15))},
    }
    return delay.Stats(**{**base, **kw})


def _ship(**kw) -> delay.Planned:
    base = {
        "dc_id": DC,
        "carrier_id": "UPS",
        "service_code": "GND",
        "mode": "parcel",
        "transit_days": 4,
        "zone": 3,
        "weight_kg": 12.0,
        "hazmat": False,
        "ship_date": MON,
        "promised_date": date(2026, 12, 14),  # five business days
    }
    return delay.Planned(**{**base, **kw})


def test_features_read_slack_backlog_cutoff_lane_split_and_hazmat():
    morning = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)  # 09:00 in New York
    f = delay.features([_ship()], _stats(), morning, morning - timedelta(hours=2))
    assert f["slack_days"] == 1 and f["promise_days"] == 5
    assert f["dc_backlog"] == pytest.approx(40 / 20) and f["dc_open"] == 40
    assert f["after_cutoff"] == 0 and f["hours_to_cutoff"] == pytest.approx(6)
    assert f["lane_late_rate"] == pytest.approx((5 + 8 * (10 + 0.8) / 108) / 58)
    assert f["n_shipments"] == 1 and f["hazmat"] == 0 and f["weekday"] == 0
    assert f["days_waiting"] == 0
    evening = datetime(2026, 12, 7, 21, 30, tzinfo=UTC)  # 16:30 in New York
    split = [_ship(), _ship(dc_id="DC-WEST", zone=7, hazmat=True)]
    g = delay.features(split, _stats(), evening, morning - timedelta(days=5))  # a Wednesday
    assert g["after_cutoff"] == 1 and g["hours_to_cutoff"] < 0
    assert g["n_shipments"] == 2 and g["hazmat"] == 1 and g["zone"] == 7
    assert g["slack_days"] == 0  # zone 7 takes a day more than the service's transit
    assert g["days_waiting"] == 3
    unknown_lane = delay.features([_ship(zone=5)], _stats(), morning, morning)
    assert unknown_lane["lane_shipments"] == 0
    assert unknown_lane["lane_late_rate"] == pytest.approx((10 + 0.8) / 108)  # the service's


def test_planning_keeps_the_promised_date():
    from orderflow.domain.planning import CarrierService, plan_shipments
    from orderflow.domain.reference import Item

    book = rules.load()
    services = [CarrierService("UPS", "GND", "parcel", 3, Decimal(68), True, Decimal("9.5"),
                               Decimal("0.85"))]  # fmt: skip
    items = {"I": Item("I", "EA", Decimal("10"), weight_kg=Decimal("1"))}
    fri = date(2026, 12, 4)
    args = ("O", "C", {"DC-EAST": [("I", Decimal(2))]}, items, "Z3")
    [s] = plan_shipments(*args, None, None, fri, services, book.carrier).shipments
    assert s.promised_date == date(2026, 12, 11)  # five business days after a Friday
    [s] = plan_shipments(*args, None, date(2026, 12, 10), fri, services, book.carrier).shipments
    assert s.promised_date == date(2026, 12, 10)  # what the customer asked for
    [s] = plan_shipments(*args, None, fri, fri, services, book.carrier).shipments
    assert s.promised_date == date(2026, 12, 7)  # asked for today: the next business day


def test_the_model_is_registered_with_its_policy_and_older_versions_keep_their_hash():
    book = rules.load()
    spec = registry.get(delay.MODEL_NAME)
    assert spec.columns == delay.FEATURES and spec.gate_metric == "auc"
    assert book.ai.enabled(delay.MODEL_NAME)
    assert book.ai.delay.notify_customer and book.ai.delay.notify_threshold >= 0.5
    older = [v for v in rules.file_versions("ai") if "delay" not in v.model_fields_set]
    assert older and all("delay" not in v.content() for v in older)
    assert "delay" in book.ai.content()


def test_the_kill_switch_stops_delay_inference_before_it_reads_anything(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), copy)
    (copy / "ai" / "2099.1.1.yaml").write_text(
        'version: "2099.1.1"\neffective_from: "2099-01-01T00:00:00Z"\n'
        "models:\n  delay_risk: {enabled: false}\n"
    )
    off = rules.load(at=datetime(2099, 2, 1, tzinfo=UTC), directory=copy)
    assert not off.ai.enabled(delay.MODEL_NAME)
    # no connection at all: a switched-off model never touches the store
    assert delay.after_plan(None, ["O-1"], off) == {}


@pytest.mark.slow
def test_a_model_trained_on_months_ranks_later_orders_well():
    """Small, but months apart: trained on the first two thirds, judged on the rest."""
    h = generate(5, days=90, orders_per_day=30, customers=30, items=200)
    ex = delay.examples(h)
    cut = int(len(ex) * 0.67)
    model = delay.fit([e.features for e in ex[:cut]], [e.label for e in ex[:cut]])
    m = delay.score(model, [e.features for e in ex[cut:]], [e.label for e in ex[cut:]])
    assert m["auc"] > 0.75, m
    base = m["late_share"] * (1 - m["late_share"])  # Brier of always saying the base rate
    assert m["brier"] < base, m
