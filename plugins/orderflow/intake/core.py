"""The one intake path every channel goes through.

1. :func:`ingest` stores the raw bytes (its own committed transaction: nothing is lost if
   parsing or anything after it dies).
2. The channel's parser runs on the bytes; it never raises (an unexpected exception becomes a
   quarantine error, so one bad message cannot crash a batch).
3. One transaction decides the outcome: quarantined (errors, no orders), duplicate (of an
   earlier message or of orders already received), or orders created (+ RECEIVED events).
   A message that carries customer changes (X12 850 BEG01 01/03/04/05, X12 860, portal
   cancel/change items) stores each, for the order it names, in ``order_change`` (pending;
   ``orderflow.changes`` applies it by the order's state): outcome ``change_received``. A
   change never creates an order; one for a PO we do not have is quarantined
   (``intake.change_for_unknown_po``); the same change delivered again is stored once.

A message already decided (a rerun of the same delivery) returns its earlier outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.domain.changes import ChangeKind, OrderChange
from orderflow.domain.models import IntakeError, Order
from orderflow.store import db, intake

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


@dataclass
class ParseResult:
    """What a channel parser makes of one message."""

    orders: list[Order] = field(default_factory=list)
    errors: list[IntakeError] = field(default_factory=list)
    #: ISA13 / GS06 / ST02s for EDI, used for duplicate detection and the message row
    control: dict[str, Any] = field(default_factory=dict)
    #: outbound acknowledgements to queue (kind, partner, idempotency key, body)
    acks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: orders to put on hold at intake: order_id -> (exception category, reason, details)
    holds: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    #: functional acknowledgments (997) the partner sent about our documents
    acknowledgments: list[dict[str, Any]] = field(default_factory=list)
    #: customer changes to orders received before (stored in order_change, never orders)
    changes: list[OrderChange] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    message_id: int
    outcome: str
    order_ids: tuple[str, ...] = ()
    errors: tuple[IntakeError, ...] = ()
    duplicate_of: int | None = None
    seen_before: bool = False


Parser = Callable[[bytes, intake.StoredMessage], "ParseResult | StreamedParse"]


def ingest(
    conn: psycopg.Connection,
    *,
    channel: str,
    partner_id: str | None,
    source_ref: str | None,
    raw: bytes,
    parse: Parser,
    content_type: str | None = None,
    client_request_id: str | None = None,
    size_bytes: int | None = None,
    precheck: list[IntakeError] | None = None,
    run: dict[str, Any] | None = None,
    actor_id: str = "intake",
) -> Outcome:
    with db.transaction(conn):
        stored = intake.record_message(
            conn,
            channel=channel,
            partner_id=partner_id,
            source_ref=source_ref,
            raw=raw,
            content_type=content_type,
            client_request_id=client_request_id,
            size_bytes=size_bytes,
        )
    if stored.seen_before and stored.outcome != "pending":
        return Outcome(stored.message_id, stored.outcome, seen_before=True)

    if precheck:  # e.g. size limit, unsafe name: decided without parsing
        result = ParseResult(errors=list(precheck))
    else:
        try:
            result = parse(raw, stored)
        except (
            Exception
        ) as exc:  # a parser bug must not stop the batch; the message waits for replay
            log.exception("parser failed on message %s", stored.message_id)
            result = ParseResult(
                errors=[
                    IntakeError(
                        code="intake.parser_crashed",
                        message=f"the {channel} parser failed: {type(exc).__name__}: {exc}",
                        action="Report to the OrderFlow data team; replay the message after the fix.",
                    )
                ]
            )
    # Nothing below needs the bytes: let them go, so that a streamed parser (which reads them
    # later) can hold the message's only copy and drop it once decoded (see ``X12Stream``).
    del raw
    if isinstance(result, StreamedParse):
        return _decide_streamed(
            conn, stored, channel, partner_id, client_request_id, result, run, actor_id
        )
    return _decide(conn, stored, channel, partner_id, client_request_id, result, run, actor_id)


def _decide(
    conn, stored, channel, partner_id, client_request_id, result: ParseResult, run, actor_id
) -> Outcome:
    """The outcome, in one transaction. Whatever the store refuses in it — one order
    (rolled back to its savepoint, the others kept) or the whole outcome — quarantines what
    it refused with a specific error, never stops the batch: the message always leaves
    ``pending`` (only a lost connection propagates)."""
    mid = stored.message_id
    try:
        with db.transaction(conn):
            return _decide_in(
                conn, stored, channel, partner_id, client_request_id, result, run, actor_id
            )
    except Exception as exc:
        if conn.closed or conn.broken:
            raise
        return _store_refused(conn, mid, exc)


def _sqlstate(exc: BaseException) -> str:
    """An exception's class and SQLSTATE, without the values it may quote (no PII in logs)."""
    return f"{type(exc).__name__} {getattr(exc, 'sqlstate', None) or ''}".strip()


