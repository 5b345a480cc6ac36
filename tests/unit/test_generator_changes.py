"""Generated days carry customer changes (~2 % of EDI/portal originals): 850 cancel/replace
and 860 files the X12 channel accepts as changes for the original's PO, portal change items,
each recorded in the original's ground truth; deterministic per seed."""

from __future__ import annotations

import json
from datetime import date

import pytest

from orderflow.channels import portal as portal_channel
from orderflow.channels.x12 import parse
from orderflow_sandbox.generator import generate

# Generates whole days: the full tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.slow


def _day(tmp_path, name="d"):
    out = tmp_path / name
    generate(
        out, seed=11, orders_per_day=1500, customers=300, items=800, business_date=date(2026, 12, 1)
    )
    return out


def _jsonl(p):
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_changes_are_generated_delivered_and_in_the_ground_truth(tmp_path):
    out = _day(tmp_path)
    truths = _jsonl(out / "ground_truth.jsonl")
    orders = {o["submission_id"]: o for o in _jsonl(out / "orders.jsonl")}
    changed = [t for t in truths if "change" in t]
    share = len(changed) / sum(1 for o in orders.values() if o["channel"] in ("edi", "portal"))
    assert 0.005 < share < 0.05
    vias = {t["change"]["via"] for t in changed}
    assert {"x12_860", "portal"} <= vias and vias & {"x12_850_cancel", "x12_850_replace"}
    deliveries = _jsonl(out / "deliveries.jsonl")
    assert [d["at"] for d in deliveries] == sorted(d["at"] for d in deliveries)
    by_id = {d["change_id"]: d for d in deliveries if "change_id" in d}
    portal = {i["client_request_id"].split("-")[0]: i for i in _jsonl(out / "portal_changes.jsonl")}
    for t in changed:
        c = t["change"]
        original = orders[t["submission_id"]]
        assert c["arrives_at"] > original["arrival_at"] and c["expected"] == "by_state_at_arrival"
        if c["via"] == "portal":
            item = portal[c["change_id"]]
            got, errors = portal_channel.parse_change(portal_channel.item_bytes(item))
            assert errors == [] and got.kind == c["kind"]
            assert got.po_number == original["po_number"]
            continue
        d = by_id[c["change_id"]]
        result = parse((out / d["path"]).read_bytes(), partner_id=d["partner_id"])
        assert result.accepted and result.orders == [], result.error_list
        (change,) = result.changes
        assert change.kind == c["kind"] and change.po_number == original["po_number"]


def test_changes_are_deterministic_per_seed(tmp_path):
    a, b = _day(tmp_path, "a"), _day(tmp_path, "b")
    for name in ("ground_truth.jsonl", "deliveries.jsonl", "portal_changes.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
