"""Outbox reporting repository: what the outbox holds for people — rows per action and
state, the rows that wait for a person (dead, unknown, dead follow-ups), delivery health per
partner and receiver, 997 acknowledgement counts. (Queueing is ``store.outbox``.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

#: The outbox rows that wait for a person (``orderflow outbox attention`` lists them).
#: (migration 0027's ``outbox_attention_idx`` holds exactly these rows: keep the two alike)
OUTBOX_ATTENTION = "status IN ('dead', 'unknown') OR followup_status = 'dead'"
#: Who an outbox row is for: its partner, else its customer, else its receiver.
_PARTNER = "coalesce(o.payload->>'partner_id', o.payload->>'customer_id', o.target_conn_id)"


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def is_queued(conn: psycopg.Connection, key: str) -> bool:
    """Whether an outbox row with idempotency key ``key`` exists."""
    return (
        conn.execute("SELECT 1 FROM orderflow.outbox WHERE idempotency_key = %s", (key,)).fetchone()
        is not None
    )


def queued_keys(conn: psycopg.Connection, keys: list[str]) -> set[str]:
    """Those of ``keys`` an outbox row has (:func:`is_queued` of several)."""
    if not keys:
        return set()
    return {
        r[0]
        for r in conn.execute(
            "SELECT idempotency_key FROM orderflow.outbox WHERE idempotency_key = ANY(%s)",
            (keys,),
        )
    }


def state_of(conn: psycopg.Connection, key: str) -> tuple | None:
    """(outbox_id, status, followup_status) of the row with key ``key``."""
    return conn.execute(
        "SELECT outbox_id, status, followup_status FROM orderflow.outbox "
        "WHERE idempotency_key = %s",
        (key,),
    ).fetchone()


def attention_counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(dead, unknown, dead follow-ups) among the rows that wait for a person."""
    return conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'dead'), "
        "count(*) FILTER (WHERE status = 'unknown'), "
        "count(*) FILTER (WHERE followup_status = 'dead') "
        f"FROM orderflow.outbox WHERE {OUTBOX_ATTENTION}"
    ).fetchone()


def attention_rows(conn: psycopg.Connection, limit: int) -> list[tuple]:
    """(key, status, followup_status, error) of the first ``limit`` rows waiting for a person."""
    return conn.execute(
        f"""
        SELECT idempotency_key, status, followup_status,
               CASE WHEN followup_status = 'dead' THEN followup_error ELSE last_error END
          FROM orderflow.outbox
         WHERE {OUTBOX_ATTENTION}
         ORDER BY outbox_id LIMIT %s
        """,
        (limit,),
    ).fetchall()


def status_counts(conn: psycopg.Connection) -> list[tuple]:
    """(action, status, rows, follow-ups pending, oldest waiting) per action and status."""
    return conn.execute(
        """
        SELECT action, status, count(*),
               count(*) FILTER (WHERE followup_status = 'pending') AS followups,
               min(created_at) FILTER (WHERE status IN ('pending', 'failed', 'sending'))
          FROM orderflow.outbox GROUP BY 1, 2 ORDER BY 1, 2
        """
    ).fetchall()


