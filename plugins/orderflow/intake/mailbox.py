"""Mailbox intake: e-mailed purchase orders (PDF or image attachments) from a maildir-style
drop folder. Extraction matches against master data in the store (never the ERP per order);
an order whose extraction confidence is below the threshold is created ON_HOLD with a
``low_confidence_extraction`` exception for a person to confirm — never a silent guess."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow.intake import files
from orderflow.intake.core import ParseResult, ingest
from orderflow.intake.drops import BatchStats

if TYPE_CHECKING:
    import psycopg

    from orderflow.channels import email_po
    from orderflow.channels.email_po import Catalog

MAX_MAIL_BYTES = 25 * 1024 * 1024
log = logging.getLogger(__name__)


def load_catalog(conn: psycopg.Connection) -> Catalog:
    """What extraction may match against, from the store's master data."""
    from orderflow.channels.email_po import Catalog
    from orderflow.store import intake as intake_store

    return Catalog(**intake_store.catalog(conn))


def email_parser(
    conn: psycopg.Connection,
    name: str,
    catalog: Catalog | None = None,
    prepared: email_po.PreparedEmail | None = None,
):
    from orderflow.channels import email_po

    cat = catalog

    def parse(data: bytes, stored) -> ParseResult:
        nonlocal cat
        if cat is None:
            cat = load_catalog(conn)
        res = email_po.parse_email(
            data,
            catalog=cat,
            source_ref=name,
            message_id=stored.message_id,
            sha=stored.content_sha256,
            received_at=datetime.now(UTC),
            prepared=prepared,
        )
        holds: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for low in res.low_confidence:
            fields = {k: v for k, v in low.items() if k != "order_id"}
            holds[low["order_id"]] = (
                "low_confidence_extraction",
                "extracted fields are below the confidence threshold; confirm them against "
                "the attached purchase order",
                fields,
            )
        return ParseResult(
            orders=res.orders,
            errors=res.errors,
            holds=holds,
            details={"attachments": res.attachments, "pages": res.pages, **(res.details or {})},
        )

    return parse


def read_workers() -> int:
    """Messages read ahead at once: one per core (``ORDERFLOW_MAIL_READERS`` overrides)."""
    try:
        return max(1, int(os.environ.get("ORDERFLOW_MAIL_READERS", "0")) or (os.cpu_count() or 1))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def _read_ahead(f: files.DropFile):
    """One waiting e-mail read from its folder, opened and its documents read (a worker
    thread's part; never raises for a bad message — :func:`email_po.prepare_email` keeps
    the failure for the parse, where it becomes the message's outcome)."""
    from orderflow.channels import email_po

    raw, precheck = files.read(f, MAX_MAIL_BYTES)
    prepared = None if precheck else email_po.prepare_email(raw)
    return f, raw, precheck, prepared


def ingest_mailbox(
    conn: psycopg.Connection,
    root: Path,
    *,
    run: dict[str, Any] | None = None,
    limit: int | None = None,
    wait_for_master_data_s: float = 0.0,
) -> BatchStats:
    """Ingest every waiting e-mail (``*.eml``, one message each) of ``root``, then archive it.

    Before the first full master-data sync nothing is read: extraction matches customers,
    ship-tos and items against the store's copy, and against an empty one every PO would be
    held as unreadable. The e-mails wait in the folder (up to ``wait_for_master_data_s`` for
    the sync, then for the next run)."""
    from orderflow import masterdata

    stats = BatchStats()
    deadline = time.monotonic() + wait_for_master_data_s
    while not masterdata.ready(conn) and time.monotonic() < deadline:
        time.sleep(5)  # a first start: the sync runs as the stack comes up
    if not masterdata.ready(conn):
        waiting = len(files.scan(root, per_partner=False, default_partner="mailbox"))
        stats.waiting_for_master_data = waiting
        if waiting:
            log.warning("%d e-mails wait for the first master-data sync", waiting)
        return stats
    catalog = None
    waiting = files.scan(root, per_partner=False, default_partner="mailbox", limit=limit)
    workers = read_workers()
    # The costly half of each message (PDF parsing in the reader process, OCR) is done
    # ahead, on ``workers`` threads (their work is in child processes: the forked readers
    # and tesseract, at most one tesseract per core — ``pdf_text.OCR_SLOTS``); extraction
    # and the store stay here, one message at a time and in order. At most ``2 * workers``
    # messages are read ahead: memory stays bounded by the window, not the backlog.
    with ThreadPoolExecutor(workers, thread_name_prefix="mail-read") as pool:
        ahead: deque[Future] = deque()
        queue = iter(waiting)

        def top_up() -> None:
            while len(ahead) < 2 * workers:
                f = next(queue, None)
                if f is None:
                    return
                ahead.append(pool.submit(_read_ahead, f))

        top_up()
        try:
            while ahead:
                f, raw, precheck, prepared = ahead.popleft().result()
                top_up()
                if catalog is None and not precheck:
                    catalog = load_catalog(conn)
                out = ingest(
                    conn,
                    channel="email",
                    partner_id=f.partner_id,
                    source_ref=f.name,
                    raw=raw,
                    parse=email_parser(conn, f.name, catalog, prepared),
                    size_bytes=f.size,
                    precheck=precheck,
                    run=run,
                    content_type="message/rfc822",
                    actor_id="intake_email",
                )
                del raw, prepared
                stats.add(out)
                files.archive(f, root, out.outcome)
        finally:
            for pending in ahead:  # a lost connection: do not read what will not be stored
                pending.cancel()
    if stats.order_ids:
        from orderflow.store import intake as intake_store

        stats.lines = intake_store.count_lines(conn, stats.order_ids)
    return stats
