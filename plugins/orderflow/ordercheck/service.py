"""The order check: what the batch stages would decide for a draft order, now, in one call.

The same pure domain functions the stages call (``validate``, ``decide``, ``allocate``,
``plan_shipments``, ``screening_hold``), on the same rows the stages' loads read, turned into
the same domain objects by the loads' own row builders — read by ONE statement
(:mod:`orderflow.store.ordercheck`): a consistent snapshot, one round trip, nothing written,
no stock reserved, no row locked (it reads what ``lock_inventory`` locks, without locking).
A rule type from a plugin with its own ``load_context`` is read by its own queries, and then
all of it in one read-only, repeatable-read transaction.

Where the batch stops at the first stage that holds an order, the check goes on through the
stages whose inputs still make sense (a known customer, every line on an item), so the
answer says which holds the batch would open (``first_hold_stage``) and what a person
resolving them would run into next.

External services the stages call (credit service, restricted-party screening, tax) are
called only when the caller passes them (``credit_service``, ``screening_service``, as the
stage operators pass their hooks); otherwise the answer lists them under ``deferred``: the
batch still asks them when the order is submitted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from orderflow.domain.reference import Hold, LineView, OrderView
from orderflow.ordercheck.models import (
    CheckAnswer,
    CreditAnswer,
    Deferred,
    DelayRiskAnswer,
    DraftLine,
    DraftOrder,
    HoldAnswer,
    LineAnswer,
    Placement,
    ProductId,
    RankedSubstitute,
    ShipmentAnswer,
)

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

ZERO = Decimal("0")
#: order id of a draft (not in the store: nothing is left out of its duplicate search)
DRAFT_ID = "(draft)"
STAGES = ("validate", "credit", "allocate", "plan")


def to_view(draft: DraftOrder, received_at: datetime) -> OrderView:
    """The draft as the stages see an order (status RECEIVED, nothing mapped yet)."""
    return OrderView(
        order_id=draft.order_id or DRAFT_ID,
        status="RECEIVED",
        channel="check",
        customer_id=draft.customer_id,
        ship_to_id=draft.ship_to_id,
        po_number=draft.po_number,  # type: ignore[arg-type]  # None never equals a stored PO
        po_date=draft.po_date,
        received_at=received_at,
        requested_ship_date=draft.requested_ship_date,
        requested_delivery_date=draft.requested_delivery_date,
        currency=draft.currency,
        ship_to_address=dict(draft.ship_to_address),
        payment_terms=draft.payment_terms,
        lines=tuple(
            LineView(
                line_no=ln.line_no or n,
                quantity=ln.quantity,
                uom=ln.uom,
                unit_price=ln.unit_price,
                item_id=ln.item_id,
                customer_part_number=ln.customer_part_number,
                product_ids=tuple((p.qualifier, p.value) for p in ln.product_ids),
            )
            for n, ln in enumerate(draft.lines, start=1)
        ),
    )


def draft_of(order: OrderView) -> DraftOrder:
    """A stored order as the draft a portal would send (re-checking it: its own id, so it is
    left out of its own duplicate search)."""
    return DraftOrder(
        customer_id=order.customer_id or "",
        ship_to_id=order.ship_to_id,
        ship_to_address=order.ship_to_address,
        po_number=order.po_number,
        po_date=order.po_date,
        requested_ship_date=order.requested_ship_date,
        requested_delivery_date=order.requested_delivery_date,
        currency=order.currency,
        payment_terms=order.payment_terms,
        order_id=order.order_id,
        lines=[
            DraftLine(
                line_no=ln.line_no,
                item_id=ln.item_id,
                customer_part_number=ln.customer_part_number,
                product_ids=[ProductId(qualifier=q, value=v) for q, v in ln.product_ids],
                quantity=ln.quantity,
                uom=ln.uom,
                unit_price=ln.unit_price,
            )
            for ln in order.lines
        ],
    )


def check(
    conn: psycopg.Connection,
    draft: DraftOrder,
    book: RuleBook,
    *,
    received_at: datetime | None = None,
    credit_service: Callable[[str, float], dict] | None = None,
    screening_service: Callable[[str, str], dict] | None = None,
) -> CheckAnswer:
    """Decide ``draft`` as the stages would, against the store as it is now.

    :param book: the rule book in force (``rules.load(conn=...)``).
    :param received_at: when the order counts as received (default now): the day contracts
        are priced on when it has no PO date, and the duplicate window's reference.
    :param credit_service: ``CreditHook.check`` to ask the credit service (else deferred).
    :param screening_service: ``ScreeningHook.check`` to screen the parties (else deferred).
    """
    from psycopg import IsolationLevel
    from psycopg.pq import TransactionStatus

    now = received_at or datetime.now(UTC)
    order = to_view(draft, now)
    extra = _extra_contexts(book)
    outermost = conn.info.transaction_status == TransactionStatus.IDLE
    if outermost and conn.autocommit and not extra:
        # every read is one statement (orderflow.store.ordercheck): its own snapshot, no
        # transaction to open and close
        return _check(conn, order, book, now, credit_service, screening_service, extra)
    # a connection set to begin repeatable-read, read-only transactions (the API's pool)
    # starts them so in its BEGIN: no SET TRANSACTION round trip
    preset = conn.read_only is True and conn.isolation_level == IsolationLevel.REPEATABLE_READ
    with conn.transaction():
        if outermost and not preset:  # in a caller's transaction (a savepoint) its level stays
            from orderflow.store.ordercheck import read_only_snapshot

            read_only_snapshot(conn)
        return _check(conn, order, book, now, credit_service, screening_service, extra)


def _extra_contexts(book: RuleBook) -> list:
    """The applied rule types whose ``load_context`` the check's one statement does not read
    (a plugin's): (rule type, rule set), read with their own queries."""
    from orderflow.rules import registry
    from orderflow.store.ordercheck import CONTEXTS

    return [
        (rt, rs)
        for rt, rs in registry.applied(book, core=True)
        if rt.load_context is not None and rt.name not in CONTEXTS
    ]


#: per rule book (they are immutable): its ``rule_set_version`` tag; a few books at a time
_TAGS: dict[int, tuple[RuleBook, str]] = {}
TAGGED_SETS = ("validation", "pricing", "credit", "sourcing", "substitution", "carrier", "routing")


def rule_set_version(book: RuleBook) -> str:
    """``book.tag(...)`` of the sets the check decides with, computed once per book (the tag
    hashes each set's canonical content: too dear to redo for every answer)."""
    hit = _TAGS.get(id(book))
    if hit is not None and hit[0] is book:
        return hit[1]
    tag = book.tag(*TAGGED_SETS)
    if len(_TAGS) >= 8:
        _TAGS.clear()
    _TAGS[id(book)] = (book, tag)  # the book held: its id is not reused while it is here
    return tag


def _check(conn, order, book, now, credit_service, screening_service, extra) -> CheckAnswer:
    from orderflow.domain.allocation import allocate
    from orderflow.domain.credit import decide
    from orderflow.domain.planning import plan_shipments, screening_hold
    from orderflow.domain.validation import resolve_item, validate
    from orderflow.rules import registry
    from orderflow.store import ordercheck as reads

    holds: list[tuple[str, Hold]] = []
    evaluated, not_evaluated, deferred = ["validate"], [], []

    # what the stages load for this order (load_reference, the rule contexts, credit
    # accounts and exposure, stock, carrier services), in one statement
    inputs = reads.read(
        conn,
        order,
        duplicate_window_hours=book.validation.duplicate_window_hours,
        open_order_statuses=book.credit.open_order_statuses,
    )
    ref = inputs.ref
    contexts = dict(inputs.contexts)
    for rt, rs in extra:
        contexts[rt.name] = rt.load_context(conn, [order], rs)
    # the rule types with hooks, as the stage calls them (the CRM's quotes and agreements)
    checks = registry.checks(book, contexts, core=True)
    [validated] = validate([order], ref, book.validation, book.pricing, checks)
    holds += [("validate", h) for h in validated.holds]
    vo = validated.order
    cid = vo.customer_id or ""
    cust = ref.customers.get(cid)
    unmapped = [ln.line_no for ln in vo.lines if not ln.item_id or ln.item_id not in ref.items]
    if cust is None or not cust.active:
        why = f"customer {cid} is not on file (or not active)"
    elif unmapped:
        why = f"line(s) {', '.join(map(str, unmapped))} match no item"
    else:
        why = None
    if why:
        not_evaluated = [Deferred(check=s, reason=why) for s in STAGES[1:]]

    credit = None
    allocation = None
    plan = None
    ranked = None
    delay_risk = None
    available: dict[tuple[str, str], Decimal] = {}
    if why is None:
        # ------------------------------------------------------------------ credit
        evaluated.append("credit")
        # read for the draft's customer: validation keeps an order's customer
        accounts, exposure = inputs.accounts, inputs.exposure
        answers: dict[str, dict] = {}
        if book.credit.use_credit_service:
            if credit_service is not None:
                answers[cid] = credit_service(cid, float(vo.amount()))
            else:
                deferred.append(
                    Deferred(
                        check="credit_service",
                        reason="the credit service's decline / refer is asked when the order "
                        "is processed; this answer uses the synced AR and open orders",
                    )
                )
        [d] = decide([vo], ref.customers, accounts, exposure, answers, book.credit)
        if d.hold:
            holds.append(("credit", d.hold))
        acct = accounts.get(cid)
        open_ar = acct.open_ar if acct else ZERO
        open_orders = exposure.get(cid, ZERO)
        credit = CreditAnswer(
            limit=d.limit,
            open_ar=open_ar,
            open_orders=open_orders,
            headroom=d.limit - open_ar - open_orders,
            order_amount=d.amount,
            headroom_after=d.limit - d.exposure_after,
            decision="hold" if d.hold else "approve",
            hold_category=d.hold.category if d.hold else None,
        )

        # ------------------------------------------------------------------ allocate
        evaluated.append("allocate")
        items = ref.items
        wanted = {ln.item_id for ln in vo.lines if ln.item_id} | {
            s for i in items.values() for s in i.substitutes
        }
        available = inputs.stock(wanted)  # what inventory_snapshot(conn, wanted) reads
        today = inputs.today
        ship_to = ref.ship_tos.get(vo.ship_to_id or "")
        ranker = LazyRanker(conn, ref.customers, items, book)
        [allocation] = allocate(
            [vo],
            ref.customers,
            items,
            {vo.order_id: ship_to.region if ship_to else None},
            dict(available),  # consumed as it allocates
            book.sourcing,
            book.substitution,
            today,
            ranker,
        )
        ranked = ranker.ranked()
        if allocation.hold:
            holds.append(("allocate", allocation.hold))
            not_evaluated.append(
                Deferred(check="plan", reason="nothing is allocated to plan shipments for")
            )
        else:
            # -------------------------------------------------------------- plan
            evaluated.append("plan")
            found: list[Hold] = []
            if screening_service is not None:
                country = (ship_to.country if ship_to else None) or "US"
                st_name = ship_to.name if ship_to else None
                for party, name in (("customer", cust.name), ("ship-to", st_name)):
                    if name and (
                        h := screening_hold(f"{party} {name!r}", screening_service(name, country))
                    ):
                        found.append(h)
            else:
                deferred.append(
                    Deferred(
                        check="screening",
                        reason="restricted-party screening runs when the order is planned",
                    )
                )
            deferred.append(
                Deferred(check="tax", reason="the tax engine quotes when the order is planned")
            )
            by_dc: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
            for r in allocation.reservations:
                by_dc[r.dc_id].append((r.item_id, r.quantity))
            plan = plan_shipments(
                vo.order_id,
                vo.customer_id,
                by_dc,
                items,
                ship_to.zone if ship_to else None,
                vo.requested_ship_date,
                vo.requested_delivery_date,
                today,
                inputs.carriers,
                book.carrier,
                arrived=now.date(),
            )
            if plan.hold:
                found.append(plan.hold)
            holds += [("plan", h) for h in found]
            if not plan.hold:
                delay_risk = _delay_risk(conn, vo, plan, ship_to, now, book)

    answer = _answer(
        order, vo, ref, book, now, holds, credit, allocation, plan, available, resolve_item
    )
    if ranked is not None:
        version, by_line = ranked
        lines = [
            ln.model_copy(
                update={
                    "substitute_ranking": [RankedSubstitute(**e) for e in by_line[ln.line_no]],
                    "substitute_model": f"{SUBSTITUTES}@{version}",
                }
            )
            if ln.line_no in by_line
            else ln
            for ln in answer.lines
        ]
    else:
        lines = answer.lines
    return answer.model_copy(
        update={
            "evaluated": evaluated,
            "not_evaluated": not_evaluated,
            "deferred": deferred,
            "lines": lines,
            "delay_risk": delay_risk,
        }
    )


SUBSTITUTES = "substitute_rank"
#: what the check takes for what planning knows only when it runs
DELAY_ASSUMES = (
    "planned now, at the database's clock (hours to the DC's cutoff, after-cutoff), received "
    "at as_of (days waiting), and the store's open shipments, DC throughput and lane history "
    "as they are now; the batch scores the plan when the planning stage runs"
)


class LazyRanker:
    """The allocation's substitute ranker as the batch builds it
    (``orderflow.ai.inference.substitute_ranker``: the same kill switch, active version,
    acceptance history and item facts), built only when allocation first has two or more
    in-stock candidates to order — most answers never need it, and then cost nothing."""

    def __init__(self, conn, customers, items, book) -> None:
        self.conn, self.customers, self.items, self.book = conn, customers, items, book
        self.ranker = None
        self.built = False

    def __call__(self, order, line_no, item_id, candidates, at_preferred):
        if len(candidates) < 2:
            return list(candidates)  # what the ranker answers too: nothing to order
        if not self.built:
            from orderflow.ai import inference

            self.built = True
            self.ranker = inference.substitute_ranker(
                self.conn, [order], self.customers, self.items, self.book
            )
        if self.ranker is None:
            return list(candidates)
        from orderflow.ai.models import one_thread

        with one_thread():
            return self.ranker(order, line_no, item_id, candidates, at_preferred)

    def ranked(self) -> tuple[str, dict[int, list[dict]]] | None:
        """(model version, line → its ranking as the decision's evidence), or None."""
        if self.ranker is None or not self.ranker.ranked:
            return None
        from orderflow.ai import substitutes as sb

        return self.ranker.version, {
            line_no: [
                {k: e[k] for k in ("substitute_item_id", "rank", "p_accept", "catalogue_rank")}
                for e in sb.evidence(r)
            ]
            for (_oid, line_no), r in self.ranker.ranked.items()
        }


def _delay_risk(conn, vo, plan, ship_to, now, book) -> DelayRiskAnswer | None:
    """The planning stage's delay-risk score of this plan (``orderflow.ai.delay``)."""
    from orderflow.ai import delay

    risk = delay.risk_of_plan(
        conn, vo.order_id, plan.shipments, ship_to.zone if ship_to else None, now, book
    )
    if risk is None:
        return None
    return DelayRiskAnswer(
        model=f"{delay.MODEL_NAME}@{risk.version}",
        model_version=risk.version,
        probability=round(risk.probability, 4),
        flagged=risk.flagged,
        threshold=risk.threshold,
        customer_notice=risk.customer_notice,
        assumes=DELAY_ASSUMES,
    )


def _answer(order, vo, ref, book, now, holds, credit, allocation, plan, available, resolve):
    """The answer from the stages' decisions (per line, credit, shipments, holds)."""
    from orderflow.ui.pages import add_business_days

    shipments = []
    promised_by_dc = {}
    if plan is not None and not plan.hold:
        for s in plan.shipments:
            promised = add_business_days(s.ship_date, s.transit_days)
            promised_by_dc[s.dc_id] = (s.ship_date, promised)
            shipments.append(
                ShipmentAnswer(
                    dc_id=s.dc_id,
                    carrier_id=s.carrier_id,
                    service_code=s.service_code,
                    ship_date=s.ship_date,
                    transit_days=s.transit_days,
                    promised_date=promised,
                    promise_met=s.promise_met,
                    freight=s.rate,
                )
            )
    sent = {ln.line_no: ln for ln in order.lines}
    short = {}
    proposals = {}
    if allocation is not None and allocation.hold:
        short = {s["line_no"]: s for s in allocation.hold.details.get("short", [])}
        proposals = {p["line_no"]: p for p in allocation.hold.details.get("proposals", [])}
    lines = []
    for ln in vo.lines:
        charge = ln.contract_price if ln.contract_price is not None else ln.unit_price
        source = (
            "contract"
            if ln.contract_id
            else "list"
            if ln.contract_price is not None
            else "as_sent"
            if ln.unit_price is not None
            else "none"
        )
        have = None
        if ln.item_id and available:
            have = sum((q for (i, _), q in available.items() if i == ln.item_id), ZERO)
        placements, status, sub, back = [], "not_checked", None, ZERO
        if allocation is not None and not allocation.hold:
            for r in allocation.reservations:
                if r.line_no == ln.line_no:
                    ship, promised = promised_by_dc.get(r.dc_id, (None, None))
                    placements.append(
                        Placement(
                            dc_id=r.dc_id,
                            item_id=r.item_id,
                            quantity=r.quantity,
                            substitute=r.is_substitute,
                            ship_date=ship,
                            promised_date=promised,
                        )
                    )
            subs = {s["line_no"]: s["substitute_item_id"] for s in allocation.substitutions}
            backs = {b["line_no"]: Decimal(b["quantity"]) for b in allocation.backorders}
            if ln.line_no in backs:
                status, back = "backordered", backs[ln.line_no]
            elif ln.line_no in subs:
                status, sub = "substituted", subs[ln.line_no]
            elif len({p.dc_id for p in placements}) > 1:
                status = "split"
            elif placements:
                status = "allocated"
        elif ln.line_no in short:
            status = "short"
        if ln.line_no in proposals:
            sub = proposals[ln.line_no]["substitute_item_id"]
        dates = [p.promised_date for p in placements if p.promised_date]
        lines.append(
            LineAnswer(
                line_no=ln.line_no,
                item_id=ln.item_id,
                matched_by=resolve(order, sent[ln.line_no], ref)[1],
                quantity=ln.quantity,
                uom=ln.uom,
                unit_price=charge,
                price_source=source,
                contract_id=ln.contract_id,
                extended=(charge * ln.quantity) if charge is not None else None,
                available=have,
                status=status,
                substitute_item_id=sub,
                backordered=back,
                placements=placements,
                promised_date=max(dates) if dates else None,
            )
        )
    first = next((s for s in STAGES if any(st == s for st, _ in holds)), None)
    return CheckAnswer(
        customer_id=vo.customer_id or "",
        as_of=now,
        outcome="would_hold" if holds else "would_release",
        first_hold_stage=first,
        holds=[_hold(stage, h, book) for stage, h in holds],
        lines=lines,
        amount=vo.amount(),
        currency=vo.currency,
        credit=credit,
        shipments=shipments,
        promised_date=max((s.promised_date for s in shipments), default=None),
        rule_set_version=rule_set_version(book),
        evaluated=[],
    )


def _hold(stage: str, h: Hold, book: RuleBook) -> HoldAnswer:
    route = book.routing.route(h.category)
    return HoldAnswer(
        stage=stage,
        category=h.category,
        severity=route.severity,
        owner_role=route.owner_role,
        line_no=h.line_no,
        reason=h.reason,
    )
