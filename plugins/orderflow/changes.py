"""Customer changes and cancellations applied to the order they are for, by its state.

Every channel stores a change as an ``orderflow.order_change`` row (``domain.changes``:
cancel, replace, change of some lines), status ``pending``. :func:`apply_pending` — run by
each ``order_processing`` run before it claims orders — applies them in the order they
arrived, one transaction each, by the order's state:

- **before release** (RECEIVED … READY, ON_HOLD): a *cancel* gives held stock back, drops
  planned shipments, resolves open exceptions and moves the order to CANCELLED; a *replace*
  or *change* amends the order (its ``order_line`` rows and canonical JSON), gives its stock
  back, resolves the old version's exceptions as superseded and sends it back to RECEIVED,
  so the same run processes it through every stage again. Never a second order.
- **RELEASED** (the WMS has not started picking): one ``wms_release_cancel`` per released
  shipment is queued in the outbox (key ``wms_cancel:<shipment_id>``); the change waits
  (``waiting_wms``). When every cancel is sent, the shipments are cancelled, their released
  reservations too (stock back), and the order is CANCELLED or amended and back to RECEIVED
  (a withdrawn release). When the WMS refuses — picking started: a 409, the outbox row dead
  as a rejection — the change is refused with a ``change_too_late`` exception.
- **PICKED and later**: refused at once, ``change_too_late`` exception for customer
  service, saying what was asked and why it is too late.

The outbox rows are polled here (their state is the WMS's answer) rather than followed up
from the sender: nothing happens to an order in the sender's transaction, and a change whose
cancel is still being retried simply stays ``waiting_wms``.

The customer hears the outcome once per change: EDI customers get an **855** re-
acknowledgment (BAK01 ``01`` cancellation, ``04`` change, ``05`` replace; BAK02 ``AC``
accepted with detail, ``RJ`` when refused) under ``edi_855:<order>:chg<change_id>``. The 865
(acknowledgment of an 860) is not used: the partners we serve acknowledge both 850
re-sends and 860s with an 855, one document type to map and to match 997s against, and an
865 says nothing an 855 with a purpose code cannot. Everyone else gets the e-mail/webhook of
``order_cancelled``, ``order_changed`` or ``change_refused`` (the fulfilment rules say who),
under ``email:<event>:<order>:chg<change_id>``.

A change that cannot be applied as asked (deleting a line the order does not have, adding
a line number it already has, a replace without the order) is refused too, and the customer
is told why; it is not "too late", so it opens no exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orderflow.domain.changes import ChangeKind, LineChangeKind, OrderChange
from orderflow.domain.lifecycle import transition
from orderflow.domain.models import Order, OrderLine
from orderflow.store import changes as store
from orderflow.store import db, events
from orderflow.store import decisions as decisions_repo
from orderflow.store import processing as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.processing import RunContext
    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

PRE_RELEASE = frozenset({"RECEIVED", "VALIDATED", "CREDIT_OK", "ALLOCATED", "READY", "ON_HOLD"})
CANCEL_ACTION = "wms_release_cancel"
#: BAK01 transaction set purpose of the re-acknowledgment, per change kind
BAK_PURPOSE = {ChangeKind.CANCEL: "01", ChangeKind.CHANGE: "04", ChangeKind.REPLACE: "05"}
#: outbox states of a cancel that are still on their way
_IN_FLIGHT = ("pending", "failed", "sending", "unknown")


class ChangeInvalid(ValueError):
    """A change that cannot be applied to the order as asked (the message says why)."""


@dataclass
class ApplyResult:
    applied: int = 0
    refused: int = 0
    waiting: int = 0  # waiting for the WMS to answer a release cancel
    deferred: int = 0  # the order is being processed by another run, or an earlier change waits

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if v}


# ---------------------------------------------------------------------------- pure


def describe(change: OrderChange) -> str:
    """What the customer asked, in words (for exceptions, outcomes, notifications)."""
    if change.kind == ChangeKind.CANCEL:
        return "cancel the whole order"
    if change.kind == ChangeKind.REPLACE:
        n = len(change.replacement.lines) if change.replacement else 0
        return f"replace the order with a new version of {n} line(s)"
    parts = []
    for lc in change.lines:
        if lc.kind == LineChangeKind.ADD:
            parts.append(
                f"add line {lc.line_no} ({lc.item_id or lc.customer_part_number}, "
                f"{lc.quantity} {lc.uom or ''})".replace(" )", ")")
            )
        elif lc.kind == LineChangeKind.DELETE:
            parts.append(f"delete line {lc.line_no}")
        elif lc.kind == LineChangeKind.QUANTITY:
            parts.append(f"line {lc.line_no} quantity {lc.quantity}")
        elif lc.kind == LineChangeKind.PRICE:
            parts.append(f"line {lc.line_no} price {lc.unit_price}")
        else:
            parts.append(f"line {lc.line_no} quantity {lc.quantity} at {lc.unit_price}")
    return "change " + "; ".join(parts) if parts else "change nothing"


def amend(current: Order, change: OrderChange) -> Order:
    """The order as the change makes it (validated); raises :class:`ChangeInvalid`."""
    if change.kind == ChangeKind.REPLACE:
        if change.replacement is None:
            raise ChangeInvalid("a replace must carry the whole new order")
        data = change.replacement.model_dump()
        data.update(order_id=current.order_id, po_number=current.po_number)
        data["customer_id"] = data.get("customer_id") or current.customer_id
        return Order.model_validate(data)
    if change.kind != ChangeKind.CHANGE:
        raise ChangeInvalid(f"{change.kind} does not amend an order")
    lines: dict[int, dict[str, Any]] = {ln.line_no: ln.model_dump() for ln in current.lines}
    for lc in change.lines:
        if lc.kind == LineChangeKind.ADD:
            if lc.line_no in lines:
                raise ChangeInvalid(f"line {lc.line_no} exists already; it cannot be added")
            if lc.quantity is None:
                raise ChangeInvalid(f"added line {lc.line_no} has no quantity")
            lines[lc.line_no] = OrderLine(
                line_no=lc.line_no,
                item_id=lc.item_id,
                customer_part_number=lc.customer_part_number,
                description=lc.description,
                quantity=lc.quantity,
                uom=lc.uom or "EA",
                unit_price=lc.unit_price,
            ).model_dump()
            continue
        if lc.line_no not in lines:
            raise ChangeInvalid(f"the order has no line {lc.line_no}")
        if lc.kind == LineChangeKind.DELETE:
            del lines[lc.line_no]
            continue
        if lc.kind in (LineChangeKind.QUANTITY, LineChangeKind.QUANTITY_AND_PRICE):
            if lc.quantity is None:
                raise ChangeInvalid(f"line {lc.line_no}: a quantity change without a quantity")
            lines[lc.line_no]["quantity"] = lc.quantity
            if lc.uom:
                lines[lc.line_no]["uom"] = lc.uom
        if lc.kind in (LineChangeKind.PRICE, LineChangeKind.QUANTITY_AND_PRICE):
            if lc.unit_price is None:
                raise ChangeInvalid(f"line {lc.line_no}: a price change without a price")
            lines[lc.line_no]["unit_price"] = lc.unit_price
    if not lines:
        raise ChangeInvalid("the change deletes every line; to cancel the order, send a cancel")
    data = current.model_dump()
    data["lines"] = [lines[n] for n in sorted(lines)]
    try:
        return Order.model_validate(data)
    except ValueError as exc:
        raise ChangeInvalid(str(exc).splitlines()[0]) from exc


# ---------------------------------------------------------------------------- glue


def apply_pending(
    conn: psycopg.Connection,
    ctx: RunContext,
    book: RuleBook,
    *,
    limit: int = 1000,
    wms_conn_id: str = "wms_default",
    edi_conn_id: str = "edi_default",
) -> dict[str, int]:
    """Apply every pending change (and follow those waiting for the WMS), oldest first, one
    transaction each. A change of an order another run is processing, or of an order with an
    earlier change still open, waits for a later run. Returns the non-zero counters."""
    res = ApplyResult()
    rows = store.open_changes(conn, limit)
    blocked: set[str] = set()
    for change_id, order_id in rows:
        if order_id in blocked:
            res.deferred += 1
            continue
        with db.transaction(conn):
            outcome = _apply_one(conn, change_id, ctx, book, wms_conn_id, edi_conn_id)
        setattr(res, outcome, getattr(res, outcome) + 1)
        if outcome in ("waiting", "deferred"):
            blocked.add(order_id)
    if rows:
        log.info("order changes: %s", res.as_dict())
    return res.as_dict()


@dataclass
class _Change:
    change_id: int
    order_id: str
    source: str
    reference: str | None
    status: str
    change: OrderChange
    requested_by: str | None


def _apply_one(conn, change_id, ctx, book, wms_conn_id, edi_conn_id) -> str:
    row = store.lock_change(conn, change_id)
    if row is None:
        return "deferred"  # another runner has it, or it was settled meanwhile
    ch = _Change(*row[:5], OrderChange.model_validate(row[5]), row[6])
    order = store.lock_order(conn, ch.order_id, ctx.run_id, repo.CLAIM_LEASE_MINUTES)
    keys = ("order_id", "status", "channel", "partner_id", "release_version", "canonical")
    o = dict(zip(keys, order[:6], strict=True))
    if order[6]:
        return "deferred"  # being processed by another run: its stages own the order now
    if ch.status == "waiting_wms":
        return _follow_wms(conn, ch, o, ctx, book, edi_conn_id)
    if o["status"] in PRE_RELEASE:
        return _before_release(conn, ch, o, ctx, book, edi_conn_id)
    if o["status"] == "RELEASED":
        return _start_wms_cancel(conn, ch, o, ctx, book, wms_conn_id, edi_conn_id)
    if o["status"] in ("CANCELLED", "REJECTED"):
        if ch.change.kind == ChangeKind.CANCEL and o["status"] == "CANCELLED":
            _settle(conn, ch, "applied", "the order was cancelled already")
            return "applied"
        return _invalid(
            conn, ch, o, book, edi_conn_id, f"the order is {o['status']}: nothing to change"
        )
    return _too_late(
        conn,
        ch,
        o,
        ctx,
        book,
        edi_conn_id,
        f"the order is {o['status']}: the warehouse has picked it"
        + (" and it has shipped" if o["status"] != "PICKED" else ""),
    )


def _before_release(conn, ch: _Change, o, ctx, book, edi_conn_id) -> str:
    if ch.change.kind == ChangeKind.CANCEL:
        _unwind(conn, o["order_id"])
        _resolve_open(conn, o["order_id"], ctx, f"order cancelled by the customer ({_ref(ch)})")
        _move(conn, ch, o, "CANCELLED", "customer_cancel", ctx)
        _settle(conn, ch, "applied", f"cancelled while {o['status']}")
        _notify(conn, ch, o, "cancelled", book, edi_conn_id)
        return "applied"
    try:
        amended = amend(Order.model_validate(o["canonical"]), ch.change)
    except ChangeInvalid as exc:
        return _invalid(conn, ch, o, book, edi_conn_id, str(exc))
    _unwind(conn, o["order_id"])
    _write_amended(conn, o, amended)
    _resolve_open(
        conn, o["order_id"], ctx, f"superseded by the customer's {ch.change.kind} ({_ref(ch)})"
    )
    if o["status"] != "RECEIVED":
        _move(conn, ch, o, "RECEIVED", "customer_change", ctx)
    _settle(conn, ch, "applied", f"amended while {o['status']}; processed again from RECEIVED")
    _notify(conn, ch, _as_amended(o, amended), "changed", book, edi_conn_id)
    return "applied"


def _start_wms_cancel(conn, ch: _Change, o, ctx, book, wms_conn_id, edi_conn_id) -> str:
    """Ask the WMS to withdraw every release of the order's current version."""
    from orderflow.store import outbox

    if ch.change.kind != ChangeKind.CANCEL:
        try:  # refuse a malformed change now, before touching the WMS
            amend(Order.model_validate(o["canonical"]), ch.change)
        except ChangeInvalid as exc:
            return _invalid(conn, ch, o, book, edi_conn_id, str(exc))
    ships = _current_shipments(conn, o)
    started = [s for s in ships if s["status"] not in ("released", "cancelled")]
    if started:
        return _too_late(
            conn,
            ch,
            o,
            ctx,
            book,
            edi_conn_id,
            "the warehouse has started picking "
            + ", ".join(f"{s['shipment_id']} ({s['status']})" for s in started),
        )
    queued = 0
    for s in ships:
        if s["status"] != "released":
            continue
        if s["wms_release_id"] is None:
            if s["release_state"] == "dead":
                continue  # the WMS never took it: nothing to withdraw there
            return "deferred"  # the WMS has not answered the release yet
        outbox.enqueue(
            conn,
            idempotency_key=f"wms_cancel:{s['shipment_id']}",
            action=CANCEL_ACTION,
            target_conn_id=wms_conn_id,
            order_id=o["order_id"],
            version=o["release_version"],
            payload={
                "release_id": s["wms_release_id"],
                "shipment_id": s["shipment_id"],
                "order_id": o["order_id"],
                "dc_id": s["dc_id"],
                "release_version": o["release_version"],
                "change_id": ch.change_id,
            },
        )
        queued += 1
    if not queued:  # nothing reached the WMS: withdraw here and now
        return _withdrawn(conn, ch, o, ctx, book, edi_conn_id, ships)
    _settle(
        conn,
        ch,
        "waiting_wms",
        f"asked the WMS to cancel {queued} release(s) of version r{o['release_version']}",
        final=False,
    )
    return "waiting"


