"""Fulfilment: WMS milestones and carrier tracking → shipment and order state → 856, invoice
(ERP and 810) and customer notifications.

Two steps, each safe to rerun or kill at any point:

1. :func:`pull_feed` reads a feed from its persisted cursor and stores every event in
   ``fulfilment_event`` under its natural key, advancing the cursor in the same transaction
   as the rows — an event is never lost (the cursor only moves past stored events) and never
   stored twice (a re-delivered event has the same key).
2. :func:`apply_events` takes pending events in the order they happened, locked with SKIP
   LOCKED, and applies each in one transaction per batch with everything it causes: the
   shipment's state (forward only), the order's lifecycle events, the 856, the invoice and
   the notifications queued in the outbox under their keys. An event for an order OrderFlow
   does not know is quarantined (``fulfilment_event`` status and a dead letter) and can be
   replayed with :func:`replay_quarantined` after the fix.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orderflow.domain import fulfilment as domain
from orderflow.domain.lifecycle import transition
from orderflow.processing import RunContext
from orderflow.store import cursors, db, events
from orderflow.store import fulfilment as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

FEEDS = {"wms": "wms_milestones", "carrier": "carrier_tracking"}  # source → cursor name


@dataclass(frozen=True)
class Targets:
    """The Connections the queued side effects go to."""

    edi: str = "edi_default"
    erp: str = "erp_default"
    smtp: str = "smtp_default"
    portal: str = "portal_default"


# ------------------------------------------------------------------------------ pull
#: Two fulfilment runs may overlap (``fulfilment_events`` allows two, so that a task stuck in
#: one — its Celery message lost with a killed worker, requeued only after
#: ``task_queued_timeout`` — does not hold every customer notification behind it). What must
#: not run twice at once waits for the other run instead of failing:
#: a feed's reader (its cursor) ...
FEED_WAIT_S = 120.0
#: ... and the applier of events and the order advance: one at a time, so a shipment's events
#: apply in the order they happened (a shipped event applied before its pick would find no
#: picked quantities to check against) and two advances never move the same order.
APPLY_LOCK = "fulfilment:apply"
APPLY_WAIT_S = 300.0


def pull_feed(
    conn: psycopg.Connection,
    source: str,
    fetch: Callable[[int, int], dict],
    *,
    page_size: int = 500,
    max_pages: int = 200,
    run_id: str | None = None,
) -> dict[str, int]:
    """Read ``source``'s feed from its cursor: ``fetch(cursor, limit)`` returns a page
    ``{items, next_cursor}``. One transaction per page (rows + cursor).

    Continuity: each read starts one item early, at the last item already read, and checks
    it is still the event we stored there. A feed rewound behind our cursor (a restored or
    reset system) or whose history changed fails that check: nothing is read, the cursor
    stays, and an ``integration_failure`` exception says what was found and how to resync
    (:func:`resync_feed`). A later read that passes the check resolves it."""
    name = FEEDS[source]
    stats = {"pages": 0, "received": 0, "stored": 0, "duplicates": 0}
    # another run reading this feed now (two fulfilment runs may overlap): wait for it, then
    # read on from where it left the cursor
    with cursors.exclusive(conn, f"feed:{name}", wait_s=FEED_WAIT_S):
        value, last_key = cursors.get_with_key(conn, name)
        cursor = int(value or 0)
        overlap = bool(cursor and last_key)
        for _ in range(max_pages):
            start = cursor - 1 if overlap else cursor
            page = fetch(start, page_size)  # over HTTP, outside any transaction
            items = page.get("items") or []
            rows = [_event_row(source, e) for e in items]
            if overlap:
                if last_key not in {r["event_key"] for r in rows}:
                    with db.transaction(conn):
                        _feed_discontinuous(conn, source, name, cursor, last_key, rows)
                    stats["rewound"] = 1
                    break
                stats["received"] -= 1  # the item read last time, seen again
                stats["duplicates"] -= 1
                overlap = False
            last = max(rows, key=lambda r: r["feed_seq"] or 0) if rows else None
            if last is not None and last["feed_seq"] is None:
                last = rows[-1]  # no sequence numbers: the feed's own order
            with db.transaction(conn):
                new = repo.store_events(conn, rows)
                cursors.put(
                    conn,
                    name,
                    str(page["next_cursor"]),
                    run_id,
                    last_key=last["event_key"] if last else last_key,
                )
                if stats["pages"] == 0:
                    _feed_continuous(conn, name)
            stats["pages"] += 1
            stats["received"] += len(items)
            stats["stored"] += new
            stats["duplicates"] += len(items) - new
            cursor = int(page["next_cursor"])
            if not items or not page.get("has_more", len(items) >= page_size):
                break
    stats["cursor"] = cursor
    return stats


def _feed_discontinuous(conn, source: str, name: str, cursor: int, last_key: str, rows) -> None:
    from orderflow.store import exceptions

    system = "WMS milestone" if source == "wms" else "carrier tracking"
    found = (
        f"the feed now has no event at position {cursor} (it ends before our cursor)"
        if not rows
        else f"the event there is now {rows[0]['event_key']!r}, not {last_key!r}"
    )
    reason = (
        f"The {system} feed does not continue where we left it: our cursor is at {cursor:,} "
        f"and {found}. The system was probably restored or reset. Nothing was read. Check "
        f"with its owners, then resync: `orderflow fulfilment resync {source} --from 0` "
        "(events already stored are recognised by their keys and skipped)."
    )
    exceptions.open_routed(
        conn,
        category="integration_failure",
        reason=reason,
        entity=("feed", name),
        details={
            "kind": "feed_rewound",
            "cursor": cursor,
            "last_key": last_key,
            "found": rows[0]["event_key"] if rows else None,
        },
    )
    log.error("%s feed discontinuous at cursor %s: %s", source, cursor, found)


def feed_discontinuity_opened_at(conn: psycopg.Connection, source: str) -> datetime | None:
    """When the open "feed does not continue" exception of ``source``'s feed was opened (None:
    the feed reads on)."""
    return repo.feed_rewound_since(conn, FEEDS[source])


def _feed_continuous(conn, name: str) -> None:
    from orderflow.store import exceptions

    exceptions.resolve_entity(
        conn,
        category="integration_failure",
        entity=("feed", name),
        resolver="orderflow.fulfilment",
        note="the feed continues where we left it",
    )


def resync_feed(
    conn: psycopg.Connection, source: str, position: int, actor: str, reason: str
) -> None:
    """Move a feed's cursor (after a rewound feed, once its owners confirmed): the next read
    starts at ``position`` with no continuity check; events already stored are skipped by
    their natural keys. Audited."""
    name = FEEDS[source]
    with db.transaction(conn):
        before, last_key = cursors.get_with_key(conn, name)
        cursors.put(conn, name, str(position), f"resync by {actor}", last_key=None)
        _feed_continuous(conn, name)
        repo.audit_feed_resync(
            conn,
            actor,
            name,
            {"cursor": before, "last_key": last_key},
            {"cursor": str(position)},
            reason,
        )


def event_rows(source: str, events: Sequence[dict]) -> list[dict[str, Any]]:
    """Inbox rows for ``source``'s events as its feed serves them (polled or pushed): the
    same natural key either way, so an event stored by both counts once."""
    return [_event_row(source, e) for e in events]


def _event_row(source: str, e: dict) -> dict[str, Any]:
    return {
        "source": source,
        "event_key": domain.event_key(source, e),
        "feed_seq": e.get("seq"),
        "kind": domain.event_kind(source, e),
        "order_id": e.get("order_id"),
        "release_id": e.get("release_id"),
        "tracking_number": e.get("tracking_number"),
        "occurred_at": e.get("occurred_at"),
        "payload": e,
    }


# ------------------------------------------------------------------------------ apply
@dataclass
class ApplyResult:
    events: int = 0
    applied: int = 0
    no_op: int = 0
    quarantined: int = 0
    waiting: int = 0  # known order, release not linked yet: tried again next batch
    shipped: int = 0
    invoices: int = 0
    invoices_withheld: int = 0
    order_moves: dict[str, int] = field(default_factory=dict)

    def as_xcom(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply_events(
    conn: psycopg.Connection,
    ctx: RunContext,
    book: RuleBook,
    *,
    batch: int = 1000,
    max_events: int = 50_000,
    targets: Targets = Targets(),
    now: datetime | None = None,
) -> ApplyResult:
    """Apply pending events, a batch per transaction, until none is left (or ``max_events``).
    One applier at a time (:data:`APPLY_LOCK`): events apply in the order they happened."""
    out = ApplyResult()
    tried: list[int] = []  # events still waiting for their release: once per run
    with cursors.exclusive(conn, APPLY_LOCK, wait_s=APPLY_WAIT_S):
        while out.events < max_events:
            with db.transaction(conn):
                pending = repo.claim_pending(conn, min(batch, max_events - out.events), tried)
                if not pending:
                    break
                _apply_batch(conn, pending, ctx, book, targets, out, now or datetime.now(UTC))
            tried += [e["event_id"] for e in pending]
            if len(pending) < batch:
                break
    return out


def _apply_batch(conn, pending, ctx, book, targets, out: ApplyResult, now: datetime) -> None:
    rules = book.fulfilment
    by_release = repo.shipments_for_releases(
        conn, sorted({e["release_id"] for e in pending if e["release_id"]})
    )
    unresolved = [e for e in pending if e["release_id"] not in by_release]
    known = repo.known_orders(conn, sorted({e["order_id"] for e in unresolved if e["order_id"]}))
    outcomes: list[tuple] = []
    dead: list[tuple[dict, str]] = []
    for e in unresolved:
        out.events += 1
        if e["order_id"] not in known:
            err = (
                f"{e['source']} event {e['kind']!r} for order {e['order_id'] or '(none)'} "
                f"(release {e['release_id'] or '?'}): OrderFlow has no such order. Check the "
                "order id in the WMS / carrier; replay the event once the order exists."
            )
        elif e["attempts"] + 1 >= rules.unmatched_event_attempts:
            err = (
                f"{e['source']} event {e['kind']!r} for order {e['order_id']}: WMS release "
                f"{e['release_id']} is not one OrderFlow sent (tried {e['attempts'] + 1} "
                "times). Check the release in the WMS; replay the event after the fix."
            )
        else:
            out.waiting += 1
            outcomes.append((e["event_id"], "pending", None, "release not linked yet"))
            continue
        out.quarantined += 1
        outcomes.append((e["event_id"], "quarantined", None, err))
        dead.append((e, err))
    resolved = [e for e in pending if e["release_id"] in by_release]
    ships = repo.lock_shipments(conn, sorted({by_release[e["release_id"]] for e in resolved}))
    newly_shipped: list[str] = []
    notes: list[tuple[str, str, dict]] = []  # (event, shipment, context)
    holds: list[tuple[str, Any]] = []
    extra_lines: dict[str, list[str]] = defaultdict(list)
    for e in resolved:
        out.events += 1
        sid = by_release[e["release_id"]]
        ship = ships[sid]
        eff = domain.effect(e["source"], e["kind"], ship["status"], e["payload"])
        sets: dict[str, Any] = {}
        if eff.status:
            sets["status"] = eff.status
            ship["status"] = eff.status
        if eff.stamp:
            sets[eff.stamp] = e["occurred_at"]  # coalesce below: the first time wins
        if eff.short_picked:
            sets["short_picked"] = True
        if e["kind"] == "shipped" and e["payload"].get("tracking_number"):
            sets["tracking_number"] = e["payload"]["tracking_number"]
        if e["kind"] == "delayed":
            sets["delay_reason"] = e["payload"].get("reason")
        if eff.hold:
            holds.append((ship["order_id"], eff.hold))
            sets["delivery_exception"] = eff.hold.details.get("reason")
        if eff.quantities:
            extra = repo.record_line_quantities(
                conn, sid, f"quantity_{eff.quantities}", e["payload"].get("lines") or []
            )
            if eff.quantities == "shipped":
                extra_lines[sid] += extra
        if "shipment_shipped" in eff.notify and ship["shipped_at"] is None:
            newly_shipped.append(sid)  # the first shipped event confirms the quantities
            ship["shipped_at"] = e["occurred_at"]
        # Other notices are keyed per shipment: a second delay report notifies nobody.
        notes += [
            (n, sid, {"reason": e["payload"].get("reason")})
            for n in eff.notify
            if n != "shipment_shipped"
        ]
        _update_shipment(conn, sid, sets)
        changed = bool(sets) or eff.notify
        outcomes.append((e["event_id"], "applied" if changed else "no_op", sid, eff.note or None))
        if changed:
            out.applied += 1
        else:
            out.no_op += 1
    repo.mark_events(conn, outcomes)
    _dead_letters(conn, dead)
    if holds:
        from orderflow.store import processing as prepo

        prepo.open_holds(
            conn,
            holds,
            stage="fulfilment",
            routing=book.routing,
            rule_set_version=book.tag("routing"),
        )
    out.shipped += len(newly_shipped)
    if newly_shipped:
        _shipped(conn, newly_shipped, extra_lines, ctx, book, targets, out, now)
    _queue_shipment_notes(conn, notes, book, targets)
    _advance_orders(
        conn,
        sorted({ships[by_release[e["release_id"]]]["order_id"] for e in resolved}),
        ctx,
        book,
        out,
    )


_STAMPS = frozenset(
    {
        "released_at",
        "picked_at",
        "packed_at",
        "shipped_at",
        "in_transit_at",
        "delivered_at",
        "delayed_at",
    }
)


def _update_shipment(conn, sid: str, sets: dict[str, Any]) -> None:
    repo.update_shipment(conn, sid, sets, _STAMPS)


def _dead_letters(conn, dead: list[tuple[dict, str]]) -> None:
    for e, err in dead:
        repo.dead_letter_event(conn, f"{e['source']}:{e['event_key']}", e["event_id"], err)
        log.warning("fulfilment event %s quarantined: %s", e["event_id"], err)


def replay_quarantined(
    conn: psycopg.Connection, actor: str, event_ids: Sequence[int] | None = None
) -> int:
    """Put quarantined events back in the queue (after the order or release was fixed)."""
    with db.transaction(conn):
        refs = repo.requeue_quarantined(conn, event_ids, actor)
    return len(refs)


# ------------------------------------------------------------------------------ orders
def advance_orders(conn: psycopg.Connection, ctx: RunContext, book: RuleBook) -> dict[str, int]:
    """Move every order forward that its shipments and posted invoices allow (after the
    sender posted invoices, say). Returns moves by target status."""
    out = ApplyResult()
    with cursors.exclusive(conn, APPLY_LOCK, wait_s=APPLY_WAIT_S), db.transaction(conn):
        _advance_orders(conn, None, ctx, book, out)
    return out.order_moves


def _advance_orders(conn, order_ids, ctx: RunContext, book: RuleBook, out: ApplyResult) -> None:
    """Move orders forward to where their shipments (and invoices) are, one lifecycle step
    per event (RELEASED → PICKED → SHIPPED → DELIVERED → INVOICED)."""
    if order_ids is not None and not order_ids:
        return
    path = ["RELEASED", "PICKED", "SHIPPED", "DELIVERED", "INVOICED"]
    moves = []
    for order_id, status, statuses, invoiced in repo.order_progress(conn, order_ids):
        target = domain.order_target(statuses, bool(invoiced))
        if target is None or path.index(target) <= path.index(status):
            continue
        for a, b in zip(
            path[path.index(status) :],
            path[path.index(status) + 1 : path.index(target) + 1],
            strict=False,
        ):
            moves.append(
                transition(
                    order_id,
                    a,
                    b,
                    actor_type="system",
                    actor_id=ctx.actor,
                    rule_set_version=book.tag("fulfilment"),
                    details={"stage": "fulfilment"},
                )
            )
            out.order_moves[b] = out.order_moves.get(b, 0) + 1
    events.append(conn, moves, **ctx.keys())


# ------------------------------------------------------------------------------ shipped
def _shipped(conn, shipment_ids, extra_lines, ctx, book, targets: Targets, out, now) -> None:
    """A shipment's quantities are confirmed: its 856, its shipped notice, its invoice."""
    from orderflow import notifications
    from orderflow.store import processing as inventory

    inventory.consume_shipped(conn, shipment_ids)
    rows = repo.shipments(conn, shipment_ids)
    lines = repo.shipment_lines(conn, shipment_ids)
    contacts = notifications.order_contacts(conn, sorted({r["order_id"] for r in rows}))
    for s in rows:
        sl = lines.get(s["shipment_id"], [])
        doc = _shipment_doc(s, sl)
        if doc is not None and s["channel"] == "edi" and s["isa_id"]:
            _queue_856(conn, s, doc, targets)
        shipped_lines = [
            {
                "line_no": ln["line_no"],
                "item_id": ln["item_id"],
                "quantity": ln["quantity_shipped"] or Decimal("0"),
                "uom": ln["uom"],
            }
            for ln in sl
        ]
        notifications.queue(
            conn,
            book.fulfilment.notifications,
            event="shipment_shipped",
            ref=s["shipment_id"],
            order=contacts[s["order_id"]],
            context={
                "shipment_id": s["shipment_id"],
                "dc_id": s["dc_id"],
                "carrier_id": s["carrier_id"],
                "service_code": s["service_code"],
                "tracking_number": s["tracking_number"] or "",
                "lines": shipped_lines,
                "short": any((ln["quantity_shipped"] or 0) < ln["quantity_released"] for ln in sl),
            },
            smtp_conn_id=targets.smtp,
            portal_conn_id=targets.portal,
        )
        _invoice(
            conn, s, sl, extra_lines.get(s["shipment_id"], []), book, targets, out, now, contacts
        )


