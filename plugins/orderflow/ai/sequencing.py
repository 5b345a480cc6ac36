"""Capacity-aware release sequencing (#17, model 5): when the WMS's pick wave cannot take
every READY order, the release stage releases the ones whose wait would cost most first.

The sequencing itself is the pure ``orderflow.domain.sequencing.sequence``; this module gives
it its inputs and records its outputs:

- each order's **deadline** (:func:`deadline_of`): from its planned shipments' promised
  date, service transit time and the DC's carrier cutoff, the last moment its release still
  makes the promise — the orders that can still make their date go earliest deadline first,
  the ones already lost after every savable one;
- the **learned part** is the delay-risk model (``orderflow.ai.delay``, model 3) — not a
  second model: each candidate is scored twice with the active ``delay_risk`` version, with
  the features of releasing it now and of releasing it when the next wave starts (the hours
  to its DC's cutoff shrink or turn negative, its wait grows); the difference is the
  service-level risk that waiting adds, which ranks orders of the same deadline (and the
  ones whose deadline is unknown);
- tier (customer master data), margin (its lines' price less the items' unit cost) and the
  carrier cutoff (the DC's cutoff time on the shipment's ship date) are data the store holds;
- the weights and the anti-starvation bound are the ``ai`` rules' ``sequencing`` policy; the
  switch is ``models.release_sequence.enabled``.

Governance: the model never releases, holds or approves anything. Every order the stage
would release goes out — now, or in a later run when the WMS has room (it stays READY and
the next processing run claims it again; its deadline, or ``max_wait_hours`` for one that has
none left, bounds the wait). Each ranking is recorded as an AI decision (action
``recommend``: label ``now`` or ``wait``, the score the order's P(late) if it waits, evidence
its priority, deadline and terms). Switched off, or with no capacity stated by the WMS, the
release stage releases everything at once as it always did (the WMS then works its waves
first in, first out).

:func:`simulate` is the evaluation's replay (``orderflow ai evaluate``: ``ontime_gain_pts``):
a constrained stretch of generated days replayed through the same :func:`sequence`, once
first in first out and once sequenced, with capacity carried wave to wave; :func:`evaluate`
judges the orders competing for the constrained capacity: shipped in time to make their
promised date (and, beside it, delivered by it).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from orderflow.domain import sequencing as sq
from orderflow.domain.planning import add_business_days

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

MODEL_NAME = "release_sequence"
NOW, WAIT = "now", "wait"


def policy_of(book: RuleBook) -> sq.Policy:
    p = book.ai.sequencing
    return sq.Policy(
        risk_weight=p.risk_weight,
        cutoff_weight=p.cutoff_weight,
        tier_weights=dict(p.tier_weights),
        margin_weight=p.margin_weight,
        margin_scale=float(p.margin_scale),
        max_wait_hours=p.max_wait_hours,
    )


def capacity_from_wms(answer: dict | None) -> dict[str, sq.Capacity]:
    """The WMS's ``GET /capacity`` answer as the domain's capacities (DCs without a stated
    capacity are left out: unconstrained)."""
    out: dict[str, sq.Capacity] = {}
    for dc, c in ((answer or {}).get("dcs") or {}).items():
        if c.get("per_wave") is None:
            continue
        nxt = c.get("next_wave_at")
        out[dc] = sq.Capacity(
            remaining=int(c["remaining"]),
            per_wave=int(c["per_wave"]),
            next_wave_at=datetime.fromisoformat(nxt) if nxt else None,
        )
    return out


# ---------------------------------------------------------------------------- the flow


def plan_release(
    conn: psycopg.Connection,
    orders: list[Any],
    picks: dict[str, dict[str, int]],
    capacity: dict[str, sq.Capacity] | None,
    book: RuleBook,
) -> sq.Plan | None:
    """The release stage's question, in its transaction: which of ``orders`` (READY, loaded)
    go now. None — release everything, as without this model — when the ``ai`` rules switch
    it off, when the WMS states no capacity, or when every order fits."""
    from orderflow.ai import governance

    if not capacity or not orders or not governance.enabled(book, MODEL_NAME):
        return None
    need: dict[str, int] = defaultdict(int)
    for o in orders:
        for dc, n in picks.get(o.order_id, {}).items():
            need[dc] += n
    if all(need[dc] <= c.remaining for dc, c in capacity.items()):
        return None  # demand within capacity: nothing to sequence
    return _plan(conn, orders, picks, capacity, book)


def _plan(conn, orders, picks, capacity, book) -> sq.Plan:
    from orderflow.ai import delay, governance
    from orderflow.store import ai as repo

    ids = [o.order_id for o in orders]
    facts = {r[0]: r for r in repo.sequencing_rows(conn, ids)}
    risk_now: dict[str, float] = {}
    risk_later: dict[str, float] = {}
    feats: dict[str, dict] = {}
    version = None
    cutoffs: dict[str, datetime] = {}
    deadlines: dict[str, datetime] = {}
    now = None
    try:
        with conn.transaction():
            planned, stats, now = delay._inputs(conn, ids, book)
            for oid, (_rcv, _rv, ships) in planned.items():
                cuts, dues = [], []
                for s in ships:
                    tz, cut = stats.cutoffs.get(s.dc_id, ("UTC", delay.DEFAULT_CUTOFF))
                    cuts.append(datetime.combine(s.ship_date, cut, ZoneInfo(tz)))
                    dues.append(deadline_of(s, cut, ZoneInfo(tz)))
                cutoffs[oid] = min(cuts)
                deadlines[oid] = min(dues)
            active = governance.active_model(conn, delay.MODEL_NAME)
            if active is not None and governance.enabled(book, delay.MODEL_NAME):
                version, model = active
                later_at = _next_wave(capacity, now)
                oids = sorted(planned)
                rows_now, rows_later = [], []
                for oid in oids:
                    received, _, ships = planned[oid]
                    rows_now.append(delay.features(ships, stats, now, received))
                    rows_later.append(delay.features(ships, stats, later_at, received))
                p_now = delay.late_probability(model, rows_now)
                p_later = delay.late_probability(model, rows_later)
                for oid, f, a, b in zip(oids, rows_now, p_now, p_later, strict=True):
                    risk_now[oid], risk_later[oid], feats[oid] = a, b, f
    except Exception as exc:  # the risk is advisory: rank on the rules' terms alone
        log.warning("model %s: risk skipped: %s", MODEL_NAME, type(exc).__name__)
        risk_now, risk_later, feats, version = {}, {}, {}, None
    if now is None:
        now = repo.db_now(conn)
    cands = []
    for o in orders:
        oid = o.order_id
        _oid, ready_at, tier, margin = facts.get(oid, (oid, o.received_at, None, None))
        cands.append(
            sq.Candidate(
                order_id=oid,
                ready_at=ready_at or o.received_at,
                picks=picks.get(oid, {}),
                cutoff=cutoffs.get(oid),
                tier=tier,
                margin=None if margin is None else float(margin),
                risk_now=risk_now.get(oid),
                risk_later=risk_later.get(oid),
                deadline=deadlines.get(oid),
            )
        )
    policy = policy_of(book)
    plan = sq.sequence(cands, capacity, now, policy)
    model_version = f"{delay.MODEL_NAME}@{version}" if version else "rules-only"
    outputs = []
    for c in cands:
        oid = c.order_id
        label = NOW if oid in plan.release else WAIT
        # The decision's features are numbers (stored and hashed as such: NaN for unknown);
        # the facts behind the ranking that are not go with the evidence.
        inputs = {
            **feats.get(oid, {}),
            "risk_now": _num(c.risk_now),
            "risk_later": _num(c.risk_later),
            "margin": _num(c.margin),
        }
        evidence = [
            {"priority": plan.priority.get(oid), "rank": plan.rank.get(oid),
             "of": len(cands), "overdue": oid in plan.overdue, "risk_model": model_version,
             "tier": c.tier, "cutoff": c.cutoff.isoformat() if c.cutoff else None,
             "deadline": c.deadline.isoformat() if c.deadline else None,
             "lost": sq.lost(c, now),
             "picks": {dc: float(q) for dc, q in c.picks.items()},
             "ready_at": c.ready_at.isoformat(),
             "capacity": {dc: [k.remaining, k.per_wave] for dc, k in sorted(capacity.items())}},
        ]  # fmt: skip
        outputs.append(
            governance.Output(MODEL_NAME, model_version, oid, label,
                              c.risk_later if c.risk_later is not None else 0.0,
                              inputs, evidence, "recommend")
        )  # fmt: skip
    governance.record(conn, outputs, book)
    log.info("model %s: %d candidates, %d released now, %d wait (capacity %s)",
             MODEL_NAME, len(cands), len(plan.release), len(plan.wait),
             {dc: c.remaining for dc, c in capacity.items()})  # fmt: skip
    return plan


def deadline_of(s: Any, cutoff: time, tz: ZoneInfo) -> datetime:
    """A planned shipment's (``delay.Planned``) deadline: the DC's ``cutoff`` on the last
    business day it can leave and still arrive by its promised date in its service's transit
    time (a day more beyond zone 5, as the delay model counts it)."""
    return sq.deadline(s.promised_date, s.transit_days + (s.zone > 5), cutoff, tz)


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _next_wave(capacity: dict[str, sq.Capacity], now: datetime) -> datetime:
    waves = [c.next_wave_at for c in capacity.values() if c.next_wave_at and c.next_wave_at > now]
    return min(waves) if waves else now + timedelta(hours=2)


# ---------------------------------------------------------------------------- evaluation

#: the simulated DCs' pick waves (local start times) and carrier cutoff: a wave that starts
#: before the cutoff ships today, the evening wave ships on the next business day
WAVES = (time(7), time(9), time(11), time(13), time(15))
WAVE_HOURS = 2
SIM_CUTOFF = time(15, 0)
#: the constrained day's capacity, as a share of the DC's ordinary daily picks; the day after
#: has AFTER_RATIO, later days DRAIN_RATIO (the backlog drains)
CONSTRAINED_RATIO = 0.6
CONSTRAINED_DAYS = 2
AFTER_RATIO = 1.1
DRAIN_RATIO = 1.6


@dataclass
class _Ship:
    key: str
    order_id: str
    dc_id: str
    ready_at: datetime
    picks: int
    received_at: datetime
    planned: Any  # delay.Planned
    extra: int  # business days the carrier adds (lane, weather, a missed truck): as generated
    tier: str | None
    margin: float


def _next_bday(d: date) -> date:
    return add_business_days(d, 1)


def sim_shipments(hist: Any, data: Any) -> list[_Ship]:
    """The generated shipments as the simulator's units, with what the store would know of
    each: picks (lines; a split order's lines shared between its DCs), tier, margin."""
    from orderflow.ai import delay

    w = hist.world
    tiers = {c["customer_id"]: c.get("tier") for c in w.customers}
    cost = {it["item_id"]: float(it.get("unit_cost") or 0) for it in w.items}
    orders = {o["order_id"]: o for o in hist.orders}
    by_order: dict[str, list[Any]] = defaultdict(list)
    for s in data.rows:
        by_order[s.order_id].append(s)
    out = []
    for oid, ships in by_order.items():
        row = orders[oid]
        lines = row["lines"]
        margin = 0.0
        for ln in lines:
            price = ln.get("unit_price")
            if price is not None and ln.get("item_id") in cost:
                margin += (float(price) - cost[ln["item_id"]]) * float(ln["quantity"])
        n = len(lines)
        for i, s in enumerate(sorted(ships, key=lambda s: s.dc_id)):
            picks = n if len(ships) == 1 else max(1, n // 2 + (i == 0) * (n % 2))
            transit = s.transit_days + (s.zone > 5)
            shipped = s.shipped_on
            extra = max(delay.business_days(shipped, s.delivered_on) - transit, 0)
            out.append(
                _Ship(
                    key=f"{oid}:{s.dc_id}",
                    order_id=oid,
                    dc_id=s.dc_id,
                    ready_at=s.planned_at,
                    picks=picks,
                    received_at=s.received_at,
                    planned=delay.Planned(
                        s.dc_id,
                        s.carrier_id,
                        s.service_code,
                        s.mode,
                        s.transit_days,
                        s.zone,
                        s.weight_kg,
                        s.hazmat,
                        s.ship_date,
                        s.promised_date,
                    ),
                    extra=extra,
                    tier=tiers.get(row["customer_id"]),
                    margin=margin / len(ships),
                )
            )
    return out


def _waves(dc_tz: str, day: date) -> list[tuple[datetime, datetime, date]]:
    """(start, end, the day its picks ship) of each wave of a business day."""
    tz = ZoneInfo(dc_tz)
    out = []
    for t in WAVES:
        start = datetime.combine(day, t, tz)
        ships = day if t < SIM_CUTOFF else _next_bday(day)
        out.append((start, start + timedelta(hours=WAVE_HOURS), ships))
    return out


def simulate(
    ships: list[_Ship],
    day: date,
    daily_picks: dict[str, float],
    dc_tz: dict[str, str],
    *,
    policy: sq.Policy | None,
    risk: Any = None,
    ratio: float = CONSTRAINED_RATIO,
    held: set[str] | None = None,
    shipped: dict[str, bool] | None = None,
    days: int = 1,
    after: tuple[float, float] = (AFTER_RATIO, DRAIN_RATIO),
) -> dict[str, bool]:
    """Replay ``days`` business days from ``day`` (capacity ``ratio`` × each DC's ordinary
    daily picks), the day after (``after[0]``, ``AFTER_RATIO``), then drain the backlog
    (``after[1]``): per order ready on those days, whether every shipment of it was delivered
    by its promised date. ``policy`` None: first in, first out; ``risk(ship_list, at) ->
    list[P(late)]`` the learned score (None: no risk term). The runs differ only in
    ``policy``/``risk``: same arrivals, same waves, same capacity, same carrier behaviour.
    ``held`` collects the orders held back at least one wave; ``shipped`` whether each order
    left in time to make its promise (its deadline), the carrier's own delays aside."""
    tight = [day]
    for _ in range(days - 1):
        tight.append(_next_bday(tight[-1]))
    day2 = _next_bday(tight[-1])
    mine = [s for s in ships if _local_day(s, dc_tz) in (*tight, day2)]
    delivered_ok: dict[str, bool] = {}
    for dc, tz in dc_tz.items():
        todo = sorted((s for s in mine if s.dc_id == dc), key=lambda s: (s.ready_at, s.key))
        if not todo:
            continue
        per_day = daily_picks.get(dc, 0.0)
        waiting: list[_Ship] = []
        i = 0
        d = day
        n_days = 0
        while (i < len(todo) or waiting) and n_days < 30:
            r = ratio if d in tight else after[0] if d == day2 else after[1]
            per_wave = max(1, math.ceil(r * per_day / len(WAVES)))
            waves = _waves(tz, d)
            for k, (start, _end, ship_day) in enumerate(waves):
                while i < len(todo) and todo[i].ready_at <= start:
                    waiting.append(todo[i])
                    i += 1
                if not waiting:
                    continue
                nxt = waves[k + 1][0] if k + 1 < len(waves) else datetime.combine(
                    _next_bday(d), WAVES[0], ZoneInfo(tz))  # fmt: skip
                cap = {dc: sq.Capacity(per_wave, per_wave, nxt)}
                r_now = r_later = [None] * len(waiting)
                if risk is not None:
                    r_now = risk(waiting, start)
                    r_later = risk(waiting, nxt)
                cands = [
                    sq.Candidate(s.key, s.ready_at, {dc: s.picks},
                                 cutoff=datetime.combine(s.planned.ship_date, SIM_CUTOFF,
                                                         ZoneInfo(tz)),
                                 tier=s.tier, margin=s.margin, risk_now=a, risk_later=b,
                                 deadline=deadline_of(s.planned, SIM_CUTOFF, ZoneInfo(tz)))
                    for s, a, b in zip(waiting, r_now, r_later, strict=True)
                ]  # fmt: skip
                plan = sq.sequence(cands, cap, start, policy)
                go = set(plan.release)
                for s in waiting:
                    if s.key in go:
                        due = add_business_days(ship_day, s.planned.transit_days
                                           + (s.planned.zone > 5) + s.extra)  # fmt: skip
                        ok = due <= s.planned.promised_date
                        delivered_ok[s.order_id] = delivered_ok.get(s.order_id, True) and ok
                        if shipped is not None:
                            left = add_business_days(ship_day, s.planned.transit_days
                                                + (s.planned.zone > 5))  # fmt: skip
                            ok = left <= s.planned.promised_date
                            shipped[s.order_id] = shipped.get(s.order_id, True) and ok
                waiting = [s for s in waiting if s.key not in go]
                if held is not None:
                    held.update(s.order_id for s in waiting)
            d = _next_bday(d)
            n_days += 1
        for s in waiting:  # never released in the window (none expected): late
            delivered_ok[s.order_id] = False
            if shipped is not None:
                shipped[s.order_id] = False
    return delivered_ok


def _local_day(s: _Ship, dc_tz: dict[str, str]) -> date:
    key = (s.ready_at, dc_tz[s.dc_id])
    day = _DAYS.get(key)
    if day is None:
        day = _DAYS[key] = s.ready_at.astimezone(ZoneInfo(dc_tz[s.dc_id])).date()
    return day


#: (ready at, time zone) → local day: the simulator asks it of every shipment on every replay
_DAYS: dict[tuple[datetime, str], date] = {}


def evaluate(
    hist: Any,
    data: Any,
    model: Any,
    cut: datetime,
    book: RuleBook,
    *,
    ratio: float = CONSTRAINED_RATIO,
    days: int = CONSTRAINED_DAYS,
    every: int = 1,
) -> dict[str, Any]:
    """``ontime_gain_pts``: of the orders competing for the constrained capacity (ready on a
    constrained day or the day after, and held back at least one wave by one of the runs
    compared — an order no run held back has the same fate in all of them), the share shipped
    in time to make their promised date (left the DC by their deadline: the carrier's transit
    then meets the promise), sequenced by the model and the ``ai`` rules' policy, less first
    in, first out, in points. Beside it: the same orders delivered by their promised date
    (the carrier's own delays, the same in every run, included:
    ``ontime_gain_pts_delivered``), every order of the days delivered on time (the figure
    before this definition: ``ontime_gain_pts_all_orders``), the rules alone (no model), and
    with capacity unconstrained (``ontime_unconstrained``: what no ordering can beat).

    Every ``every``-th business day of the evaluated period starts a constrained stretch of
    ``days`` business days on its own (capacity ``ratio`` × the DC's ordinary daily picks,
    then the day after and the drain); the shares are over all of them."""
    from orderflow.ai import delay
    from orderflow_sandbox.generator.delays import DC_TZ

    ships = sim_shipments(hist, data)
    stats = delay.HistoryStats(data.rows)
    cache: dict[datetime, Any] = {}

    def stats_at(t: datetime):
        if t not in cache:
            cache[t] = stats.at(t)
        return cache[t]

    scored: dict[tuple[str, datetime], float] = {}

    def risk(waiting: list[_Ship], at: datetime) -> list[float]:
        # a shipment still waiting is scored at the same wave starts run after run: once
        todo = [s for s in waiting if (s.key, at) not in scored]
        if todo:
            st = stats_at(at)
            rows = [delay.features([s.planned], st, at, s.received_at) for s in todo]
            for s, p in zip(todo, delay.late_probability(model, rows), strict=True):
                scored[(s.key, at)] = p
        return [scored[(s.key, at)] for s in waiting]

    train = [s for s in ships if s.ready_at < cut]
    daily: dict[str, float] = {}
    for dc in DC_TZ:
        seen = {_local_day(s, DC_TZ) for s in train if s.dc_id == dc}
        seen = {d for d in seen if d.weekday() < 5}
        daily[dc] = sum(s.picks for s in train if s.dc_id == dc) / max(len(seen), 1)
    eval_days = sorted({_local_day(s, DC_TZ) for s in ships if s.ready_at >= cut})
    eval_days = [d for d in eval_days if d.weekday() < 5][1 : -(2 + days) : every]
    policy = policy_of(book)
    runs = {
        "fifo": {"policy": None, "risk": None},
        "model": {"policy": policy, "risk": risk},
        "rules_only": {"policy": policy, "risk": None},
    }
    by_day: dict[date, list[_Ship]] = defaultdict(list)
    for s in ships:
        by_day[_local_day(s, DC_TZ)].append(s)
    totals, better, worse = _replay(by_day, eval_days, daily, DC_TZ, runs, ratio, days)
    share = {k: v[0] / v[1] if v[1] else None for k, v in totals.items()}
    out: dict[str, Any] = {
        "constrained_stretches": len(eval_days),
        "constrained_days_each": days,
        "capacity_ratio": ratio,
        "orders_competing": totals[("shipped", "fifo")][1],
        "orders_all": totals[("all_orders", "fifo")][1],
        "daily_picks": {k: round(v, 1) for k, v in daily.items()},
        "ontime_fifo": _r(share[("shipped", "fifo")]),
        "ontime_model": _r(share[("shipped", "model")]),
        "ontime_rules_only": _r(share[("shipped", "rules_only")]),
        "ontime_unconstrained": _r(share[("shipped", "unconstrained")]),
        "ontime_gain_pts": _pts(share[("shipped", "model")], share[("shipped", "fifo")]),
        "ontime_gain_pts_rules_only": _pts(
            share[("shipped", "rules_only")], share[("shipped", "fifo")]
        ),
        "ontime_gain_pts_delivered": _pts(
            share[("delivered", "model")], share[("delivered", "fifo")]
        ),
        "ontime_gain_pts_all_orders": _pts(
            share[("all_orders", "model")], share[("all_orders", "fifo")]
        ),
        "ontime_delivered_fifo": _r(share[("delivered", "fifo")]),
        "ontime_delivered_model": _r(share[("delivered", "model")]),
        "ontime_delivered_unconstrained": _r(share[("delivered", "unconstrained")]),
        "stretches_model_better": better,
        "stretches_model_worse": worse,
    }
    if days != 1:  # beside it: a single constrained day (most orders have a day of slack)
        one, _, _ = _replay(by_day, eval_days, daily, DC_TZ, runs, ratio, 1)
        sh = {k: v[0] / v[1] if v[1] else None for k, v in one.items()}
        out["ontime_gain_pts_one_day"] = _pts(sh[("shipped", "model")], sh[("shipped", "fifo")])
        out["ontime_fifo_one_day"] = _r(sh[("shipped", "fifo")])
        out["ontime_unconstrained_one_day"] = _r(sh[("shipped", "unconstrained")])
    return out


def _replay(by_day, eval_days, daily, dc_tz, runs, ratio, days):
    """Every stretch replayed with each run and unconstrained (``by_day``: the shipments by
    the local day they became ready): [on time, orders] per (kind, run) — kind
    ``shipped``/``delivered`` over the orders some run held back, ``all_orders`` delivered
    over every order of the stretch — and the stretches the model did better / worse on
    (shipped)."""
    kinds = ("shipped", "delivered", "all_orders")
    totals = {(k, r): [0, 0] for k in kinds for r in [*runs, "unconstrained"]}
    better = worse = 0
    for d in eval_days:
        ships, k = [], d
        for _ in range(days + 1):
            ships += by_day.get(k, [])
            k = _next_bday(k)
        held: set[str] = set()
        res: dict[str, tuple[dict[str, bool], dict[str, bool]]] = {}
        for name, kw in runs.items():
            shipped: dict[str, bool] = {}
            got = simulate(ships, d, daily, dc_tz, ratio=ratio, days=days, held=held,
                           shipped=shipped, **kw)  # fmt: skip
            res[name] = (shipped, got)
        shipped = {}
        got = simulate(ships, d, daily, dc_tz, ratio=1e6, days=days, shipped=shipped,
                       policy=None, after=(1e6, 1e6))  # fmt: skip
        res["unconstrained"] = (shipped, got)
        for name, (shipped, got) in res.items():
            for kind, vals, sel in (
                ("shipped", shipped, held),
                ("delivered", got, held),
                ("all_orders", got, got),
            ):
                t = totals[(kind, name)]
                t[0] += sum(vals[o] for o in sel)
                t[1] += len(sel)
        m = sum(res["model"][0][o] for o in held)
        f = sum(res["fifo"][0][o] for o in held)
        better += m > f
        worse += m < f
    return totals, better, worse


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _pts(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100 * (a - b), 2)
