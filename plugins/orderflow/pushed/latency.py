"""Shipped → customer notified: how long after a shipment's *shipped* milestone reaches
OrderFlow its customer's notice goes out. With pushed events the milestone arrives within a
second of the WMS recording it; polled, it arrives up to 5 minutes later, which this measure
does not see (it starts at the arrival). The issue's target: p95 ≤ 30 s in the soak."""

from __future__ import annotations

from statistics import quantiles
from typing import TYPE_CHECKING, Any

from orderflow.store import fulfilment as repo

if TYPE_CHECKING:
    import psycopg


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(quantiles(values, n=100, method="inclusive")[q - 1], 1)


def summarise(seconds: list[float]) -> dict[str, Any]:
    """The report keys: ``shipped_to_notified_p50_s`` / ``_p95_s`` / ``_max_s`` and how many
    shipments were measured."""
    return {
        "shipped_to_notified_p50_s": percentile(seconds, 50),
        "shipped_to_notified_p95_s": percentile(seconds, 95),
        "shipped_to_notified_max_s": round(max(seconds), 1) if seconds else None,
        "shipped_to_notified_measured": len(seconds),
    }


def shipped_to_notified(conn: psycopg.Connection, since: Any = "-infinity") -> dict[str, Any]:
    """Measure over the shipments whose shipped milestone arrived since ``since``."""
    return summarise(repo.shipped_to_notified_seconds(conn, since))