def _queue_shipment_notes(conn, notes, book, targets: Targets) -> None:
    if not notes:
        return
    from orderflow import notifications

    rows = {r["shipment_id"]: r for r in repo.shipments(conn, sorted({sid for _, sid, _ in notes}))}
    contacts = notifications.order_contacts(conn, sorted({r["order_id"] for r in rows.values()}))
    for event, sid, extra in notes:
        s = rows[sid]
        notifications.queue(
            conn,
            book.fulfilment.notifications,
            event=event,
            ref=sid,
            order=contacts[s["order_id"]],
            context={
                "shipment_id": sid,
                "tracking_number": s["tracking_number"] or "",
                "carrier_id": s["carrier_id"],
                "reason": extra.get("reason") or "",
            },
            smtp_conn_id=targets.smtp,
            portal_conn_id=targets.portal,
        )


def _address(s: dict) -> Any:
    from orderflow.domain.models import Address

    return Address(
        name=s["st_name"],
        party_id=s["ship_to_id"],
        party_id_qualifier="92" if s["ship_to_id"] else None,
        address_lines=[a for a in (s["address_line1"], s["address_line2"]) if a],
        city=s["city"],
        region=s["region"],
        postal_code=s["postal_code"],
        country=(s["country"] or "").strip() or None,
    )


