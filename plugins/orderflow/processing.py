"""Order processing, one stage at a time over a partition of order ids.

Each stage: load the partition's orders that are still in the stage's input status (and
claimed by this run), call the pure domain function, and write every status change, its
event and its exceptions in ONE transaction. A rerun, a retry or a killed worker therefore
never double-applies: orders an earlier attempt moved are no longer in the input status, and
an attempt that died wrote nothing. External calls (credit service, tax, screening) happen
before the transaction, never while it holds locks.

The operators in ``orderflow.operators.processing`` are thin wrappers over these functions;
the benchmark and the tests call them directly too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orderflow.domain.lifecycle import Transition, transition
from orderflow.domain.reference import Hold, OrderView
from orderflow.store import crm as crm_repo
from orderflow.store import db, events
from orderflow.store import processing as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Who is deciding: stored on every event (trace from an order to the task run)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    claimed_by: str | None = None  # only orders this run claimed (None: any, e.g. reprocess)

    @property
    def actor(self) -> str:
        return f"{self.dag_id or 'orderflow'}.{self.task_id or 'processing'}"

    def keys(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
        }


@dataclass
class StageResult:
    stage: str
    orders: int = 0
    passed: int = 0
    held: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # not (any more) in the input status: done by an earlier attempt

    def as_xcom(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "orders": self.orders,
            "passed": self.passed,
            "held": self.held,
            "skipped": self.skipped,
        }


def _decide(
    conn: psycopg.Connection,
    stage: str,
    orders: Sequence[OrderView],
    holds: dict[str, list[Hold]],
    to_status: str,
    ctx: RunContext,
    book: RuleBook,
    versions: str,
    details: dict[str, dict] | None = None,
) -> StageResult:
    """Write the stage's outcome: held orders ON_HOLD with their exceptions, the rest on."""
    details = details or {}
    moves: list[Transition] = []
    to_open: list[tuple[str, Hold]] = []
    result = StageResult(stage, orders=len(orders))
    for o in orders:
        found = holds.get(o.order_id) or []
        if found:
            cats = tuple(dict.fromkeys(h.category for h in found))
            for c in cats:
                result.held[c] = result.held.get(c, 0) + 1
            to_open.extend((o.order_id, h) for h in found)
            moves.append(
                transition(
                    o.order_id,
                    o.status,
                    "ON_HOLD",
                    actor_type="system",
                    actor_id=ctx.actor,
                    reason_codes=cats,
                    rule_set_version=versions,
                    details={"stage": stage, **details.get(o.order_id, {})},
                )
            )
        else:
            result.passed += 1
            moves.append(
                transition(
                    o.order_id,
                    o.status,
                    to_status,
                    actor_type="system",
                    actor_id=ctx.actor,
                    rule_set_version=versions,
                    details={"stage": stage, **details.get(o.order_id, {})},
                )
            )
    repo.open_holds(conn, to_open, stage=stage, routing=book.routing, rule_set_version=versions)
    events.append(conn, moves, **ctx.keys())
    return result


def _in_force(conn: psycopg.Connection, book: RuleBook) -> RuleBook:
    """``book`` with the rule versions promoted in the store applied (``orderflow.governance``),
    each version's content kept under the hash the stage's decisions will record."""
    from orderflow import rules

    book = rules.in_force(conn, book)
    rules.record(conn, book)
    return book


def _load(conn, ids, status, ctx) -> list[OrderView]:
    return repo.load_orders(conn, ids, [status], ctx.claimed_by)


#: concurrent calls of one stage to an external service (credit, screening, tax)
CALL_WORKERS = 8


def _concurrently(call: Callable[..., Any], args: Sequence[tuple], workers: int = CALL_WORKERS):
    """``[call(*a) for a in args]``, the calls made concurrently (they are independent
    questions to a service, made before the stage's transaction). The first call is made
    alone: a hook builds its session (the Connection lookup) on its first call, once. The
    first failure, in the order of ``args``, is raised as the loop would raise it."""
    if len(args) <= 1 or workers <= 1:
        return [call(*a) for a in args]
    from concurrent.futures import ThreadPoolExecutor

    first = call(*args[0])
    with ThreadPoolExecutor(min(workers, len(args) - 1)) as pool:
        rest = list(pool.map(lambda a: call(*a), args[1:]))
    return [first, *rest]