def _follow_wms(conn, ch: _Change, o, ctx, book, edi_conn_id) -> str:
    rows = store.release_cancels(conn, CANCEL_ACTION, o["order_id"], o["release_version"])
    if any(state in _IN_FLIGHT for _, state, _ in rows):
        return "waiting"
    ships = _current_shipments(conn, o)
    dead = [(sid, err) for sid, state, err in rows if state == "dead"]
    if not dead:
        return _withdrawn(conn, ch, o, ctx, book, edi_conn_id, ships)
    # Refused (picking started) for some: the releases it did cancel stay cancelled.
    cancelled = {sid for sid, state, _ in rows if state == "sent"}
    _cancel_shipments(conn, o["order_id"], [s for s in ships if s["shipment_id"] in cancelled])
    why = "the WMS refused to cancel " + "; ".join(f"{sid}: {err}" for sid, err in dead)
    if cancelled:
        why += (
            f" — it did cancel {', '.join(sorted(cancelled))}, whose stock is back; only the "
            "rest of the order ships"
        )
    return _too_late(conn, ch, o, ctx, book, edi_conn_id, why)


def _withdrawn(conn, ch: _Change, o, ctx, book, edi_conn_id, ships) -> str:
    """Every release of the order is withdrawn: apply the change as before release."""
    _cancel_shipments(conn, o["order_id"], [s for s in ships if s["status"] == "released"])
    store.clear_backorders(conn, o["order_id"])
    if ch.change.kind == ChangeKind.CANCEL:
        _resolve_open(conn, o["order_id"], ctx, f"order cancelled by the customer ({_ref(ch)})")
        _move(conn, ch, o, "CANCELLED", "customer_cancel", ctx)
        _settle(conn, ch, "applied", "the WMS withdrew the release; order cancelled")
        _notify(conn, ch, o, "cancelled", book, edi_conn_id)
        return "applied"
    amended = amend(Order.model_validate(o["canonical"]), ch.change)
    _write_amended(conn, o, amended)
    _resolve_open(
        conn, o["order_id"], ctx, f"superseded by the customer's {ch.change.kind} ({_ref(ch)})"
    )
    _move(conn, ch, o, "RECEIVED", "customer_change", ctx, withdrawn_release=True)
    _settle(
        conn,
        ch,
        "applied",
        f"the WMS withdrew release r{o['release_version']}; amended and processed again",
    )
    _notify(conn, ch, _as_amended(o, amended), "changed", book, edi_conn_id)
    return "applied"


