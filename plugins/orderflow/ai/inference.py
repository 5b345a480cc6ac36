"""The models in the flow: the validation stage's hooks (``orderflow.processing.validate``).

- :func:`near_duplicates` / :func:`record_duplicates` — near-duplicate orders across channels
  (``near_duplicate``): the matcher the domain's duplicate checks ask after the exact checks
  found nothing (``orderflow.domain.validation``), over the active version in the store; each
  ``possible_duplicate`` hold it causes is recorded as the model's decision (action ``hold``).

- :func:`before_decide` — anomalies on arrival (``arrival_anomaly``): each validated order of
  a known customer is scored against the customer's history in the store; at or above the
  ``ai`` rules' ``score_threshold`` it is an ``anomaly`` hold when financially sensitive (a
  kind in ``hold_kinds``, or a quantity anomaly on a line worth ``hold_line_value`` or more)
  and a flag on the order's event otherwise.
- :func:`after_holds` — the cause of each hold validation opened (``exception_cause``), with
  its confidence and evidence, in the exception's details (``ai_cause``: what the desk and
  the order page show); at or above the model's ``min_confidence`` the exception goes to the
  owner the routing rules give the cause (``causes``).

Both run inside the stage's transaction, only for a model enabled in the ``ai`` rule set that
has an active version; a model that fails (its artifact, its features) is logged and skipped
— the rules' own checks have already decided the order — never a reason to lose the
partition. Every output goes through ``governance.record``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

CAUSE = "exception_cause"
ANOMALY = "arrival_anomaly"
NEAR_DUPLICATE = "near_duplicate"
#: the hold a near-duplicate match raises (created in the store the first time it is needed)
POSSIBLE_DUPLICATE = "possible_duplicate"


def near_duplicates(conn: psycopg.Connection, book: RuleBook):
    """The near-duplicate matcher (``duplicates.Matcher``) over the active version of
    ``near_duplicate`` in the store, when the ``ai`` rule set enables it; None otherwise — the
    stage then decides exactly as without it. A version that cannot be loaded is logged and
    skipped like any model's failure."""
    from orderflow.ai import duplicates, governance
    from orderflow.rules import ExceptionCategory
    from orderflow.store import exceptions

    if not governance.enabled(book, NEAR_DUPLICATE):
        return None
    try:
        active = governance.active_model(conn, NEAR_DUPLICATE)
    except Exception as exc:
        log.warning("model %s skipped: %s", NEAR_DUPLICATE, type(exc).__name__)
        return None
    if active is None:
        return None
    exceptions.ensure_categories(
        conn,
        [
            ExceptionCategory(
                POSSIBLE_DUPLICATE,
                "Possibly the same order re-submitted on another channel (a model's match)",
                default_owner_role="customer_service",
                default_sla_minutes=120,
            )
        ],
    )
    return duplicates.Matcher(active[1])


def record_duplicates(conn: psycopg.Connection, results: list, near, book: RuleBook) -> int:
    """Each ``possible_duplicate`` hold the matcher caused, recorded as the model's decision
    (action ``hold``: a person confirms); its id goes into the hold's details."""
    from orderflow.ai import duplicates, governance

    if near is None:
        return 0
    held = [
        (r, h)
        for r in results
        for h in r.holds
        if h.category == POSSIBLE_DUPLICATE and (h.details or {}).get("match") == "model"
    ]
    if not held:
        return 0
    version = near.model.version
    outputs = [
        governance.Output(
            NEAR_DUPLICATE,
            version,
            r.order.order_id,
            duplicates.DUPLICATE,  # a reviewer's correction: duplicates.DISTINCT
            float(h.details["score"]),
            near.seen.get(r.order.order_id, {}),
            [
                {"duplicate_of": h.details["duplicate_of"]},
                *h.details["evidence"].get("top_features", []),
            ],
            "hold",
        )
        for r, h in held
    ]
    for (_r, h), out in zip(held, outputs, strict=True):
        # one at a time: a decision recorded before (a revalidation) returns no id
        [h.details["decision_id"]] = governance.record(conn, [out], book) or [None]
    return len(outputs)


def _context(conn, results, ref):
    from orderflow.ai.features import Context
    from orderflow.store import ai as repo

    orders = [r.order for r in results if r.order.customer_id in ref.customers]
    if not orders:
        return None
    cids = sorted({o.customer_id for o in orders})
    return Context.from_rows(repo.context_rows(conn, cids, min(o.received_at for o in orders)))


