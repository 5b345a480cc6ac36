"""The webhook signature: ``X-OrderFlow-Signature: t=<unix seconds>,v1=<hex>`` where ``v1``
is HMAC-SHA256 over ``"<t>." + body`` with the secret both sides share (Stripe's scheme: the
timestamp inside the MAC bounds how long a captured request can be replayed).

A replay inside the tolerance is harmless anyway: events are stored under their natural key.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-OrderFlow-Signature"
#: How old (or how far in the future) a signature may be, in seconds.
TOLERANCE_S = 300


class BadSignature(Exception):
    """The request is not signed with the shared secret (or the signature is stale)."""


def sign(secret: str, body: bytes, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: str, body: bytes, header: str | None, now: float | None = None) -> None:
    """Raise :class:`BadSignature` saying why unless ``header`` signs ``body`` with ``secret``."""
    if not header:
        raise BadSignature(f"no {HEADER} header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise BadSignature(f"malformed {HEADER} header (expected t=<seconds>,v1=<hex>)") from None
    now = time.time() if now is None else now
    if abs(now - ts) > TOLERANCE_S:
        raise BadSignature(f"signature timestamp {ts} is more than {TOLERANCE_S} s from now")
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise BadSignature("signature does not match the body (wrong secret or altered body)")
