"""The outbox sender's statements: claims under a lease, the record of each send and of its
follow-up, dead letters, settling interrupted and dead rows, and the bookkeeping a send's
follow-up writes (the WMS release id, the posted invoice). The sender
(``orderflow.integrations.outbox``) owns every transaction and savepoint; these functions
never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


# ---------------------------------------------------------------------------- claims


def claim(
    conn: psycopg.Connection,
    actions: Sequence[str],
    keyed: Sequence[str],
    lease_seconds: int,
    limit: int,
) -> list[tuple]:
    """Take up to ``limit`` due rows of ``actions`` under a lease of ``lease_seconds``
    (pending, failed and due, or sending with an expired lease — except a row of an action
    not in ``keyed`` that had been handed over). ``SKIP LOCKED``: parallel senders never take
    the same row. Returns (outbox_id, idempotency_key, action, target_conn_id, payload,
    attempts)."""
    return conn.execute(
        """
        UPDATE orderflow.outbox o
           SET status = 'sending', attempts = o.attempts + 1, send_started_at = NULL,
               next_attempt_at = now() + make_interval(secs => %s)
         WHERE o.outbox_id IN (
            SELECT outbox_id FROM orderflow.outbox
             WHERE action = ANY(%s) AND status IN ('pending', 'failed', 'sending')
               AND next_attempt_at <= now()
               AND NOT (status = 'sending' AND send_started_at IS NOT NULL
                        AND action <> ALL(%s))
             ORDER BY outbox_id
             FOR UPDATE SKIP LOCKED
             LIMIT %s)
        RETURNING o.outbox_id, o.idempotency_key, o.action, o.target_conn_id, o.payload, o.attempts
        """,
        (lease_seconds, list(actions), list(keyed), limit),
    ).fetchall()


def mark_handed_over(conn: psycopg.Connection, outbox_id: int) -> None:
    """Record the moment a non-keyed row is handed to its receiver."""
    conn.execute(
        "UPDATE orderflow.outbox SET send_started_at = now() WHERE outbox_id = %s",
        (outbox_id,),
    )


def mark_sent(
    conn: psycopg.Connection, outbox_id: int, answer: Any, followup_status: str | None
) -> None:
    """Record a send the receiver accepted, with its answer and the follow-up's status
    (``pending`` when the action has one, else NULL)."""
    conn.execute(
        "UPDATE orderflow.outbox SET status = 'sent', sent_at = now(), response = %s, "
        "last_error = NULL, followup_status = %s, followup_next_at = now() "
        "WHERE outbox_id = %s",
        (Jsonb(answer), followup_status, outbox_id),
    )


def mark_sent_many(
    conn: psycopg.Connection, sent: Sequence[tuple[int, Any]], followup_status: str | None = None
) -> None:
    """:func:`mark_sent` of several (outbox_id, answer), in one statement."""
    if not sent:
        return
    conn.execute(
        "UPDATE orderflow.outbox o SET status = 'sent', sent_at = now(), response = t.answer, "
        "last_error = NULL, followup_status = %s, followup_next_at = now() "
        "FROM unnest(%s::bigint[], %s::jsonb[]) AS t(outbox_id, answer) "
        "WHERE o.outbox_id = t.outbox_id",
        (followup_status, [r[0] for r in sent], [Jsonb(r[1]) for r in sent]),
    )


def followups_done(conn: psycopg.Connection, outbox_ids: Sequence[int]) -> None:
    """:func:`followup_done` of several rows, in one statement."""
    conn.execute(
        "UPDATE orderflow.outbox SET followup_status = 'done', followup_error = NULL "
        "WHERE outbox_id = ANY(%s)",
        (list(outbox_ids),),
    )


def set_release_ids(conn: psycopg.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """:func:`set_release_id` of several (release_id, shipment_id), in one statement."""
    if pairs:
        conn.execute(
            "UPDATE orderflow.shipment s SET wms_release_id = t.release_id, updated_at = now() "
            "FROM unnest(%s::text[], %s::text[]) AS t(release_id, shipment_id) "
            "WHERE s.shipment_id = t.shipment_id AND s.wms_release_id IS NULL",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        )


def mark_reservations_received_many(
    conn: psycopg.Connection, rows: Sequence[tuple[Any, str, str]]
) -> list[tuple]:
    """:func:`mark_reservations_received` of several (received_at, order_id, dc_id), in one
    statement; returns the (item_id, dc_id, wms_received_at) rows touched."""
    if not rows:
        return []
    # Each (order, DC)'s reservations looked up by order first (LATERAL, behind OFFSET 0):
    # joined to the whole table instead, a planner without statistics on the reservations
    # (a new store's first day) walked every unreceived one for each call (≈ 40 ms).
    return conn.execute(
        "UPDATE orderflow.reservation r SET wms_received_at = k.received_at::timestamptz, "
        "updated_at = now() "
        "FROM (SELECT x.reservation_id, t.received_at "
        "      FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(received_at, order_id, dc_id)"
        "      CROSS JOIN LATERAL (SELECT reservation_id FROM orderflow.reservation r2 "
        "            WHERE r2.order_id = t.order_id AND r2.dc_id = t.dc_id "
        "              AND r2.status = 'released' AND r2.wms_received_at IS NULL OFFSET 0) x "
        "      OFFSET 0) k "
        "WHERE r.reservation_id = k.reservation_id "
        "RETURNING r.item_id, r.dc_id, r.wms_received_at",
        ([str(r[0]) for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
    ).fetchall()


def mark_failed(
    conn: psycopg.Connection, outbox_id: int, status: str, error: str, delay_seconds: int
) -> None:
    """Record a failed send: ``failed`` (retried after ``delay_seconds``) or ``dead``."""
    conn.execute(
        "UPDATE orderflow.outbox SET status = %s, last_error = %s, send_started_at = NULL, "
        "next_attempt_at = now() + make_interval(secs => %s) WHERE outbox_id = %s",
        (status, error, delay_seconds, outbox_id),
    )


def dead_letter(
    conn: psycopg.Connection, source: str, source_ref: str, payload: dict[str, Any], error: str
) -> None:
    """Put a row into ``dead_letter`` (``source`` ``outbox`` or ``outbox_followup``); a
    letter already there for that key is refreshed and un-replayed."""
    conn.execute(
        """
        INSERT INTO orderflow.dead_letter (source, source_ref, payload, error)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (source, source_ref) DO UPDATE
            SET error = EXCLUDED.error, created_at = now(), replayed_at = NULL
        """,
        (source, source_ref, Jsonb(payload), error),
    )


# ---------------------------------------------------------------------------- follow-ups


def followup_done(conn: psycopg.Connection, outbox_id: int) -> None:
    """Record a follow-up that succeeded."""
    conn.execute(
        "UPDATE orderflow.outbox SET followup_status = 'done', followup_error = NULL "
        "WHERE outbox_id = %s",
        (outbox_id,),
    )


def lock_due_followups(conn: psycopg.Connection, actions: Sequence[str]) -> list[tuple]:
    """Lock (``SKIP LOCKED``) up to 500 sent rows of ``actions`` whose follow-up is pending
    and due. Returns (outbox_id, idempotency_key, action, payload, response,
    followup_attempts)."""
    return conn.execute(
        """
        SELECT outbox_id, idempotency_key, action, payload, response, followup_attempts
          FROM orderflow.outbox
         WHERE followup_status = 'pending' AND action = ANY(%s) AND status = 'sent'
           AND followup_next_at <= now()
         ORDER BY outbox_id
         FOR UPDATE SKIP LOCKED
         LIMIT 500
        """,
        (actions,),
    ).fetchall()


def followup_failed(
    conn: psycopg.Connection,
    outbox_id: int,
    status: str,
    attempts: int,
    error: str,
    delay_seconds: int,
) -> None:
    """Record a failed follow-up: ``pending`` (retried after ``delay_seconds``) or ``dead``."""
    conn.execute(
        "UPDATE orderflow.outbox SET followup_status = %s, followup_attempts = %s, "
        "followup_error = %s, followup_next_at = now() + make_interval(secs => %s) "
        "WHERE outbox_id = %s",
        (status, attempts, error, delay_seconds, outbox_id),
    )


def order_of(conn: psycopg.Connection, outbox_id: int) -> str | None:
    """The order an outbox row belongs to (None for one without an order)."""
    return conn.execute(
        "SELECT order_id FROM orderflow.outbox WHERE outbox_id = %s", (outbox_id,)
    ).fetchone()[0]


def set_release_id(conn: psycopg.Connection, release_id: str, shipment_id: str) -> None:
    """The WMS's release id on our shipment (only the first answer is kept)."""
    conn.execute(
        "UPDATE orderflow.shipment SET wms_release_id = %s, updated_at = now() "
        "WHERE shipment_id = %s AND wms_release_id IS NULL",
        (release_id, shipment_id),
    )


