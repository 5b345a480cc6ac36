"""Fault injection and the simulated clock of the sandbox.

Faults are set per endpoint path prefix, at start (``--faults FILE``) or at run time
(``PUT /admin/faults``): latency, 5xx error rate, timeouts, connection resets, duplicate
deliveries and out-of-order events. Decisions are deterministic for a seed: the n-th request
matching a rule draws from ``Random(f"{seed}:{prefix}:{n}")``, so a replayed request
sequence meets the same faults.
"""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta
from time import monotonic

from pydantic import BaseModel, Field


class FaultRule(BaseModel):
    """Faults for every request whose path starts with ``prefix`` (longest prefix wins)."""

    prefix: str = Field(description="Path prefix, e.g. /wms/releases or /portal")
    latency_ms: int = Field(0, ge=0, description="Added latency on every matching request")
    jitter_ms: int = Field(0, ge=0, description="Uniform random extra latency up to this")
    error_rate: float = Field(0.0, ge=0, le=1, description="Share answered with error_status")
    error_status: int = Field(503, ge=500, le=599)
    timeout_rate: float = Field(0.0, ge=0, le=1, description="Share that hang for timeout_s")
    timeout_s: float = Field(30.0, ge=0)
    reset_rate: float = Field(
        0.0, ge=0, le=1, description="Share whose connection is cut mid-response"
    )
    duplicate_rate: float = Field(
        0.0, ge=0, le=1, description="Feeds: share of items delivered twice"
    )
    out_of_order_rate: float = Field(0.0, ge=0, le=1, description="Feeds: share of pages shuffled")
    reuse_id_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="WMS releases: share of new releases answered with an id the WMS already "
        "gave another release (a WMS that lost its counter)",
    )


class FaultConfig(BaseModel):
    seed: int = 7
    rules: list[FaultRule] = Field(default_factory=list)


class Decision(BaseModel):
    delay_s: float = 0.0
    error_status: int | None = None
    timeout_s: float | None = None
    reset: bool = False


class ReuseArm(BaseModel):
    """The next ``count`` new WMS releases are answered with an id the WMS already gave
    another release, whenever they come (a deterministic fault: a time window at a high
    clock speed can pass with no release in it)."""

    count: int = Field(ge=0, le=1000, description="How many new releases to answer so")


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self.config = config or FaultConfig()
        self.reuse_armed = 0  # new releases still to answer with a reused id
        self.reuse_hits: list[dict] = []  # {key, order_id, answered, own} per release hit

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._counters = {}

    def rule_for(self, path: str) -> FaultRule | None:
        matches = [r for r in self.config.rules if path.startswith(r.prefix)]
        return max(matches, key=lambda r: len(r.prefix)) if matches else None

    def rng(self, rule: FaultRule, purpose: str = "request") -> random.Random:
        with self._lock:
            key = f"{purpose}:{rule.prefix}"
            n = self._counters.get(key, 0)
            self._counters[key] = n + 1
        return random.Random(f"{self.config.seed}:{key}:{n}")

    def decide(self, path: str) -> Decision:
        rule = self.rule_for(path)
        if rule is None:
            return Decision()
        rnd = self.rng(rule)
        d = Decision(delay_s=(rule.latency_ms + rnd.uniform(0, rule.jitter_ms)) / 1000)
        roll = rnd.random()
        if roll < rule.error_rate:
            d.error_status = rule.error_status
        elif roll < rule.error_rate + rule.timeout_rate:
            d.timeout_s = rule.timeout_s
        elif roll < rule.error_rate + rule.timeout_rate + rule.reset_rate:
            d.reset = True
        return d

    def arm_reuse(self, count: int) -> dict:
        with self._lock:
            self.reuse_armed = count
        return self.reuse_state()

    def reuse_state(self) -> dict:
        with self._lock:
            return {"armed": self.reuse_armed, "hits": list(self.reuse_hits)}

    def reuse_hit(self, hit: dict) -> None:
        """A new release was answered with a reused id (an armed one is used up)."""
        with self._lock:
            self.reuse_armed = max(0, self.reuse_armed - 1)
            self.reuse_hits.append(hit)

    def reuse_id(self, path: str) -> bool:
        """Whether this request is answered with an id given out before: an armed count
        first, else the rule's rate."""
        with self._lock:
            if self.reuse_armed > 0:
                return True
        rule = self.rule_for(path)
        if rule is None or not rule.reuse_id_rate:
            return False
        return self.rng(rule, "reuse_id").random() < rule.reuse_id_rate

    def feed_faults(self, path: str, items: list) -> list:
        """Duplicate and reorder items of a feed page, as flaky partner feeds do."""
        rule = self.rule_for(path)
        if rule is None or not items:
            return items
        rnd = self.rng(rule, "feed")
        out = []
        for item in items:
            out.append(item)
            if rnd.random() < rule.duplicate_rate:
                out.append(item)
        if rnd.random() < rule.out_of_order_rate:
            rnd.shuffle(out)
        return out