def _line_ids(ln: dict) -> tuple[str | None, list]:
    from orderflow.domain.models import ProductId

    canon = ln.get("line_canonical") or {}
    ids = [ProductId(**p) for p in canon.get("product_ids") or []]
    return canon.get("source_line_id"), ids


def _shipment_doc(s: dict, sl: list[dict]):
    """The canonical Shipment (None when nothing shipped)."""
    from orderflow.domain.documents import Shipment, ShippedLine
    from orderflow.domain.models import Address, Order

    if not sl:
        return None
    order = Order.model_validate(s["canonical"])
    doc_lines = []
    for ln in sl:
        source_line_id, ids = _line_ids(ln)
        doc_lines.append(
            ShippedLine(
                line_no=ln["line_no"],
                source_line_id=source_line_id,
                product_ids=ids,
                item_id=ln["item_id"],
                ordered_item_id=ln["ordered_item_id"],
                quantity_ordered=ln["quantity_released"],
                quantity_shipped=ln["quantity_shipped"] or Decimal("0"),
                uom=ln["uom"],
            )
        )
    return Shipment(
        shipment_id=s["shipment_id"],
        order_id=s["order_id"],
        po_number=s["po_number"],
        po_date=order.po_date,
        customer_id=s["customer_id"] or "",
        dc_id=s["dc_id"],
        ship_from=Address(
            name=s["dc_name"] or s["dc_id"], party_id=s["dc_id"], party_id_qualifier="92"
        ),
        ship_to=order.ship_to or _address(s),
        carrier_id=s["carrier_id"],
        service_code=s["service_code"],
        mode=s["mode"],
        tracking_number=s["tracking_number"],
        weight_kg=s["weight_kg"],
        shipped_at=s["shipped_at"],
        lines=doc_lines,
    )


