"""Micro-batch pull of the B2B portal's orders feed.

The watermark (``sync_cursor`` ``portal:<conn>``) advances only after every item of a page is
stored, so a crash re-reads the page (no gap) and re-reads are recognised by their ingest key
(no repeat). One reader at a time, by advisory lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.channels import portal as portal_channel
from orderflow.intake.core import ParseResult, ingest
from orderflow.store import cursors, db

if TYPE_CHECKING:
    import psycopg

    from orderflow.integrations.systems import PortalHook


@dataclass
class PullStats:
    pages: int = 0
    items: int = 0
    redeliveries: int = 0
    outcomes: Counter = field(default_factory=Counter)
    cursor_from: int = 0
    cursor_to: int = 0
    order_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "items": self.items,
            "redeliveries": self.redeliveries,
            "outcomes": dict(self.outcomes),
            "cursor_from": self.cursor_from,
            "cursor_to": self.cursor_to,
            "orders_created": len(self.order_ids),
        }


def pull(
    conn: psycopg.Connection,
    hook: PortalHook,
    *,
    partner_id: str = "portal",
    page_size: int = 200,
    max_pages: int | None = None,
    run: dict[str, Any] | None = None,
) -> PullStats:
    name = f"portal:{hook.http_conn_id}"
    stats = PullStats()
    with cursors.exclusive(conn, name):
        cursor = int(cursors.get(conn, name, "0"))
        stats.cursor_from = cursor
        while max_pages is None or stats.pages < max_pages:
            page = hook.orders_page(cursor, page_size)
            stats.pages += 1
            for item in page["items"]:
                stats.items += 1
                outcome = _ingest_item(conn, item, partner_id, run)
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


def _ingest_item(conn, item: dict, partner_id: str, run):
    raw = portal_channel.item_bytes(item)
    request_id = str(item.get("client_request_id") or item.get("request_id") or "") or None
    if portal_channel.is_change(item):  # a cancel or change of an order sent before
        request_id = f"change:{request_id}" if request_id else None

    def parse(data: bytes, stored) -> ParseResult:
        if portal_channel.is_change(item):
            change, errors = portal_channel.parse_change(data, partner_id=partner_id)
            return ParseResult(changes=[change] if change else [], errors=errors)
        order, errors = portal_channel.parse_item(
            data,
            partner_id=partner_id,
            message_id=stored.message_id,
            source_ref=request_id,
            sha=stored.content_sha256,
        )
        return ParseResult(orders=[order] if order else [], errors=errors)

    return ingest(
        conn,
        channel="portal",
        partner_id=partner_id,
        source_ref=request_id,
        raw=raw,
        parse=parse,
        content_type="application/json",
        client_request_id=request_id,
        run=run,
        actor_id="intake_portal",
    )
