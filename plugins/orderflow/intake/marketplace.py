"""Micro-batch pull of a marketplace's order feed (orders and buyers' cancellation requests).

As the portal's: the watermark (``sync_cursor`` ``marketplace:<conn>``) advances only after
every item of a page is stored, re-reads are recognised by their ingest key, one reader at a
time by advisory lock. Each item is stored raw, then gets one outcome through
:func:`orderflow.intake.core.ingest`: an order is created (and its acknowledgement queued in
the outbox in the same transaction), quarantined or a duplicate; a cancellation request is
stored as a cancel change of the order it names (``change_received``), applied by
``orderflow.changes`` according to the order's state.

The time limits an item states are kept in ``marketplace_order`` whatever its outcome (a
quarantined order still has an acknowledgement limit to miss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderflow.channels import marketplace as channel
from orderflow.intake.core import ParseResult, ingest
from orderflow.intake.portal import PullStats
from orderflow.store import cursors, db
from orderflow.store import marketplace as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.integrations.systems import MarketplaceHook


def parser(partner_id: str, conn_id: str):
    """The intake parser of one feed item: an order (with its acknowledgement to queue) or a
    cancellation request (a change). Also what ``intake_replay`` uses."""

    def parse(data: bytes, stored) -> ParseResult:
        import json

        try:
            item = json.loads(data)
        except ValueError:
            item = None
        if channel.is_cancellation(item):
            change, errors = channel.parse_cancellation(data, partner_id=partner_id)
            return ParseResult(changes=[change] if change else [], errors=errors)
        order, errors = channel.parse_item(
            data, partner_id=partner_id, message_id=stored.message_id, sha=stored.content_sha256
        )
        if order is None:
            return ParseResult(errors=errors)
        from orderflow import marketplace

        return ParseResult(
            orders=[order],
            acks=[marketplace.ack(order.order_id, order.po_number, partner_id, conn_id)],
        )

    return parse


def pull(
    conn: psycopg.Connection,
    hook: MarketplaceHook,
    *,
    partner_id: str = channel.DEFAULT_MARKETPLACE,
    page_size: int = 200,
    max_pages: int | None = None,
    run: dict[str, Any] | None = None,
) -> PullStats:
    name = f"marketplace:{hook.http_conn_id}"
    stats = PullStats()
    parse = parser(partner_id, hook.http_conn_id)
    with cursors.exclusive(conn, name):
        cursor = int(cursors.get(conn, name, "0"))
        stats.cursor_from = cursor
        while max_pages is None or stats.pages < max_pages:
            page = hook.orders_page(cursor, page_size)
            stats.pages += 1
            for item in page["items"]:
                stats.items += 1
                raw = channel.item_bytes(item)
                request_id = channel.request_id(item)
                outcome = ingest(
                    conn,
                    channel="marketplace",
                    partner_id=partner_id,
                    source_ref=request_id,
                    raw=raw,
                    parse=parse,
                    content_type="application/json",
                    client_request_id=request_id,
                    run=run,
                    actor_id="intake_marketplace",
                )
                _keep_terms(conn, raw, partner_id)
                if outcome.seen_before:
                    stats.redeliveries += 1
                else:
                    stats.outcomes[outcome.outcome] += 1
                    stats.order_ids += outcome.order_ids
            nxt = int(page["next_cursor"])
            if nxt != cursor:
                with db.transaction(conn):
                    cursors.put(conn, name, str(nxt), (run or {}).get("run_id"))
                cursor = nxt
            if not page.get("has_more"):
                break
        stats.cursor_to = cursor
    return stats


def _keep_terms(conn, raw: bytes, partner_id: str) -> None:
    """The item's time limits on ``marketplace_order`` (after the raw item is stored; a
    re-read writes the same)."""
    terms = channel.terms(raw)
    if terms is None:
        return
    with db.transaction(conn):
        if terms["type"] == "order":
            repo.record_order_terms(
                conn,
                marketplace_id=partner_id,
                marketplace_order_id=terms["marketplace_order_id"],
                order_id=channel.order_id(terms["marketplace_order_id"], partner_id),
                ordered_at=terms["ordered_at"],
                acknowledge_by=terms["acknowledge_by"],
                ship_by=terms["ship_by"],
            )
        else:
            repo.record_cancel_request(
                conn,
                marketplace_id=partner_id,
                marketplace_order_id=terms["marketplace_order_id"],
                requested_at=terms["requested_at"],
                respond_by=terms["respond_by"],
            )