# ---------------------------------------------------------------------------- validate


def validate(
    conn: psycopg.Connection, order_ids: Sequence[str], ctx: RunContext, book: RuleBook
) -> StageResult:
    """RECEIVED → VALIDATED, or ON_HOLD with every problem found."""
    from orderflow.ai import inference
    from orderflow.domain.validation import validate as check
    from orderflow.rules import registry
    from orderflow.store import exceptions

    book = _in_force(conn, book)
    # Rule types with hooks (the registry: the core's CRM pricing, then those beyond the core)
    # check here too, and are recorded with the rest.
    versions = book.tag("validation", "pricing", "routing", *registry.tag(book, core=True))
    exceptions.ensure_categories(conn, registry.categories(book, core=True))
    near = inference.near_duplicates(conn, book)
    hours = book.validation.duplicate_window_hours
    if near is not None:
        hours = max(hours, book.validation.near_duplicates.window_hours)
    with db.transaction(conn):
        orders = _resolve_customers(conn, _load(conn, order_ids, "RECEIVED", ctx))
        ref = repo.load_reference(conn, orders, hours)
        checks = registry.checks(book, registry.load_contexts(conn, book, orders), core=True)
        results = check(orders, ref, book.validation, book.pricing, checks, near)
        repo.save_validated_lines(conn, [r.order for r in results])
        inference.record_duplicates(conn, results, near, book)
        # Decision support (orderflow.ai, #17): anomalies on arrival hold or flag; then the
        # cause of each hold opened is recommended (and routed). Advisory, within policy.
        flags = inference.before_decide(conn, results, ref, book)
        out = _decide(
            conn,
            "validate",
            orders,
            {r.order.order_id: r.holds for r in results},
            "VALIDATED",
            ctx,
            book,
            versions,
            details=_merge(_details(results), flags),
        )
        inference.after_holds(conn, results, ref, book)
        # Pricing holds go to the account's team, and its owner is asked in the CRM.
        ids = [o.order_id for o in orders]
        crm_repo.route_to_account_team(conn, ids)
        crm_repo.enqueue_requests(conn, ids)
    out.skipped = len(order_ids) - out.orders
    return out


def _details(results) -> dict[str, dict]:
    """Per order, what its event records beyond the decision: holds a rule type explained,
    and the lines a rule type's explanation priced from a document (a CRM quote or agreement)."""
    out = {r.order.order_id: {"explained": r.explained} for r in results if r.explained}
    for order_id, sources in _price_sources(results).items():
        out.setdefault(order_id, {}).update(sources)
    return out


def _merge(details: dict[str, dict], more: dict[str, dict]) -> dict[str, dict]:
    for order_id, extra in more.items():
        details.setdefault(order_id, {}).update(extra)
    return details


def _price_sources(results) -> dict[str, dict]:
    """Per order, the lines an explanation priced from a document (``price_sources``)."""
    out: dict[str, dict] = {}
    for r in results:
        explained = [
            {"line_no": ln.line_no, "source": ln.price_source, "document_id": ln.price_document_id}
            for ln in r.order.lines
            if ln.price_source not in (None, "contract", "list")
        ]
        if explained:
            out[r.order.order_id] = {"price_sources": explained}
    return out


def _resolve_customers(conn: psycopg.Connection, orders: list[OrderView]) -> list[OrderView]:
    """Orders whose channel could not name the customer at intake (e.g. an EDI partner not
    yet synced): the trading partner's customer, now, written back to the order."""
    from dataclasses import replace

    partners = {o.partner_id for o in orders if not o.customer_id and o.partner_id}
    if not partners:
        return orders
    owner = repo.partner_customers(conn, partners)
    found = {
        o.order_id: owner[o.partner_id]
        for o in orders
        if not o.customer_id and o.partner_id in owner
    }
    repo.set_customers(conn, found)
    return [replace(o, customer_id=found[o.order_id]) if o.order_id in found else o for o in orders]


