"""The order-day generator: master data, a realistic business day (or several) of orders over
EDI, portal, e-mailed PDFs and inside-sales CSV, their artefacts, and a labelled ground truth.

Output contract (what the sandbox service loads) — see ``generate``::

    world.json  orders.jsonl  ground_truth.jsonl  deliveries.jsonl  manifest.json
    portal_changes.jsonl  marketplace_orders.jsonl (the marketplace's feed, see .marketplace)
    (world.json carries the CRM's accounts, agreements and quotes too: see ``generator.crm``)
    artefacts/edi/<partner_id>/*.x12  artefacts/email/*.eml  artefacts/csv/*.csv

``orders_per_day`` counts distinct orders; cross-channel re-sends (duplicates) come on top
as their own submissions (~1.5%).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from orderflow_sandbox.generator import changes as order_changes
from orderflow_sandbox.generator import crm, documents, marketplace, x12
from orderflow_sandbox.generator.day import (
    Artefact,
    Order,
    PoNumbers,
    assign_defects,
    business_days,
    draw_orders,
    ground_truth,
    iso,
    order_amount,
    order_row,
    pick_credit_customers,
    present,
    purchase_order_doc,
    schedule,
)
from orderflow_sandbox.generator.world import World, build_world, finish_credit, finish_inventory

__all__ = ["Manifest", "generate"]

log = logging.getLogger(__name__)


@dataclass
class Manifest:
    """What was generated: parameters, counts per channel / defect / outcome, and timing."""

    seed: int
    params: dict[str, Any]
    business_dates: list[str]
    orders: int
    submissions: int
    lines: int
    channels: dict[str, int]
    defects: dict[str, int]
    expected: dict[str, int]
    exception_categories: dict[str, int]
    split_orders: int
    substitutions: int
    backorders: int
    needs_attention_share: float
    artefacts: dict[str, int]
    master_data: dict[str, int]
    #: marketplace orders (``marketplace_orders.jsonl``), on top of ``orders``
    marketplace_orders: int = 0
    generation_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    #: the CRM's records, and the price differences its quotes / agreements explain
    crm: dict[str, int] = field(default_factory=dict)


def _default_business_date() -> date:
    """Today (UTC); a weekend start rolls forward to Monday in ``business_days``.
    Pass an explicit date whenever the bytes must be reproducible on another day."""
    return datetime.now(UTC).date()


def generate(
    out_dir: Path,
    *,
    seed: int = 7,
    days: int = 1,
    orders_per_day: int = 5000,
    customers: int = 2000,
    items: int = 10000,
    business_date: date | None = None,
) -> Manifest:
    """Generate ``days`` business days of orders into ``out_dir`` and return the manifest.

    Same arguments → byte-identical ``world.json``, ``orders.jsonl``, ``ground_truth.jsonl``
    (and artefacts). ``business_date`` defaults to today, so pass it when you need the same
    bytes tomorrow.
    """
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dates = business_days(business_date or _default_business_date(), days)
    world = build_world(rng, seed, dates, customers, items)
    phases["world"] = time.perf_counter() - t0

    per_day: list[list[Order]] = []
    pos = PoNumbers(rng, customers)
    key = 0
    for d in range(days):
        per_day.append(draw_orders(rng, world, pos, d, orders_per_day, key))
        key += orders_per_day
    credit = pick_credit_customers(rng, world, [o for day in per_day for o in day])
    artefacts: list[Artefact] = []
    submissions: list[Order] = []
    for orders in per_day:
        assign_defects(rng, world, orders, credit)
        dups, arts = schedule(rng, world, orders, key)
        key += len(dups)
        artefacts += arts
        submissions += orders + dups
    _number(submissions, artefacts, world)
    phases["orders"] = time.perf_counter() - t0 - sum(phases.values())

    templates = {o.key: a.template for a in artefacts if a.channel == "csv" for o in a.orders}
    for o in submissions:
        present(rng, world, o, templates.get(o.key, "A"))
    # the marketplace's orders (own random stream): their demand sizes stock and credit too
    market = marketplace.draw(seed, world, orders_per_day, credit)
    _finish_master_data(rng, world, submissions + market, credit)
    phases["master_data"] = time.perf_counter() - t0 - sum(phases.values())

    changes = order_changes.plan(seed, world, submissions)
    change_deliveries: list[dict] = []
    portal_changes: list[dict] = []
    _write_artefacts(
        out_dir,
        world,
        artefacts,
        seed,
        lambda ctl, until: order_changes.write(
            out_dir,
            world,
            _due(changes, until),
            lambda o: purchase_order_doc(world, o),
            ctl,
            change_deliveries,
            portal_changes,
        ),
    )
    phases["artefacts"] = time.perf_counter() - t0 - sum(phases.values())
    truths = [ground_truth(world, o) for o in submissions]
    by_submission = {c["submission_id"]: c for c in changes}
    for o, t in zip(submissions, truths, strict=True):
        if o.submission_id in by_submission:
            t["change"] = order_changes.truth(by_submission[o.submission_id])
    world_json = world.to_json()
    rows = [order_row(world, o) for o in submissions]
    crm_day = crm.build(seed, world_json, rows, truths)
    world_json.update(crm_day["records"])
    _write_jsonl(out_dir / "portal_changes.jsonl", portal_changes)
    _write_jsonl(out_dir / "marketplace_orders.jsonl", marketplace.rows(seed, world, market))
    _write_jsonl(out_dir / "orders.jsonl", rows)
    _write_jsonl(out_dir / "ground_truth.jsonl", truths)
    deliveries = [
        {
            "at": iso(a.at),
            "channel": a.channel,
            "partner_id": world.partners[a.partner]["partner_id"]
            if a.partner is not None
            else None,
            "path": a.path,
            "submission_ids": [o.submission_id for o in a.orders],
        }
        for a in artefacts
    ]
    # change files interleave by time (the sandbox delivers in this order)
    deliveries = sorted(deliveries + change_deliveries, key=lambda d: d["at"])
    _write_jsonl(out_dir / "deliveries.jsonl", deliveries)
    (out_dir / "world.json").write_text(json.dumps(world_json, separators=(",", ":")))
    phases["json"] = time.perf_counter() - t0 - sum(phases.values())

    manifest = _manifest(
        seed,
        world,
        submissions,
        truths,
        artefacts,
        {
            "days": days,
            "orders_per_day": orders_per_day,
            "customers": customers,
            "items": items,
            "business_date": dates[0].isoformat(),
        },
    )
    manifest.marketplace_orders = len(market)
    manifest.crm = crm_day["counts"]
    manifest.generation_seconds = round(time.perf_counter() - t0, 3)
    manifest.phase_seconds = {k: round(v, 3) for k, v in phases.items()}
    (out_dir / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    log.info(
        "generated %d submissions (%d lines, %d days) into %s in %.1fs",
        manifest.submissions,
        manifest.lines,
        days,
        out_dir,
        manifest.generation_seconds,
    )
    return manifest


def _number(submissions: list[Order], artefacts: list[Artefact], world: World) -> None:
    """Submission ids in global arrival order; order refs per day in first-arrival order;
    artefact paths in delivery order (names are unique across days and channels)."""
    submissions.sort(key=lambda o: (o.arrival, o.key))
    per_day: Counter[date] = Counter()
    for i, o in enumerate(submissions, start=1):
        o.submission_id = f"S{i:06d}"
        if o.duplicate_of is None:
            per_day[o.business_date] += 1
            o.order_ref = f"ORD-{o.business_date:%Y%m%d}-{per_day[o.business_date]:05d}"
    for o in submissions:
        if o.duplicate_of is not None:
            o.order_ref = o.duplicate_of.order_ref
    artefacts.sort(key=lambda a: (a.at, a.orders[0].submission_id))
    seq: Counter[str] = Counter()
    for a in artefacts:
        stamp = a.at.strftime("%Y%m%dT%H%M%S")
        if a.channel == "edi":
            pid = world.partners[a.partner]["partner_id"]
            seq[pid] += 1
            a.path = f"artefacts/edi/{pid}/{pid}_{stamp}_{seq[pid]:05d}.x12"
        elif a.channel == "email":
            seq["email"] += 1
            a.path = f"artefacts/email/{seq['email']:06d}.eml"
        else:
            seq["csv"] += 1
            a.path = f"artefacts/csv/inside_sales_{a.rep}_{stamp}_{seq['csv']:05d}.csv"
        for o in a.orders:
            o.artefact = a.path


def _finish_master_data(
    rng: np.random.Generator, world: World, submissions: list[Order], credit: dict[str, set[int]]
) -> None:
    """Credit accounts and stock sized from the orders actually generated."""
    n_c = len(world.customers)
    totals = np.zeros(n_c)
    min_amount = np.full(n_c, np.inf)
    demand = np.zeros(len(world.items))
    sub_index = {it["item_id"]: i for i, it in enumerate(world.items)}
    for o in submissions:
        amount = order_amount(o)
        totals[o.customer] += amount
        if o.duplicate_of is None:
            min_amount[o.customer] = min(min_amount[o.customer], amount)
        for ln in o.lines:
            demand[ln.item] += ln.quantity
        for s in o.substitutions:
            line = next(ln for ln in o.lines if ln.line_no == s["line_no"])
            demand[sub_index[s["substitute_item_id"]]] += line.quantity
    finish_credit(rng, world, totals, min_amount, credit["credit_hold"], credit["credit_limit"])
    finish_inventory(rng, world, demand)


def _due(changes: list[dict], until: datetime | None) -> list[dict]:
    """The changes not yet written that arrive before ``until`` (all when None), taken."""
    due = [
        c for c in changes if not c.get("_written") and (until is None or c["arrives_at"] < until)
    ]
    for c in due:
        c["_written"] = True
    return due


def _write_artefacts(
    out_dir: Path, world: World, artefacts: list[Artefact], seed: int, write_changes=None
) -> None:
    """Render every artefact in delivery order (so X12 control numbers increase in time),
    the customers' change files among them (``write_changes(ctl, until)``)."""
    ctl = x12.ControlNumbers()
    for a in artefacts:
        if write_changes is not None:
            write_changes(ctl, a.at)
        path = out_dir / a.path
        path.parent.mkdir(parents=True, exist_ok=True)
        docs = [purchase_order_doc(world, o) for o in a.orders]
        if a.channel == "edi":
            partner = world.partners[a.partner]
            structure = [[[docs[i] for i in group] for group in ic] for ic in a.structure]
            data = x12.render_file(partner, structure, a.at, ctl, a.orders[0].malformed)
        elif a.channel == "email":
            o = a.orders[0]
            doc_rng = np.random.default_rng([seed, 17, o.key])
            data = documents.email_for(docs[0], a.at, o.customer % 3, o.scanned, o.png, doc_rng)
        else:
            data = documents.render_csv(a.template, a.rep, docs)
        path.write_bytes(data)
    if write_changes is not None:
        write_changes(ctl, None)


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def _manifest(
    seed: int,
    world: World,
    submissions: list[Order],
    truths: list[dict[str, Any]],
    artefacts: list[Artefact],
    params: dict[str, Any],
) -> Manifest:
    attention = sum(
        1
        for t in truths
        if t["expected"] != "release" or t["substitutions"] or t["backorder_lines"]
    )
    return Manifest(
        seed=seed,
        params=params,
        business_dates=[d.isoformat() for d in world.business_dates],
        orders=sum(1 for o in submissions if o.duplicate_of is None),
        submissions=len(submissions),
        lines=sum(len(o.lines) for o in submissions),
        channels=dict(sorted(Counter(o.channel for o in submissions).items())),
        defects=dict(sorted(Counter(o.defect for o in submissions if o.defect).items())),
        expected=dict(sorted(Counter(t["expected"] for t in truths).items())),
        exception_categories=dict(
            sorted(Counter(c for t in truths for c in t["exception_categories"]).items())
        ),
        split_orders=sum(1 for t in truths if t["split"]),
        substitutions=sum(len(t["substitutions"]) for t in truths),
        backorders=sum(1 for t in truths if t["backorder_lines"]),
        needs_attention_share=round(attention / max(1, len(truths)), 4),
        artefacts=dict(sorted(Counter(a.channel for a in artefacts).items())),
        master_data={
            "customers": len(world.customers),
            "ship_tos": len(world.ship_tos),
            "items": len(world.items),
            "xrefs": len(world.xrefs) + len(world.extra_xrefs),
            "contracts": len(world.contracts),
            "partners": len(world.partners),
            "inventory_positions": len(world.inventory),
            "master_data_defects": len(world.master_data_defects),
        },
    )
