"""``POST /orderflow/api/events/{source}``: the WMS's and carrier's webhooks, and the
portal's and marketplace's "new orders" notices.

Not behind Airflow's login (a WMS has no Airflow user): the sender signs each request with
the secret shared through the ``fulfilment_push`` Connection (its password) — see
:mod:`orderflow.pushed.signing`. 401 for a missing or wrong signature (nothing stored), 422
for a body that is not events of that source, 503 when the store is unreachable (the sender
retries; the poll reads the feed anyway). 200 with ``{received, stored, duplicates, woken}``
once the events are committed (a notice: ``stored`` 0, once the intake DAG's wake-up is
published or has failed — see :func:`orderflow.pushed.inbox.announce`).
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations.
import json
import logging
import os
import threading
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request

from orderflow.pushed import inbox, signing

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)
POOL_SIZE = int(os.environ.get("ORDERFLOW_PUSH_POOL_SIZE", "4"))

_lock = threading.Lock()
_pool: "ConnectionPool | None" = None


def pool() -> "ConnectionPool":
    global _pool
    with _lock:
        if _pool is None:
            from orderflow.store.pool import store_pool

            _pool = store_pool(max_size=POOL_SIZE)
        return _pool


def register(app) -> None:
    """Mount the webhook receiver on the plugin app."""
    router = APIRouter()

    @router.post("/api/events/{source}")
    async def receive_events(source: str, request: Request) -> dict:
        """Store pushed fulfilment events (signed), then wake the fulfilment DAG; or wake an
        intake DAG for announced orders."""
        body = await request.body()
        try:
            inbox.authenticate(body, request.headers.get(signing.HEADER))
        except signing.BadSignature as exc:
            raise HTTPException(401, f"push rejected: {exc}") from None
        except LookupError as exc:
            log.error("push receiver not configured: %s", exc)
            raise HTTPException(503, f"push receiver not configured: {exc}") from None
        try:
            events = inbox.parse(source, json.loads(body or b"null"))
        except (ValueError, inbox.Rejected) as exc:
            raise HTTPException(422, str(exc)) from None
        from starlette.concurrency import run_in_threadpool

        if source in inbox.NOTICE_SOURCES:
            return await run_in_threadpool(inbox.announce, source, events)  # never raises

        def work() -> dict:
            with pool().connection() as conn:
                stored = inbox.store(conn, source, events)
            return inbox.wake_after(source, stored)  # best effort, never raises

        try:
            return await run_in_threadpool(work)
        except Exception as exc:
            log.exception("storing %d pushed %s event(s) failed", len(events), source)
            raise HTTPException(
                503, f"could not store the events ({type(exc).__name__}); retry"
            ) from None

    app.include_router(router)