# ---------------------------------------------------------------------------- credit


def check_credit(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    ctx: RunContext,
    book: RuleBook,
    credit_service: Callable[[str, float], dict] | None,
    erp_exposure: Callable[[list[str]], dict[str, dict]] | None = None,
    credit_batch: Callable[[list[tuple[str, float]]], list[dict] | None] | None = None,
) -> StageResult:
    """VALIDATED → CREDIT_OK, or ON_HOLD credit_hold / credit_limit.

    ``credit_service(customer_id, amount)`` is asked once per customer of the partition (for
    the total of its orders) before the transaction — all of them in one call through
    ``credit_batch`` (``CreditHook.check_many``: the answers in the order asked) when it is
    given and the service has a batch endpoint (it returns None otherwise); the store's
    exposure is decided under a per-customer lock so parallel partitions and runs never both
    spend the same headroom.
    ``erp_exposure(customer_ids)`` (one call for the partition) gives each customer's current
    limit, open AR and hold from the ERP; when it fails the synced figures decide and each
    decision records ``exposure_source`` (``erp`` or ``synced``) and why.
    """
    from orderflow.domain.credit import decide, with_live_exposure
    from orderflow.integrations.http import ExternalSystemError

    book = _in_force(conn, book)
    versions = book.tag("credit", "routing")
    # what each customer is asked about, before the transaction (the orders themselves are
    # loaded once, under the customers' locks)
    totals = repo.partition_totals(conn, order_ids, "VALIDATED", ctx.claimed_by)
    answers: dict[str, dict] = {}
    if credit_service is not None and book.credit.use_credit_service:
        asked = [(cid, float(amount)) for cid, amount in totals.items() if cid]
        got = credit_batch(asked) if credit_batch is not None and asked else None
        if got is None:  # no batch endpoint: one call per customer
            got = _concurrently(credit_service, asked)
        answers = dict(zip((cid for cid, _ in asked), got, strict=True))
    live: dict[str, dict] = {}
    source: dict[str, str] = {"exposure_source": "synced"}
    if erp_exposure is not None and book.credit.use_erp_exposure:
        try:
            live = erp_exposure(sorted(c for c in totals if c))
            source = {"exposure_source": "erp"}
        except ExternalSystemError as exc:
            log.warning("ERP exposure unavailable, the synced figures decide: %s", exc)
            source = {"exposure_source": "synced", "erp_unavailable": str(exc)[:300]}
    with db.transaction(conn):
        repo.lock_customers(conn, totals)
        orders = _load(conn, order_ids, "VALIDATED", ctx)
        customers = repo._customers(conn, totals)
        accounts = with_live_exposure(repo.credit_accounts(conn, totals), live)
        exposure = repo.open_order_value(conn, totals, book.credit.open_order_statuses)
        decisions = decide(orders, customers, accounts, exposure, answers, book.credit)
        out = _decide(
            conn,
            "credit",
            orders,
            {d.order_id: [d.hold] for d in decisions if d.hold},
            "CREDIT_OK",
            ctx,
            book,
            versions,
            details={
                d.order_id: {
                    "amount": str(d.amount),
                    "exposure_after": str(d.exposure_after),
                    "limit": str(d.limit),
                    **source,
                }
                for d in decisions
            },
        )
    out.skipped = len(order_ids) - out.orders
    return out


# ---------------------------------------------------------------------------- allocate