def _queue_edi(conn, s: dict, *, kind, functional_id, key, build, version, targets) -> None:
    from orderflow import outbound

    outbound.queue_x12(
        conn,
        partner_id=s["partner_id"],
        kind=kind,
        functional_id=functional_id,
        key=key,
        build=build,
        order_id=s["order_id"],
        shipment_id=s["shipment_id"],
        version=version,
        conn_id=targets.edi,
    )


def _queue_856(conn, s: dict, doc, targets: Targets) -> None:
    from orderflow.channels.x12.asn856 import build_856

    _queue_edi(
        conn,
        s,
        kind="856",
        functional_id="SH",
        key=f"edi_856:{s['shipment_id']}",
        build=lambda env: build_856(doc, **env),
        version=1,
        targets=targets,
    )


# ------------------------------------------------------------------------------ invoicing
def _invoice(conn, s, sl, extra, book, targets: Targets, out: ApplyResult, now, contacts) -> None:
    """Bill what shipped at the validated price; withhold on any quantity mismatch."""
    from orderflow.store import processing as prepo

    rules = book.fulfilment
    lines = [
        domain.BillLine(
            line_no=ln["line_no"],
            item_id=ln["item_id"],
            ordered_item_id=ln["ordered_item_id"],
            uom=ln["uom"],
            released=ln["quantity_released"],
            picked=ln["quantity_picked"],
            shipped=ln["quantity_shipped"],
            unit_price=ln["unit_price"],
        )
        for ln in sl
    ]
    billed = domain.bill(lines, extra, rules.overship_tolerance_pct)
    if not billed.lines and not billed.mismatches:
        return  # nothing shipped: nothing to bill (the short lines stay open)
    doc = _invoice_doc(conn, s, sl, billed, rules, now)
    status = "withheld" if billed.mismatches else "queued"
    created = repo.insert_invoice(
        conn,
        invoice_id=doc.invoice_id,
        shipment_id=s["shipment_id"],
        order_id=s["order_id"],
        status=status,
        document=doc.model_dump(mode="json"),
        subtotal=doc.subtotal,
        tax=doc.tax,
        freight=doc.freight,
        total=doc.total,
        currency=doc.currency,
    )
    if not created:
        return
    if billed.mismatches:
        out.invoices_withheld += 1
        sid = s["shipment_id"]
        prepo.open_holds(
            conn,
            [
                (s["order_id"], replace(h, details={**h.details, "shipment_id": sid}))
                for h in billed.mismatches
            ],
            stage="invoice",
            routing=book.routing,
            rule_set_version=book.tag("fulfilment", "routing"),
        )
        return
    out.invoices += 1
    queue_invoice(conn, s, doc, book, targets, contacts)


