"""Delay risk (#17, model 3): the probability that an order misses its promised date, asked
at planning — once the shipments, their carrier services, ship dates and promised dates are
known — from our own WMS and carrier history.

Features (:data:`FEATURES`, :func:`features`) are what the store knows at that moment, never
an outcome: the slack between the promise and the service's transit, the DC's backlog (its
open shipments against what it shipped a day lately), whether the order was planned after the
DC's cutoff, the lane's and the carrier service's late share over the shipments *delivered*
in the last :data:`LANE_DAYS` days, a split across DCs, hazmat, the weekday of the ship
date, weight, mode, zone, and how long the order waited since it arrived. The label is the
outcome, learnt later from the milestones: ``late`` when any shipment is delivered after
its promised date, else ``on_time``.

The flow (:func:`after_plan`, from ``processing.plan`` through ``inference``) scores each
planned order with the active version: at or above the ``ai`` rules' ``delay.flag_threshold``
the order's plan event carries an ``ai_flags`` note and the output is recorded as an AI
decision (action ``flag``: informational — it holds, approves or changes nothing); at or
above ``delay.notify_threshold``, when ``delay.notify_customer`` is on, the customer gets the
early ``order_delayed`` notice through the outbox (keyed per order and release version, so
a rerun never sends it twice; which channels get it is the fulfilment rules' notifications).
A model that fails is logged and skipped: the plan stands as the rules made it.

Evaluation and training examples come from generated history
(``orderflow_sandbox.generator.delays``): :func:`examples` walks its shipments in plan-time
order and sees only shipments delivered before each plan (:class:`HistoryStats`).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

MODEL_NAME = "delay_risk"
LATE, ON_TIME = "late", "on_time"
#: lane and carrier-service performance: shipments delivered in this many days before the plan
LANE_DAYS = 30
#: a DC's throughput: shipments that left it in this many calendar days (≈ 10 business days)
THROUGHPUT_DAYS, THROUGHPUT_BUSINESS_DAYS = 14, 10
#: smoothing of a late share towards the wider one (pseudo-shipments)
PRIOR_WEIGHT = 8.0
PRIOR_LATE = 0.1
DEFAULT_CUTOFF = time(15, 0)

FEATURES = (
    "slack_days",
    "promise_days",
    "dc_backlog",
    "dc_open",
    "after_cutoff",
    "hours_to_cutoff",
    "lane_late_rate",
    "lane_shipments",
    "service_late_rate",
    "n_shipments",
    "hazmat",
    "weekday",
    "ltl",
    "log_weight_kg",
    "zone",
    "days_waiting",
)


@dataclass(frozen=True)
class Planned:
    """One planned shipment of the order being scored (what planning just decided)."""

    dc_id: str
    carrier_id: str
    service_code: str
    mode: str
    transit_days: int
    zone: int
    weight_kg: float
    hazmat: bool
    ship_date: date
    promised_date: date


@dataclass
class Stats:
    """What the store knows about its DCs and lanes at the moment of the plan."""

    #: DC → shipments planned or in the WMS and not shipped yet (the order's own excluded)
    open: dict[str, int] = field(default_factory=dict)
    #: DC → shipments that left it in the last THROUGHPUT_DAYS
    shipped: dict[str, int] = field(default_factory=dict)
    #: (carrier, service, zone) / (carrier, service) → (delivered, delivered late) in LANE_DAYS
    lanes: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)
    services: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    #: DC → (timezone, cutoff local time)
    cutoffs: dict[str, tuple[str, time]] = field(default_factory=dict)


def business_days(start: date, end: date) -> int:
    """Weekdays after ``start`` up to and including ``end`` (negative when ``end`` is before)."""
    if end < start:
        return -business_days(end, start)
    n, d = 0, start
    while d < end:
        d += timedelta(days=1)
        n += d.weekday() < 5
    return n


def zone_number(zone: str | int | None) -> int:
    digits = "".join(c for c in str(zone or "") if c.isdigit())
    return int(digits) if digits else 4


def _share(n: int, late: int, prior: float) -> float:
    return (late + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)


def features(
    shipments: list[Planned], stats: Stats, at: datetime, received_at: datetime
) -> dict[str, float]:
    """The features of one order planned at ``at`` into ``shipments``."""
    nan = float("nan")
    f = dict.fromkeys(FEATURES, nan)
    if not shipments:
        return f
    slack, promise, backlog, opened, to_cutoff, lane, lane_n, svc = [], [], [], [], [], [], [], []
    for s in shipments:
        days = business_days(s.ship_date, s.promised_date)
        promise.append(days)
        slack.append(days - s.transit_days - (s.zone > 5))
        n_open = stats.open.get(s.dc_id, 0)
        per_day = stats.shipped.get(s.dc_id, 0) / THROUGHPUT_BUSINESS_DAYS
        opened.append(n_open)
        backlog.append(n_open / max(per_day, 1.0))
        tz, cutoff = stats.cutoffs.get(s.dc_id, ("UTC", DEFAULT_CUTOFF))
        leave = datetime.combine(s.ship_date, cutoff, ZoneInfo(tz))
        to_cutoff.append((leave - at).total_seconds() / 3600)
        sn, sl = stats.services.get((s.carrier_id, s.service_code), (0, 0))
        service_rate = _share(sn, sl, PRIOR_LATE)
        ln, ll = stats.lanes.get((s.carrier_id, s.service_code, s.zone), (0, 0))
        svc.append(service_rate)
        lane.append(_share(ln, ll, service_rate))
        lane_n.append(ln)
    f["slack_days"] = float(min(slack))
    f["promise_days"] = float(min(promise))
    f["dc_backlog"] = max(backlog)
    f["dc_open"] = float(max(opened))
    f["hours_to_cutoff"] = min(to_cutoff)
    f["after_cutoff"] = float(min(to_cutoff) < 0)
    f["lane_late_rate"] = max(lane)
    f["lane_shipments"] = float(min(lane_n))
    f["service_late_rate"] = max(svc)
    f["n_shipments"] = float(len(shipments))
    f["hazmat"] = float(any(s.hazmat for s in shipments))
    f["weekday"] = float(min(s.ship_date for s in shipments).weekday())
    f["ltl"] = float(any(s.mode == "ltl" for s in shipments))
    f["log_weight_kg"] = math.log1p(max(s.weight_kg for s in shipments))
    f["zone"] = float(max(s.zone for s in shipments))
    f["days_waiting"] = float(max(business_days(received_at.date(), at.date()), 0))
    return f


# ---------------------------------------------------------------------------- history


class HistoryStats:
    """:class:`Stats` at any moment of a generated history, from only what was known then:
    shipments planned before it, left before it, delivered before its day."""

    def __init__(self, rows: list[Any]):
        from orderflow_sandbox.generator.delays import CUTOFF, DC_TZ

        self.cutoffs = {dc: (tz, CUTOFF) for dc, tz in DC_TZ.items()}
        self.planned: dict[str, list[datetime]] = defaultdict(list)
        self.left: dict[str, list[datetime]] = defaultdict(list)
        lanes: dict[tuple, list[tuple[date, bool]]] = defaultdict(list)
        services: dict[tuple, list[tuple[date, bool]]] = defaultdict(list)
        for s in rows:
            self.planned[s.dc_id].append(s.planned_at)
            self.left[s.dc_id].append(s.shipped_at)
            lanes[(s.carrier_id, s.service_code, s.zone)].append((s.delivered_on, s.late))
            services[(s.carrier_id, s.service_code)].append((s.delivered_on, s.late))
        for xs in (*self.planned.values(), *self.left.values()):
            xs.sort()
        self.lanes = {k: _Cumulative(v) for k, v in lanes.items()}
        self.services = {k: _Cumulative(v) for k, v in services.items()}

    def at(self, t: datetime) -> Stats:
        """The stats at ``t`` (the order planned at ``t`` not among the open shipments)."""
        day = t.date()
        since = t - timedelta(days=THROUGHPUT_DAYS)
        lo, hi = day - timedelta(days=LANE_DAYS), day
        return Stats(
            open={
                dc: max(bisect_left(p, t) - bisect_left(self.left[dc], t), 0)
                for dc, p in self.planned.items()
            },
            shipped={
                dc: bisect_left(xs, t) - bisect_left(xs, since) for dc, xs in self.left.items()
            },
            lanes={k: c.window(lo, hi) for k, c in self.lanes.items()},
            services={k: c.window(lo, hi) for k, c in self.services.items()},
            cutoffs=self.cutoffs,
        )


class _Cumulative:
    """Deliveries of one lane by day, with a running count of the late ones."""

    def __init__(self, events: list[tuple[date, bool]]):
        events.sort()
        self.days = [d for d, _ in events]
        self.late = [0]
        for _, late in events:
            self.late.append(self.late[-1] + late)

    def window(self, lo: date, hi: date) -> tuple[int, int]:
        """(delivered, late) with lo <= delivered day < hi."""
        a, b = bisect_left(self.days, lo), bisect_left(self.days, hi)
        return b - a, self.late[b] - self.late[a]


def examples(hist: Any) -> list[Any]:
    """One labelled example per order of a generated history, in plan-time order."""
    from orderflow.ai.history import Example
    from orderflow_sandbox.generator.delays import generate_shipments

    data = generate_shipments(hist)
    stats = HistoryStats(data.rows)
    by_order: dict[str, list[Any]] = defaultdict(list)
    for s in data.rows:
        by_order[s.order_id].append(s)
    out = []
    for oid, ships in sorted(by_order.items(), key=lambda kv: min(s.planned_at for s in kv[1])):
        at = min(s.planned_at for s in ships)
        planned = [
            Planned(s.dc_id, s.carrier_id, s.service_code, s.mode, s.transit_days, s.zone,
                    s.weight_kg, s.hazmat, s.ship_date, s.promised_date)
            for s in ships
        ]  # fmt: skip
        f = features(planned, stats.at(at), at, ships[0].received_at)
        label = LATE if any(s.late for s in ships) else ON_TIME
        out.append(Example(MODEL_NAME, oid, at, f, label))
    return out


# ---------------------------------------------------------------------------- the model


def fit(rows, labels, *, seed: int = 0, **_: Any):
    """Gradient-boosted trees on the features, without class weights: the output is used as
    a probability (its Brier score is measured), so it is not re-weighted away from the base
    rate."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from orderflow.ai.models import Trained

    x = np.array([[r.get(c, math.nan) for c in FEATURES] for r in rows], dtype=float)
    est = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=30,
        l2_regularization=1.0,
        random_state=seed,
    )
    est.fit(x, np.array(labels))
    with np.errstate(all="ignore"):
        present = (~np.isnan(x)).mean(axis=0) >= 0.5
        med = [float(np.nanmedian(x[:, j])) if present[j] else math.nan for j in range(x.shape[1])]
    return Trained(est, FEATURES, tuple(str(c) for c in est.classes_), tuple(med))