def allocate(
    conn: psycopg.Connection, order_ids: Sequence[str], ctx: RunContext, book: RuleBook
) -> StageResult:
    """CREDIT_OK → ALLOCATED with reservations, or ON_HOLD short_stock / substitution_needed.

    The inventory rows of every item the partition may need (substitutes included) are
    locked in key order for the transaction: parallel partitions serialise on shared items,
    never deadlock, and can never reserve more than is available (the store's CHECK backs
    this up)."""
    from orderflow.ai import inference
    from orderflow.domain.allocation import allocate as plan

    book = _in_force(conn, book)
    versions = book.tag("sourcing", "substitution", "routing")
    with db.transaction(conn):
        orders = _load(conn, order_ids, "CREDIT_OK", ctx)
        item_ids = {ln.item_id for o in orders for ln in o.lines if ln.item_id}
        items = repo.items(conn, item_ids)
        wanted = item_ids | {s for i in items.values() for s in i.substitutes}
        available = repo.lock_inventory(conn, wanted)
        customers = repo._customers(conn, {o.customer_id for o in orders if o.customer_id})
        places = repo.ship_tos_of(conn, [o.order_id for o in orders])
        today = repo.today(conn)
        # model 4 (#17): orders a short line's in-stock substitutes; the rules still decide
        ranker = inference.substitute_ranker(conn, orders, customers, items, book)
        allocations = plan(
            orders,
            customers,
            items,
            {oid: p[0] for oid, p in places.items()},
            available,
            book.sourcing,
            book.substitution,
            today,
            ranker,
        )
        by_id = {a.order_id: a for a in allocations}
        order_of = {o.order_id: o for o in orders}
        reservations, lines = [], []
        for a in allocations:
            if a.hold:
                continue
            reservations += [
                (a.order_id, r.line_no, r.item_id, r.dc_id, r.quantity, r.is_substitute)
                for r in a.reservations
            ]
            subs = {s["line_no"]: s["substitute_item_id"] for s in a.substitutions}
            backs = {b["line_no"]: Decimal(b["quantity"]) for b in a.backorders}
            for ln in order_of[a.order_id].lines:
                status = (
                    "BACKORDERED"
                    if ln.line_no in backs
                    else "SUBSTITUTED"
                    if ln.line_no in subs
                    else "ALLOCATED"
                )
                lines.append(
                    (status, subs.get(ln.line_no), backs.get(ln.line_no, 0), a.order_id, ln.line_no)
                )
        repo.reserve(conn, reservations, versions)
        repo.mark_lines(conn, lines)
        repo.set_order_fields(
            conn, "priority", {a.order_id: round(a.priority, 3) for a in allocations}
        )
        out = _decide(
            conn,
            "allocate",
            orders,
            {a.order_id: [a.hold] for a in allocations if a.hold},
            "ALLOCATED",
            ctx,
            book,
            versions,
            details={
                a.order_id: {
                    "dcs": a.dcs,
                    "substitutions": a.substitutions,
                    "backorders": a.backorders,
                    "priority": round(a.priority, 3),
                }
                for a in allocations
                if not a.hold
            }
            | {oid: {} for oid in by_id if by_id[oid].hold},
        )
        inference.record_substitutes(conn, ranker, allocations, book)
    out.skipped = len(order_ids) - out.orders
    return out


# ---------------------------------------------------------------------------- plan


def plan_through(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    ctx: RunContext,
    book: RuleBook,
    tax,
    screening,
) -> StageResult:
    """:func:`plan` asking the tax engine and screening service through their hooks
    (``TaxHook``, ``ScreeningHook``): one batch request each where the service has one."""
    return plan(
        conn,
        order_ids,
        ctx,
        book,
        tax.quote,
        screening.check,
        tax_batch=tax.quote_many,
        screening_batch=screening.check_many,
    )