def _as_amended(o, amended: Order) -> dict[str, Any]:
    return {**o, "canonical": amended.model_dump(mode="json"), "canonical_before": o["canonical"]}


def _too_late(conn, ch: _Change, o, ctx, book, edi_conn_id, why: str) -> str:
    from orderflow.store import exceptions

    asked = describe(ch.change)
    exceptions.open_routed(
        conn,
        category="change_too_late",
        order_id=o["order_id"],
        reason=(
            f"The customer asked to {asked} ({_ref(ch)}) but {why}. The order goes on as it "
            "was; the customer has been told. Call them: a return, a refusal at delivery or a "
            "follow-up order is the way now."
        ),
        details={
            "change_id": ch.change_id,
            "kind": str(ch.change.kind),
            "source": ch.source,
            "reference": ch.reference,
            "asked": asked,
            "order_status": o["status"],
            "why": why,
        },
        stage="change",
    )
    _settle(conn, ch, "refused", f"too late: {why}")
    _notify(conn, ch, o, "refused", book, edi_conn_id, why=why)
    return "refused"


def _invalid(conn, ch: _Change, o, book, edi_conn_id, why: str) -> str:
    _settle(conn, ch, "refused", f"cannot be applied: {why}")
    _notify(conn, ch, o, "refused", book, edi_conn_id, why=why)
    return "refused"


