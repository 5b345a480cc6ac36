"""Customer changes and cancellations of orders already sent (~2 % of the originals):

- EDI customers: an 850 with BEG01 ``01`` (cancel) or ``05`` (replace: the whole order again,
  one line's quantity changed), or an 860 (BCH01 ``04`` change: POC QD/QI on one line; or
  BCH01 ``01`` cancellation), in an interchange of its own, delivered into the partner's drop
  folder like any EDI file (``deliveries.jsonl``);
- portal customers: a ``cancel`` or ``change`` item in the portal feed
  (``portal_changes.jsonl``, merged into the feed by arrival time).

Each arrives minutes to a day after its original (some before the order is released, some
after). What applying it must do depends on the order's state when it arrives (applied
before release, the WMS release cancelled, or refused as too late), which the generator
cannot know: the ground truth of the original records the change with ``expected`` =
``by_state_at_arrival``, and the harness decides from the order's history at ``arrives_at``.

Deterministic per seed: its own random stream (``[seed, 860]``), so adding changes moves
nothing else in a generated day.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from . import x12
from .day import iso

CHANGE_SHARE = 0.02
#: EDI: (kind, via) mix; portal: cancel / change
EDI_MIX = (
    ("cancel", "x12_850_cancel"),
    ("replace", "x12_850_replace"),
    ("change", "x12_860"),
    ("cancel", "x12_860"),
)
PORTAL_MIX = (("cancel", "portal"), ("change", "portal"))


def _delay(rng: np.random.Generator) -> timedelta:
    """Minutes to a day: half within two hours (mostly before release), the rest later."""
    if rng.random() < 0.5:
        return timedelta(minutes=float(rng.uniform(5, 120)))
    return timedelta(minutes=float(rng.uniform(120, 24 * 60)))


def plan(seed: int, world: Any, submissions: list) -> list[dict[str, Any]]:
    """The changes: one per chosen original order (EDI and portal originals only; never a
    duplicate submission or a malformed file)."""
    rng = np.random.default_rng([seed, 860])
    out: list[dict[str, Any]] = []
    n = 0
    for o in submissions:
        if o.duplicate_of is not None or o.malformed or o.channel not in ("edi", "portal"):
            continue
        if rng.random() >= CHANGE_SHARE:
            continue
        n += 1
        mix = EDI_MIX if o.channel == "edi" else PORTAL_MIX
        kind, via = mix[int(rng.integers(len(mix)))]
        at = o.arrival + _delay(rng)
        ln = o.lines[int(rng.integers(len(o.lines)))]
        factor = float(rng.choice([0.5, 2.0, 3.0]))
        new_qty = max(1.0, round(ln.quantity * factor))
        out.append(
            {
                "change_id": f"CHG{n:05d}",
                "submission_id": o.submission_id,
                "order_ref": o.order_ref,
                "channel": o.channel,
                "customer_id": world.customers[o.customer]["customer_id"],
                "partner": world.cust_partner[o.customer] if o.channel == "edi" else None,
                "po_number": o.po_number,
                "kind": kind,
                "via": via,
                "arrives_at": at,
                "line_no": ln.line_no if kind != "cancel" else None,
                "quantity": new_qty if kind != "cancel" else None,
                "uom": ln.uom,
                "_order": o,
            }
        )
    return out


def truth(c: dict[str, Any]) -> dict[str, Any]:
    """What the ground truth of the original order records about its change."""
    return {
        "change_id": c["change_id"],
        "kind": c["kind"],
        "via": c["via"],
        "arrives_at": iso(c["arrives_at"]),
        "line_no": c["line_no"],
        "quantity": c["quantity"],
        "expected": "by_state_at_arrival",
    }


def _edi_sets(c: dict[str, Any], doc: Any, partner: dict[str, Any]) -> tuple[str, list]:
    """(GS01, the set's segments) of the change."""
    modern = partner["gs_version"] >= "004010"
    d = c["_order"].po_date.strftime("%Y%m%d" if modern else "%y%m%d")
    po = x12._clean(c["po_number"], partner)
    if c["via"] == "x12_860":
        body: list[list[str]] = [
            ["BCH", "01" if c["kind"] == "cancel" else "04", "SA", po, "", c["change_id"], d]
        ]
        if c["kind"] != "cancel":
            old = next(ln for ln in c["_order"].lines if ln.line_no == c["line_no"])
            code = "QI" if c["quantity"] > old.quantity else "QD"
            body.append(["POC", str(c["line_no"]), code, x12._num(c["quantity"]), "", c["uom"]])
            body.append(["CTT", "1"])
        segs = [["ST", "860", "0001"], *body]
        segs.append(["SE", str(len(segs) + 1), "0001"])
        return "PC", segs
    segs = x12.po850(doc, partner, 1)
    beg = next(s for s in segs if s[0] == "BEG")
    if c["kind"] == "cancel":
        beg[1] = "01"
    else:
        beg[1] = "05"
        po1 = [s for s in segs if s[0] == "PO1"]
        po1[min(c["line_no"], len(po1)) - 1][2] = x12._num(c["quantity"])
    return "PO", segs


def write(
    out_dir: Path,
    world: Any,
    changes: list[dict[str, Any]],
    doc_for,
    ctl: x12.ControlNumbers,
    deliveries: list[dict[str, Any]],
    portal: list[dict[str, Any]],
) -> None:
    """Write the EDI change files (control numbers from the partner's own running sequence,
    ``ctl``: call in delivery order with the order files) and add their deliveries rows and
    the portal feed change items."""
    seq: dict[str, int] = {}
    for c in sorted(changes, key=lambda c: (c["arrives_at"], c["change_id"])):
        at: datetime = c["arrives_at"]
        if c["channel"] == "portal":
            item: dict[str, Any] = {
                "type": c["kind"],
                "client_request_id": f"{c['change_id']}-{c['submission_id']}",
                "submitted_at": iso(at),
                "arrival_at": iso(at),
                "customer_id": c["customer_id"],
                "po_number": c["po_number"],
                "reason": "customer request",
            }
            if c["kind"] == "change":
                item["lines"] = [
                    {"line_no": c["line_no"], "action": "quantity", "quantity": c["quantity"]}
                ]
            portal.append(item)
            continue
        partner = world.partners[c["partner"]]
        pid = partner["partner_id"]
        seq[pid] = seq.get(pid, 0) + 1
        gs01, segs = _edi_sets(c, doc_for(c["_order"]), partner)
        modern = partner["gs_version"] >= "004010"
        base = 1 + sum(ord(ch) for ch in pid) * 97 % 50000  # as x12.interchange
        isa_no = ctl.take(ctl.next_isa, pid, base * 10)
        gs_no = ctl.take(ctl.next_gs, pid, base)
        ic = [
            x12._isa(partner, isa_no, at),
            [
                "GS",
                gs01,
                partner["gs_id"].strip(),
                x12.DISTRIBUTOR_GS_ID,
                at.strftime("%Y%m%d" if modern else "%y%m%d"),
                at.strftime("%H%M"),
                str(gs_no),
                "X",
                partner["gs_version"],
            ],
            *segs,
            ["GE", "1", str(gs_no)],
            ["IEA", "1", f"{isa_no:09d}"],
        ]
        path = f"artefacts/edi/{pid}/{pid}_{at:%Y%m%dT%H%M%S}_change{seq[pid]:04d}.x12"
        (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / path).write_bytes(x12.serialise(partner, [ic]))
        deliveries.append(
            {
                "at": iso(at),
                "channel": "edi",
                "partner_id": pid,
                "path": path,
                "submission_ids": [],
                "change_id": c["change_id"],
            }
        )