def plan(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    ctx: RunContext,
    book: RuleBook,
    tax_service: Callable[[dict], dict] | None,
    screening_service: Callable[[str, str], dict] | None,
    *,
    tax_batch: Callable[[list[dict]], list[dict] | None] | None = None,
    screening_batch: Callable[[list[tuple[str, str]]], list[dict] | None] | None = None,
) -> StageResult:
    """ALLOCATED → READY with shipments (carrier, service, rate) and tax, or ON_HOLD
    compliance_review / no_carrier_service.

    Before the transaction, every distinct party of the partition is screened once
    (``screening_service(name, country)``) and one tax quote is asked per customer and
    jurisdiction (``tax_service(request)``) — each all at once through ``screening_batch`` /
    ``tax_batch`` (``ScreeningHook.check_many`` / ``TaxHook.quote_many``: the answers in the
    order asked) when given and the service has a batch endpoint (they return None
    otherwise: then one call each, concurrently)."""
    from orderflow.ai import inference
    from orderflow.domain.planning import plan_shipments, screening_hold

    book = _in_force(conn, book)
    versions = book.tag("carrier", "routing")
    # what the services are asked about, before the transaction (the orders themselves are
    # loaded once, in it)
    amounts = repo.line_amounts(conn, order_ids, "ALLOCATED", ctx.claimed_by)
    places = repo.ship_tos_of(conn, list(amounts))
    # Screening: every distinct party (sold-to and ship-to) once per partition.
    screened: dict[tuple[str, str], dict] = {}
    if screening_service is not None:
        parties: dict[tuple[str, str], None] = {}
        for _, _, st_name, country, cust_name in places.values():
            for name in (cust_name, st_name):
                if name:
                    parties.setdefault((name, country or "US"))
        asked = list(parties)
        got = screening_batch(asked) if screening_batch is not None and asked else None
        if got is None:  # no batch endpoint: one call per party
            got = _concurrently(screening_service, asked)
        screened = dict(zip(asked, got, strict=True))
    reservations = repo.held_reservations(conn, list(amounts))
    items = repo.items(conn, {r[2] for rs in reservations.values() for r in rs})
    # Tax: one quote per customer and jurisdiction for all its lines in the partition.
    taxes: dict[str, Decimal] = defaultdict(Decimal)
    if tax_service is not None:
        by_region: dict[tuple[str, str, str], list[tuple[str, Decimal]]] = defaultdict(list)
        for order_id, (customer_id, values) in amounts.items():
            region, _, _, country, _ = places.get(order_id, (None,) * 5)
            key = (customer_id, region or "", country or "US")
            by_region[key].extend((order_id, v) for v in values)
        quotes = [
            {
                "customer_id": customer_id,
                "region": region,
                "country": country,
                "lines": [
                    {"line_no": i + 1, "amount": float(a)} for i, (_, a) in enumerate(amounts)
                ],
            }
            for (customer_id, region, country), amounts in by_region.items()
        ]
        answers = tax_batch(quotes) if tax_batch is not None and quotes else None
        if answers is None:  # no batch endpoint: one call per quote
            answers = _concurrently(tax_service, [(q,) for q in quotes])
        for amounts, answer in zip(by_region.values(), answers, strict=True):
            for (oid, _), taxed in zip(amounts, answer["lines"], strict=True):
                taxes[oid] += Decimal(str(taxed["tax"]))
    with db.transaction(conn):
        orders = _load(conn, order_ids, "ALLOCATED", ctx)
        services = repo.carrier_services(conn)
        today = repo.today(conn)
        causes = repo.delay_causes(conn, [o.order_id for o in orders])
        rv = _next_releases(conn, [o.order_id for o in orders])
        holds: dict[str, list[Hold]] = {}
        shipments, details = [], {}
        for o in orders:
            region, zone, st_name, country, cust_name = places.get(o.order_id, (None,) * 5)
            cleared = "compliance_review" in o.approvals  # compliance reviewed and released it
            found = [
                h
                for party, name in (("customer", cust_name), ("ship-to", st_name))
                if not cleared
                if name
                and (
                    h := screening_hold(
                        f"{party} {name!r}", screened.get((name, country or "US"), {})
                    )
                )
            ]
            by_dc: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
            for _, _, item_id, dc_id, qty, _ in reservations.get(o.order_id, []):
                by_dc[dc_id].append((item_id, qty))
            p = plan_shipments(
                o.order_id,
                o.customer_id,
                by_dc,
                items,
                zone,
                o.requested_ship_date,
                o.requested_delivery_date,
                today,
                services,
                book.carrier,
                arrived=o.received_at.date(),
            )
            if p.hold:
                found.append(p.hold)
            if found:
                holds[o.order_id] = found
                continue
            details[o.order_id] = {
                "shipments": [
                    {
                        "dc": s.dc_id,
                        "carrier": s.carrier_id,
                        "service": s.service_code,
                        "rate": str(s.rate),
                        "promise_met": s.promise_met,
                    }
                    for s in p.shipments
                ],
                "tax": str(taxes.get(o.order_id, Decimal("0"))),
            }
            shipments += [
                {
                    "shipment_id": f"{o.order_id}:{s.dc_id}:r{rv[o.order_id]}",
                    "order_id": o.order_id,
                    "dc_id": s.dc_id,
                    "release_version": rv[o.order_id],
                    "carrier_id": s.carrier_id,
                    "service_code": s.service_code,
                    "mode": s.mode,
                    "weight_kg": s.weight_kg,
                    "hazmat": s.hazmat,
                    "freight_rate": s.rate,
                    "ship_date": s.ship_date,
                    "promise_met": s.promise_met,
                    "promised_date": s.promised_date,
                    "rule_set_version": versions,
                    "baseline_service": s.baseline_service,
                    "expedite_cost": s.expedite_cost,
                    "expedite_cause": causes.get(o.order_id, "late_release")
                    if s.expedite_cost > 0
                    else None,
                }
                for s in p.shipments
            ]
        repo.save_shipments(conn, shipments)
        repo.set_order_fields(
            conn, "tax_amount", {oid: taxes.get(oid, Decimal("0")) for oid in details}
        )
        # Decision support (orderflow.ai, #17): the risk that a planned order misses its
        # promised date — a flag on its event and, by the ai rules, the customer told early.
        flags = inference.after_plan(conn, sorted(details), book)
        details = _merge(details, flags)
        out = _decide(conn, "plan", orders, holds, "READY", ctx, book, versions, details)
    out.skipped = len(order_ids) - out.orders
    return out