def endpoint_health(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Per partner, action and receiver: rows queued and sent since ``since``, waiting,
    retrying, attempts and failed attempts, send latency, the rows waiting for a person and
    the last error."""
    attention = f"({OUTBOX_ATTENTION})"  # (unqualified: one table)
    return _rows(
        conn.execute(
            f"""
            WITH w AS (
                SELECT o.*, {_PARTNER} AS partner, o.created_at >= %(since)s AS recent,
                       CASE WHEN o.status = 'sending' THEN greatest(o.attempts - 1, 0)
                            ELSE o.attempts END AS finished,
                       CASE WHEN o.status IN ('sent', 'sending') THEN greatest(o.attempts - 1, 0)
                            ELSE o.attempts END AS failures
                  FROM orderflow.outbox o
                 WHERE o.created_at >= %(since)s OR {attention}
                    OR o.status IN ('pending', 'sending', 'failed')
            )
            SELECT partner, action, target_conn_id AS receiver,
                   count(*) FILTER (WHERE recent) AS queued,
                   count(*) FILTER (WHERE recent AND status = 'sent') AS sent,
                   count(*) FILTER (WHERE status IN ('pending', 'sending')) AS waiting,
                   count(*) FILTER (WHERE status = 'failed') AS retrying,
                   coalesce(sum(finished) FILTER (WHERE recent), 0) AS attempts,
                   coalesce(sum(failures) FILTER (WHERE recent), 0) AS failed_attempts,
                   avg(attempts) FILTER (WHERE recent AND status = 'sent') AS attempts_per_sent,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM sent_at - created_at))
                       FILTER (WHERE recent AND status = 'sent') AS p50_seconds,
                   percentile_cont(0.95) WITHIN GROUP (
                       ORDER BY extract(epoch FROM sent_at - created_at))
                       FILTER (WHERE recent AND status = 'sent') AS p95_seconds,
                   max(sent_at) AS last_success,
                   count(*) FILTER (WHERE status = 'dead') AS dead,
                   count(*) FILTER (WHERE status = 'unknown') AS unknown,
                   count(*) FILTER (WHERE followup_status = 'dead') AS followup_dead,
                   (array_agg(last_error ORDER BY outbox_id DESC)
                       FILTER (WHERE last_error IS NOT NULL AND status <> 'sent'))[1] AS last_error
              FROM w
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3
            """,
            {"since": since},
        )
    )


def ack_counts(
    conn: psycopg.Connection,
    since: datetime,
    group_rejects: Sequence[str],
    set_rejects: Sequence[str],
) -> list[dict[str, Any]]:
    """Per partner and document type sent since ``since``: documents, accepted, rejected
    (a group code in ``group_rejects`` or a transaction code in ``set_rejects``), awaiting
    an acknowledgement, resent; the last 997 and the partner's window."""
    return _rows(
        conn.execute(
            """
            SELECT d.partner_id, d.document_type,
                   count(*) AS documents,
                   count(*) FILTER (WHERE d.ack_status IS NOT NULL AND NOT rej) AS accepted,
                   count(*) FILTER (WHERE rej) AS rejected,
                   count(*) FILTER (WHERE rej AND d.resent_as IS NULL) AS rejected_open,
                   count(*) FILTER (WHERE d.ack_status IS NULL AND d.resent_as IS NULL
                                      AND o.status = 'sent') AS awaiting,
                   count(*) FILTER (WHERE d.resent_as IS NOT NULL) AS resent,
                   max(d.ack_received_at) AS last_ack,
                   max(tp.ack_window_hours) AS window_hours
              FROM (SELECT d.*, d.ack_status IS NOT NULL AND (
                           d.ack_status = ANY(%(group)s) OR EXISTS (
                               SELECT 1 FROM jsonb_each_text(
                                   coalesce(d.ack_detail->'transactions', '{}'::jsonb)) t
                                WHERE t.value = ANY(%(set)s))) AS rej
                      FROM orderflow.outbound_document d) d
              JOIN orderflow.outbox o USING (idempotency_key)
              LEFT JOIN orderflow.trading_partner tp ON tp.partner_id = d.partner_id
             WHERE d.created_at >= %(since)s
             GROUP BY 1, 2 ORDER BY 1, 2
            """,
            {"since": since, "group": list(group_rejects), "set": list(set_rejects)},
        )
    )


def dead_letters(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows waiting for a person with their open dead-letter record."""
    return _rows(
        conn.execute(
            f"""
            SELECT o.outbox_id, o.idempotency_key, o.order_id, o.action, o.target_conn_id,
                   {_PARTNER} AS partner, o.status, o.followup_status, o.attempts,
                   o.followup_attempts, o.created_at, o.sent_at,
                   CASE WHEN o.followup_status = 'dead' THEN o.followup_error
                        ELSE o.last_error END AS error,
                   dl.created_at AS dead_lettered_at
              FROM orderflow.outbox o
              LEFT JOIN orderflow.dead_letter dl
                ON dl.source_ref = o.idempotency_key AND dl.replayed_at IS NULL
               AND dl.source = CASE WHEN o.followup_status = 'dead' THEN 'outbox_followup'
                                    ELSE 'outbox' END
             WHERE ({OUTBOX_ATTENTION})
             ORDER BY o.outbox_id LIMIT %s
            """,
            (limit,),
        )
    )