class FaultMiddleware:
    """Pure ASGI middleware applying the injector's decision to each HTTP request."""

    def __init__(self, app, injector: FaultInjector):
        self.app = app
        self.injector = injector

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(("/admin", "/docs", "/openapi")):
            await self.app(scope, receive, send)
            return
        d = self.injector.decide(scope["path"])
        if d.delay_s:
            await asyncio.sleep(d.delay_s)
        if d.timeout_s is not None:
            await asyncio.sleep(d.timeout_s)
        if d.error_status is not None:
            body = b'{"detail": "injected fault: service unavailable"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": d.error_status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"x-sandbox-fault", b"error"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if d.reset:
            # Promise a body, send part of it, then drop the connection: the client sees the
            # peer close mid-response, as with a reset.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"1000"),
                        (b"x-sandbox-fault", b"reset"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"partial": ', "more_body": True})
            raise ConnectionResetError("injected fault: connection reset")
        await self.app(scope, receive, send)


class SimClock:
    """Simulated business time: ``start`` at the moment of setting, advancing ``speed``× real time.

    Durable when :meth:`bind` gives it a ``persist`` callback: the clock then keeps a
    *ceiling* on disk, a sim time it will not pass without first writing a later one
    (``lease_s`` real seconds ahead, like a timestamp oracle's leased range). Every time it
    has ever shown is therefore at most the stored ceiling, and a restart that resumes at
    the ceiling never goes back: it goes forward by at most ``lease_s × speed``, and the
    time the process was down does not count. One small write per ``lease_s``."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0):
        self._lock = threading.Lock()
        self._persist = None
        self._lease_s = 1.0
        self._ceiling: datetime | None = None
        self.set(start or datetime.now(UTC), speed)

    def bind(self, persist, lease_s: float = 1.0) -> None:
        """Make the clock durable: ``persist({"ceiling": iso, "speed": speed})`` is called
        before any time beyond the last stored ceiling is handed out."""
        with self._lock:
            self._persist = persist
            self._lease_s = lease_s
            self._ceiling = None
        self.now()

    def set(self, start: datetime, speed: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("clock start must be timezone-aware")
        with self._lock:
            self._sim_start = start
            self._real_start = monotonic()
            if speed is not None:
                self.speed = speed
            if self._persist is not None:
                self._extend(start)

    def _extend(self, at: datetime) -> None:
        """Store a new ceiling ahead of ``at`` (under the lock), then hand out up to it."""
        ceiling = at + timedelta(seconds=self._lease_s * self.speed)
        self._persist({"ceiling": ceiling.astimezone(UTC).isoformat(), "speed": self.speed})
        self._ceiling = ceiling

    def now(self) -> datetime:
        with self._lock:
            elapsed = monotonic() - self._real_start
            at = self._sim_start + timedelta(seconds=elapsed * self.speed)
            if self._persist is not None and (self._ceiling is None or at > self._ceiling):
                self._extend(at)
            return at

    def advance(self, delta: timedelta) -> datetime:
        self.set(self.now() + delta)
        return self.now()