def _next_releases(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, int]:
    """The release version a (re-)release of each order will carry."""
    return repo.next_releases(conn, order_ids)


# ---------------------------------------------------------------------------- release


def release(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    ctx: RunContext,
    book: RuleBook,
    *,
    wms_conn_id: str = "wms_default",
    edi_conn_id: str = "edi_default",
    carrier_conn_id: str = "carrier_default",
    capacity: dict | None = None,
) -> StageResult:
    """READY → RELEASED: one WMS release and one carrier tender (``orderflow.tendering``) per
    shipment and, for EDI customers, an 855, queued
    in the outbox under keys per (order, DC, release version) in the same transaction as the
    status change — a rerun finds the order RELEASED and queues nothing; a duplicate key is
    refused by the outbox; the WMS answers a repeated key with its first answer.

    ``capacity`` (DC → ``orderflow.domain.sequencing.Capacity``: the WMS's current pick wave)
    lets capacity-aware sequencing (``orderflow.ai.sequencing``, when the ``ai`` rules enable
    ``release_sequence``) release only what the wave has room for, best first; the others
    stay READY for a later run. Without it, or switched off, everything is released."""
    from orderflow import outbound, tendering
    from orderflow.ai import sequencing
    from orderflow.store import outbox

    book = _in_force(conn, book)
    versions = book.tag("routing")
    with db.transaction(conn):
        orders = _load(conn, order_ids, "READY", ctx)
        ids = [o.order_id for o in orders]
        reservations = repo.held_reservations(conn, ids)
        shipments = _planned_shipments(conn, ids)
        rv = _next_releases(conn, ids)
        if capacity:
            plan = sequencing.plan_release(
                conn, orders, _picks(reservations, shipments, rv), capacity, book
            )
            if plan is not None:
                go = set(plan.release)
                orders = [o for o in orders if o.order_id in go]
                ids = [o.order_id for o in orders]
        details = {}
        tenders: list[str] = []
        releases: list[dict[str, Any]] = []  # the WMS releases, queued in one statement
        acknowledgements: list[dict[str, Any]] = []  # the EDI customers' 855s, likewise
        # what the 855s are built from, read for all the EDI orders at once
        edi = [o.order_id for o in orders if o.channel == "edi" and o.partner_id]
        canonicals, acks = repo.canonicals_of(conn, edi), repo.ack_lines_of(conn, edi)
        for o in orders:
            by_dc: dict[str, list[dict]] = defaultdict(list)
            for rid, line_no, item_id, dc_id, qty, sub in reservations.get(o.order_id, []):
                by_dc[dc_id].append(
                    {
                        "line_no": line_no,
                        "item_id": item_id,
                        "quantity": float(qty),
                        "substitute": sub,
                        "reservation_ref": rid,
                    }
                )
            for s in shipments.get(o.order_id, []):
                if s["release_version"] != rv[o.order_id]:
                    continue
                key = f"wms_release:{o.order_id}:{s['dc_id']}:r{rv[o.order_id]}"
                releases.append(
                    dict(
                        idempotency_key=key,
                        action="wms_release",
                        target_conn_id=wms_conn_id,
                        order_id=o.order_id,
                        version=rv[o.order_id],
                        payload={
                            "order_id": o.order_id,
                            "dc_id": s["dc_id"],
                            "shipment_id": s["shipment_id"],
                            "carrier_id": s["carrier_id"],
                            "service_code": s["service_code"],
                            "ship_date": s["ship_date"].isoformat(),
                            "lines": by_dc.get(s["dc_id"], []),
                        },
                    )
                )
                tenders.append(s["shipment_id"])
            if o.channel == "edi" and o.partner_id:
                acknowledgements.append(
                    _855(
                        conn,
                        o,
                        rv[o.order_id],
                        edi_conn_id,
                        canonical=canonicals.get(o.order_id),
                        acks=acks.get(o.order_id, []),
                    )
                )
            details[o.order_id] = {"release_version": rv[o.order_id]}
        outbound.queue_x12_many(conn, acknowledgements)  # the 855s, in order, queued first
        outbox.enqueue_many(conn, releases)
        # What each shipment carries (the WMS reports picked/shipped against these lines).
        repo.record_shipment_lines(conn, ids)
        with outbox.deferred(conn):  # the notices' e-mails and webhooks in one statement
            _queue_release_notices(conn, ids, rv, book)
        tendering.queue(conn, tenders, carrier_conn_id=carrier_conn_id)
        repo.release_reservations(conn, ids)
        repo.release_shipments(conn, ids)
        repo.set_order_fields(conn, "release_version", rv)
        out = _decide(conn, "release", orders, {}, "RELEASED", ctx, book, versions, details)
    out.skipped = len(order_ids) - out.orders
    return out