def _invoice_doc(conn, s, sl, billed, rules, now):
    from orderflow.domain.documents import Invoice, InvoiceLine
    from orderflow.domain.models import Order

    order = Order.model_validate(s["canonical"])

    def line(ln: dict, quantity: Decimal, price: Decimal) -> InvoiceLine:
        source_line_id, ids = _line_ids(ln)
        return InvoiceLine(
            line_no=ln["line_no"],
            source_line_id=source_line_id,
            product_ids=ids,
            item_id=ln["item_id"],
            quantity=quantity,
            uom=ln["uom"],
            unit_price=price,
        )

    by_key = {(ln["line_no"], ln["item_id"]): ln for ln in sl}
    inv_lines = [line(by_key[(b.line_no, b.item_id)], q, b.unit_price) for b, q in billed.lines]
    if not inv_lines:  # all lines disputed: a draft with the released quantities
        inv_lines = [
            line(ln, ln["quantity_released"], ln["unit_price"] or Decimal("0"))
            for ln in sl
            if ln["quantity_released"] > 0
        ]
    number = repo.next_invoice_number(conn)
    subtotal = sum((ln.amount for ln in inv_lines), Decimal("0"))
    tax = domain.apportion_tax(
        s["tax_amount"], repo.order_billable_subtotal(conn, s["order_id"]), subtotal
    )
    return Invoice(
        invoice_id=f"OF{number:08d}",
        order_id=s["order_id"],
        shipment_id=s["shipment_id"],
        customer_id=s["customer_id"] or "",
        po_number=s["po_number"],
        po_date=order.po_date,
        invoice_date=(s["shipped_at"] or now).date(),
        bill_to=order.bill_to,
        ship_to=order.ship_to or _address(s),
        currency=s["currency"] or "USD",
        payment_terms=order.payment_terms,
        carrier_id=s["carrier_id"],
        tracking_number=s["tracking_number"],
        lines=inv_lines,
        tax=tax,
        freight=s["freight_rate"] if rules.bill_freight else Decimal("0"),
    )


