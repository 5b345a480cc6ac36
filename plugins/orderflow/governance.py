"""Rule governance (#18): which rule-set versions are in force, what a candidate version would
have decided on history, and promoting or rolling back a version.

**Versions.** The files under ``include/rules`` are the source of a fresh install. A version
*promoted* here (``rule_set_activation``, append-only) overrides the files from the moment
it was promoted — until a file version takes effect after it — for the stages that decide
orders (``orderflow.processing`` resolves every stage's book with :func:`rules.in_force`).
Every version in use is kept in ``rule_set_version`` under its content hash, and every
decision records ``<set>@<version>#<hash prefix>``.

**What-if** (:func:`whatif`). The orders received in a window are rebuilt from their
canonical payloads (as intake stored them: no mapping, no prices, no approvals) and taken
through the pure decision core — ``domain.validation``, ``domain.credit``,
``domain.allocation``, ``domain.planning`` — twice: with the book in force and with the
candidate version(s) in its place, against the master data in the store now. Both sides see
exactly the same data (one read-only snapshot), so every difference is the candidate's.
Credit-service, screening and tax calls are side effects and are not made on either side.
Only ``whatif_run`` / ``whatif_diff`` are written, in a transaction of their own after the
read-only one.

**Promote / rollback** (:func:`promote`, :func:`rollback`): only a user holding the
``rule_approver`` role (``include/access/roles.yaml``); each is one transaction with an
append-only ``audit_log`` row; a refusal changes nothing but its own audited row.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow import access, rules
from orderflow.domain.reference import Hold, LineView, OrderView, ReferenceData
from orderflow.store import db, rule_sets
from orderflow.store import decisions as audit_repo
from orderflow.store import orders as order_repo
from orderflow.store import whatif as whatif_repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

#: the role that may promote and roll back rule-set versions (operations_manager does not
#: imply it: changing policy for every order is not overriding one order's exception)
APPROVER_ROLE = "rule_approver"
#: what a what-if compares per order
FIELDS = ("status", "holds", "amount", "dcs", "carriers", "freight_cost")
CENT = Decimal("0.01")


class GovernanceRefused(ValueError):
    """A what-if, promotion or rollback that cannot be done as asked (the message says why)."""


# ---------------------------------------------------------------------------- candidates


def candidate_from_text(text: str, rule_set: str | None = None) -> rules._RuleSet:
    """A candidate version from YAML text: the rule set is ``rule_set``, or the text's own
    ``rule_set:`` key (the other keys are those of ``include/rules/<set>/<version>.yaml``)."""
    import yaml

    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GovernanceRefused(f"the candidate is not YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise GovernanceRefused("the candidate is not a mapping of rule-set settings")
    named = content.pop("rule_set", None)
    name = rule_set or named
    if not name:
        raise GovernanceRefused(
            "say which rule set the candidate is: a 'rule_set:' key in it, or put the file in "
            "a directory named after the rule set (e.g. candidates/pricing/2026.12.1.yaml)"
        )
    try:
        return rules.parse(str(name), content)
    except rules.RuleSetError as exc:
        raise GovernanceRefused(str(exc)) from exc


def candidate_from_file(path: Path | str) -> rules._RuleSet:
    """A candidate file: like ``include/rules/<set>/<version>.yaml`` — its directory names
    the rule set, unless the file says ``rule_set:`` itself."""
    path = Path(path)
    if not path.is_file():
        raise GovernanceRefused(f"candidate file {path} does not exist")
    parent = path.resolve().parent.name
    text = path.read_text()
    try:
        return candidate_from_text(text, parent if parent in rules.RULE_SETS else None)
    except GovernanceRefused as exc:
        raise GovernanceRefused(f"{path}: {exc}") from exc


_REF = re.compile(r"^(?P<name>[a-z_]+)(@(?P<version>[^#\s]+))?(#(?P<sha>[0-9a-f]{6,64}))?$")


def candidate_from_store(conn: psycopg.Connection, ref: str) -> rules._RuleSet:
    """A stored version: ``pricing@2026.12.1``, ``pricing#3f2a9c1b`` or the full
    ``pricing@2026.12.1#3f2a9c1b7d4e`` a decision recorded; a version only on file
    (``include/rules``) is found too."""
    m = _REF.match(ref.strip())
    if not m or not (m["version"] or m["sha"]):
        raise GovernanceRefused(
            f"{ref!r} names no version: use a YAML file, or <rule_set>@<version>[#<hash>]"
        )
    name, version, sha = m["name"], m["version"], m["sha"]
    rows = rule_sets.find_versions(conn, name, version, sha)
    found = {r[0]: rules.parse(name, json.loads(r[1])) for r in rows}
    for rs in rules.file_versions(name):
        if (version is None or rs.version == version) and (
            sha is None or rs.sha256.startswith(sha)
        ):
            found.setdefault(rs.sha256, rs)
    if not found:
        raise GovernanceRefused(f"no stored or file version {ref!r}")
    if len(found) > 1:
        raise GovernanceRefused(
            f"{ref!r} names {len(found)} contents: add the hash ("
            + ", ".join(f"{name}@{rs.version}#{s[:12]}" for s, rs in found.items())
            + ")"
        )
    return next(iter(found.values()))


def candidate(conn: psycopg.Connection, spec: str) -> tuple[rules._RuleSet, str]:
    """A candidate from a file path or a stored reference, and where it came from."""
    if Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        return candidate_from_file(spec), str(spec)
    return candidate_from_store(conn, spec), f"stored:{spec}"


# ---------------------------------------------------------------------------- history


@dataclass
class History:
    """What the stages decided on, for the orders of a window (read once, both sides)."""

    ref: ReferenceData
    accounts: dict[str, Any]
    #: per statuses tuple (a credit rule's ``open_order_statuses``): open order value per
    #: customer, the window's own orders left out
    exposure: dict[tuple[str, ...], dict[str, Decimal]]
    available: dict[tuple[str, str], Decimal]
    places: dict[str, tuple]  # order → (region, zone, ship-to name, country, customer name)
    services: list[Any]
    today: date
    #: per rule type beyond the core: the context its ``load_context`` read (registry)
    contexts: dict[str, Any] = field(default_factory=dict)


def _view(row: tuple) -> OrderView:
    """An order as intake stored it: the canonical payload, status RECEIVED, no approvals,
    lines not yet mapped or priced (validation decides that)."""
    from orderflow.domain.models import Order

    order_id, channel, partner_id, customer_id, ship_to_id, received_at, canonical = row
    o = Order.model_validate(canonical)
    return OrderView(
        order_id=order_id,
        status="RECEIVED",
        channel=channel,
        customer_id=customer_id or o.customer_id,
        ship_to_id=ship_to_id,
        po_number=o.po_number,
        po_date=o.po_date,
        received_at=received_at,
        requested_ship_date=o.requested_ship_date,
        requested_delivery_date=o.requested_delivery_date,
        currency=o.currency,
        lines=tuple(
            LineView(
                line_no=ln.line_no,
                quantity=ln.quantity,
                uom=ln.uom,
                unit_price=ln.unit_price,
                item_id=ln.item_id,
                customer_part_number=ln.customer_part_number,
                product_ids=tuple((p.qualifier, p.value) for p in ln.product_ids),
            )
            for ln in o.lines
        ),
        partner_id=partner_id,
        ship_to_address=(canonical.get("ship_to") or {}),
        payment_terms=o.payment_terms,
    )


def load_history(
    conn: psycopg.Connection, window_from: datetime, window_to: datetime, books: Sequence[RuleBook]
) -> tuple[list[OrderView], History]:
    """The customers' orders received in [from, to) (not backorder releases) and everything
    the stages read about them. Reads only."""
    from orderflow.store import processing as repo

    rows = whatif_repo.window_orders(conn, window_from, window_to)
    orders = [_view(r) for r in rows]
    ids = [o.order_id for o in orders]
    hours = max(b.validation.duplicate_window_hours for b in books)
    ref = repo.load_reference(conn, orders, hours)
    # A duplicate is of an order received before: never of one that came after the window.
    ref.prior_orders = [p for p in ref.prior_orders if p.received_at < window_from]
    cids = {o.customer_id for o in orders if o.customer_id}
    exposure: dict[tuple[str, ...], dict[str, Decimal]] = {}
    for statuses in {tuple(b.credit.open_order_statuses) for b in books}:
        exposure[statuses] = whatif_repo.open_exposure(conn, list(cids), list(statuses), ids)
    # Stock: what is available now, plus what the window's own live reservations hold (they
    # compete for it again, as when they were allocated).
    available: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for item_id, dc_id, qty in whatif_repo.available_now(conn, list(ref.items)):
        available[(item_id, dc_id)] += qty
    for item_id, dc_id, qty in whatif_repo.live_reservations(conn, ids):
        available[(item_id, dc_id)] += qty
    return orders, History(
        ref=ref,
        accounts=repo.credit_accounts(conn, cids),
        exposure=exposure,
        available=dict(available),
        places=repo.ship_tos_of(conn, ids),
        services=repo.carrier_services(conn),
        today=window_from.date(),
        contexts=rules.registry.load_contexts(conn, books[0], orders),
    )


# ---------------------------------------------------------------------------- replay


def _outcome(order: OrderView, stage: str | None, holds: Sequence[Hold], shipments=()) -> dict:
    return {
        "status": "ON_HOLD" if holds else "READY",
        "stage": stage,
        "holds": sorted({h.category for h in holds}),
        "amount": str(order.amount().quantize(CENT)),
        "dcs": sorted({s.dc_id for s in shipments}),
        "carriers": [f"{s.carrier_id}/{s.service_code}" for s in shipments],
        "freight_cost": str(sum((s.rate for s in shipments), Decimal("0")).quantize(CENT)),
    }


def replay(orders: Sequence[OrderView], history: History, book: RuleBook) -> dict[str, dict]:
    """What the stages would decide for ``orders`` under ``book``: per order its outcome
    (status READY or ON_HOLD, the hold categories, the value at the price charged, DCs,
    carrier services and freight cost). Pure: calls the domain functions the stages call."""
    from orderflow.domain.allocation import allocate
    from orderflow.domain.credit import decide
    from orderflow.domain.planning import plan_shipments
    from orderflow.domain.validation import validate

    out: dict[str, dict] = {}
    ref = history.ref  # read only by the domain functions
    passed: dict[str, OrderView] = {}
    checks = rules.registry.checks(book, history.contexts, core=True)
    for r in validate(orders, ref, book.validation, book.pricing, checks):
        if r.holds:
            out[r.order.order_id] = _outcome(r.order, "validate", r.holds)
        else:
            passed[r.order.order_id] = r.order
    exposure = history.exposure[tuple(book.credit.open_order_statuses)]
    credit_ok = []
    for d in decide(
        list(passed.values()), ref.customers, history.accounts, exposure, {}, book.credit
    ):
        if d.hold is not None:
            out[d.order_id] = _outcome(passed[d.order_id], "credit", [d.hold])
        else:
            credit_ok.append(passed[d.order_id])
    regions = {oid: p[0] for oid, p in history.places.items()}
    for a in allocate(
        credit_ok,
        ref.customers,
        ref.items,
        regions,
        dict(history.available),  # consumed as it allocates: each side its own copy
        book.sourcing,
        book.substitution,
        history.today,
    ):
        o = passed[a.order_id]
        if a.hold is not None:
            out[o.order_id] = _outcome(o, "allocate", [a.hold])
            continue
        by_dc: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
        for res in a.reservations:
            by_dc[res.dc_id].append((res.item_id, res.quantity))
        zone = (history.places.get(o.order_id) or (None, None))[1]
        day = o.received_at.date()  # planned the day it arrived (no delay to charge)
        p = plan_shipments(
            o.order_id,
            o.customer_id,
            by_dc,
            ref.items,
            zone,
            o.requested_ship_date,
            o.requested_delivery_date,
            day,
            history.services,
            book.carrier,
            arrived=day,
        )
        out[o.order_id] = (
            _outcome(o, "plan", [p.hold]) if p.hold else _outcome(o, None, [], p.shipments)
        )
    return out


def totals(outcomes: dict[str, dict]) -> dict[str, Any]:
    n = len(outcomes)
    ready = [x for x in outcomes.values() if x["status"] == "READY"]
    held = Counter(c for x in outcomes.values() for c in x["holds"])
    return {
        "orders": n,
        "first_pass": len(ready),
        "first_pass_rate": round(len(ready) / n, 4) if n else None,
        "freight_cost": str(sum((Decimal(x["freight_cost"]) for x in ready), Decimal("0"))),
        "held": dict(sorted(held.items())),
    }


def diff(current: dict[str, dict], candidate: dict[str, dict]) -> list[dict]:
    """The orders whose outcome differs, with the fields that differ."""
    out = []
    for oid in current:
        changed = [f for f in FIELDS if current[oid][f] != candidate[oid][f]]
        if changed:
            out.append(
                {
                    "order_id": oid,
                    "changed": changed,
                    "current": current[oid],
                    "candidate": candidate[oid],
                }
            )
    return out


@dataclass
class WhatIf:
    run_id: int | None
    window_from: datetime
    window_to: datetime
    current_versions: dict[str, dict]
    candidates: list[dict]
    totals: dict[str, Any]
    diffs: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """For XCom and the CLI: everything but the per-order rows."""
        return {
            "whatif_run_id": self.run_id,
            "window": [self.window_from.isoformat(), self.window_to.isoformat()],
            "candidates": [
                {k: c[k] for k in ("rule_set", "version", "sha256", "source")}
                for c in self.candidates
            ],
            "changed": len(self.diffs),
            "totals": self.totals,
        }


def whatif(
    conn: psycopg.Connection,
    candidates: Sequence[rules._RuleSet],
    window_from: datetime,
    window_to: datetime,
    *,
    requested_by: str,
    sources: Sequence[str] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    store: bool = True,
) -> WhatIf:
    """Replay ``candidates`` against the orders received in [from, to): see the module
    docstring. Writes only ``whatif_run`` and ``whatif_diff`` (when ``store``)."""
    if not candidates:
        raise GovernanceRefused("name at least one candidate version")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise GovernanceRefused(f"one candidate per rule set (got {', '.join(names)})")
    if bad := [n for n in names if n not in rules.GOVERNED]:
        raise GovernanceRefused(
            f"{', '.join(bad)}: not a rule set that decides orders; a what-if replays "
            f"{', '.join(rules.GOVERNED)}"
        )
    if window_from.tzinfo is None or window_to.tzinfo is None:
        raise GovernanceRefused("give the window with a time zone (e.g. 2026-12-01T00:00Z)")
    if window_to <= window_from:
        raise GovernanceRefused("the window ends before it starts")
    sources = list(sources or ["candidate"] * len(candidates))
    # One read-only snapshot: both sides see the same data, and nothing can be written.
    with conn.transaction():
        whatif_repo.read_only_snapshot(conn)
        now = order_repo.now(conn)
        current = rules.load(now, conn=conn)
        proposed = current.replace(*candidates)
        orders, history = load_history(conn, window_from, window_to, [current, proposed])
    before = replay(orders, history, current)
    after = replay(orders, history, proposed)
    changes = diff(before, after)
    t_before, t_after = totals(before), totals(after)
    summary = {
        "current": t_before,
        "candidate": t_after,
        "first_pass_rate_change": (
            round(t_after["first_pass_rate"] - t_before["first_pass_rate"], 4) if orders else None
        ),
        "freight_cost_change": str(
            Decimal(t_after["freight_cost"]) - Decimal(t_before["freight_cost"])
        ),
    }
    result = WhatIf(
        run_id=None,
        window_from=window_from,
        window_to=window_to,
        current_versions={
            rs.name: {"version": rs.version, "sha256": rs.sha256} for rs in current.all()
        },
        candidates=[
            {
                "rule_set": c.name,
                "version": c.version,
                "sha256": c.sha256,
                "source": s,
                "content": c.content(),
            }
            for c, s in zip(candidates, sources, strict=True)
        ],
        totals=summary,
        diffs=changes,
    )
    if not store:
        return result
    with db.transaction(conn):
        result.run_id = whatif_repo.add_run(
            conn,
            requested_by=requested_by,
            window_from=window_from,
            window_to=window_to,
            current_versions=result.current_versions,
            candidates=result.candidates,
            orders=len(orders),
            changed=len(changes),
            totals=summary,
            dag_id=dag_id,
            run_id=run_id,
        )
        whatif_repo.add_diffs(conn, result.run_id, changes)
    return result


def whatif_report(conn: psycopg.Connection, whatif_run_id: int, limit: int = 500) -> dict:
    """A stored what-if for a page or the CLI: the run (window, versions compared, totals)
    and its per-order differences (first ``limit``, by order id)."""
    run = whatif_repo.run(conn, whatif_run_id)
    if run is None:
        raise GovernanceRefused(f"what-if run {whatif_run_id} does not exist")
    run["diffs"] = [
        {"order_id": r[0], "changed": list(r[1]), "current": r[2], "candidate": r[3]}
        for r in whatif_repo.diffs(conn, whatif_run_id, limit)
    ]
    return run


def candidate_of_run(
    conn: psycopg.Connection, whatif_run_id: int, rule_set: str | None = None
) -> rules._RuleSet:
    """The candidate a what-if replayed (exactly that content: promote what was replayed)."""
    run = whatif_report(conn, whatif_run_id, limit=0)
    found = [c for c in run["candidates"] if rule_set in (None, c["rule_set"])]
    if len(found) != 1:
        raise GovernanceRefused(
            f"what-if run {whatif_run_id} replayed "
            f"{', '.join(c['rule_set'] for c in run['candidates'])}: name the rule set"
        )
    return rules.parse(found[0]["rule_set"], found[0]["content"])


# ---------------------------------------------------------------------------- versions


def versions(conn: psycopg.Connection) -> list[dict]:
    """Per governed rule set: the version in force (and whether a promotion put it there),
    and every promotion and rollback, newest first."""
    book = rules.load()
    live = rules.in_force(conn, book)
    history: dict[str, list[dict]] = defaultdict(list)
    for a in rule_sets.activations(conn):
        history[a["rule_set"]].append(a)
    return [
        {
            "rule_set": name,
            "version": getattr(live, name).version,
            "sha256": getattr(live, name).sha256,
            "source": "file" if getattr(live, name) == getattr(book, name) else "promoted",
            "file_version": getattr(book, name).version,
            "activations": history.get(name, []),
        }
        for name in rules.GOVERNED
    ]


# ---------------------------------------------------------------------------- promote


def _audit(conn, actor, action, object_id, before, after, reason) -> None:
    audit_repo.audit(
        conn,
        actor=actor,
        actor_role=",".join(sorted(access.roles_of(actor))) or None,
        action=action,
        object_type="rule_set",
        object_id=object_id,
        before=before,
        after=after,
        reason=reason,
    )


def _refusal(actor: str, what: str) -> str | None:
    if APPROVER_ROLE in access.roles_of(actor):
        return None
    return (
        f"{actor} may not {what}: that needs the {APPROVER_ROLE} role. Ask a rule approver, "
        f"or have the role granted in {access.roles_file()}"
    )


def _lock(conn, rule_set: str) -> None:
    rule_sets.lock_governance(conn, rule_set)


def _brief(rs: rules._RuleSet) -> dict[str, str]:
    return {"version": rs.version, "sha256": rs.sha256}


def promote(
    conn: psycopg.Connection,
    version: rules._RuleSet,
    *,
    actor: str,
    reason: str,
    whatif_run_id: int | None = None,
) -> dict[str, Any]:
    """Make ``version`` the one in force for its rule set, from now (``rule_approver`` only).
    The version it replaces is kept, so :func:`rollback` can bring it back."""
    name = version.name
    if not (reason or "").strip():
        raise GovernanceRefused("say why (the reason goes into the audit trail)")
    if name not in rules.GOVERNED:
        raise GovernanceRefused(
            f"{name} is file-managed; promotion covers {', '.join(rules.GOVERNED)}"
        )
    refused = None
    with db.transaction(conn):
        _lock(conn, name)
        # after the lock: a promotion committed later is always activated later
        now = rule_sets.clock(conn)
        current = getattr(rules.load(now, conn=conn), name)
        before = _brief(current)
        after = {**_brief(version), "whatif_run_id": whatif_run_id}
        refused = _refusal(actor, f"promote {name}@{version.version}")
        if refused is not None:
            _audit(
                conn,
                actor,
                "rule_promote_refused",
                name,
                before,
                {**after, "refused": refused},
                reason,
            )
        else:
            if version.effective_from > now:
                raise GovernanceRefused(
                    f"{name}@{version.version} takes effect {version.effective_from:%Y-%m-%d %H:%M}"
                    " (effective_from): a promotion is in force at once. Set effective_from "
                    "to now or earlier, or ship it as a file to take effect later"
                )
            if version == current:
                raise GovernanceRefused(f"{name}@{version.version} is already in force")
            clash = rule_sets.other_contents(conn, name, version.version, version.sha256) + [
                rs.sha256
                for rs in rules.file_versions(name)
                if rs.version == version.version and rs.sha256 != version.sha256
            ]
            if clash:
                raise GovernanceRefused(
                    f"{name}@{version.version} already exists with other content "
                    f"(#{clash[0][:12]}); a used version is never changed — give the candidate "
                    "a new version"
                )
            if whatif_run_id is not None:
                replayed = candidate_of_run(conn, whatif_run_id, name)
                if replayed.sha256 != version.sha256:
                    raise GovernanceRefused(
                        f"what-if run {whatif_run_id} replayed {name}#{replayed.sha256[:12]}, "
                        f"not this content (#{version.sha256[:12]})"
                    )
            rules.record(conn, [current], "file")  # (kept as it is when already stored)
            rules.record(conn, [version], "candidate")
            activation = rule_sets.add_activation(
                conn,
                "promote",
                rule_set=name,
                version=version.version,
                sha256=version.sha256,
                previous_version=current.version,
                previous_sha256=current.sha256,
                whatif_run_id=whatif_run_id,
                actor=actor,
                reason=reason,
                activated_at=now,
            )
            after["activation_id"] = activation
            _audit(conn, actor, "rule_promote", name, before, after, reason)
    if refused is not None:
        raise GovernanceRefused(refused)
    return {"rule_set": name, "from": before, "to": after}


def rollback(conn: psycopg.Connection, rule_set: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Bring back the version the latest promotion of ``rule_set`` replaced
    (``rule_approver`` only). Rolling back again undoes the promotion before that."""
    if not (reason or "").strip():
        raise GovernanceRefused("say why (the reason goes into the audit trail)")
    if rule_set not in rules.GOVERNED:
        raise GovernanceRefused(
            f"{rule_set} is file-managed; rollback covers {', '.join(rules.GOVERNED)}"
        )
    refused = None
    with db.transaction(conn):
        _lock(conn, rule_set)
        # after the lock: a promotion committed later is always activated later
        now = rule_sets.clock(conn)
        current = getattr(rules.load(now, conn=conn), rule_set)
        before = _brief(current)
        refused = _refusal(actor, f"roll back {rule_set}")
        if refused is not None:
            _audit(
                conn, actor, "rule_rollback_refused", rule_set, before, {"refused": refused}, reason
            )
        else:
            standing: list[tuple] = []  # promotions not rolled back, oldest first
            for row in rule_sets.activations_of(conn, rule_set):
                if row[1] == "promote":
                    standing.append(row)
                elif standing:
                    standing.pop()
            if not standing:
                raise GovernanceRefused(
                    f"no promotion of {rule_set} to roll back: the files decide it "
                    f"({current.version})"
                )
            top = standing[-1]
            if top[3] != current.sha256:
                raise GovernanceRefused(
                    f"{rule_set}@{current.version} is in force, not the promoted "
                    f"{top[2]} (a file version took effect after it): nothing to roll back"
                )
            target = {"version": top[4], "sha256": top[5]}
            activation = rule_sets.add_activation(
                conn,
                "rollback",
                rule_set=rule_set,
                version=top[4],
                sha256=top[5],
                previous_version=current.version,
                previous_sha256=current.sha256,
                undoes=top[0],
                actor=actor,
                reason=reason,
                activated_at=now,
            )
            after = {**target, "undoes": top[0], "activation_id": activation}
            _audit(conn, actor, "rule_rollback", rule_set, before, after, reason)
    if refused is not None:
        raise GovernanceRefused(refused)
    return {"rule_set": rule_set, "from": before, "to": after}
