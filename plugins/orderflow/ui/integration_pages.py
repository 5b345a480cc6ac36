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
  sent rows whose follow-up is dead (``store.outbox_report.OUTBOX_ATTENTION``, as ``orderflow outbox
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

from orderflow.store import orders, outbox_report, outbox_send

if TYPE_CHECKING:
    import psycopg

    from orderflow.ui.app import User

DEAD_SHOWN = 200
OVERDUE_SHOWN = 200
KINDS = ("resend", "followup")


def may_replay(user: User) -> bool:
    """The owner or escalation role of ``integration_failure`` (``outbox.replay_roles``:
    ``integration``), or ``operations_manager``."""
    from orderflow import access
    from orderflow.integrations import outbox

    owner, escalation = outbox.replay_roles()
    return access.may_resolve(user.name, owner, escalation)


def health(conn: psycopg.Connection, *, days: int = 7) -> dict[str, Any]:
    """The numbers of ``/integrations`` (see the module docstring for each)."""
    from orderflow import edi_acks

    days = max(1, min(int(days), 90))
    now = orders.now(conn)
    since = now - timedelta(days=days)
    endpoints = outbox_report.endpoint_health(conn, since)
    for e in endpoints:
        e["failure_rate"] = (
            float(e["failed_attempts"]) / float(e["attempts"]) if e["attempts"] else None
        )
        e["dead_letters"] = e["dead"] + e["unknown"] + e["followup_dead"]
    acks = outbox_report.ack_counts(
        conn, since, sorted(edi_acks.GROUP_NOT_ACCEPTED), sorted(edi_acks.SET_NOT_ACCEPTED)
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
    rows = outbox_report.dead_letters(conn, limit)
    for r in rows:
        r["kind"] = "resend" if r["status"] in ("dead", "unknown") else "followup"
    return rows


def _audit_refusal(conn, user: User, key: str, reason: str, why: str) -> None:
    """A refused follow-up replay, audited as ``outbox.replay_dead_letters`` audits a refused
    replay (same action), changing nothing else."""
    outbox_send.audit(
        conn,
        actor=user.name,
        action="outbox_replay_refused",
        idempotency_key=key,
        before={"selected": [key], "kind": "followup"},
        after={"refused": why},
        reason=reason or None,
        actor_role=",".join(sorted(user.roles)) or None,
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
    row = outbox_report.state_of(conn, key)
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