# ---------------------------------------------------------------------------- store writes


def _ref(ch: _Change) -> str:
    return f"change {ch.change_id} via {ch.source}" + (
        f" ref {ch.reference}" if ch.reference else ""
    )


def _settle(conn, ch: _Change, status: str, outcome: str, *, final: bool = True) -> None:
    store.settle(conn, ch.change_id, status, outcome, final)


def ctx_book_tag() -> str:
    """The rule versions a change decision used: routing (its exceptions) and fulfilment
    (who is told)."""
    from orderflow import rules

    return rules.load().tag("routing", "fulfilment")


def _move(conn, ch: _Change, o, target, reason, ctx, **extra) -> None:
    events.append(
        conn,
        [
            transition(
                o["order_id"],
                o["status"],
                target,
                actor_type="user" if ch.change.requested_by or ch.requested_by else "system",
                actor_id=ch.change.requested_by or ch.requested_by or ctx.actor,
                reason_codes=(reason,),
                rule_set_version=ctx_book_tag(),
                details={
                    "change_id": ch.change_id,
                    "kind": str(ch.change.kind),
                    "source": ch.source,
                    "reference": ch.reference,
                    **extra,
                },
            )
        ],
        **ctx.keys(),
    )


def _unwind(conn, order_id: str) -> None:
    """Held stock back, planned (never released) shipments dropped, line decisions reset."""
    repo.cancel_reservations(conn, [order_id])
    repo.drop_planned_shipments(conn, order_id)
    repo.reset_lines(conn, order_id)