def mark_reservations_received(
    conn: psycopg.Connection, received_at: Any, order_id: str, dc_id: str
) -> list[tuple]:
    """The WMS's time of receipt on the released reservations of ``order_id`` at ``dc_id``
    that lack one; returns the (item_id, dc_id, wms_received_at) rows touched."""
    return conn.execute(
        "UPDATE orderflow.reservation SET wms_received_at = %s, updated_at = now() "
        "WHERE order_id = %s AND dc_id = %s AND status = 'released' "
        "AND wms_received_at IS NULL RETURNING item_id, dc_id, wms_received_at",
        (received_at, order_id, dc_id),
    ).fetchall()


def post_invoice(conn: psycopg.Connection, invoice_number: str | None, invoice_id: str) -> None:
    """An invoice the ERP accepted is posted, with the ERP's number."""
    conn.execute(
        "UPDATE orderflow.invoice SET status = 'posted', posted_at = now(), updated_at = now(), "
        "erp_invoice_number = %s WHERE invoice_id = %s AND status <> 'posted'",
        (invoice_number, invoice_id),
    )


# ---------------------------------------------------------------------------- settling


def mark_interrupted_unknown(
    conn: psycopg.Connection, keyed: Sequence[str], actions: Sequence[str] | None
) -> list[tuple]:
    """Mark ``unknown`` every row whose sender died after handing it over, when its action is
    not in ``keyed`` (and is one of ``actions``, if given). Returns (outbox_id,
    idempotency_key, action, payload, send_started_at)."""
    return conn.execute(
        """
        UPDATE orderflow.outbox
           SET status = 'unknown',
               last_error = 'interrupted while being handed to the receiver, which cannot '
                            'tell us whether it arrived; check, then replay or mark sent'
         WHERE status = 'sending' AND next_attempt_at <= now()
           AND send_started_at IS NOT NULL AND action <> ALL(%s)
           AND (%s::text[] IS NULL OR action = ANY(%s::text[]))
        RETURNING outbox_id, idempotency_key, action, payload, send_started_at
        """,
        (list(keyed), actions, actions),
    ).fetchall()


