"""Integration health (#18): per partner and endpoint (outbox action and receiving
connection) how deliveries went, what waits for a person, and the partners' 997s for the
documents we sent — plus replaying a dead letter from the page.

**Numbers** (over the rows queued in the last ``days``; what waits for a person counts
whenever it was queued):

- *partner*: the trading partner of an EDI document (``payload.partner_id``), the customer of
  a portal webhook (``payload.customer_id``), otherwise the receiving system's connection.
- *failure rate*: failed send attempts / finished send attempts. Every attempt but the last
  of a sent row failed; every attempt of a failed, dead or unknown row did (an attempt in
  flight is not counted). A replay starts a row's count again.
- *latency*: the outbox does not record how long a send took, so the page shows what it does
  record: attempts per sent row and time-to-sent (queued → accepted, p50 / p95), which
  includes the waits between retries.
- *last success*: the latest ``sent_at``; *dead letters*: rows ``dead`` or ``unknown`` and
  sent rows whose follow-up is dead (``status.OUTBOX_ATTENTION``, as ``orderflow outbox
  attention`` lists them).
- *997s* (``outbound_document``): accepted (AK9 A, no set refused), rejected as
  ``edi_acks.not_accepted`` decides (what opens ``edi_rejected``), awaiting, resent, and
  overdue — past the partner's window without a 997, exactly the documents
  ``edi_acks.overdue`` opens ``edi_ack_overdue`` for.

**Replay** reuses the outbox's own functions: ``outbox.replay_dead_letters`` (a dead or
unknown row back in the queue under the same key — the implementation the CLI and the
``outbox_replay`` DAG use) and ``outbox.replay_followup`` (a dead follow-up run again); both
audit what they do. Only the owner role of ``integration_failure`` (``integration``) or
``operations_manager`` may; a refusal changes nothing but its own audit row
(``outbox_replay_refused``)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

if TYPE_CHECKING:
    import psycopg

    from orderflow.ui.app import User

DEAD_SHOWN = 200
OVERDUE_SHOWN = 200
KINDS = ("resend", "followup")


def _rows(cur) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def may_replay(user: User) -> bool:
    """The owner or escalation role of ``integration_failure`` (``outbox.replay_roles``:
    ``integration``), or ``operations_manager``."""
    from orderflow import access
    from orderflow.integrations import outbox

    owner, escalation = outbox.replay_roles()
    return access.may_resolve(user.name, owner, escalation)


_PARTNER = "coalesce(o.payload->>'partner_id', o.payload->>'customer_id', o.target_conn_id)"


def health(conn: psycopg.Connection, *, days: int = 7) -> dict[str, Any]:
    """The numbers of ``/integrations`` (see the module docstring for each)."""
    from orderflow import edi_acks
    from orderflow.status import OUTBOX_ATTENTION

    days = max(1, min(int(days), 90))
    now = conn.execute("SELECT now()").fetchone()[0]
    since = now - timedelta(days=days)
    attention = f"({OUTBOX_ATTENTION})"  # (unqualified: one table)
    endpoints = _rows(
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
    for e in endpoints:
        e["failure_rate"] = (
            float(e["failed_attempts"]) / float(e["attempts"]) if e["attempts"] else None
        )
        e["dead_letters"] = e["dead"] + e["unknown"] + e["followup_dead"]
    acks = _rows(
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
            {
                "since": since,
                "group": sorted(edi_acks.GROUP_NOT_ACCEPTED),
                "set": sorted(edi_acks.SET_NOT_ACCEPTED),
            },
        )
    )
    # overdue: exactly the documents the watch opens edi_ack_overdue for (whenever sent)
    overdue = edi_acks.overdue_rows(conn)
    per_partner: dict[tuple[str, str], int] = {}
    for d in overdue:
        k = (d["partner_id"], d["document_type"])
        per_partner[k] = per_partner.get(k, 0) + 1
    seen = set()
    for a in acks:
        a["overdue"] = per_partner.get((a["partner_id"], a["document_type"]), 0)
        seen.add((a["partner_id"], a["document_type"]))
    for (partner, doc_type), n in sorted(per_partner.items()):
        if (partner, doc_type) not in seen:  # sent before the period, still overdue
            acks.append(
                {
                    "partner_id": partner,
                    "document_type": doc_type,
                    "documents": 0,
                    "accepted": 0,
                    "rejected": 0,
                    "rejected_open": 0,
                    "awaiting": 0,
                    "resent": 0,
                    "last_ack": None,
                    "window_hours": None,
                    "overdue": n,
                }
            )
    acks.sort(key=lambda a: (a["partner_id"], a["document_type"]))
    return {
        "days": days,
        "since": since,
        "as_of": now,
        "endpoints": endpoints,
        "acks": acks,
        "overdue": overdue[:OVERDUE_SHOWN],
        "overdue_total": len(overdue),
        "dead": dead_letters(conn),
        "totals": {
            "dead_letters": sum(e["dead_letters"] for e in endpoints),
            "overdue": len(overdue),
            "rejected_open": sum(a["rejected_open"] for a in acks),
        },
    }


def dead_letters(conn: psycopg.Connection, limit: int = DEAD_SHOWN) -> list[dict[str, Any]]:
    """Outbox rows that wait for a person (dead, unknown, dead follow-up), oldest first, with
    their dead-letter record and what may be done with each."""
    from orderflow.status import OUTBOX_ATTENTION

    rows = _rows(
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
    for r in rows:
        r["kind"] = "resend" if r["status"] in ("dead", "unknown") else "followup"
    return rows


def _audit_refusal(conn, user: User, key: str, reason: str, why: str) -> None:
    """A refused follow-up replay, audited as ``outbox.replay_dead_letters`` audits a refused
    replay (same action), changing nothing else."""
    from psycopg.types.json import Jsonb

    conn.execute(
        "INSERT INTO orderflow.audit_log (actor, actor_role, action, object_type, object_id, "
        "before, after, reason) VALUES (%s, %s, 'outbox_replay_refused', 'outbox', %s, %s, "
        "%s, %s)",
        (
            user.name,
            ",".join(sorted(user.roles)) or None,
            key,
            Jsonb({"selected": [key], "kind": "followup"}),
            Jsonb({"refused": why}),
            reason or None,
        ),
    )


def replay(
    conn: psycopg.Connection, user: User, key: str, kind: str, reason: str
) -> dict[str, Any]:
    """Replay one dead letter as ``user``: ``resend`` (a dead or unknown row queued again under
    its key, through ``outbox.replay_dead_letters``, which checks the role and audits either
    way) or ``followup`` (a dead follow-up run again, ``outbox.replay_followup``). 403 without
    the role (audited), 409 when the row is not in that state any more, 422 without a
    reason."""
    from orderflow import access
    from orderflow.integrations import outbox

    if kind not in KINDS:
        raise HTTPException(422, f"kind must be one of {', '.join(KINDS)}")
    row = conn.execute(
        "SELECT outbox_id, status, followup_status FROM orderflow.outbox "
        "WHERE idempotency_key = %s",
        (key,),
    ).fetchone()
    if row is None:
        raise HTTPException(404, f"no outbox row {key}")
    if kind == "resend":
        try:
            out = outbox.replay_dead_letters(
                conn, actor=user.name, reason=reason, outbox_ids=[row[0]]
            )
        except outbox.ReplayRefused as exc:
            raise HTTPException(403 if not may_replay(user) else 422, str(exc)) from exc
        if key not in out["replayed"]:
            raise HTTPException(409, f"{key}: not dead or unknown (replayed already?)")
        return {"key": key, "kind": kind}
    if not may_replay(user):
        owner, _ = outbox.replay_roles()
        why = (
            f"{user.name} may not replay dead letters: that needs the {owner} role "
            f"(or {access.SUPER_ROLE})"
        )
        _audit_refusal(conn, user, key, reason, why)
        raise HTTPException(403, why)
    if not reason.strip():
        raise HTTPException(422, "say why (the reason goes into the audit trail)")
    if not outbox.replay_followup(conn, key, user.name, reason):
        raise HTTPException(409, f"{key}: no dead follow-up (replayed already?)")
    return {"key": key, "kind": kind}