def queue_invoice(conn, s: dict, doc, book: RuleBook, targets: Targets, contacts=None) -> None:
    """The ERP invoice and, for EDI customers, the 810 — keys per invoice and version."""
    from orderflow import notifications
    from orderflow.channels.x12.inv810 import build_810
    from orderflow.store import outbox

    v = doc.version
    outbox.enqueue(
        conn,
        idempotency_key=f"erp_invoice:{doc.invoice_id}:v{v}",
        action="erp_invoice",
        target_conn_id=targets.erp,
        order_id=s["order_id"],
        version=v,
        payload={
            "invoice_id": doc.invoice_id,
            "order_id": doc.order_id,
            "customer_id": doc.customer_id,
            "currency": doc.currency,
            "tax": float(doc.tax),
            "freight": float(doc.freight),
            "lines": [
                {
                    "line_no": ln.line_no,
                    "item_id": ln.item_id,
                    "quantity": float(ln.quantity),
                    "unit_price": float(ln.unit_price),
                }
                for ln in doc.lines
            ],
        },
    )
    if s["channel"] == "edi" and s["isa_id"]:
        _queue_edi(
            conn,
            s,
            kind="810",
            functional_id="IN",
            key=f"edi_810:{doc.invoice_id}:v{v}",
            build=lambda env: build_810(doc, **env),
            version=v,
            targets=targets,
        )
    contacts = contacts or notifications.order_contacts(conn, [s["order_id"]])
    notifications.queue(
        conn,
        book.fulfilment.notifications,
        event="invoice_issued",
        ref=f"{doc.invoice_id}:v{v}",
        order=contacts[s["order_id"]],
        context={
            "invoice_id": doc.invoice_id,
            "shipment_id": doc.shipment_id,
            "total": str(doc.total),
            "currency": doc.currency,
        },
        smtp_conn_id=targets.smtp,
        portal_conn_id=targets.portal,
    )


