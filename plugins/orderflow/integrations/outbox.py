"""The outbox sender: delivers queued side effects, keyed, and accounts for every row.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease (parallel senders never take
the same row). Each row ends in exactly one of these states, whatever fails and wherever:

- ``sent``: the receiver accepted it. The bookkeeping that follows a send (the WMS release id
  on our shipment, the posted invoice) is a *follow-up*: it runs in a savepoint of the same
  transaction that records the send, so a failing follow-up never un-records a send. A
  follow-up that fails is retried with backoff on later runs (``followup_status='pending'``);
  one that cannot succeed (a constraint the answer violates, or the retry budget spent) is a
  typed dead letter (``source='outbox_followup'``) with an exception on the order's desk.
- ``failed`` → retried with exponential backoff; ``dead`` after a rejection (4xx) or the retry
  budget — into ``dead_letter`` for replay. *Every* failure counts, not only HTTP ones: an
  unexpected error in one row is recorded on that row and the rows behind it are still sent.
- ``unknown``: a send to a receiver that cannot deduplicate (e-mail) was interrupted between
  hand-over and record (a killed worker, a stopped stack). Sending it again could send it
  twice, so it waits for a person (``orderflow outbox attention``, then ``settle``).

Delivery guarantee per kind (README "Delivery guarantees"): WMS releases, ERP invoices,
EDI documents, portal webhooks, marketplace callbacks, CRM approval requests and carrier tenders are *exactly once by key* — the receiver answers a repeated
``Idempotency-Key`` with its first answer, so a row re-sent after a crash is effectively
asked "did you get this?". E-mail is *at most once*, with any ambiguity recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orderflow.integrations.http import (
    ExternalRejected,
    ExternalSystemError,
    hook,
    shared_hooks,
)
from orderflow.store import db
from orderflow.store import outbox_send as store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

LEASE_SECONDS = 120
CLAIM_BATCH = 200  # rows per claim: ~1 s of sending, far inside the lease
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600
FOLLOWUP_MAX_ATTEMPTS = 5

#: Receivers that deduplicate by our Idempotency-Key: a row interrupted mid-send is sent again
#: (the receiver answers with its first answer). Every other action is at most once.
KEYED_ACTIONS = frozenset(
    {
        "edi_997",
        "edi_ta1",
        "edi_855",
        "edi_856",
        "edi_810",
        "wms_release",
        "wms_release_cancel",
        "erp_invoice",
        "webhook",
        "marketplace_ack",
        "marketplace_shipment",
        "marketplace_cancel",
        "crm_approval_request",
        "carrier_tender",
    }
)


def _edi(hook_cls):
    def send(conn_id: str, payload: dict, key: str) -> dict:
        return hook(hook_cls, conn_id).send(
            payload["partner_id"], payload["document_type"], payload["body"], idempotency_key=key
        )

    return send


def _wms_release(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow.integrations.systems import WmsHook

    return hook(WmsHook, conn_id).release(payload, idempotency_key=key)


def _wms_release_cancel(conn_id: str, payload: dict, key: str) -> dict:
    """Withdraw a WMS release (a customer's cancel or change after release): what happens to
    the order once it is sent — or refused because picking started — is decided by
    ``orderflow.changes``, which watches these rows."""
    from orderflow.integrations.systems import WmsHook

    return hook(WmsHook, conn_id).cancel_release(payload["release_id"], idempotency_key=key)


def _erp_invoice(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow.integrations.systems import ErpHook

    return hook(ErpHook, conn_id).post_invoice(payload, idempotency_key=key)


def _release_sent(conn, payload: dict, answer: dict) -> None:
    """The WMS's release id on our shipment (its milestones name the release), and the WMS's
    time of receipt on the reservations it carries: from then on the WMS's own inventory
    numbers include them (see ``store.processing.refresh_allocated``)."""
    if payload.get("shipment_id") and answer.get("release_id"):
        store.set_release_id(conn, answer["release_id"], payload["shipment_id"])
    if payload.get("order_id") and answer.get("released_at"):
        from orderflow.store import processing as inventory

        rows = store.mark_reservations_received(
            conn, answer["released_at"], payload["order_id"], payload["dc_id"]
        )
        inventory.refresh_on_receipt(conn, rows)


def _invoice_sent(conn, payload: dict, answer: dict) -> None:
    """An invoice the ERP accepted is posted (the order may now close as INVOICED)."""
    if payload.get("invoice_id"):
        store.post_invoice(conn, answer.get("invoice_number"), payload["invoice_id"])


def _tender_refused(conn, key: str, payload: dict, error: str) -> None:
    from orderflow import tendering

    tendering.refused(conn, key, payload, error)


def _tender_booked(conn, payload: dict, answer: dict) -> None:
    from orderflow import tendering

    tendering.booked(conn, payload, answer)


def _carrier_tender(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow import tendering

    return tendering.send(conn_id, payload, key)


def _release_refused(conn, key: str, payload: dict, error: str) -> None:
    from orderflow import refusals

    refusals.release_refused(conn, key, payload, error)


#: What a refusal (409: the receiver cannot do it as asked) sets in motion, in the transaction
#: that dead-letters the row: a WMS release it cannot cover re-routes its order; a tender the
#: carrier refuses re-plans the shipment with the next-best service (``orderflow.tendering``).
ON_REFUSED: dict[str, Callable[..., None]] = {
    "wms_release": _release_refused,
    "carrier_tender": _tender_refused,
}


def _marketplace_sent(conn, payload: dict, answer: dict) -> None:
    from orderflow import marketplace

    marketplace.callback_sent(conn, payload, answer)


def _crm_request_sent(conn, payload: dict, answer: dict) -> None:
    from orderflow import crm

    crm.request_sent(conn, payload, answer)


def _crm_request(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow import crm

    return crm.send_request(conn_id, payload, key)


#: Follow-ups of a send: run in a savepoint of the transaction that records it (see module doc).
AFTER_SENT: dict[str, Callable[..., None]] = {
    "wms_release": _release_sent,
    "erp_invoice": _invoice_sent,
    "marketplace_ack": _marketplace_sent,
    "marketplace_shipment": _marketplace_sent,
    "marketplace_cancel": _marketplace_sent,
    "crm_approval_request": _crm_request_sent,
    "carrier_tender": _tender_booked,
}


def _batch_registry() -> dict[str, tuple[Callable[[dict, str], Any], Callable[..., Any]]]:
    """Keyed actions whose receivers take several rows in one request: per action, what one
    row's request item is (``(payload, key)`` → item; raising as the row's single send would
    for a payload it cannot send) and the send of several items on a Connection (``(conn_id,
    [item, …])`` → per item ``(answer, None)`` or ``(None, exception)``, what its single
    send would have returned or raised — or None when the receiver has no batch endpoint:
    the rows are then sent one by one)."""
    from orderflow.integrations.systems import CarrierHook, EdiGatewayHook, WmsHook

    def wms_release(conn_id: str, items: list):
        return hook(WmsHook, conn_id).release_many(items)

    def carrier_tender(conn_id: str, items: list):
        return hook(CarrierHook, conn_id).book_many(items)

    def edi(conn_id: str, items: list):
        return hook(EdiGatewayHook, conn_id).send_many(items)

    def edi_item(p: dict, k: str) -> tuple:
        return (p["partner_id"], p["document_type"], p["body"], k)

    return {
        "wms_release": (lambda p, k: (p, k), wms_release),
        "carrier_tender": (lambda p, k: (p["request"], k), carrier_tender),
        **dict.fromkeys(("edi_997", "edi_ta1", "edi_855", "edi_856", "edi_810"), (edi_item, edi)),
    }


def _registry() -> dict[str, Callable[[str, dict, str], dict]]:
    from orderflow import marketplace, notifications
    from orderflow.integrations.systems import EdiGatewayHook

    edi = _edi(EdiGatewayHook)
    return {
        "edi_997": edi,
        "edi_ta1": edi,
        "edi_855": edi,
        "edi_856": edi,
        "edi_810": edi,
        "wms_release": _wms_release,
        "wms_release_cancel": _wms_release_cancel,
        "erp_invoice": _erp_invoice,
        "email": notifications.send_email,
        "webhook": notifications.send_webhook,
        **dict.fromkeys(marketplace.ACTIONS, marketplace.send_callback),
        "crm_approval_request": _crm_request,
        "carrier_tender": _carrier_tender,
    }


def claim(conn: psycopg.Connection, actions: list[str], limit: int = 200) -> list[tuple]:
    """Take up to ``limit`` due rows (pending, failed and due, or with an expired lease —
    except an interrupted non-keyed send, which :func:`reconcile_interrupted` settles)."""
    with db.transaction(conn):
        return store.claim(conn, actions, list(KEYED_ACTIONS), LEASE_SECONDS, limit)


@dataclass
class SendResult:
    """What one :func:`send_due` call did. ``claimed`` rows each end in exactly one of
    ``sent`` / ``retry`` / ``dead``; the rest is bookkeeping around earlier sends."""

    claimed: int = 0
    sent: int = 0
    retry: int = 0
    dead: int = 0
    rejected: int = 0  # of the dead: the receiver answered no (a decision, not a failure)
    unknown: int = 0  # interrupted non-keyed sends settled as ambiguous (this call)
    followup_done: int = 0
    followup_retry: int = 0
    followup_dead: int = 0
    errors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, int]:
        """The non-zero outcome counters (the XCom of a send task)."""
        return {
            k: v for k, v in vars(self).items() if k not in ("claimed", "rejected", "errors") and v
        }


def send_due(
    conn: psycopg.Connection,
    actions: list[str],
    *,
    limit: int = 200,
    senders: dict[str, Callable[[str, dict, str], dict]] | None = None,
) -> dict[str, int]:
    """Settle interrupted sends, retry due follow-ups, then claim and send due rows; returns
    the non-zero counters of :class:`SendResult`."""
    return send(conn, actions, limit=limit, senders=senders).as_dict()


def send(
    conn: psycopg.Connection,
    actions: list[str],
    *,
    limit: int = 200,
    senders: dict[str, Callable[[str, dict, str], dict]] | None = None,
) -> SendResult:
    # Keyed actions whose receivers take several rows in one request; only with our own
    # senders (``senders`` given — a test's stand-ins — are called row by row).
    many = _batch_registry() if senders is None else {}
    senders = senders or _registry()
    res = SendResult()
    errors: list[str] = []
    res.unknown = reconcile_interrupted(conn, actions)
    retry_followups(conn, actions, res)

    in_flight: tuple[list[tuple], Any] | None = None  # a slice sent, not yet recorded

    def record_in_flight() -> None:
        nonlocal in_flight
        if in_flight is not None:
            rows, sending = in_flight
            in_flight = None
            _record(conn, rows, sending.result(), senders, res, errors)

    with (
        shared_hooks(),
        _Threads(SEND_WORKERS, "outbox-send") as pool,  # a slice's requests
        _Threads(1, "outbox-ahead") as ahead,  # the next slice, while this one is recorded
    ):
        while res.claimed < limit:
            # Claim in small batches so a lease never outlives the batch it covers.
            batch = claim(conn, actions, min(CLAIM_BATCH, limit - res.claimed))
            if not batch and in_flight is not None:
                record_in_flight()  # recording may queue rows (a refused tender's next one)
                batch = claim(conn, actions, min(CLAIM_BATCH, limit - res.claimed))
            if not batch:
                break
            res.claimed += len(batch)
            # Recorded a slice at a time. A slice whose rows all go to batch endpoints is
            # sent while the slice before it is recorded (the receivers' time and ours
            # overlap instead of adding up): a worker killed then leaves at most two such
            # slices sent but unrecorded (SENT_UNRECORDED_MAX), sent again by key once the
            # lease expires. Any other slice is sent and recorded alone (e-mails: handed
            # over one at a time), after the slice in flight.
            step = slice_rows(batch, many)
            for at in range(0, len(batch), step):
                rows = batch[at : at + step]
                if step == RECORD_EVERY_BATCHED:
                    sending = ahead.submit(_dispatch, rows, senders, pool, many)
                    record_in_flight()
                    in_flight = (rows, sending)
                else:
                    record_in_flight()
                    _record(conn, rows, _dispatch(rows, senders, pool, many), senders, res, errors)
        record_in_flight()
    res.errors = tuple(errors[:20])
    return res


#: keyed sends of one batch in flight at once (the receivers answer a repeated key with
#: their first answer, so concurrency changes nothing they see but the arrival order)
SEND_WORKERS = 8
#: claimed rows sent (concurrently) and then recorded together, a slice at a time
RECORD_EVERY = 4 * SEND_WORKERS
#: the slice when every row of a claim goes to a batch endpoint: each slice is one request
#: per action and Connection and one recording transaction, so a slice of 32 spent most of
#: its CPU on the round itself (measured: 0.86 → 0.55 ms of CPU a row, ours, PostgreSQL's
#: and the receiver's, from 32 to 128; docs/performance.md). Half a claim: two even slices
#: per claim, the same two rounds a claim as the 128 + 72 measured.
RECORD_EVERY_BATCHED = CLAIM_BATCH // 2
#: rows a sender killed at the worst moment leaves sent but unrecorded (sent again under
#: their keys once the lease expires): the slice being recorded and the one sent meanwhile
SENT_UNRECORDED_MAX = 2 * RECORD_EVERY_BATCHED


def slice_rows(batch: list[tuple], many: dict | None) -> int:
    """Rows of ``batch`` sent and then recorded together: :data:`RECORD_EVERY_BATCHED` when
    every row is keyed and its action has a batch sender (a receiver that turns out to have
    no batch endpoint gets the slice's rows one request each, still keyed), else
    :data:`RECORD_EVERY` (actions sent one request each, and e-mails, which cannot be asked
    again)."""
    if many and all(r[2] in KEYED_ACTIONS and r[2] in many for r in batch):
        return RECORD_EVERY_BATCHED
    return RECORD_EVERY


class _Threads:
    """A few threads of the sender, started on first use; leaving the block waits for what
    is in flight (a slice sent ahead is then recorded by the caller, or — when the block is
    left by an error — sent again by key after the lease)."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers, self.name = workers, name
        self._pool = None

    def _started(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        return self._pool

    def map(self, fn, items):
        return list(self._started().map(fn, items))

    def submit(self, fn, *args):
        return self._started().submit(fn, *args)

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _outcome(send: Callable[[str, dict, str], dict], conn_id: str, payload: dict, key: str):
    """(answer, None) or (None, the exception): one send, whatever it raised."""
    try:
        return send(conn_id, payload, key), None
    except Exception as exc:  # every failure counts toward the row's attempts
        return None, exc


def _dispatch(batch, senders, pool=None, many=None) -> dict[int, tuple]:
    """Send the keyed rows of a slice; their outcomes by outbox id (:func:`_outcome`). Rows
    of an action in ``many`` (:func:`_batch_registry`) go to their receiver in one request
    per action and Connection (the groups concurrently), each row under its own key; the
    other keyed rows — and those whose receiver has no batch endpoint — are sent
    concurrently one request each (the first of each action and Connection alone: it builds
    the shared hook). Touches no database: it may run while another slice is recorded."""
    early: dict[int, tuple] = {}
    keyed = [r for r in batch if r[2] in KEYED_ACTIONS]
    if many:
        groups: dict[tuple[str, str], list[tuple]] = {}
        for r in keyed:
            if r[2] in many:
                groups.setdefault((r[2], r[3]), []).append(r)

        def together(group: tuple[tuple[str, str], list[tuple]]):
            """The group's outcomes by outbox id (rows left out: no batch endpoint)."""
            (action, conn_id), rows = group
            item_of, send_many = many[action]
            out: dict[int, tuple] = {}
            sent: list[tuple] = []
            items: list = []
            for r in rows:
                try:
                    items.append(item_of(r[4], r[1]))
                    sent.append(r)
                except Exception as exc:  # that row's payload: as its single send fails
                    out[r[0]] = (None, exc)
            try:
                got = send_many(conn_id, items) if items else []
            except Exception as exc:  # as one send's: every row of the request counts it
                got = [(None, exc)] * len(items)
            if got is not None:
                out.update((r[0], o) for r, o in zip(sent, got, strict=True))
            return out

        items = list(groups.items())
        done = pool.map(together, items) if pool is not None and len(items) > 1 else None
        for outcomes in done if done is not None else map(together, items):
            early.update(outcomes)  # the rest (no batch endpoint): one request a row below
        keyed = [r for r in keyed if r[0] not in early]
    if pool is not None and len(keyed) > 1:
        firsts: dict[tuple[str, str], int] = {}
        for r in keyed:
            firsts.setdefault((r[2], r[3]), r[0])
        for r in keyed:
            if r[0] in firsts.values():
                early[r[0]] = _outcome(senders[r[2]], r[3], r[4], r[1])
        rest = [r for r in keyed if r[0] not in early]
        for r, outcome in zip(
            rest, pool.map(lambda r: _outcome(senders[r[2]], r[3], r[4], r[1]), rest), strict=True
        ):
            early[r[0]] = outcome
    return early


def _record(conn, batch, early, senders, res: SendResult, errors: list[str]) -> None:
    """Record each outcome of a slice in claim order (``early``: :func:`_dispatch`'s); a
    non-keyed row is handed over and sent here, alone."""
    accepted: list[tuple] = []  # keyed rows sent concurrently: recorded together below
    for outbox_id, key, action, conn_id, payload, attempts in batch:
        if outbox_id in early:
            answer, exc = early[outbox_id]
            if exc is None:
                accepted.append((outbox_id, key, action, payload, answer))
                continue
        else:
            if action not in KEYED_ACTIONS:
                # The moment of hand-over: after a crash past this point we cannot know
                # whether the receiver got it, and it cannot tell us (see
                # reconcile_interrupted).
                with db.transaction(conn):
                    store.mark_handed_over(conn, outbox_id)
            answer, exc = _outcome(senders[action], conn_id, payload, key)
        if exc is not None:
            rejected = isinstance(exc, ExternalRejected)
            final = rejected or attempts >= MAX_ATTEMPTS
            error = str(exc) if isinstance(exc, ExternalSystemError) else _describe(exc)
            on_refused = ON_REFUSED.get(action) if rejected and exc.status == 409 else None
            _failed(conn, outbox_id, key, action, payload, error, attempts, final, on_refused)
            errors.append(f"{key}: {error}")
            if final:
                res.dead += 1
                res.rejected += rejected
            else:
                res.retry += 1
            continue
        follow = AFTER_SENT.get(action)
        with db.transaction(conn):
            store.mark_sent(conn, outbox_id, answer, "pending" if follow else None)
            if follow:
                _run_followup(conn, follow, outbox_id, key, action, payload, answer, 0, res)
        res.sent += 1
    if accepted:
        # One transaction for the batch's accepted keyed sends (were it lost, the rows are
        # sent again under their keys once the lease expires, and answered by key): the
        # rows without a follow-up in one statement, each follow-up in its own savepoint.
        with db.transaction(conn):
            plain = [(a[0], a[4]) for a in accepted if a[2] not in AFTER_SENT]
            store.mark_sent_many(conn, plain)
            groups: dict[str, list[tuple]] = {}
            for row in accepted:
                if row[2] in AFTER_SENT:
                    groups.setdefault(row[2], []).append(row)
            for action, rows in groups.items():
                store.mark_sent_many(conn, [(r[0], r[4]) for r in rows], "pending")
                if _run_followups(conn, action, rows):
                    continue
                for outbox_id, key, _, payload, answer in rows:
                    follow = AFTER_SENT[action]
                    _run_followup(conn, follow, outbox_id, key, action, payload, answer, 0, res)
        res.sent += len(accepted)


def _run_followups(conn, action: str, rows: list[tuple]) -> bool:
    """The follow-ups of several sent rows of ``action`` at once, in one savepoint, where the
    action has a set-based form (:data:`AFTER_SENT_MANY`). False — nothing of it kept — when
    it has none or any of it failed: the caller then runs each row's follow-up in its own
    savepoint, as one row at a time always does."""
    import psycopg

    many = AFTER_SENT_MANY.get(action)
    if many is None or len(rows) < 2:
        return False
    try:
        with conn.transaction():
            if not many(conn, [(r[3], r[4]) for r in rows]):
                raise _NotSetBased
            store.followups_done(conn, [r[0] for r in rows])
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection itself is gone: nothing here can be recorded
    except Exception:
        return False
    return True


class _NotSetBased(Exception):
    """A batch the set-based follow-up cannot take as it is (rolled back, row by row)."""


def _releases_sent(conn, sent: list[tuple[dict, dict]]) -> bool:
    """:func:`_release_sent` of several (payload, answer) at once; False (nothing done)
    when two of them name the same shipment or the same order and DC (one at a time, the
    first answer is kept: row by row decides those)."""
    ids = [
        (a["release_id"], p["shipment_id"])
        for p, a in sent
        if p.get("shipment_id") and a.get("release_id")
    ]
    received = [
        (a["released_at"], p["order_id"], p["dc_id"])
        for p, a in sent
        if p.get("order_id") and a.get("released_at")
    ]
    if len({i[1] for i in ids}) < len(ids) or len({r[1:] for r in received}) < len(received):
        return False
    store.set_release_ids(conn, ids)
    rows = store.mark_reservations_received_many(conn, received)
    if rows:
        from orderflow.store import processing as inventory

        inventory.refresh_on_receipt(conn, rows)
    return True


#: Set-based forms of :data:`AFTER_SENT` (one savepoint for a batch's rows of the action).
def _tenders_booked(conn, sent: list[tuple[dict, dict]]) -> bool:
    from orderflow import tendering

    return tendering.booked_many(conn, sent)


AFTER_SENT_MANY: dict[str, Callable[..., bool]] = {
    "wms_release": _releases_sent,
    "carrier_tender": _tenders_booked,
}


def _run_followup(conn, follow, outbox_id, key, action, payload, answer, attempts, res) -> bool:
    """One try of a sent row's follow-up, inside the caller's transaction (a savepoint: a
    failure rolls back the follow-up only, never the record of the send). True when done."""
    import psycopg

    try:
        with conn.transaction():
            follow(conn, payload, answer)
            store.followup_done(conn, outbox_id)
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection itself is gone: nothing here can be recorded
    except Exception as exc:
        attempts += 1
        # A constraint the answer violates will violate it again: no point retrying.
        final = isinstance(exc, psycopg.IntegrityError) or attempts >= FOLLOWUP_MAX_ATTEMPTS
        _followup_failed(
            conn, outbox_id, key, action, payload, answer, _describe(exc), attempts, final
        )
        if final:
            res.followup_dead += 1
        else:
            res.followup_retry += 1
        return False
    return True


def retry_followups(conn: psycopg.Connection, actions: list[str], res: SendResult) -> None:
    """Run again the follow-ups of sent rows that failed earlier and are due."""
    with db.transaction(conn):
        due = store.lock_due_followups(conn, actions)
        for outbox_id, key, action, payload, answer, attempts in due:
            follow = AFTER_SENT[action]
            if _run_followup(conn, follow, outbox_id, key, action, payload, answer, attempts, res):
                res.followup_done += 1


def _followup_failed(conn, outbox_id, key, action, payload, answer, error, attempts, final) -> None:
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    store.followup_failed(
        conn, outbox_id, "dead" if final else "pending", attempts, error[:2000], delay
    )
    if final:
        reason = (
            f"The {action.replace('_', ' ')} {key} was accepted by the receiver, but recording "
            f"its answer failed: {error[:300]}. The send stands; our records lack its answer "
            "(e.g. milestones for that release cannot be matched). Check the receiver's answer "
            "(outbox response) against our record, fix it, then replay the follow-up."
        )
        store.dead_letter(
            conn,
            "outbox_followup",
            key,
            {"outbox_id": outbox_id, "action": action, "answer": answer},
            error[:2000],
        )
        order_id = store.order_of(conn, outbox_id)
        if order_id:
            from orderflow.store import exceptions

            exceptions.open_routed(
                conn,
                category="integration_failure",
                reason=reason,
                order_id=order_id,
                details={"kind": "outbox_followup", "idempotency_key": key, "error": error[:500]},
            )
    log.warning(
        "outbox %s (%s) sent, follow-up %s after %d attempt(s): %s",
        outbox_id,
        action,
        "dead-lettered" if final else "will retry",
        attempts,
        error,
    )


def reconcile_interrupted(conn: psycopg.Connection, actions: list[str] | None = None) -> int:
    """Settle rows whose sender died mid-send. Keyed rows need nothing: the next claim sends
    them again and the receiver answers by key. A non-keyed row (e-mail) that had been handed
    over is marked ``unknown`` and dead-lettered for a person, never sent blindly again."""
    with db.transaction(conn):
        rows = store.mark_interrupted_unknown(conn, list(KEYED_ACTIONS), actions)
        for outbox_id, key, action, payload, started in rows:
            store.dead_letter(
                conn,
                "outbox",
                key,
                {"outbox_id": outbox_id, "action": action, "payload": payload},
                f"outbox.ambiguous: {action} handed over at {started.isoformat()} and the "
                "sender stopped before recording the result",
            )
    for _, key, action, _, _ in rows:
        log.warning("outbox %s (%s): interrupted mid-send, marked unknown", key, action)
    return len(rows)


def expire_leases(conn: psycopg.Connection) -> int:
    """At stack start nobody is sending: every lease is stale. Expire them so keyed rows go
    out again at once (receivers answer by key), then settle interrupted e-mails."""
    with db.transaction(conn):
        n = store.expire_leases(conn)
    reconcile_interrupted(conn)
    return n


def _describe(exc: BaseException) -> str:
    """A one-line error for people: the type and the message, no payloads."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:2000]


def _failed(conn, outbox_id, key, action, payload, error, attempts, final, on_refused=None):
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    with db.transaction(conn):
        store.mark_failed(conn, outbox_id, "dead" if final else "failed", error[:2000], delay)
        if final:
            store.dead_letter(
                conn,
                "outbox",
                key,
                {"outbox_id": outbox_id, "action": action, "payload": payload},
                error[:2000],
            )
        if final and on_refused is not None:
            try:
                with conn.transaction():  # a savepoint: a failing re-route keeps the letter
                    on_refused(conn, key, payload, error)
            except Exception:
                log.exception("outbox %s (%s): re-routing the refusal failed", key, action)
    log.warning(
        "outbox %s (%s) %s after %d attempt(s): %s",
        outbox_id,
        action,
        "dead-lettered" if final else "will retry",
        attempts,
        error,
    )


def settle(
    conn: psycopg.Connection,
    idempotency_key: str,
    actor: str,
    *,
    resend: bool,
    reason: str,
) -> bool:
    """A person's decision on a ``dead`` or ``unknown`` row: send it again (same key) or
    record it as sent (they saw it arrive). Only the roles that may replay dead letters
    (:func:`require_replay_role`; a refusal is audited and raises :class:`ReplayRefused`).
    Audited; False when the row is in neither state."""
    role = require_replay_role(conn, actor, idempotency_key, [idempotency_key], reason)
    return _settle(conn, idempotency_key, actor, resend=resend, reason=reason, actor_role=role)


def _settle(
    conn: psycopg.Connection,
    idempotency_key: str,
    actor: str,
    *,
    resend: bool,
    reason: str,
    audit_action: str = "outbox_settle",
    actor_role: str | None = None,
) -> bool:
    with db.transaction(conn):
        row = store.lock_status(conn, idempotency_key)
        if row is None or row[0] not in ("dead", "unknown"):
            return False
        after = "pending" if resend else "sent"
        store.settle_row(conn, idempotency_key, after, resend)
        store.mark_letter_replayed(conn, "outbox", idempotency_key, actor)
        _audit(conn, actor, audit_action, idempotency_key, row[0], after, reason, actor_role)
        return True


def replay_followup(
    conn: psycopg.Connection, idempotency_key: str, actor: str, reason: str
) -> bool:
    """Run a dead follow-up again on the next send (after its cause was fixed). Only the
    roles that may replay dead letters (a refusal is audited and raises
    :class:`ReplayRefused`). Audited."""
    role = require_replay_role(conn, actor, idempotency_key, [idempotency_key], reason)
    with db.transaction(conn):
        if store.reopen_followup(conn, idempotency_key) != 1:
            return False
        store.mark_letter_replayed(conn, "outbox_followup", idempotency_key, actor)
        _audit(
            conn, actor, "outbox_followup_replay", idempotency_key, "dead", "pending", reason, role
        )
        return True


def _audit(conn, actor, action, key, before, after, reason, role=None) -> None:
    before = before if isinstance(before, dict) else {"status": before}
    after = after if isinstance(after, dict) else {"status": after}
    store.audit(conn, actor, action, key, before, after, reason, role)


# ------------------------------------------------------------------ dead letters: replay
#: The exception category whose owner (and escalation) role may replay outbound dead letters
#: (routing rules: ``integration`` / ``operations_manager``).
REPLAY_CATEGORY = "integration_failure"
REPLAY_LIMIT = 500


class ReplayRefused(ValueError):
    """A replay that may not (or cannot) be applied; the message says why and what to do."""


def replay_roles(book=None) -> tuple[str, str | None]:
    """(owner role, escalation role) that may replay dead letters: the routing rules' route
    of ``integration_failure`` (``operations_manager`` always may)."""
    from orderflow import rules

    route = (book or rules.load()).routing.route(REPLAY_CATEGORY)
    return route.owner_role or "integration", route.escalation_role


def replayable(
    conn: psycopg.Connection,
    *,
    outbox_ids: list[int] | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = REPLAY_LIMIT,
) -> list[dict[str, Any]]:
    """Dead outbox rows: the ids given, or those of ``action`` dead-lettered in [since,
    until). An ``unknown`` row (an interrupted e-mail: it may have arrived) is selected only
    by its id — after a person checked — never by action or window. Read only (what the UI
    lists)."""
    return store.replayable(
        conn, outbox_ids=outbox_ids, action=action, since=since, until=until, limit=limit
    )


def _selection(outbox_ids, action, since, until) -> str:
    parts = []
    if outbox_ids:
        parts.append("ids=" + ",".join(str(i) for i in outbox_ids))
    if action:
        parts.append(f"action={action}")
    if since or until:
        parts.append(
            f"window={since.isoformat() if since else '…'}/{until.isoformat() if until else '…'}"
        )
    return " ".join(parts)


def require_replay_role(
    conn: psycopg.Connection, actor: str, selection: str, selected: list[str], reason: str
) -> str | None:
    """The one role check of every override of an outbound side effect (replay, settle,
    follow-up replay), whatever the entry point: ``actor`` must hold the owner or escalation
    role of ``integration_failure`` (or the super role). A refusal is audited
    (``outbox_replay_refused``, committed) and raises :class:`ReplayRefused`; otherwise the
    actor's roles, for the audit row."""
    from orderflow import access

    held = ",".join(sorted(access.roles_of(actor))) or None
    owner, escalation = replay_roles()
    if access.may_resolve(actor, owner, escalation):
        return held
    refused = (
        f"{actor} may not replay dead letters: that needs the {owner} role"
        + (f" or {escalation}" if escalation and escalation != access.SUPER_ROLE else "")
        + f" (or {access.SUPER_ROLE}). Ask a holder of that role, or have the role granted "
        f"in {access.roles_file()}"
    )
    with db.transaction(conn):
        _audit(
            conn,
            actor,
            "outbox_replay_refused",
            selection,
            {"selected": selected},
            {"refused": refused},
            reason,
            held,
        )
    raise ReplayRefused(refused)


def replay_dead_letters(
    conn: psycopg.Connection,
    *,
    actor: str,
    reason: str,
    outbox_ids: list[int] | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    limit: int = REPLAY_LIMIT,
) -> dict[str, Any]:
    """Put dead-lettered outbound side effects back in the queue under their keys — the one
    implementation behind the ``outbox_replay`` DAG, ``orderflow outbox replay`` and the UI.

    Selects by ``outbox_ids``, or by ``action`` and/or a window of when they were
    dead-lettered ([since, until)). ``actor`` must hold the owner or escalation role of
    ``integration_failure`` in the routing rules (``integration``; ``operations_manager``
    always may): anyone else gets :class:`ReplayRefused`, and the refusal is audited
    (``outbox_replay_refused``, committed) with nothing else changed. Each replayed row is
    audited (``outbox_replay``, with the actor's roles and the reason). ``dry_run`` lists
    the rows and writes nothing (no role needed to look).

    Returns ``{"selected": [...rows], "replayed": [keys], "skipped": [keys], "dry_run"}``.
    """

    if not (outbox_ids or action or since or until):
        raise ReplayRefused("say which dead letters: outbox ids, or an action and/or a window")
    if not dry_run and not (reason or "").strip():
        raise ReplayRefused("say why (the reason goes into the audit trail)")
    rows = replayable(
        conn, outbox_ids=outbox_ids, action=action, since=since, until=until, limit=limit
    )
    out: dict[str, Any] = {"selected": rows, "replayed": [], "skipped": [], "dry_run": dry_run}
    if dry_run:
        return out
    role = require_replay_role(
        conn,
        actor,
        _selection(outbox_ids, action, since, until),
        [r["idempotency_key"] for r in rows],
        reason,
    )
    for r in rows:
        key = r["idempotency_key"]
        done = _settle(
            conn,
            key,
            actor,
            resend=True,
            reason=reason,
            audit_action="outbox_replay",
            actor_role=role,
        )
        out["replayed" if done else "skipped"].append(key)
    log.info(
        "outbox replay by %s: %d replayed, %d skipped",
        actor,
        len(out["replayed"]),
        len(out["skipped"]),
    )
    return out