def late_probability(model, rows) -> list[float]:
    if not rows:
        return []
    if LATE not in model.classes:
        return [0.0] * len(rows)
    k = model.classes.index(LATE)
    return [float(p[k]) for p in model.proba(rows)]


def score(model, rows, labels) -> dict[str, Any]:
    """ROC AUC and Brier score of P(late) on held-out orders."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    p = late_probability(model, rows)
    y = [lab == LATE for lab in labels]
    both = 0 < sum(y) < len(y)
    return {
        "auc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "brier": round(float(brier_score_loss(y, p)), 4) if y else None,
        "late_share": round(sum(y) / len(y), 4) if y else None,
        "n_eval": len(y),
    }


# ---------------------------------------------------------------------------- the flow


def after_plan(conn: psycopg.Connection, order_ids: list[str], book: RuleBook) -> dict[str, dict]:
    """Score the orders just planned (their shipments saved, in the stage's transaction);
    returns per flagged order the note for its plan event. Advisory: a failure is logged and
    the stage goes on as the rules decided."""
    from orderflow.ai import governance

    if not order_ids or not governance.enabled(book, MODEL_NAME):
        return {}
    try:
        with conn.transaction():
            return _score(conn, order_ids, book)
    except Exception as exc:
        log.warning("model %s skipped: %s", MODEL_NAME, type(exc).__name__)
        return {}


def _inputs(conn, order_ids: list[str], book: RuleBook):
    """(order → (received, release version, planned shipments), :class:`Stats`, now); a DC
    without a cutoff in its master data takes the ``ai`` rules' ``delay.default_cutoff``."""
    from orderflow.store import ai as repo

    raw = repo.delay_rows(conn, order_ids, lane_days=LANE_DAYS, throughput_days=THROUGHPUT_DAYS)
    planned: dict[str, tuple[datetime, int, list[Planned]]] = {}
    for (oid, received, rv, dc, carrier, service, mode, transit, zone, weight, hazmat,
         ship, promised) in raw["planned"]:  # fmt: skip
        entry = planned.setdefault(oid, (received, rv, []))
        entry[2].append(
            Planned(dc, carrier, service, mode, int(transit), zone_number(zone), float(weight),
                    bool(hazmat), ship, promised)
        )  # fmt: skip
    return planned, stats_of(raw, book), raw["now"]


def stats_of(raw: dict[str, Any], book: RuleBook) -> Stats:
    """:class:`Stats` from the store's rows (``orderflow.store.ai.delay_stats``); a DC without
    a cutoff in its master data takes the ``ai`` rules' ``delay.default_cutoff``."""
    default = time.fromisoformat(book.ai.delay.default_cutoff)
    lanes: dict[tuple[str, str, int], tuple[int, int]] = {}
    services: dict[tuple[str, str], tuple[int, int]] = {}
    for carrier, service, zone, n, late in raw["lanes"]:
        key = (carrier, service, zone_number(zone))
        a, b = lanes.get(key, (0, 0))
        lanes[key] = (a + n, b + late)
        a, b = services.get((carrier, service), (0, 0))
        services[(carrier, service)] = (a + n, b + late)
    return Stats(
        open=raw["open"],
        shipped=raw["shipped"],
        lanes=lanes,
        services=services,
        cutoffs={dc: (tz or "UTC", cutoff or default) for dc, tz, cutoff in raw["cutoffs"]},
    )


def _score(conn, order_ids: list[str], book: RuleBook) -> dict[str, dict]:
    import numpy as np

    from orderflow import notifications
    from orderflow.ai import governance

    active = governance.active_model(conn, MODEL_NAME)
    if active is None:
        return {}
    version, model = active
    planned, stats, now = _inputs(conn, order_ids, book)
    if not planned:
        return {}
    policy = book.ai.delay
    oids = sorted(planned)
    rows = []
    for oid in oids:
        received, _, ships = planned[oid]
        rows.append(features(ships, stats, now, received))
    probs = late_probability(model, rows)
    flags: dict[str, dict] = {}
    notify: list[tuple[str, float]] = []
    k = model.classes.index(LATE) if LATE in model.classes else 0
    for oid, f, p in zip(oids, rows, probs, strict=True):
        if p < policy.flag_threshold:
            continue
        x = np.array([f.get(c, math.nan) for c in model.columns], dtype=float)
        evidence = model._evidence(x, k, p, f)
        [decision_id] = governance.record(
            conn,
            [governance.Output(MODEL_NAME, version, oid, LATE, p, f, evidence, "flag")],
            book,
        ) or [None]
        note = {"kind": "delay_risk", "score": round(p, 4), "evidence": evidence,
                "model": f"{MODEL_NAME}@{version}", "action": "flag",
                "decision_id": decision_id,
                "promised_date": str(min(s.promised_date for s in planned[oid][2]))}  # fmt: skip
        if policy.notify_customer and p >= policy.notify_threshold:
            notify.append((oid, p))
            note["customer_notified"] = True
        flags[oid] = {"ai_flags": [note]}
    if notify:
        contacts = notifications.order_contacts(conn, [oid for oid, _ in notify])
        rules = book.fulfilment.notifications
        for oid, _p in notify:
            _, release_version, ships = planned[oid]
            if oid not in contacts:
                continue
            notifications.queue(
                conn,
                rules,
                event="order_delayed",
                ref=f"{oid}:r{release_version}",
                order=contacts[oid],
                context={
                    "promised_date": str(min(s.promised_date for s in ships)),
                    "ship_date": str(min(s.ship_date for s in ships)),
                },
            )
    log.info("model %s: %d orders scored, %d flagged, %d customers told",
             MODEL_NAME, len(oids), len(flags), len(notify))  # fmt: skip
    return flags


# ---------------------------------------------------------------------------- the order check


@dataclass(frozen=True)
class Risk:
    """The delay risk of a plan not saved yet (the order check's answer)."""

    version: str
    probability: float
    flagged: bool
    customer_notice: bool
    threshold: float
    features: dict[str, float]


def planned_of(shipments: list[Any], zone: str | None) -> list[Planned]:
    """The planning domain's shipments (``domain.planning.ShipmentPlan``) as
    :func:`_inputs` reads them back once the stage has saved them: the weight at the store's
    scale (``numeric(12, 3)``, rounded half away from zero as PostgreSQL does), the ship-to's
    zone as a number, only shipments with a promised date."""
    from decimal import ROUND_HALF_UP, Decimal

    milli = Decimal("0.001")
    return [
        Planned(s.dc_id, s.carrier_id, s.service_code, s.mode, int(s.transit_days),
                zone_number(zone), float(Decimal(s.weight_kg).quantize(milli, ROUND_HALF_UP)),
                bool(s.hazmat), s.ship_date, s.promised_date)
        for s in shipments
        if s.promised_date is not None
    ]  # fmt: skip


def risk_of_plan(
    conn: psycopg.Connection,
    order_id: str,
    shipments: list[Any],
    zone: str | None,
    received_at: datetime,
    book: RuleBook,
) -> Risk | None:
    """What the planning stage would score for ``shipments`` if it planned ``order_id`` now:
    the same kill switch, active version, store statistics (:func:`stats_of` over
    ``store.ai.delay_stats``, the order's own shipments left out as the stage leaves its
    partition's out), feature builder (:func:`features` at the database's ``now``) and
    thresholds. None when the model is switched off, has no active version, or fails (logged,
    advisory as in the stage). Reads only; records nothing; no evidence (the occlusion costs
    a second prediction per answer: the stage records it with its flag)."""
    from orderflow.ai import governance
    from orderflow.store import ai as repo

    if not governance.enabled(book, MODEL_NAME):
        return None
    planned = planned_of(shipments, zone)
    if not planned:
        return None
    from contextlib import nullcontext

    from psycopg.pq import TransactionStatus

    # inside a transaction a failed read must not abort the caller's: a savepoint; on an
    # autocommit connection each statement stands alone (no BEGIN / COMMIT round trips)
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    try:
        with nullcontext() if idle and conn.autocommit else conn.transaction():
            active = governance.active_model(conn, MODEL_NAME)
            if active is None:
                return None
            version, model = active
            raw = repo.delay_stats(
                conn, [order_id], lane_days=LANE_DAYS, throughput_days=THROUGHPUT_DAYS
            )
        from orderflow.ai.models import one_thread

        f = features(planned, stats_of(raw, book), raw["now"], received_at)
        policy = book.ai.delay
        with one_thread():
            [p] = late_probability(model, [f])
        flagged = p >= policy.flag_threshold
    except Exception as exc:
        log.warning("model %s skipped: %s", MODEL_NAME, type(exc).__name__)
        return None
    return Risk(
        version=version,
        probability=p,
        flagged=flagged,
        customer_notice=flagged and policy.notify_customer and p >= policy.notify_threshold,
        threshold=policy.flag_threshold,
        features=f,
    )