def _picks(reservations, shipments, rv) -> dict[str, dict[str, int]]:
    """Order → DC → picks (reserved lines) its release there takes."""
    out: dict[str, dict[str, int]] = {}
    for oid, ships in shipments.items():
        dcs = {s["dc_id"] for s in ships if s["release_version"] == rv.get(oid)}
        lines: dict[str, int] = defaultdict(int)
        for _rid, _line_no, _item, dc_id, _qty, _sub in reservations.get(oid, []):
            if dc_id in dcs:
                lines[dc_id] += 1
        out[oid] = {dc: max(lines.get(dc, 0), 1) for dc in dcs}
    return out


def _queue_release_notices(conn, ids: list[str], rv: dict[str, int], book: RuleBook) -> None:
    """Order confirmed (and, when lines wait for stock, backordered) — by email and portal
    webhook as the fulfilment rules say; EDI customers get the 855 instead."""
    from orderflow import notifications

    if not ids:
        return
    lines: dict[str, list[dict]] = defaultdict(list)
    for order_id, line_no, item_id, qty, uom, status, back in repo.notice_lines(conn, ids):
        lines[order_id].append(
            {
                "line_no": line_no,
                "item_id": item_id,
                "quantity": qty,
                "uom": uom,
                "status": status.lower(),
                "backordered": back,
            }
        )
    ship_dates = repo.planned_ship_dates(conn, ids)
    rules = book.fulfilment.notifications
    for order_id, contact in notifications.order_contacts(conn, ids).items():
        ref = f"{order_id}:r{rv[order_id]}"
        ctx = {"lines": lines[order_id], "ship_date": str(ship_dates.get(order_id) or "")}
        notifications.queue(
            conn, rules, event="order_confirmed", ref=ref, order=contact, context=ctx
        )
        back = [ln for ln in lines[order_id] if ln["backordered"] and ln["backordered"] > 0]
        if back:
            notifications.queue(
                conn,
                rules,
                event="order_backordered",
                ref=ref,
                order=contact,
                context={"lines": back},
            )