def _current_shipments(conn, o) -> list[dict[str, Any]]:
    """The shipments of the order's released version, with the state of their release."""
    return store.shipments_of_version(conn, o["order_id"], o["release_version"])


def _cancel_shipments(conn, order_id: str, ships: list[dict[str, Any]]) -> None:
    """Withdrawn releases: the shipments cancelled and their released stock given back."""
    if not ships:
        return
    store.cancel_shipments(conn, [s["shipment_id"] for s in ships])
    rows = store.cancel_dc_reservations(conn, order_id, [s["dc_id"] for s in ships])
    repo.refresh_allocated(conn, sorted(set(rows)))


def _write_amended(conn, o, amended: Order) -> None:
    """The order and its lines as amended. Its next plan must not reuse the shipment ids of
    a plan that was dropped: a planned shipment at the next version bumps the version."""
    store.write_amended(
        conn,
        o["order_id"],
        amended.model_dump(mode="json"),
        amended.total,
        amended.requested_ship_date,
        amended.currency,
        amended.ship_to.party_id if amended.ship_to else None,
        [
            (
                ln.line_no,
                ln.item_id,
                ln.customer_part_number,
                ln.quantity,
                ln.uom,
                ln.unit_price,
                ln.model_dump(mode="json"),
            )
            for ln in amended.lines
        ],
    )


def _resolve_open(conn, order_id: str, ctx, note: str) -> int:
    return store.resolve_open_exceptions(conn, order_id, ctx.actor, note)


# ---------------------------------------------------------------------------- the customer


def _notify(conn, ch: _Change, o, outcome: str, book, edi_conn_id, *, why: str = "") -> None:
    """Tell the customer once: an 855 re-acknowledgment (EDI) or the e-mail/webhook the
    fulfilment rules give ``order_cancelled`` / ``order_changed`` / ``change_refused``."""
    order = Order.model_validate(o["canonical"])
    if o["channel"] == "edi" and o["partner_id"]:
        _queue_855(conn, ch, o, order, outcome, edi_conn_id)
        return
    from orderflow import notifications

    event = {"cancelled": "order_cancelled", "changed": "order_changed"}.get(
        outcome, "change_refused"
    )
    contact = notifications.order_contacts(conn, [o["order_id"]]).get(o["order_id"])
    if contact is None:
        return
    notifications.queue(
        conn,
        book.fulfilment.notifications,
        event=event,
        ref=f"{o['order_id']}:chg{ch.change_id}",
        order=contact,
        context={
            "asked": describe(ch.change),
            "reference": ch.reference or "",
            "why": why,
            "lines": [
                {
                    "line_no": ln.line_no,
                    "item_id": ln.item_id or ln.customer_part_number or "",
                    "quantity": ln.quantity,
                    "uom": ln.uom,
                    "unit_price": ln.unit_price if ln.unit_price is not None else "",
                }
                for ln in order.lines
            ],
        },
    )


