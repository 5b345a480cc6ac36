"""The outbox sender: delivers queued side effects at most once per idempotency key.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease (parallel senders never take
the same row; a sender killed mid-send leaves a lease that expires and the row is claimed
again — the partner sees the same ``Idempotency-Key`` and answers with its first answer, so
nothing is done twice). Transient failures back off exponentially; a rejection (4xx) or an
exhausted retry budget moves the row to ``dead`` and into ``dead_letter`` for replay.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

from orderflow.integrations.http import ExternalRejected, ExternalSystemError
from orderflow.store import db

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

LEASE_SECONDS = 120
CLAIM_BATCH = 200  # rows per claim: ~1 s of sending, far inside the lease
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600


def _edi(hook_cls):
    def send(conn_id: str, payload: dict, key: str) -> dict:
        return hook_cls(conn_id).send(
            payload["partner_id"], payload["document_type"], payload["body"], idempotency_key=key
        )

    return send


def _wms_release(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow.integrations.systems import WmsHook

    return WmsHook(conn_id).release(payload, idempotency_key=key)


def _erp_invoice(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow.integrations.systems import ErpHook

    return ErpHook(conn_id).post_invoice(payload, idempotency_key=key)


def _release_sent(conn, payload: dict, answer: dict) -> None:
    """The WMS's release id on our shipment: its milestones name the release."""
    if payload.get("shipment_id") and answer.get("release_id"):
        conn.execute(
            "UPDATE orderflow.shipment SET wms_release_id = %s, updated_at = now() "
            "WHERE shipment_id = %s AND wms_release_id IS NULL",
            (answer["release_id"], payload["shipment_id"]),
        )


def _invoice_sent(conn, payload: dict, answer: dict) -> None:
    """An invoice the ERP accepted is posted (the order may now close as INVOICED)."""
    if payload.get("invoice_id"):
        conn.execute(
            "UPDATE orderflow.invoice SET status = 'posted', posted_at = now(), updated_at = now(), "
            "erp_invoice_number = %s WHERE invoice_id = %s AND status <> 'posted'",
            (answer.get("invoice_number"), payload["invoice_id"]),
        )


#: Bookkeeping in the transaction that marks a row sent (same transaction: never lost).
AFTER_SENT: dict[str, Callable[..., None]] = {
    "wms_release": _release_sent,
    "erp_invoice": _invoice_sent,
}


def _registry() -> dict[str, Callable[[str, dict, str], dict]]:
    from orderflow import notifications
    from orderflow.integrations.systems import EdiGatewayHook

    edi = _edi(EdiGatewayHook)
    return {
        "edi_997": edi,
        "edi_ta1": edi,
        "edi_855": edi,
        "edi_856": edi,
        "edi_810": edi,
        "wms_release": _wms_release,
        "erp_invoice": _erp_invoice,
        "email": notifications.send_email,
        "webhook": notifications.send_webhook,
    }


def claim(conn: psycopg.Connection, actions: list[str], limit: int = 200) -> list[tuple]:
    """Take up to ``limit`` due rows (pending, failed and due, or with an expired lease)."""
    with db.transaction(conn):
        return conn.execute(
            """
            UPDATE orderflow.outbox o
               SET status = 'sending', attempts = o.attempts + 1,
                   next_attempt_at = now() + make_interval(secs => %s)
             WHERE o.outbox_id IN (
                SELECT outbox_id FROM orderflow.outbox
                 WHERE action = ANY(%s) AND status IN ('pending', 'failed', 'sending')
                   AND next_attempt_at <= now()
                 ORDER BY outbox_id
                 FOR UPDATE SKIP LOCKED
                 LIMIT %s)
            RETURNING o.outbox_id, o.idempotency_key, o.action, o.target_conn_id, o.payload, o.attempts
            """,
            (LEASE_SECONDS, actions, limit),
        ).fetchall()


def send_due(
    conn: psycopg.Connection,
    actions: list[str],
    *,
    limit: int = 200,
    senders: dict[str, Callable[[str, dict, str], dict]] | None = None,
) -> dict[str, int]:
    """Claim and send due rows; returns counts by result (sent / retry / dead)."""
    senders = senders or _registry()
    counts: Counter = Counter()
    while (done := sum(counts.values())) < limit:
        # Claim in small batches so a lease never outlives the batch it covers.
        batch = claim(conn, actions, min(CLAIM_BATCH, limit - done))
        if not batch:
            break
        _send_batch(conn, batch, senders, counts)
    return dict(counts)


def _send_batch(conn, batch, senders, counts: Counter) -> None:
    for outbox_id, key, action, conn_id, payload, attempts in batch:
        try:
            answer = senders[action](conn_id, payload, key)
        except ExternalSystemError as exc:
            final = isinstance(exc, ExternalRejected) or attempts >= MAX_ATTEMPTS
            _failed(conn, outbox_id, key, action, payload, str(exc), attempts, final)
            counts["dead" if final else "retry"] += 1
            continue
        with db.transaction(conn):
            conn.execute(
                "UPDATE orderflow.outbox SET status = 'sent', sent_at = now(), response = %s, "
                "last_error = NULL WHERE outbox_id = %s",
                (Jsonb(answer), outbox_id),
            )
            if action in AFTER_SENT:
                AFTER_SENT[action](conn, payload, answer)
        counts["sent"] += 1


def _failed(conn, outbox_id, key, action, payload, error, attempts, final) -> None:
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    with db.transaction(conn):
        conn.execute(
            "UPDATE orderflow.outbox SET status = %s, last_error = %s, "
            "next_attempt_at = now() + make_interval(secs => %s) WHERE outbox_id = %s",
            ("dead" if final else "failed", error[:2000], delay, outbox_id),
        )
        if final:
            conn.execute(
                """
                INSERT INTO orderflow.dead_letter (source, source_ref, payload, error)
                VALUES ('outbox', %s, %s, %s)
                ON CONFLICT (source, source_ref) DO UPDATE
                    SET error = EXCLUDED.error, created_at = now(), replayed_at = NULL
                """,
                (
                    key,
                    Jsonb({"outbox_id": outbox_id, "action": action, "payload": payload}),
                    error[:2000],
                ),
            )
    log.warning(
        "outbox %s (%s) %s after %d attempt(s): %s",
        outbox_id,
        action,
        "dead-lettered" if final else "will retry",
        attempts,
        error,
    )


def replay_dead(conn: psycopg.Connection, idempotency_key: str, actor: str) -> bool:
    """Put a dead-lettered side effect back in the queue (same key: still at most once)."""
    with db.transaction(conn):
        cur = conn.execute(
            "UPDATE orderflow.outbox SET status = 'pending', next_attempt_at = now(), attempts = 0 "
            "WHERE idempotency_key = %s AND status = 'dead'",
            (idempotency_key,),
        )
        conn.execute(
            "UPDATE orderflow.dead_letter SET replayed_at = now(), replayed_by = %s "
            "WHERE source = 'outbox' AND source_ref = %s",
            (actor, idempotency_key),
        )
        return cur.rowcount == 1