def _planned_shipments(conn, ids) -> dict[str, list[dict]]:
    return repo.planned_shipments(conn, ids)


def _855(
    conn,
    order: OrderView,
    version: int,
    edi_conn_id: str,
    *,
    canonical: dict | None = None,
    acks: list[tuple] | None = None,
) -> dict[str, Any]:
    """The purchase-order acknowledgement of an EDI customer's order, per release version
    (``canonical`` and ``acks``: the order's canonical JSON and :func:`repo.ack_lines`, when
    the caller read them already), as ``outbound.queue_x12``'s keyword arguments."""
    from orderflow.channels.x12.po855 import AckLine, build_855
    from orderflow.domain.models import Order

    lines = acks

    def build(env: dict) -> str:
        canonical_order = Order.model_validate(
            canonical if canonical is not None else repo.canonical_of(conn, order.order_id)
        )
        acks = []
        for status, sub, back, line_no, qty, uom, price, contract_price in (
            lines if lines is not None else repo.ack_lines(conn, order.order_id)
        ):
            charge = contract_price if contract_price is not None else price
            if status == "BACKORDERED":
                acks.append(AckLine(line_no, "backordered", back or qty, uom, charge))
            elif status == "SUBSTITUTED":
                acks.append(AckLine(line_no, "substituted", qty, uom, charge, item_id=sub))
            else:
                acks.append(AckLine(line_no, "accepted", qty, uom, charge))
        return build_855(canonical_order, acks, **env)

    return dict(
        partner_id=order.partner_id,
        kind="855",
        functional_id="PR",
        key=f"edi_855:{order.order_id}:r{version}",
        build=build,
        order_id=order.order_id,
        version=version,
        conn_id=edi_conn_id,
    )


# ---------------------------------------------------------------------------- holds


def release_fixed_master_data_holds(conn: psycopg.Connection, ctx: RunContext) -> int:
    """Holds the master data itself resolves: master-data-quality exceptions whose entities
    now pass, and unknown customers that are on file now. Those exceptions are resolved
    (auto_resolved); orders with nothing else open go back to validation."""
    with db.transaction(conn):
        rows = repo.resolve_fixed_master_data(conn, ctx.actor)
        # A customer that was unknown (e.g. an EDI partner not yet synced) and is known now.
        rows += repo.resolve_known_customers(conn, ctx.actor)
        touched = sorted({r[0] for r in rows})
        if not touched:
            return 0
        free = repo.held_without_exceptions(conn, touched)
        moves = [
            transition(
                oid,
                "ON_HOLD",
                "RECEIVED",
                actor_type="system",
                actor_id=ctx.actor,
                reason_codes=("master_data_fixed",),
                details={"stage": "validate", "auto_resolved": "master_data_quality"},
            )
            for oid in free
        ]
        events.append(conn, moves, **ctx.keys())
    return len(free)


def fail_transient(
    conn: psycopg.Connection,
    stage: str,
    order_ids: Sequence[str],
    from_status: str,
    ctx: RunContext,
    book: RuleBook,
    error: Exception,
) -> StageResult:
    """The stage's external calls still fail after every retry: hold the partition's orders
    ``integration_failure`` (the exception desk retries them) and keep a dead letter."""
    with db.transaction(conn):
        orders = _load(conn, order_ids, from_status, ctx)
        hold = Hold(
            "integration_failure",
            f"{stage}: {error} — retried with backoff and still failing; it is retried "
            "automatically, or reprocess the order once the system is back",
            details={"stage": stage, "error": str(error)},
        )
        out = _decide(
            conn,
            stage,
            orders,
            {o.order_id: [hold] for o in orders},
            "ON_HOLD",
            ctx,
            book,
            book.tag("routing"),
        )
        repo.dead_letter_partition(
            conn,
            f"{stage}:{ctx.run_id}:{ctx.map_index}",
            {"stage": stage, "order_ids": [o.order_id for o in orders]},
            str(error),
        )
    return out
