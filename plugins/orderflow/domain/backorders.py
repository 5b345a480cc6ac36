"""Backorders filled as stock arrives: which waiting lines get how much, from which DC.

Pure Python (no Airflow, no database). Lines wait in priority order (the order's allocation
priority, then who came first); each takes what it can from its preferred DC, then the
others — up to the sourcing rules' split limit per order — and a line whose customer wants
complete shipments takes nothing until all of it is there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Waiting:
    order_id: str
    line_no: int
    item_id: str
    quantity: Decimal  # still backordered
    priority: Decimal
    received_at: datetime
    preferred_dc: str
    ship_complete: bool = False


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: str
    line_no: int
    item_id: str
    dc_id: str
    quantity: Decimal


def fill(
    waiting: list[Waiting],
    available: dict[tuple[str, str], Decimal],
    dcs: tuple[str, ...],
    max_split_dcs: int = 2,
) -> list[Fill]:
    """What each waiting line gets now, best priority first; ``available`` is not changed."""
    left = dict(available)
    out: list[Fill] = []
    order_dcs: dict[str, set[str]] = defaultdict(set)
    for w in sorted(waiting, key=lambda w: (-w.priority, w.received_at, w.order_id, w.line_no)):
        used = order_dcs[w.order_id]
        # DCs this order already ships from first, then its preferred DC, then the others.
        route = sorted(
            [w.preferred_dc] + [d for d in dcs if d != w.preferred_dc], key=lambda d: d not in used
        )
        takes: list[tuple[str, Decimal]] = []
        need = w.quantity
        for dc in route:
            if need <= 0:
                break
            if dc not in used and len(used | {d for d, _ in takes}) >= max_split_dcs:
                continue  # no more DCs for this order
            take = min(max(left.get((w.item_id, dc), Decimal(0)), Decimal(0)), need)
            if take > 0:
                takes.append((dc, take))
                need -= take
        if w.ship_complete and need > 0:
            continue  # all or nothing
        for dc, take in takes:
            left[(w.item_id, dc)] -= take
            used.add(dc)
            out.append(Fill(w.order_id, w.line_no, w.item_id, dc, take))
    return out