def before_decide(
    conn: psycopg.Connection, results: list, ref: Any, book: RuleBook
) -> dict[str, dict]:
    """Anomaly holds added to ``results``; returns per order the flags for its event."""
    from orderflow.ai import governance

    if not governance.enabled(book, ANOMALY):
        return {}
    try:
        with conn.transaction():
            return _anomalies(conn, results, ref, book)
    except Exception as exc:  # advisory: the stage's rules have decided already
        log.warning("model %s skipped: %s", ANOMALY, type(exc).__name__)
        return {}


def _anomalies(conn, results, ref, book) -> dict[str, dict]:
    from orderflow.ai import features as fx
    from orderflow.ai import governance, registry
    from orderflow.domain.reference import Hold

    active = governance.active_model(conn, ANOMALY)
    ctx = _context(conn, results, ref) if active else None
    if active is None or ctx is None:
        return {}
    version, model = active
    policy = book.ai.anomaly
    cands = [
        r
        for r in results
        if r.order.customer_id in ref.customers
        and ctx.n_orders.get(r.order.customer_id, 0) >= policy.min_history_orders
        # a person approved the order as sent: reprocessing does not hold it again
        and "anomaly" not in r.order.approvals
    ]
    if not cands:
        return {}
    rows = [fx.anomaly_features(r.order, ref, ctx) for r in cands]
    scores = registry.anomaly_scores(model, rows)
    flagged = [(r, f, s) for r, f, s in zip(cands, rows, scores, strict=True)
               if s >= policy.score_threshold]  # fmt: skip
    if not flagged:
        return {}
    explained = model.predict([f for _, f, _ in flagged])
    outputs, flags = [], {}
    for (r, f, s), (_label, _p, evidence) in zip(flagged, explained, strict=True):
        p = model.proba([f])[0]
        kinds = [(p[i], c) for i, c in enumerate(model.classes) if c != "none"]
        kind = max(kinds)[1] if kinds else "unknown"
        value = max(fx.line_values(r.order), default=0.0)
        sensitive = kind in policy.hold_kinds or (
            kind == "quantity" and value >= float(policy.hold_line_value)
        )
        action = "hold" if sensitive else "flag"
        note = {"kind": kind, "score": round(s, 4), "evidence": evidence,
                "model": f"{ANOMALY}@{version}", "action": action}  # fmt: skip
        if sensitive:
            r.holds.append(
                Hold(
                    "anomaly",
                    f"order is far from the customer's history ({kind}, score {s:.2f}); confirm "
                    "with the customer, correct the order, or approve it as sent",
                    details=note,
                )
            )
        else:
            flags[r.order.order_id] = {"ai_flags": [note]}
        outputs.append(
            governance.Output(ANOMALY, version, r.order.order_id, kind, s, f, evidence, action)
        )
    governance.record(conn, outputs, book)
    return flags


def after_holds(conn: psycopg.Connection, results: list, ref: Any, book: RuleBook) -> int:
    """Recommend (and route) the cause of each hold just opened; returns how many."""
    from orderflow.ai import governance

    if not governance.enabled(book, CAUSE):
        return 0
    try:
        with conn.transaction():
            return _causes(conn, results, ref, book)
    except Exception as exc:
        log.warning("model %s skipped: %s", CAUSE, type(exc).__name__)
        return 0


def _causes(conn, results, ref, book) -> int:
    from orderflow.ai import features as fx
    from orderflow.ai import governance
    from orderflow.store import ai as repo

    held = [(r, h) for r in results for h in r.holds if h.category in fx.CAUSE_CATEGORIES]
    if not held:
        return 0
    active = governance.active_model(conn, CAUSE)
    ctx = _context(conn, [r for r, _ in held], ref) if active else None
    if active is None or ctx is None:
        return 0
    version, model = active
    ids = repo.open_exception_ids(
        conn, sorted({r.order.order_id for r, _ in held}), fx.CAUSE_CATEGORIES
    )
    policy = book.ai.policy(CAUSE)
    rows = [fx.cause_features(h, r.order, ref, ctx, book.validation.valid_uoms) for r, h in held]
    n = 0
    for (r, h), f, (label, p, evidence) in zip(held, rows, model.predict(rows), strict=True):
        exc_id = ids.get((r.order.order_id, h.line_no or 0, h.category))
        route = book.routing.causes.get(label)
        action = (
            "route" if route and route.owner_role and p >= policy.min_confidence else "recommend"
        )
        [decision_id] = governance.record(
            conn,
            [governance.Output(CAUSE, version, r.order.order_id, label, p, f, evidence, action,
                               exception_id=exc_id, line_no=h.line_no)],
            book,
        ) or [None]  # fmt: skip
        if exc_id is None:
            continue
        repo.annotate_exception(
            conn,
            exc_id,
            "ai_cause",
            {
                "cause": label,
                "confidence": round(p, 4),
                "evidence": evidence,
                "model": f"{CAUSE}@{version}",
                "decision_id": decision_id,
                "routed_to": route.owner_role if action == "route" else None,
            },
        )
        if action == "route":
            repo.route_exception(conn, exc_id, route.owner_role)
        n += 1
    return n