def expire_leases(conn: psycopg.Connection) -> int:
    """Make every ``sending`` row due now; returns how many."""
    return conn.execute(
        "UPDATE orderflow.outbox SET next_attempt_at = now() WHERE status = 'sending'"
    ).rowcount


def lock_status(conn: psycopg.Connection, idempotency_key: str) -> tuple | None:
    """Lock the row of ``idempotency_key``; (status, attempts) or None."""
    return conn.execute(
        "SELECT status, attempts FROM orderflow.outbox WHERE idempotency_key = %s FOR UPDATE",
        (idempotency_key,),
    ).fetchone()


def settle_row(conn: psycopg.Connection, idempotency_key: str, status: str, resend: bool) -> None:
    """Set a dead or unknown row to ``status`` (``pending`` to send again, ``sent`` when a
    person saw it arrive), with its attempts reset."""
    conn.execute(
        "UPDATE orderflow.outbox SET status = %s, next_attempt_at = now(), attempts = 0, "
        "send_started_at = NULL, sent_at = CASE WHEN %s THEN now() END "
        "WHERE idempotency_key = %s",
        (status, not resend, idempotency_key),
    )


def mark_letter_replayed(
    conn: psycopg.Connection, source: str, idempotency_key: str, actor: str
) -> None:
    """Mark the dead letter of ``idempotency_key`` (from ``source``) replayed by ``actor``."""
    conn.execute(
        "UPDATE orderflow.dead_letter SET replayed_at = now(), replayed_by = %s "
        "WHERE source = %s AND source_ref = %s",
        (actor, source, idempotency_key),
    )