def _describe(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    constraint = getattr(diag, "constraint_name", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    return f"{text} (constraint {constraint})" if constraint else text


def _one_per_po(orders: list[Order]) -> tuple[list[Order], list[IntakeError], dict[str, str]]:
    """The same PO twice in one message (two ST sets with one BEG03, one PDF attached many
    times) is one order: the first is kept, each repeat is flagged a duplicate of it."""
    first: dict[tuple[str | None, str], Order] = {}
    kept, errors, repeats = [], [], {}
    for o in orders:
        key = (o.customer_id, o.po_number)
        if key not in first:
            first[key] = o
            kept.append(o)
            continue
        original = first[key]
        where = _where(o)
        repeats[where] = original.order_id
        errors.append(
            IntakeError(
                code="intake.duplicate_po_in_message",
                message=f"PO {o.po_number} appears again in this message ({where}); it was "
                f"taken once, as order {original.order_id} ({_where(original)})",
                where=where,
                action="Nothing if it is a repeat; if it is a different order, ask the sender "
                "for it under its own PO number.",
            )
        )
    return kept, errors, repeats


def _where(o: Order) -> str:
    return _where_at(o.po_number, o.order_id, o.provenance.transaction_control_number)


def _where_at(po_number: str, order_id: str, st02: str | None) -> str:
    if st02:
        return f"PO {po_number} / ST02 {st02}"
    return f"PO {po_number} / order {order_id}"


def _insert_isolated(conn, orders: list[Order], mid: int, actor_id: str, run):
    """Insert the orders in one savepoint; if the store refuses any, retry each in its own
    savepoint so only the refused ones are left out (each with its error)."""
    try:
        with conn.transaction():
            return intake.insert_orders(
                conn, orders, message_id=mid, actor_id=actor_id, run=run
            ), []
    except Exception:
        if conn.closed or conn.broken:
            raise
    created, errors = [], []
    for o in orders:
        try:
            with conn.transaction():
                created += intake.insert_orders(
                    conn, [o], message_id=mid, actor_id=actor_id, run=run
                )
        except Exception as exc:
            if conn.closed or conn.broken:
                raise
            log.warning(
                "message %s: order %s refused by the store (%s)", mid, o.order_id, _sqlstate(exc)
            )
            errors.append(
                IntakeError(
                    code="intake.order_refused_by_store",
                    message=f"PO {o.po_number} could not be stored: {_describe(exc)}",
                    where=_where(o),
                    action="Report to the OrderFlow data team (the value passed the canonical "
                    "model's checks); replay the message after the fix.",
                )
            )
    return created, errors


def _decide_in(
    conn, stored, channel, partner_id, client_request_id, result: ParseResult, run, actor_id
) -> Outcome:
    mid = stored.message_id
    if not result.orders and result.acknowledgments and not result.errors:
        return _acknowledgment(conn, mid, partner_id, result)
    if not result.orders and not result.changes:
        intake.set_outcome(
            conn,
            mid,
            "quarantined",
            errors=result.errors
            or [
                IntakeError(
                    code="intake.no_orders",
                    message="the message contains no purchase order",
                    action="Check what the partner sent; replay or discard.",
                )
            ],
            control=result.control,
            details=result.details,
        )
        _queue_acks(conn, result)
        return Outcome(mid, "quarantined", errors=tuple(result.errors))

    earlier = intake.earlier_message_with(
        conn,
        message_id=mid,
        partner_id=partner_id,
        content_sha256=stored.content_sha256,
        interchange_control_number=result.control.get("isa13"),
        client_request_id=client_request_id,
        channel=channel,
    )
    if earlier is not None:
        intake.set_outcome(
            conn,
            mid,
            "duplicate",
            duplicate_of=earlier,
            control=result.control,
            details={
                **result.details,
                "reason": "same content, interchange "
                "control number or client request id as message "
                f"{earlier}",
            },
        )
        return Outcome(mid, "duplicate", duplicate_of=earlier)

    if result.changes and not result.orders:
        done = _Changes()
        done.store(conn, mid, partner_id, result.changes)
        return _changes_outcome(conn, mid, result, done)
    changes_done = None
    if result.changes:
        changes_done = _Changes()
    orders, repeat_errors, repeats = _one_per_po(result.orders)
    known = intake.existing_orders_by_po(
        conn, [(o.customer_id, partner_id, o.po_number) for o in orders]
    )
    fresh, dup_orders = [], {}
    for o in orders:
        original_order = known.get((o.customer_id, partner_id, o.po_number))
        if original_order is None:
            fresh.append(o)
        else:
            dup_orders[o.po_number] = original_order
    if not fresh and changes_done is not None:  # repeated orders and changes: the changes decide
        changes_done.store(conn, mid, partner_id, result.changes)
        if changes_done.stored or changes_done.errors:
            result.details["duplicate_orders"] = dup_orders
            return _changes_outcome(conn, mid, result, changes_done)
        changes_done = None
    if not fresh:
        first = next(iter(dup_orders.values()))
        original = intake.source_message_of(conn, first)
        if original is None or original == mid:  # a replay of our own orders
            intake.set_outcome(
                conn,
                mid,
                "orders_created",
                errors=[*result.errors, *repeat_errors],
                order_count=len(orders),
                control=result.control,
                details=result.details,
            )
            return Outcome(mid, "orders_created", tuple(o.order_id for o in orders))
        intake.set_outcome(
            conn,
            mid,
            "duplicate",
            duplicate_of=original,
            control=result.control,
            details={**result.details, "duplicate_orders": dup_orders},
        )
        return Outcome(mid, "duplicate", duplicate_of=original)

    for o in fresh:
        o.provenance.message_id = mid
    created, refused = _insert_isolated(conn, fresh, mid, actor_id, run)
    errors = [*result.errors, *repeat_errors, *refused]
    details = dict(result.details)
    if changes_done is not None:  # after the orders: a change may be for one of them
        changes_done.store(conn, mid, partner_id, result.changes)
        errors += changes_done.errors
        details |= changes_done.details()
    if dup_orders:
        details["duplicate_orders"] = dup_orders
    if repeats:
        details["repeated_in_message"] = repeats
    if not created and refused:  # every order the message brought was refused
        intake.set_outcome(
            conn, mid, "quarantined", errors=errors, control=result.control, details=details
        )
        _queue_acks(conn, result)
        return Outcome(mid, "quarantined", errors=tuple(errors))
    _hold(conn, created, result.holds, actor_id, run)
    intake.set_outcome(
        conn,
        mid,
        "orders_created",
        errors=errors,
        order_count=len(fresh) - len(refused),
        control=result.control,
        details=details,
    )
    _queue_acks(conn, result)
    return Outcome(mid, "orders_created", tuple(created), tuple(errors))


# ------------------------------------------------------------------------------ changes
def change_source(change: OrderChange) -> str:
    """``order_change.source`` for a change: x12_850_cancel, x12_850_replace, x12_860,
    portal, inside_sales."""
    ref = change.reference or ""
    if change.channel == "edi":
        if ref.startswith("860"):
            return "x12_860"
        return "x12_850_cancel" if change.kind is ChangeKind.CANCEL else "x12_850_replace"
    if change.requested_by and change.channel != "portal":
        return "inside_sales"
    return str(change.channel)


class _Changes:
    """The changes of one message (or one scope of a streamed one), stored as they come:
    each for the order its (customer or partner, PO) names, under its own savepoint."""

    def __init__(self) -> None:
        self.stored: dict[str, list[int]] = {}  # order id -> change ids
        self.repeats: dict[str, int] = {}  # reference -> earlier message id
        self.errors: list[IntakeError] = []
        self.count = 0

    def merge(self, inner: _Changes) -> None:
        for k, v in inner.stored.items():
            self.stored.setdefault(k, []).extend(v)
        self.repeats |= inner.repeats
        self.errors += inner.errors
        self.count += inner.count

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.stored:
            out["changes"] = self.stored
        if self.repeats:
            out["repeated_changes"] = self.repeats
        return out

    def store(self, conn, mid: int, partner_id: str | None, changes: list[OrderChange]) -> None:
        if not changes:
            return
        self.count += len(changes)
        keys = [(c.customer_id, c.partner_id or partner_id, c.po_number) for c in changes]
        known = intake.existing_orders_by_po(conn, keys)
        for c, key in zip(changes, keys, strict=True):
            source = change_source(c)
            what = f"{c.kind.value} of PO {c.po_number}"
            where = f"PO {c.po_number} / change {c.reference or '?'} ({source})"
            order_id = known.get(key)
            if order_id is None:
                who = f"customer {c.customer_id}" if c.customer_id else f"partner {key[1]}"
                self.errors.append(
                    IntakeError(
                        code="intake.change_for_unknown_po",
                        message=f"a {what} ({source}) arrived, but OrderFlow has no order "
                        f"with PO {c.po_number} from {who}: nothing was changed and no order "
                        "was created",
                        where=where,
                        action="Check the PO number with the customer (a typo, or the "
                        "original order never reached us: look for it with `orderflow intake "
                        "quarantined`); once the original order is in, replay this message "
                        "(`orderflow intake replay`).",
                    )
                )
                continue
            try:
                with conn.transaction():
                    got = intake.insert_change(
                        conn, order_id=order_id, message_id=mid, source=source, change=c
                    )
            except Exception as exc:
                if conn.closed or conn.broken:
                    raise
                log.warning("message %s: change refused by the store (%s)", mid, _sqlstate(exc))
                self.errors.append(
                    IntakeError(
                        code="intake.change_refused_by_store",
                        message=f"the {what} could not be stored: {_describe(exc)}",
                        where=where,
                        action="Report to the OrderFlow data team; replay the message after "
                        "the fix.",
                    )
                )
                continue
            if got.change_id is not None:
                self.stored.setdefault(order_id, []).append(got.change_id)
            elif got.same:
                self.repeats[c.reference or ""] = got.earlier_message_id  # type: ignore[assignment]
            else:
                self.errors.append(
                    IntakeError(
                        code="intake.change_reference_reused",
                        message=f"the {what} reuses reference {c.reference} of a different "
                        f"change received in message {got.earlier_message_id}; it was not "
                        "stored",
                        where=where,
                        action="Ask the sender whether this is a new change (it needs its own "
                        "change number, e.g. 860 BCH05) or a corrected resend; handle it by "
                        "hand with customer service.",
                    )
                )


def _changes_outcome(conn, mid: int, result: ParseResult, done: _Changes) -> Outcome:
    """The outcome of a message that carried changes and no new orders."""
    errors = [*result.errors, *done.errors]
    details = {**result.details, **done.details()}
    if done.stored:
        intake.set_outcome(
            conn,
            mid,
            "change_received",
            errors=errors,
            order_count=0,
            control=result.control,
            details=details,
        )
        _queue_acks(conn, result)
        return Outcome(mid, "change_received", errors=tuple(errors))
    if done.repeats and not done.errors:  # every change was stored before
        earlier = next(iter(done.repeats.values()))
        intake.set_outcome(
            conn,
            mid,
            "duplicate",
            duplicate_of=earlier,
            control=result.control,
            details={**details, "reason": "the same change(s) were received before"},
        )
        _queue_acks(conn, result)
        return Outcome(mid, "duplicate", duplicate_of=earlier)
    intake.set_outcome(
        conn, mid, "quarantined", errors=errors, control=result.control, details=details
    )
    _queue_acks(conn, result)
    return Outcome(mid, "quarantined", errors=tuple(errors))


def _acknowledgment(conn, mid: int, partner_id: str | None, result: ParseResult) -> Outcome:
    """A partner's 997s: each is matched to the outbound document (855/856/810) whose group
    it acknowledges. One that matches nothing we sent is quarantined, not dropped."""
    from orderflow.store import fulfilment

    matched, unknown = [], []
    for ack in result.acknowledgments:
        key = fulfilment.match_ack(
            conn,
            partner_id or "",
            ack["functional_id"],
            ack["group_control_number"],
            ack.get("group_status"),
            ack,
            mid,
        )
        (matched if key else unknown).append(key or ack)
    details = {**result.details, "acknowledges": matched}
    if unknown:
        errors = [
            IntakeError(
                code="x12.997_unmatched",
                message=f"the 997 acknowledges {a['functional_id']} group "
                f"{a['group_control_number']}, which OrderFlow never sent to {partner_id}",
                where=f"AK1 {a['functional_id']}*{a['group_control_number']}",
                action="Ask the partner which document they meant; replay this message if "
                "it was ours.",
            )
            for a in unknown
        ]
        intake.set_outcome(
            conn, mid, "quarantined", errors=errors, control=result.control, details=details
        )
        return Outcome(mid, "quarantined", errors=tuple(errors))
    intake.set_outcome(conn, mid, "acknowledgment", control=result.control, details=details)
    return Outcome(mid, "acknowledgment")


def _hold(conn, created: list[str], holds: dict, actor_id: str, run) -> None:
    """Orders that must not flow (e.g. a low-confidence extraction) go ON_HOLD with a typed
    exception, in the same transaction that created them."""
    from orderflow.domain.lifecycle import transition
    from orderflow.store import events, exceptions

    moves = []
    for order_id in created:
        if order_id not in holds:
            continue
        category, reason, details = holds[order_id]
        exceptions.open_for_order(
            conn, order_id=order_id, category=category, reason=reason, details=details
        )
        moves.append(
            transition(
                order_id,
                "RECEIVED",
                "ON_HOLD",
                actor_type="system",
                actor_id=actor_id,
                reason_codes=(category,),
                details=details,
            )
        )
    run = run or {}
    events.append(
        conn,
        moves,
        dag_id=run.get("dag_id"),
        run_id=run.get("run_id"),
        task_id=run.get("task_id"),
        map_index=run.get("map_index"),
    )


def _queue_acks(conn, result: ParseResult) -> None:
    from orderflow.store import outbox

    for ack in result.acks:
        outbox.enqueue(conn, **ack)


# ------------------------------------------------------------------------------ streamed
#: orders inserted at once while a streamed message is read (bounded memory per message)
STREAM_BATCH = 500


@dataclass
class StreamedParse:
    """A parser that hands over its orders while it reads (EDI), so that a message of any
    size is decided in bounded memory. ``events`` yields, in message order:

    - ``("open", None)``: a scope opens (an interchange, a functional group);
    - ``("orders", [Order, ...])``: orders usable so far, provisional within the open scopes;
    - ``("changes", [OrderChange, ...])``: customer changes, likewise (stored in order_change
      for the order each names, after the orders before them);
    - ``("close", keep)``: the innermost scope closes; ``keep=False`` drops its orders (a
      rejected group or interchange: nothing from it is used).

    ``first_control()`` is the control number for duplicate detection (ISA13), known once
    the first orders are out. ``summary()``, once the events are exhausted, is what the
    message brings besides its orders (``ParseResult`` with ``orders`` empty) and whether
    every order must be dropped after all (a test interchange, a reader failure).
    """

    events: Iterator[tuple[str, Any]]
    summary: Callable[[], tuple[ParseResult, bool]]
    first_control: Callable[[], str | None]


class _Scope:
    """What one open scope of a streamed message brought: dropped or merged as a whole."""

    def __init__(self) -> None:
        self.orders = 0
        self.fresh = 0
        self.created: list[str] = []
        self.refused: list[IntakeError] = []
        self.repeat_errors: list[IntakeError] = []
        self.repeats: dict[str, str] = {}
        self.dup_orders: dict[str, str] = {}
        self.keys: list[tuple[str | None, str]] = []
        self.changes = _Changes()

    def merge(self, inner: _Scope) -> None:
        self.orders += inner.orders
        self.fresh += inner.fresh
        self.created += inner.created
        self.refused += inner.refused
        self.repeat_errors += inner.repeat_errors
        self.repeats |= inner.repeats
        self.dup_orders |= inner.dup_orders
        self.keys += inner.keys
        self.changes.merge(inner.changes)


def _decide_streamed(
    conn, stored, channel, partner_id, client_request_id, streamed: StreamedParse, run, actor_id
) -> Outcome:
    """:func:`_decide` for a streamed parse: the same outcomes, decided in one transaction,
    with the orders inserted batch by batch as the parser reads. Each scope (interchange,
    group) is a savepoint: a scope found unusable at its end is rolled back; each batch is
    inserted under its own savepoint (and a refused order alone under its own)."""
    mid = stored.message_id
    try:
        with db.transaction(conn):
            return _decide_streamed_in(
                conn, stored, channel, partner_id, client_request_id, streamed, run, actor_id
            )
    except Exception as exc:
        if conn.closed or conn.broken:
            raise
        return _store_refused(conn, mid, exc)


def _decide_streamed_in(
    conn, stored, channel, partner_id, client_request_id, streamed: StreamedParse, run, actor_id
) -> Outcome:
    mid = stored.message_id
    db.savepoint(conn, "of_stream_all")
    scopes = [_Scope()]
    # (customer, PO) → order id, ST02: every order of the message so far (its "where" is
    # only worked out for a repeat; a message holds 100,000s of orders)
    first: dict[tuple[str | None, str], tuple[str, str | None]] = {}
    earlier: int | None = None
    checked_earlier = False
    batch: list[Order] = []

    def flush() -> None:
        nonlocal batch
        if not batch:
            return
        scope = scopes[-1]
        kept = []
        for o in batch:
            key = (o.customer_id, o.po_number)
            if key in first:
                original_id, original_st02 = first[key]
                original_where = _where_at(o.po_number, original_id, original_st02)
                where = _where(o)
                scope.repeats[where] = original_id
                scope.repeat_errors.append(
                    IntakeError(
                        code="intake.duplicate_po_in_message",
                        message=f"PO {o.po_number} appears again in this message ({where}); "
                        f"it was taken once, as order {original_id} ({original_where})",
                        where=where,
                        action="Nothing if it is a repeat; if it is a different order, ask "
                        "the sender for it under its own PO number.",
                    )
                )
                continue
            first[key] = (o.order_id, o.provenance.transaction_control_number)
            scope.keys.append(key)
            kept.append(o)
        batch = []
        if earlier is not None:  # a duplicate message: nothing is inserted
            return
        known = intake.existing_orders_by_po(
            conn, [(o.customer_id, partner_id, o.po_number) for o in kept]
        )
        fresh = []
        for o in kept:
            original_order = known.get((o.customer_id, partner_id, o.po_number))
            if original_order is None:
                fresh.append(o)
            else:
                scope.dup_orders[o.po_number] = original_order
        for o in fresh:
            o.provenance.message_id = mid
        if fresh:
            created, refused = _insert_isolated(conn, fresh, mid, actor_id, run)
            scope.fresh += len(fresh)
            scope.created += created
            scope.refused += refused

    for kind, value in streamed.events:
        if kind == "changes":  # after the orders before them: a change may be for one
            flush()
            if not checked_earlier:
                checked_earlier = True
                earlier = intake.earlier_message_with(
                    conn,
                    message_id=mid,
                    partner_id=partner_id,
                    content_sha256=stored.content_sha256,
                    interchange_control_number=streamed.first_control(),
                    client_request_id=client_request_id,
                    channel=channel,
                )
            if earlier is None:
                scopes[-1].changes.store(conn, mid, partner_id, value)
            else:
                scopes[-1].changes.count += len(value)
        elif kind == "orders":
            if not checked_earlier:
                checked_earlier = True
                earlier = intake.earlier_message_with(
                    conn,
                    message_id=mid,
                    partner_id=partner_id,
                    content_sha256=stored.content_sha256,
                    interchange_control_number=streamed.first_control(),
                    client_request_id=client_request_id,
                    channel=channel,
                )
            scopes[-1].orders += len(value)
            batch += value
            if len(batch) >= STREAM_BATCH:
                flush()
        elif kind == "open":
            flush()
            db.savepoint(conn, f"of_stream_{len(scopes)}")
            scopes.append(_Scope())
        elif kind == "close":
            flush()
            name = f"of_stream_{len(scopes) - 1}"
            inner = scopes.pop()
            if value:
                db.release_savepoint(conn, name)
                scopes[-1].merge(inner)
            else:
                db.rollback_to_savepoint(conn, name)
                db.release_savepoint(conn, name)
                for key in inner.keys:
                    first.pop(key, None)
    flush()
    while len(scopes) > 1:  # scopes the parser left open: not usable
        db.rollback_to_savepoint(conn, f"of_stream_{len(scopes) - 1}")
        inner = scopes.pop()
        for key in inner.keys:
            first.pop(key, None)
    result, drop_all = streamed.summary()
    top = scopes[0]
    if drop_all:
        db.rollback_to_savepoint(conn, "of_stream_all")
        top = _Scope()
    db.release_savepoint(conn, "of_stream_all")

    if not top.orders and not top.changes.count:  # as _decide_in without orders
        return _decide_in(
            conn, stored, channel, partner_id, client_request_id, result, run, actor_id
        )
    if earlier is not None:
        intake.set_outcome(
            conn,
            mid,
            "duplicate",
            duplicate_of=earlier,
            control=result.control,
            details={
                **result.details,
                "reason": "same content, interchange "
                "control number or client request id as message "
                f"{earlier}",
            },
        )
        return Outcome(mid, "duplicate", duplicate_of=earlier)
    if not top.orders:  # changes only
        return _changes_outcome(conn, mid, result, top.changes)
    if not top.fresh and (top.changes.stored or top.changes.errors):
        result.details["duplicate_orders"] = top.dup_orders  # the changes decide
        return _changes_outcome(conn, mid, result, top.changes)
    if not top.fresh:
        first_dup = next(iter(top.dup_orders.values()))
        original = intake.source_message_of(conn, first_dup)
        if original is None or original == mid:  # a replay of our own orders
            intake.set_outcome(
                conn,
                mid,
                "orders_created",
                errors=[*result.errors, *top.repeat_errors],
                order_count=len(first),
                control=result.control,
                details=result.details,
            )
            return Outcome(mid, "orders_created", tuple(i for i, _ in first.values()))
        intake.set_outcome(
            conn,
            mid,
            "duplicate",
            duplicate_of=original,
            control=result.control,
            details={**result.details, "duplicate_orders": top.dup_orders},
        )
        return Outcome(mid, "duplicate", duplicate_of=original)
    errors = [*result.errors, *top.repeat_errors, *top.refused, *top.changes.errors]
    details = {**result.details, **top.changes.details()}
    if top.dup_orders:
        details["duplicate_orders"] = top.dup_orders
    if top.repeats:
        details["repeated_in_message"] = top.repeats
    if not top.created and top.refused:
        intake.set_outcome(
            conn, mid, "quarantined", errors=errors, control=result.control, details=details
        )
        _queue_acks(conn, result)
        return Outcome(mid, "quarantined", errors=tuple(errors))
    intake.set_outcome(
        conn,
        mid,
        "orders_created",
        errors=errors,
        order_count=top.fresh - len(top.refused),
        control=result.control,
        details=details,
    )
    _queue_acks(conn, result)
    return Outcome(mid, "orders_created", tuple(top.created), tuple(errors))


def _store_refused(conn, mid: int, exc: Exception) -> Outcome:
    """The store refused a message's outcome: quarantine the message with the refusal."""
    log.warning(
        "message %s: the store refused its outcome (%s); quarantining it", mid, _sqlstate(exc)
    )
    error = IntakeError(
        code="intake.store_refused",
        message=f"the store refused this message's outcome: {_describe(exc)}",
        action="Report to the OrderFlow data team (a value passed the checks the store "
        "then refused); replay the message after the fix.",
    )
    with db.transaction(conn):
        intake.set_outcome(
            conn, mid, "quarantined", errors=[error], details={"refused_at": "outcome"}
        )
    return Outcome(mid, "quarantined", errors=(error,))
