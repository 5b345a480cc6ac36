"""The marketplace's orders of a generated day (``marketplace_orders.jsonl``).

Some business customers also buy our listings on a B2B marketplace, from a marketplace
account linked to their customer account: ≈ :data:`SHARE` of the day's orders on top of the
other channels, clean (priced as their contract or the list says, from their catalogue,
shipped to one of their ship-tos), placed around the clock. About :data:`CANCEL_SHARE` of
them are followed by the buyer's cancellation request, 5 minutes to 6 hours later — most
before the order could be released, some after. Customers on credit hold or near their
limit, and customers with master-data defects, do not buy there (every marketplace order is
expected to release, unless cancelled).

Rows: ``{"type": "order", "marketplace_order_id", "arrival_at", "customer_id",
"ship_to_id", "buyer_name", "currency", "lines": [{"line_no", "sku", "item_id", "title",
"quantity", "uom", "unit_price"}], "expected": "release"}`` and ``{"type": "cancellation",
"cancellation_id", "marketplace_order_id", "account_id", "arrival_at", "reason",
"expected": "cancelled_if_before_release"}``. The marketplace (the sandbox) adds its limits.

Deterministic per seed, from its own random stream (``[seed, 5150]``): adding the channel
moves no draw of the other channels (only the stock and credit sized from the day's demand
grow by the marketplace's share).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from .day import HOURLY, Order, _at, _draw_lines, _local, iso
from .world import World

SHARE = 0.05
CANCEL_SHARE = 0.1
#: marketplace buyers order around the clock, with an office-hours bump
MARKETPLACE_HOURLY = tuple(2 + h for h in HOURLY["portal"])
REASONS = ("ordered by mistake", "found a better price", "no longer needed", "delivery too slow")


def draw(seed: int, world: World, orders_per_day: int, credit: dict[str, set[int]]) -> list[Order]:
    """The marketplace orders of every business day (``day.Order`` with channel
    ``marketplace``; arrival set)."""
    rng = np.random.default_rng([seed, 5150])
    excluded = set().union(*credit.values()) if credit else set()
    bad = {d["id"] for d in world.master_data_defects if d["entity"] in ("customer", "ship_to")}
    eligible = [
        c
        for c, cust in enumerate(world.customers)
        if world.cust_partner[c] is None
        and c not in excluded
        and cust["customer_id"] not in bad
        and world.cust_ship_tos[c]
        and len(world.catalogs[c])
        and not any(world.ship_tos[s]["ship_to_id"] in bad for s in world.cust_ship_tos[c])
    ]
    if not eligible:
        return []
    # a tenth of the eligible customers use the marketplace, by their size
    k = max(1, len(eligible) // 10)
    buyers = np.asarray(rng.choice(eligible, size=min(k, len(eligible)), replace=False))
    weight = world.cust_weight[buyers] / world.cust_weight[buyers].sum()
    hours = np.asarray(MARKETPLACE_HOURLY, dtype=float)
    out: list[Order] = []
    for d, bdate in enumerate(world.business_dates):
        n = max(1, round(SHARE * orders_per_day))
        for c in rng.choice(buyers, size=n, p=weight).tolist():
            hour = int(rng.choice(24, p=hours / hours.sum()))
            entry = hour * 3600 + float(rng.uniform(0, 3600))
            o = Order(
                key=-(len(out) + 1),  # never a key of the other channels' orders
                day_index=d,
                business_date=bdate,
                customer=int(c),
                channel="marketplace",
                ship_to=world.cust_ship_tos[c][0],
                po_number="",
                po_date=bdate,
                requested_ship_date=bdate + timedelta(days=3),
                entry_s=entry,
                lines=_draw_lines(rng, world, int(c)),
            )
            o.arrival = _at(bdate, entry, _local(world, o))
            out.append(o)
    out.sort(key=lambda o: (o.arrival, -o.key))
    for i, o in enumerate(out, start=1):
        o.po_number = f"MKP-{_ymd(o.business_date)}-{i:06d}"
        o.order_ref = o.po_number
    return out


def rows(seed: int, world: World, orders: list[Order]) -> list[dict[str, Any]]:
    """The feed rows: every order, and the buyers' cancellation requests, by arrival."""
    rng = np.random.default_rng([seed, 5151])
    items: list[dict[str, Any]] = []
    for o in orders:
        cust = world.customers[o.customer]
        items.append(
            {
                "type": "order",
                "marketplace_order_id": o.po_number,
                "arrival_at": iso(o.arrival),
                "customer_id": cust["customer_id"],
                "ship_to_id": world.ship_tos[o.ship_to]["ship_to_id"],
                "buyer_name": cust["name"],
                "currency": "USD",
                "lines": [
                    {
                        "line_no": ln.line_no,
                        "sku": world.items[ln.item]["vendor_part"],
                        "item_id": world.items[ln.item]["item_id"],
                        "title": world.items[ln.item]["description"],
                        "quantity": ln.quantity,
                        "uom": ln.uom,
                        "unit_price": ln.unit_price,
                    }
                    for ln in o.lines
                ],
                "expected": "release",
            }
        )
    n_cancel = round(CANCEL_SHARE * len(orders)) if len(orders) >= 5 else 0
    n_cancel = max(n_cancel, 1) if len(orders) >= 5 else 0
    chosen = sorted(rng.choice(len(orders), size=n_cancel, replace=False).tolist())
    for j, i in enumerate(chosen, start=1):
        o = orders[i]
        # half within the hour (before release, as a rule), the rest up to six hours later
        minutes = rng.uniform(5, 60) if rng.random() < 0.5 else rng.uniform(60, 360)
        items.append(
            {
                "type": "cancellation",
                "cancellation_id": f"MKC-{j:06d}",
                "marketplace_order_id": o.po_number,
                "account_id": world.customers[o.customer]["customer_id"],
                "arrival_at": iso(o.arrival + timedelta(minutes=float(minutes))),
                "reason": REASONS[int(rng.integers(len(REASONS)))],
                "expected": "cancelled_if_before_release",
            }
        )
    items.sort(key=lambda it: it["arrival_at"])
    return items


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")