def release_withheld_invoice(
    conn: psycopg.Connection,
    shipment_id: str,
    actor: str,
    reason: str,
    book: RuleBook,
    targets: Targets = Targets(),
) -> str:
    """Billing confirmed the quantities the WMS reported (see :func:`release_withheld`), in
    a transaction of its own. Returns the invoice id."""
    with db.transaction(conn):
        return release_withheld(
            conn, shipment_id, actor=actor, reason=reason, book=book, targets=targets
        )


def release_withheld(
    conn: psycopg.Connection,
    shipment_id: str,
    *,
    actor: str,
    reason: str,
    book: RuleBook,
    targets: Targets = Targets(),
    role: str | None = "billing",
) -> str:
    """Bill the quantities the WMS reported for the shipment's released lines (an
    overshipment included) and resolve the shipment's quantity-mismatch exceptions. A line
    the release never had has no validated price and is not billed. Audited; in the
    caller's transaction."""
    from orderflow.store import decisions as decisions_repo

    row = repo.lock_shipment_invoice(conn, shipment_id)
    if row is None or row[2] != "withheld":
        raise ValueError(f"shipment {shipment_id} has no withheld invoice")
    invoice_id, before, _, order_id = row
    s = repo.shipments(conn, [shipment_id])[0]
    sl = repo.shipment_lines(conn, [shipment_id])[shipment_id]
    confirmed = [
        domain.BillLine(
            ln["line_no"],
            ln["item_id"],
            ln["ordered_item_id"],
            ln["uom"],
            ln["quantity_shipped"] or Decimal("0"),
            ln["quantity_shipped"],
            ln["quantity_shipped"],
            ln["unit_price"],
        )
        for ln in sl
    ]
    doc = _invoice_doc(conn, s, sl, domain.bill(confirmed), book.fulfilment, datetime.now(UTC))
    doc = doc.model_copy(update={"invoice_id": invoice_id})
    repo.requeue_invoice(
        conn, invoice_id, doc.model_dump(mode="json"), doc.subtotal, doc.tax, doc.total
    )
    repo.resolve_quantity_mismatches(conn, actor, reason, order_id, shipment_id)
    repo.audit_withheld_release(
        conn, actor, role, invoice_id, before, doc.model_dump(mode="json"), reason
    )
    decisions_repo.touched_by_hand(conn, order_id)
    queue_invoice(conn, s, doc, book, targets)
    return invoice_id
