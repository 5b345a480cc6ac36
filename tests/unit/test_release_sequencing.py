"""Capacity-aware release sequencing (#17, model 5): the pure domain function
(``orderflow.domain.sequencing.sequence``) — first in, first out without a policy; by the risk
that waiting adds, cutoff, tier and margin with one; capacity per DC respected; nothing waits
for ever — and the evaluation's simulator (``orderflow.ai.sequencing.simulate``) judging
on-time against the promised date with capacity carried wave to wave."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from orderflow.ai import delay
from orderflow.ai import sequencing as ai_seq
from orderflow.domain.sequencing import Candidate, Capacity, Policy, priority, sequence

NOW = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
NEXT = NOW + timedelta(hours=2)


def _c(oid, minutes_ago, picks=1, dc="DC-EAST", **kw):
    return Candidate(oid, NOW - timedelta(minutes=minutes_ago), {dc: picks}, **kw)


def test_without_a_policy_the_oldest_go_first_and_the_rest_wait():
    cands = [_c("B", 10), _c("A", 30), _c("C", 5)]
    plan = sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW)
    assert plan.release == ["A", "B"] and plan.wait == ["C"]
    assert plan.used == {"DC-EAST": 2}
    assert all(v is None for v in plan.priority.values())


def test_with_a_policy_the_risk_that_waiting_adds_goes_first():
    cands = [
        _c("OLD-SLACK", 60, risk_now=0.05, risk_later=0.06),
        _c("NEW-TIGHT", 1, risk_now=0.2, risk_later=0.7),
        _c("MID", 30, risk_now=0.1, risk_later=0.3),
    ]
    plan = sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW, Policy())
    assert plan.release == ["NEW-TIGHT", "MID"] and plan.wait == ["OLD-SLACK"]
    assert plan.rank == {"NEW-TIGHT": 0, "MID": 1, "OLD-SLACK": 2}


def test_cutoff_tier_and_margin_break_ties_and_equal_priorities_stay_fifo():
    cut = NOW + timedelta(hours=1)  # before the next wave: now or tomorrow's truck
    p = Policy(tier_weights={"gold": 0.02})
    cands = [
        _c("A", 50),
        _c("B", 40, cutoff=cut),
        _c("C", 30, tier="gold"),
        _c("D", 20, margin=500.0),
        _c("E", 10),
    ]
    plan = sequence(cands, {"DC-EAST": Capacity(5, 5, NEXT)}, NOW, p)
    assert plan.release == ["B", "C", "D", "A", "E"]
    assert priority(cands[1], NOW, p, NEXT) == p.cutoff_weight
    assert priority(_c("G", 1, cutoff=NEXT), NOW, p, NEXT) == p.cutoff_weight
    # a cutoff after the next wave starts: waiting costs nothing there
    assert priority(_c("F", 1, cutoff=NEXT + timedelta(minutes=1)), NOW, p, NEXT) == 0


def test_capacity_is_per_dc_and_an_order_that_does_not_fit_lets_a_smaller_one_by():
    cands = [
        _c("BIG", 30, picks=4),
        _c("SMALL", 20, picks=2),
        Candidate("WEST", NOW - timedelta(minutes=25), {"DC-WEST": 9}),
        Candidate("SPLIT", NOW - timedelta(minutes=10), {"DC-EAST": 1, "DC-WEST": 1}),
    ]
    cap = {"DC-EAST": Capacity(3, 10, NEXT)}  # DC-WEST: no capacity stated, unconstrained
    plan = sequence(cands, cap, NOW)
    assert plan.release == ["WEST", "SMALL", "SPLIT"] and plan.wait == ["BIG"]
    assert plan.used == {"DC-EAST": 3}


def test_nothing_waits_for_ever():
    # overdue (ready max_wait_hours ago) goes before any risk
    cands = [_c("NEW", 1, risk_now=0.0, risk_later=0.9), _c("STALE", 9 * 60)]
    plan = sequence(cands, {"DC-EAST": Capacity(1, 5, NEXT)}, NOW, Policy(max_wait_hours=8))
    assert plan.release == ["STALE"] and plan.overdue == ["STALE"]
    # an order larger than a whole wave goes alone when the wave is fresh
    plan = sequence([_c("HUGE", 5, picks=12), _c("X", 1)], {"DC-EAST": Capacity(5, 5, NEXT)}, NOW)
    assert plan.release == ["HUGE"] and plan.wait == ["X"]
    plan = sequence([_c("HUGE", 5, picks=12)], {"DC-EAST": Capacity(4, 5, NEXT)}, NOW)
    assert plan.wait == ["HUGE"]


def test_the_capacity_the_wms_states_and_none_stated():
    answer = {
        "dcs": {
            "DC-EAST": {"per_wave": 6, "remaining": 2, "next_wave_at": NEXT.isoformat()},
            "DC-WEST": {"per_wave": None, "remaining": None, "next_wave_at": NEXT.isoformat()},
        }
    }
    assert ai_seq.capacity_from_wms(answer) == {"DC-EAST": Capacity(2, 6, NEXT)}
    assert ai_seq.capacity_from_wms({"dcs": {}}) == {}


def _ship(key, ready, promised, transit=1, extra=0, picks=1):
    p = delay.Planned("DC-EAST", "UPSN", "GND", "parcel", transit, 3, 1.0, False,
                      ready.date(), promised)  # fmt: skip
    return ai_seq._Ship(key, key, "DC-EAST", ready, picks, ready, p, extra, None, 0.0)


def test_the_simulator_judges_on_time_against_the_promise_with_capacity_carried_over():
    day = date(2026, 12, 7)  # a Monday
    at = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)  # 06:00 in New York: before the first wave
    # two picks per wave (5 waves); eight slack orders, then two tight ones (promised
    # Tuesday, one day in transit: they must leave on Monday's truck)
    ships = [_ship(f"S{i}", at + timedelta(minutes=i), date(2026, 12, 14)) for i in range(8)]
    ships += [_ship(f"T{i}", at + timedelta(minutes=10 + i), date(2026, 12, 8)) for i in range(2)]
    tz = {"DC-EAST": "America/New_York"}
    fifo = ai_seq.simulate(ships, day, {"DC-EAST": 10.0}, tz, policy=None, ratio=1.0)
    # first in, first out: the slack orders take Monday's 07/09/11/13 waves; the tight ones
    # the 15:00 wave, after the cutoff: they ship Tuesday, arrive Wednesday — late
    assert fifo == {**{f"S{i}": True for i in range(8)}, "T0": False, "T1": False}

    def risk(waiting, when):  # the tight ones late when picked from 15:00 in New York
        late = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
        return [0.9 if s.key.startswith("T") and when >= late else 0.1 for s in waiting]

    seq = ai_seq.simulate(ships, day, {"DC-EAST": 10.0}, tz, policy=Policy(), risk=risk, ratio=1.0)
    # ranked: in the 13:00 wave waiting would cost the tight ones their promise: they go;
    # S6 and S7 wait for the 15:00 wave and still arrive by their promise
    assert seq == dict.fromkeys(fifo, True)
    # capacity carried over: at half the capacity the backlog spills into Tuesday
    half = ai_seq.simulate(ships, day, {"DC-EAST": 5.0}, tz, policy=None, ratio=1.0)
    assert half["T0"] is False and all(half[f"S{i}"] for i in range(8))


def test_a_deadline_is_the_cutoff_on_the_last_day_the_carrier_still_makes_the_promise():
    from zoneinfo import ZoneInfo

    from orderflow.domain.sequencing import deadline

    ny = ZoneInfo("America/New_York")
    cut = datetime(2026, 12, 9, 15, 0).time()
    # promised Wednesday, one day in transit: leave Tuesday by the cutoff
    assert deadline(date(2026, 12, 9), 1, cut, ny) == datetime(2026, 12, 8, 15, 0, tzinfo=ny)
    # promised Monday, two days in transit: leave the Thursday before (the weekend skipped)
    assert deadline(date(2026, 12, 14), 2, cut, ny) == datetime(2026, 12, 10, 15, 0, tzinfo=ny)


def test_earliest_deadline_first_and_a_lost_order_does_not_take_a_savable_ones_slot():
    today = NOW + timedelta(hours=1)  # today's truck: it goes in this wave or it is late
    cands = [
        _c("SLACK", 60, deadline=NOW + timedelta(days=3)),  # oldest, days of slack
        _c("LOST", 50, deadline=NOW - timedelta(hours=1)),  # late whatever we do
        _c("TOMORROW", 40, deadline=NOW + timedelta(days=1)),
        _c("TODAY", 5, deadline=today),
    ]
    plan = sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW, Policy())
    assert plan.release == ["TODAY", "TOMORROW"] and plan.wait == ["SLACK", "LOST"]
    # first in, first out would have sent the slack and the lost one
    assert sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW).release == ["SLACK", "LOST"]
    # with room, the lost one still goes (after every savable one)
    plan = sequence(cands, {"DC-EAST": Capacity(4, 5, NEXT)}, NOW, Policy())
    assert plan.release == ["TODAY", "TOMORROW", "SLACK", "LOST"]


def test_same_deadline_the_risk_that_waiting_adds_per_pick_decides():
    due = NOW + timedelta(days=1)
    cands = [
        _c("BIG", 30, picks=2, deadline=due, risk_now=0.1, risk_later=0.5),
        _c("SMALL", 20, picks=1, deadline=due, risk_now=0.1, risk_later=0.4),
        _c("CALM", 10, picks=1, deadline=due, risk_now=0.1, risk_later=0.1),
    ]
    plan = sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW, Policy())
    # SMALL: 0.3 per pick, BIG: 0.2 per pick — two small dates where one big one would fit
    assert plan.release == ["SMALL", "CALM"] and plan.wait == ["BIG"]


def test_an_overdue_order_waits_only_for_the_orders_due_in_this_wave():
    cands = [
        _c("STALE", 9 * 60, deadline=NOW - timedelta(days=1)),  # lost, ready 9 hours
        _c("DUE", 1, deadline=NOW + timedelta(hours=1)),  # due before the next wave
        _c("LATER", 2, deadline=NOW + timedelta(days=2)),
    ]
    plan = sequence(cands, {"DC-EAST": Capacity(2, 5, NEXT)}, NOW, Policy(max_wait_hours=8))
    assert plan.release == ["DUE", "STALE"] and plan.wait == ["LATER"]
    assert plan.overdue == ["STALE"]


def test_the_simulator_reports_who_was_held_and_who_shipped_in_time():
    day = date(2026, 12, 7)  # a Monday
    at = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)  # before the first wave in New York
    # one pick per wave; five tight orders promised Tuesday (one day in transit): only the
    # waves before the 15:00 cutoff (four) make Monday's truck; one of them the carrier
    # delivers a day late anyway
    ships = [_ship(f"T{i}", at + timedelta(minutes=i), date(2026, 12, 8), extra=int(i == 0))
             for i in range(5)]  # fmt: skip
    tz = {"DC-EAST": "America/New_York"}
    held: set[str] = set()
    shipped: dict[str, bool] = {}
    got = ai_seq.simulate(ships, day, {"DC-EAST": 5.0}, tz, policy=None, ratio=1.0,
                          held=held, shipped=shipped)  # fmt: skip
    assert shipped == {"T0": True, "T1": True, "T2": True, "T3": True, "T4": False}
    assert got == {**shipped, "T0": False}  # shipped in time, delivered late by the carrier
    assert held == {"T1", "T2", "T3", "T4"}  # each waited at least one wave