def reopen_followup(conn: psycopg.Connection, idempotency_key: str) -> int:
    """Make a dead follow-up pending again; returns the rows changed (0 or 1)."""
    return conn.execute(
        "UPDATE orderflow.outbox SET followup_status = 'pending', followup_attempts = 0, "
        "followup_next_at = now() WHERE idempotency_key = %s AND followup_status = 'dead'",
        (idempotency_key,),
    ).rowcount


def audit(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    idempotency_key: str,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str,
    actor_role: str | None = None,
) -> None:
    """An ``audit_log`` row about an outbox row (object type ``outbox``)."""
    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, object_id, "
        "before, after, reason) VALUES (%s, %s, %s, 'outbox', %s, %s, %s, %s)",
        (actor, actor_role, action, idempotency_key, Jsonb(before), Jsonb(after), reason),
    )


def replayable(
    conn: psycopg.Connection,
    *,
    outbox_ids: list[int] | None,
    action: str | None,
    since: Any,
    until: Any,
    limit: int,
) -> list[dict[str, Any]]:
    """Dead outbox rows: the ids given, or those of ``action`` dead-lettered in [since,
    until); an ``unknown`` row only by its id. Read only."""
    cur = conn.execute(
        """
        SELECT o.outbox_id, o.idempotency_key, o.action, o.status, o.order_id, o.attempts,
               o.last_error, coalesce(d.created_at, o.created_at) AS dead_at
          FROM orderflow.outbox o
          LEFT JOIN orderflow.dead_letter d
                 ON d.source = 'outbox' AND d.source_ref = o.idempotency_key
         WHERE (o.status = 'dead' OR (o.status = 'unknown' AND %(ids)s::bigint[] IS NOT NULL))
           AND (%(ids)s::bigint[] IS NULL OR o.outbox_id = ANY(%(ids)s::bigint[]))
           AND (%(action)s::text IS NULL OR o.action = %(action)s::text)
           AND (%(since)s::timestamptz IS NULL
                OR coalesce(d.created_at, o.created_at) >= %(since)s::timestamptz)
           AND (%(until)s::timestamptz IS NULL
                OR coalesce(d.created_at, o.created_at) < %(until)s::timestamptz)
         ORDER BY o.outbox_id
         LIMIT %(limit)s
        """,
        {
            "ids": list(outbox_ids) if outbox_ids else None,
            "action": action or None,
            "since": since,
            "until": until,
            "limit": limit,
        },
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def target_conn_of(conn: psycopg.Connection, idempotency_key: str) -> str | None:
    """The connection the row of ``idempotency_key`` is sent to (None: no such row)."""
    row = conn.execute(
        "SELECT target_conn_id FROM orderflow.outbox WHERE idempotency_key = %s",
        (idempotency_key,),
    ).fetchone()
    return row[0] if row else None