# ---------------------------------------------------------------------------- substitutes

SUBSTITUTES = "substitute_rank"


def substitute_ranker(
    conn: psycopg.Connection, orders: list, customers: dict, items: dict, book: RuleBook
):
    """The allocation's ranker (``substitutes.Ranker``) over the active version of
    ``substitute_rank``, when the ``ai`` rule set enables it; None otherwise — allocation then
    keeps the catalogue's order. It reads every customer's recorded answers of the last year
    (similar customers count) and the item master's facts of the items that may be short."""
    from datetime import UTC, datetime

    from orderflow.ai import governance
    from orderflow.ai import substitutes as sb
    from orderflow.store import ai as repo

    if not governance.enabled(book, SUBSTITUTES):
        return None
    try:
        with conn.transaction():
            active = governance.active_model(conn, SUBSTITUTES)
            if active is None:
                return None
            wanted = {s for i in items.values() for s in i.substitutes} | set(items)
            facts = {
                i: sb.Facts(u, int(p or 1), None if lp is None else float(lp), vp)
                for i, u, p, lp, vp in repo.item_facts(conn, wanted)
            }
            ctx = sb.context_from_rows(
                repo.substitute_outcomes(conn, SUBSTITUTES, datetime.now(UTC))
            )
    except Exception as exc:  # advisory: allocation keeps the catalogue's order
        log.warning("model %s skipped: %s", SUBSTITUTES, type(exc).__name__)
        return None
    tiers = {cid: c.tier for cid, c in customers.items()}
    return sb.Ranker(active[1], active[0], ctx, facts, tiers)


def record_substitutes(conn: psycopg.Connection, ranker, allocations: list, book: RuleBook) -> int:
    """Each ranking that put a substitute forward (shipped with consent, or proposed on a
    ``substitution_needed`` hold) recorded as the model's decision (action ``recommend``: the
    candidate expected to be accepted, with the whole ranking as evidence), and shown in the
    open ``substitution_needed`` exception's details (``ai_substitutes``). Not advisory: a
    ranking the allocation used is recorded, or the stage's transaction does not commit."""
    if ranker is None or not ranker.ranked:
        return 0
    return _record_substitutes(conn, ranker, allocations, book)


def _record_substitutes(conn, ranker, allocations, book) -> int:
    from orderflow.ai import governance
    from orderflow.ai import substitutes as sb
    from orderflow.store import ai as repo

    put = []
    for a in allocations:
        proposals = a.substitutions or (
            (a.hold.details or {}).get("proposals", []) if a.hold else []
        )
        for p in proposals:
            r = ranker.ranked.get((a.order_id, p["line_no"]))
            if r is not None and r.candidates[0][0] == p["substitute_item_id"]:
                put.append((a.order_id, p["line_no"], r))
    if not put:
        return 0
    shown: dict[str, list] = {}
    for oid, line_no, r in put:
        _sub, p, _k, f = r.candidates[0]
        ev = sb.evidence(r)
        [decision_id] = governance.record(
            conn,
            [governance.Output(SUBSTITUTES, ranker.version, oid, sb.ACCEPTED, p, f, ev,
                               "recommend", line_no=line_no)],
            book,
        ) or [None]  # fmt: skip
        shown.setdefault(oid, []).append(
            {"line_no": line_no, "ranking": ev, "decision_id": decision_id}
        )
    ids = repo.open_exception_ids(conn, sorted(shown), ["substitution_needed"])
    for (oid, _line, _cat), exc_id in ids.items():
        repo.annotate_exception(
            conn,
            exc_id,
            "ai_substitutes",
            {"model": f"{SUBSTITUTES}@{ranker.version}", "lines": shown[oid]},
        )
    return len(put)


def after_plan(conn: psycopg.Connection, order_ids: list[str], book: RuleBook) -> dict[str, dict]:
    """The delay risk of each order just planned (``orderflow.ai.delay``): per flagged order
    the note for its plan event; the customer told early when the ai rules say so."""
    from orderflow.ai import delay

    return delay.after_plan(conn, order_ids, book)
