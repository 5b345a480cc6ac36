"""Replay of quarantined messages after a fix.

A replay is a new channel message (``replay_of`` = the original) holding the original bytes —
or corrected bytes a person supplies — that goes through the normal intake path, so it gets
its own single outcome; the original keeps its history and points at its replay. Who asked
for it is written to the append-only audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orderflow.intake.core import Outcome, ParseResult, ingest
from orderflow.store import db, intake

if TYPE_CHECKING:
    import psycopg


class NotReplayable(ValueError):
    pass


def parser_for(
    conn: psycopg.Connection,
    channel: str,
    partner_id: str,
    source_ref: str | None,
    client_request_id: str | None = None,
) -> Callable:
    from orderflow.intake import drops

    name = source_ref or "message"
    if channel == "edi":
        return drops.edi_parser(conn, partner_id, name)
    if channel == "csv":
        return drops.csv_parser(partner_id, name)
    if channel == "portal":
        from orderflow.channels import portal

        def parse(data: bytes, stored) -> ParseResult:
            order, errors = portal.parse_item(
                data,
                partner_id=partner_id,
                message_id=stored.message_id,
                source_ref=client_request_id,
                sha=stored.content_sha256,
            )
            return ParseResult(orders=[order] if order else [], errors=errors)

        return parse
    if channel == "marketplace":
        from orderflow.intake import marketplace
        from orderflow.marketplace import MARKETPLACE_CONN_ID

        return marketplace.parser(partner_id, MARKETPLACE_CONN_ID)
    if channel == "email":
        from orderflow.intake import mailbox

        return mailbox.email_parser(conn, name)
    raise NotReplayable(f"no parser for channel {channel!r}")


def replay(
    conn: psycopg.Connection,
    message_id: int,
    *,
    actor: str,
    reason: str | None = None,
    raw: bytes | None = None,
    run: dict[str, Any] | None = None,
) -> Outcome:
    """Re-run intake on a quarantined message (or on corrected bytes for it)."""
    row = intake.message_for_replay(conn, message_id)
    if row is None:
        raise NotReplayable(f"message {message_id} does not exist")
    channel, partner_id, source_ref, stored_raw, outcome, request_id, details = row
    if outcome != "quarantined":
        raise NotReplayable(
            f"message {message_id} is {outcome}, only quarantined messages are replayed"
        )
    if details.get("replayed_as") and raw is None:
        raise NotReplayable(
            f"message {message_id} was already replayed as message "
            f"{details['replayed_as']}; replay that one, or supply corrected bytes"
        )
    data = bytes(stored_raw) if raw is None else raw
    out = ingest(
        conn,
        channel=channel,
        partner_id=partner_id,
        source_ref=f"replay-{message_id}-{source_ref or ''}"[:200],
        raw=data,
        parse=parser_for(conn, channel, partner_id, source_ref, request_id),
        client_request_id=request_id,
        run=run,
        actor_id=f"replay:{actor}",
    )
    with db.transaction(conn):
        intake.record_replay(
            conn,
            message_id,
            out.message_id,
            out.outcome,
            actor=actor,
            before_outcome=outcome,
            corrected_bytes=raw is not None,
            reason=reason,
        )
    return out


def quarantined(
    conn: psycopg.Connection, *, channel: str | None = None, limit: int = 100
) -> list[dict]:
    """Quarantined messages not yet replayed, newest first, with their first error."""
    rows = intake.quarantined(conn, channel, limit)
    return [
        {
            "message_id": r[0],
            "channel": r[1],
            "partner_id": r[2],
            "source_ref": r[3],
            "received_at": r[4].isoformat(),
            "error": (r[5] or [{}])[0],
        }
        for r in rows
    ]
