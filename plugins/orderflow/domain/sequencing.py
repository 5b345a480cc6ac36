"""Capacity-aware release sequencing (#17, model 5): which READY orders go to the floor in the
WMS's current pick wave when they do not all fit, and which wait for the next one.

The WMS states, per DC, the picks (order lines) left in its current wave and the picks a wave
holds. :func:`sequence` fills what is left, best first, and says what waits. "Best" is
either first in, first out (no policy: the order the orders became ready in — exactly what
the WMS does with everything released at once), or by a :class:`Policy`:

- its **deadline** first: the last moment a release still makes the promised date if the
  carrier keeps its transit time (the DC's carrier cutoff on the last ship day that does;
  ``Candidate.deadline``). The orders that can still make their date go earliest deadline
  first — an order whose date is days away waits for one that must leave on today's truck;
  an order whose deadline has passed (it is late whatever we do) goes after every order that
  can still be saved: capacity is not spent on a lost cause while a savable order waits;
- among orders with the same deadline (or none known), the **priority**: the
  **service-level risk that waiting adds** — a model's probability that the order misses its
  promised date if it waits a wave, less the probability if it goes now (the learned part,
  ``risk_now`` / ``risk_later``; absent, the term is 0) — its **carrier cutoff** (its DC's cutoff on its ship date comes before
  the next wave starts), the customer's **tier** and the order's **margin** (small weights:
  they break ties between orders at the same risk, they do not outweigh a miss), per pick
  (the capacity is picks: two one-line orders make two dates where one two-line order makes
  one).

Nothing waits for ever: an order that can still make its date goes before its deadline
(earliest deadline first) unless capacity cannot take every order due then; any other
order (deadline passed or unknown) ready for ``max_wait_hours`` or longer goes before any
other but the orders that make their date only if they go in this wave (first in, first out
among them); an order larger than a whole wave goes when the wave
is fresh (the WMS takes it alone). A DC the WMS states no capacity for is unconstrained: its
orders go as they always did. Pure: no clock, no database, no model — the caller gives
``now``, the deadlines and the scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

from orderflow.domain.planning import add_business_days


@dataclass(frozen=True, slots=True)
class Capacity:
    """One DC's current wave, as the WMS states it."""

    #: picks (order lines) still free in the current wave
    remaining: int
    #: picks a whole wave holds
    per_wave: int
    #: when the next wave starts (an order that waits is picked then at the earliest)
    next_wave_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A READY order that could be released now."""

    order_id: str
    #: when it became ready to release (first in, first out by this, then by id)
    ready_at: datetime
    #: DC → picks (order lines) its release there takes
    picks: Mapping[str, int]
    #: the DCs' carrier cutoff on its ship date (the earliest of its shipments); None: unknown
    cutoff: datetime | None = None
    tier: str | None = None
    #: gross margin of the order (currency); None: unknown
    margin: float | None = None
    #: P(misses its promised date) if released now / if it waits a wave (a model's, or None)
    risk_now: float | None = None
    risk_later: float | None = None
    #: the last moment its release still makes the promised date if the carrier keeps its
    #: transit time (:func:`deadline`; the earliest of its shipments'); None: unknown
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """How the candidates are ranked when capacity is short (the ``ai`` rules' ``sequencing``)."""

    risk_weight: float = 1.0
    cutoff_weight: float = 0.05
    tier_weights: Mapping[str, float] = field(default_factory=dict)
    margin_weight: float = 0.02
    #: a margin of this much or more counts fully
    margin_scale: float = 1000.0
    max_wait_hours: float = 8.0


@dataclass
class Plan:
    """What :func:`sequence` decided: the releases in order, what waits, and why."""

    release: list[str] = field(default_factory=list)
    wait: list[str] = field(default_factory=list)
    #: order → its priority (None under first in, first out)
    priority: dict[str, float | None] = field(default_factory=dict)
    #: order → its rank among the candidates (0 first)
    rank: dict[str, int] = field(default_factory=dict)
    #: DC → picks the releases take
    used: dict[str, int] = field(default_factory=dict)
    #: orders that went first because they had waited max_wait_hours
    overdue: list[str] = field(default_factory=list)


def deadline(promised: date, transit_days: int, cutoff: time, tz: tzinfo) -> datetime:
    """The last moment a shipment can be released and still arrive by ``promised`` when the
    carrier takes ``transit_days`` business days: its DC's carrier ``cutoff`` (local time,
    ``tz``) on the last business day it can leave."""
    last = add_business_days(promised, -transit_days)
    while last.weekday() >= 5:
        last -= timedelta(days=1)
    return datetime.combine(last, cutoff, tz)


def lost(c: Candidate, now: datetime) -> bool:
    """Late whatever is decided now: its deadline has passed."""
    return c.deadline is not None and now >= c.deadline


def priority(c: Candidate, now: datetime, policy: Policy, next_wave_at: datetime | None) -> float:
    """The order's priority under ``policy`` (higher goes first among equal deadlines)."""
    p = 0.0
    if c.risk_now is not None and c.risk_later is not None:
        p += policy.risk_weight * (c.risk_later - c.risk_now)
    if c.cutoff is not None and next_wave_at is not None and now <= c.cutoff <= next_wave_at:
        p += policy.cutoff_weight
    p += policy.tier_weights.get(c.tier or "", 0.0)
    if c.margin is not None and policy.margin_scale > 0:
        p += policy.margin_weight * min(max(c.margin, 0.0) / policy.margin_scale, 1.0)
    return p


def _fifo_key(c: Candidate) -> tuple:
    return (c.ready_at, c.order_id)


def sequence(
    candidates: Iterable[Candidate],
    capacity: Mapping[str, Capacity],
    now: datetime,
    policy: Policy | None = None,
) -> Plan:
    """The releases that fit the DCs' current waves, best first; the rest wait.

    An order goes only if it fits every constrained DC it ships from; one that does not fit
    is passed over for a smaller one behind it (it keeps its rank next time). ``policy``
    None ranks first in, first out."""
    cands = sorted(candidates, key=_fifo_key)
    plan = Plan()
    if policy is None:
        ranked = cands
        plan.priority = dict.fromkeys((c.order_id for c in cands), None)
    else:
        nxt = min((c.next_wave_at for c in capacity.values() if c.next_wave_at), default=None)

        def next_at(c: Candidate) -> datetime | None:
            waves = [capacity[d].next_wave_at for d in c.picks if d in capacity]
            return min((w for w in waves if w), default=nxt)

        prio = {c.order_id: priority(c, now, policy, next_at(c)) for c in cands}
        limit = policy.max_wait_hours * 3600
        # an order that can still make its date is kept from waiting for ever by its
        # deadline; any other by the wait bound
        savable = [c for c in cands if c.deadline is not None and now < c.deadline]
        other = [c for c in cands if c.deadline is None or now >= c.deadline]
        overdue = [c for c in other if (now - c.ready_at).total_seconds() >= limit]
        late = {c.order_id for c in overdue}
        unknown = [c for c in other if c.deadline is None and c.order_id not in late]
        gone = [c for c in other if c.deadline is not None and c.order_id not in late]

        def density(c: Candidate) -> float:  # priority per pick
            return (max(prio[c.order_id], 0.0) + 1e-3) / max(sum(c.picks.values()), 1)

        # stable: equal keys keep first in, first out
        by_deadline = sorted(savable, key=lambda c: (c.deadline, -density(c)))
        # due before the next wave: now, or late — even an overdue order does not take its slot
        now_or_never = [c for c in by_deadline if nxt is None or c.deadline <= next_at(c)]
        due = {c.order_id for c in now_or_never}
        ranked = (
            now_or_never
            + overdue
            + [c for c in by_deadline if c.order_id not in due]
            + sorted(unknown, key=lambda c: -prio[c.order_id])
            + gone
        )
        plan.priority = {k: round(v, 6) for k, v in prio.items()}
        plan.overdue = [c.order_id for c in overdue]
    left = {dc: cap.remaining for dc, cap in capacity.items()}
    for i, c in enumerate(ranked):
        plan.rank[c.order_id] = i
        fits = True
        for dc, n in c.picks.items():
            cap = capacity.get(dc)
            if cap is None:
                continue  # unconstrained DC
            fresh = left[dc] >= cap.per_wave  # nothing taken in this wave yet
            if n > left[dc] and not (fresh and n > cap.per_wave):
                fits = False
        if not fits:
            plan.wait.append(c.order_id)
            continue
        plan.release.append(c.order_id)
        for dc, n in c.picks.items():
            if dc in capacity:
                left[dc] -= n
                plan.used[dc] = plan.used.get(dc, 0) + n
    return plan