def _queue_855(conn, ch: _Change, o, order: Order, outcome: str, edi_conn_id: str) -> None:
    from orderflow import outbound
    from orderflow.channels.x12.po855 import DEFAULT_DELIMITERS, AckLine, build_855

    purpose = BAK_PURPOSE[ch.change.kind]
    if outcome == "cancelled":
        acks = [
            AckLine(ln.line_no, "rejected", Decimal("0"), ln.uom, ln.unit_price)
            for ln in order.lines
        ]
        ack_type = "AC"
    elif outcome == "changed":
        before = {
            ln["line_no"]: Decimal(str(ln["quantity"]))
            for ln in (o.get("canonical_before") or {}).get("lines", [])
        }
        acks = [
            AckLine(
                ln.line_no,
                "quantity_changed"
                if before.get(ln.line_no, ln.quantity) != ln.quantity
                else "accepted",
                ln.quantity,
                ln.uom,
                ln.unit_price,
            )
            for ln in order.lines
        ]
        ack_type = "AC"
    else:  # refused: the order stands as it is
        acks = [
            AckLine(ln.line_no, "accepted", ln.quantity, ln.uom, ln.unit_price)
            for ln in order.lines
        ]
        ack_type = "RJ"

    def build(env: dict) -> str:
        text = build_855(
            order, acks, delimiters=DEFAULT_DELIMITERS, acknowledgment_type=ack_type, **env
        )
        # The builder writes BAK01 = 00 (original); a re-acknowledgment names its purpose.
        sep = DEFAULT_DELIMITERS.element
        head = f"BAK{sep}00{sep}"
        if text.count(head) != 1:
            raise ValueError(f"855 for {o['order_id']}: expected one BAK segment")
        return text.replace(head, f"BAK{sep}{purpose}{sep}")

    outbound.queue_x12(
        conn,
        partner_id=o["partner_id"],
        kind="855",
        functional_id="PR",
        key=f"edi_855:{o['order_id']}:chg{ch.change_id}",
        build=build,
        order_id=o["order_id"],
        version=o["release_version"] or 1,
        conn_id=edi_conn_id,
    )


# ---------------------------------------------------------------------------- inside sales

#: who may cancel an order for a customer (``include/access/roles.yaml``)
CANCEL_ROLES = ("customer_service", "operations_manager")


class ChangeRefused(PermissionError):
    """An inside-sales request refused (the message says why); the refusal is audited."""


def request_cancel(conn: psycopg.Connection, order_id: str, *, reason: str, actor: str) -> int:
    """Store an inside-sales cancel of ``order_id`` (applied by the next processing run, by
    the order's state, like any customer's cancel). Only holders of :data:`CANCEL_ROLES`;
    every attempt is audited. Returns the change id."""
    import uuid

    from orderflow import access

    if not (reason or "").strip():
        raise ChangeRefused("say why (the reason goes into the audit trail)")
    roles = access.roles_of(actor)
    with db.transaction(conn):
        row = store.order_header(conn, order_id)
        if row is None:
            raise ChangeRefused(f"order {order_id} does not exist")
        po, channel, partner, customer, status = row
        allowed = bool(roles & set(CANCEL_ROLES))
        change_id = None
        if allowed:
            change = OrderChange(
                kind=ChangeKind.CANCEL,
                po_number=po,
                channel=channel,
                partner_id=partner,
                customer_id=customer,
                reference=f"IS-{uuid.uuid4().hex[:12]}",
                reason=reason,
                requested_by=actor,
            )
            change_id = store.insert_inside_sales_cancel(
                conn, order_id, change.reference, change.model_dump(mode="json"), actor
            )
        decisions_repo.audit(
            conn,
            actor,
            ",".join(sorted(roles)) or None,
            "order_cancel_requested" if allowed else "order_cancel_refused",
            "order",
            order_id,
            {"status": status},
            {"change_id": change_id} if allowed else {"refused": "role"},
            reason,
        )
    if change_id is None:
        raise ChangeRefused(
            f"{actor} may not cancel orders: that needs the {' or '.join(CANCEL_ROLES)} role "
            f"({access.roles_file()})"
        )
    return change_id
