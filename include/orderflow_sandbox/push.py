"""Webhooks: the sandbox WMS and carrier push their events as they happen; the B2B portal and
the marketplace ring a doorbell when new orders are in their feeds.

A subscription per source (``wms`` milestones, ``carrier`` tracking, ``portal`` and
``marketplace`` orders) names a URL and a shared secret. A background loop (never the
request handlers) reads each feed past the subscription's cursor and POSTs what is new in
batches, ``{"events": [...]}``:

- ``wms`` / ``carrier``: each event exactly as the feed serves it, so a receiver that also
  polls the feed sees the same natural keys;
- ``portal`` / ``marketplace``: a notice per new feed item, ``{"feed", "seq",
  "arrived_at"}`` — the order itself is never in the webhook (as real marketplaces do it:
  the notification says "fetch", the feed is the record), so a receiver reads the feed from
  its own watermark and a lost notice costs nothing but time.

Each request is signed ``X-OrderFlow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>." + body>``. The cursor moves only past a batch the receiver answered 2xx; anything
else is retried with exponential backoff (0.5 s doubling to 30 s), in order, forever.
``duplicate_rate`` re-sends a delivered batch (a webhook delivered twice, as real ones are).

Subscriptions and cursors are kept in ``push.json`` beside the sandbox's state, so a
restarted sandbox resumes where it stopped. Set at start with ``ORDERFLOW_SANDBOX_PUSH_URL``
(``{source}`` in it is replaced), ``ORDERFLOW_SANDBOX_PUSH_SECRET`` and optionally
``ORDERFLOW_SANDBOX_PUSH_SOURCES`` (all four by default), or at run time with
``PUT /admin/subscriptions/{source}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from orderflow_sandbox.state import Distributor

log = logging.getLogger(__name__)

#: Feeds whose events are pushed whole.
EVENT_SOURCES = ("wms", "carrier")
#: Feeds whose new items are announced (a notice each), never pushed.
NOTICE_SOURCES = ("portal", "marketplace")
SOURCES = EVENT_SOURCES + NOTICE_SOURCES
Source = Literal["wms", "carrier", "portal", "marketplace"]
SIGNATURE_HEADER = "X-OrderFlow-Signature"
STATE_FILE = "push.json"
MAX_BACKOFF_S = 30.0


def sign(secret: str, body: bytes, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass
class Subscription:
    source: str
    url: str
    secret: str
    cursor: int = 0
    duplicate_rate: float = 0.0
    delivered: int = 0
    requests: int = 0
    failures: int = 0  # consecutive
    failed_requests: int = 0  # all requests answered with an error or not at all
    post_s_total: float = 0.0  # seconds the receiver took, summed over all requests
    post_s_max: float = 0.0  # the slowest request
    last_error: str | None = None
    last_delivered_at: float | None = None
    next_try: float = field(default=0.0, repr=False)

    def public(self, feed_length: int) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("secret", "next_try")}
        out["pending"] = max(0, feed_length - self.cursor)
        return out


class SubscriptionIn(BaseModel):
    url: str = Field(description="Where to POST; `{source}` is replaced by the source's name")
    secret: str = Field(min_length=8, description="Shared HMAC secret")
    from_start: bool = Field(False, description="Push the whole feed, not only events from now on")
    duplicate_rate: float = Field(0.0, ge=0, le=1, description="Re-send delivered batches")


class Pusher:
    """The subscriptions and the delivery loop of one sandbox."""

    def __init__(
        self,
        state: Distributor,
        *,
        every_s: float = 0.25,
        batch: int = 200,
        timeout_s: float = 5.0,
        state_file: Path | None = None,
    ):
        self.state = state
        self.every_s = every_s
        self.batch = batch
        self.timeout_s = timeout_s
        self.path = state_file
        self.lock = threading.Lock()
        self.subs: dict[str, Subscription] = {}
        self.rng = random.Random(f"push:{state.seed}")
        if self.path and self.path.exists():
            for raw in json.loads(self.path.read_text()).values():
                sub = Subscription(**{k: v for k, v in raw.items() if k != "next_try"})
                self.subs[sub.source] = sub

    # -------------------------------------------------------------- configuration
    def feed_length(self, source: str) -> int:
        if source in NOTICE_SOURCES:
            return self.state.notices(source, 0, 0)["length"]
        with self.state.lock:
            self.state.feed(source, 0, 0)  # materialise what is due
            return len(self.state.milestones if source == "wms" else self.state.tracking)

    def page(self, source: str, after: int, limit: int) -> dict:
        """What to push for ``source`` past ``after``: events, or notices of new orders."""
        if source in NOTICE_SOURCES:
            return self.state.notices(source, after, limit)
        return self.state.feed(source, after, limit)

    def subscribe(self, source: str, body: SubscriptionIn) -> dict:
        url = body.url.replace("{source}", source)
        length = self.feed_length(source)
        with self.lock:
            old = self.subs.get(source)
            if body.from_start:
                cursor = 0
            elif old is not None and old.url == url:
                cursor = min(old.cursor, length)  # the same receiver: resume, lose nothing
            else:
                cursor = length
            self.subs[source] = Subscription(
                source, url, body.secret, cursor=cursor, duplicate_rate=body.duplicate_rate
            )
            self._save()
        return self.subs[source].public(length)

    def configure_from_env(self, environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        url, secret = (
            environ.get("ORDERFLOW_SANDBOX_PUSH_URL"),
            environ.get("ORDERFLOW_SANDBOX_PUSH_SECRET"),
        )
        if not url or not secret:
            return
        sources = environ.get("ORDERFLOW_SANDBOX_PUSH_SOURCES", ",".join(SOURCES))
        for source in (s.strip() for s in sources.split(",")):
            if source in SOURCES:
                self.subscribe(source, SubscriptionIn(url=url, secret=secret))
                log.info("pushing %s events to %s", source, url.replace("{source}", source))

    def unsubscribe(self, source: str) -> bool:
        with self.lock:
            gone = self.subs.pop(source, None) is not None
            self._save()
        return gone

    def describe(self) -> dict:
        return {s: sub.public(self.feed_length(s)) for s, sub in sorted(self.subs.items())}

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({s: asdict(sub) for s, sub in self.subs.items()}))
        tmp.replace(self.path)

    # -------------------------------------------------------------- delivery
    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                for sub in list(self.subs.values()):
                    try:
                        await self.deliver(client, sub)
                    except Exception:  # keep pushing; the log says what broke
                        log.exception("push delivery to %s", sub.url)
                await asyncio.sleep(self.every_s)

    async def deliver(self, client: httpx.AsyncClient, sub: Subscription, pages: int = 20) -> int:
        """Push what is new for ``sub`` (up to ``pages`` batches); returns events delivered."""
        sent = 0
        for _ in range(pages):
            if time.monotonic() < sub.next_try:
                break
            page = await asyncio.to_thread(self.page, sub.source, sub.cursor, self.batch)
            items = page["items"]
            if not items:
                length = await asyncio.to_thread(self.feed_length, sub.source)
                if sub.cursor > length:  # the feed was reset or compacted under us
                    # events: resume at its end (what is there was pushed or is polled);
                    # notices: announce what is visible again — a notice only wakes a reader
                    sub.cursor = 0 if sub.source in NOTICE_SOURCES else length
                break
            body = json.dumps({"events": items}, separators=(",", ":")).encode()
            error = await self._post(client, sub, body)
            if error is not None:
                sub.failures += 1
                sub.last_error = error
                sub.next_try = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2 ** (sub.failures - 1))
                break
            if sub.duplicate_rate and self.rng.random() < sub.duplicate_rate:
                await self._post(client, sub, body)
            with self.lock:
                if self.subs.get(sub.source) is sub:
                    sub.cursor = page["next_cursor"]
                    sub.delivered += len(items)
                    sub.failures, sub.last_error = 0, None
                    sub.last_delivered_at = time.time()
                    self._save()
            sent += len(items)
        return sent

    async def _post(self, client: httpx.AsyncClient, sub: Subscription, body: bytes) -> str | None:
        sub.requests += 1
        t0 = time.monotonic()
        try:
            r = await client.post(
                sub.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(sub.secret, body),
                },
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None if r.status_code // 100 == 2 else f"HTTP {r.status_code}: {r.text[:200]}"
        took = time.monotonic() - t0
        sub.post_s_total = round(sub.post_s_total + took, 3)
        sub.post_s_max = round(max(sub.post_s_max, took), 3)
        if error is not None:
            sub.failed_requests += 1
        return error


def router(pusher: Pusher) -> APIRouter:
    admin = APIRouter(prefix="/admin", tags=["Admin"])

    @admin.get("/subscriptions", summary="Webhook subscriptions with their delivery state")
    def list_subscriptions() -> dict:
        return {"subscriptions": pusher.describe()}

    @admin.put(
        "/subscriptions/{source}",
        summary="Push this source's events (WMS milestones, carrier tracking), or notices of "
        "new orders (portal, marketplace), to a URL, signed",
    )
    def put_subscription(source: Source, body: SubscriptionIn) -> dict:
        return pusher.subscribe(source, body)

    @admin.delete("/subscriptions/{source}", summary="Stop pushing this source's events")
    def delete_subscription(source: Source) -> dict:
        if not pusher.unsubscribe(source):
            raise HTTPException(404, f"no subscription for {source}")
        return {"deleted": source}

    return admin
