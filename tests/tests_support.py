"""Shared test helpers: a sandbox process on a free port serving a small generated day."""

from __future__ import annotations

import json
import os
from pathlib import Path

from orderflow.dev.sandbox_proc import (  # noqa: F401 (re-exported)
    START,
    SYSTEMS,
    Sandbox,
    free_port,
    land_day,
    start_sandbox,
)

#: ``make test-fast`` runs property tests with a twentieth of their examples (at least 10).
FAST = os.environ.get("ORDERFLOW_TEST_FAST") == "1"


def examples(n: int) -> int:
    """How many examples a property test of ``n`` examples runs in this tier."""
    return max(10, n // 20) if FAST else n


def generate_small_day(out: Path, seed: int = 11) -> Path:
    from orderflow_sandbox.generator import generate

    generate(
        out, seed=seed, orders_per_day=300, customers=120, items=600, business_date=START.date()
    )
    return out


def score(conn, day_dir: Path) -> dict:
    """Compare the store with the generator's ground truth, per submission.

    Returns per category: tp / fp / fn of held-with-that-category, plus clean orders released
    without a touch (first-pass) and the mismatches (for messages)."""
    truths = {
        t["submission_id"]: t
        for t in map(json.loads, (day_dir / "ground_truth.jsonl").read_text().splitlines())
    }
    subs = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    rows = conn.execute(
        """
        SELECT o.customer_id, o.po_number, o.status, o.channel,
               coalesce(array_agg(DISTINCT e.category) FILTER (WHERE e.category IS NOT NULL), '{}')
          FROM orderflow."order" o
          LEFT JOIN orderflow.order_exception e ON e.order_id = o.order_id
         WHERE o.parent_order_id IS NULL  -- the customer's order, not its backorder releases
         GROUP BY 1, 2, 3, 4
        """
    ).fetchall()
    by_po: dict[tuple, list] = {}
    for cid, po, status, channel, cats in rows:
        by_po.setdefault((cid, po), []).append((status, channel, set(cats)))
    per_cat: dict[str, dict[str, int]] = {}
    released_clean = clean = 0
    mismatches = []

    def bump(cat, key):
        per_cat.setdefault(cat, {"tp": 0, "fp": 0, "fn": 0})[key] += 1

    for s in subs:
        t = truths[s["submission_id"]]
        if t["expected"] in ("duplicate", "quarantine"):
            continue  # judged at intake (message outcomes), not by processing
        if t.get("change"):
            continue  # the customer changed or cancelled it later: judged by the change tests
        found = by_po.get((s["customer_id"], s["po_number"]), [])
        if not found:
            mismatches.append((s["submission_id"], t["expected"], "no order"))
            continue
        status, _, cats = found[0]
        want = set(t["exception_categories"])
        if t["expected"] == "release":
            clean += 1
            if status == "RELEASED" and not cats:
                released_clean += 1
        for c in want | cats:
            bump(c, "tp" if c in want and c in cats else "fn" if c in want else "fp")
        if (t["expected"] == "release") != (status == "RELEASED") or want != cats:
            mismatches.append(
                (s["submission_id"], t["expected"], status, sorted(want), sorted(cats), t["notes"])
            )
    return {
        "clean": clean,
        "first_pass_released": released_clean,
        "per_category": per_cat,
        "mismatches": mismatches,
    }


def assert_same_x12_results(a, b) -> None:
    """Two ``X12Result``s of the same file are equal in every respect: the JSON of the whole
    result, the findings, the acknowledgments' text, and every set's models field by field
    (the type of every value, the fields set, the JSON the store keeps)."""
    assert a.model_dump_json() == b.model_dump_json()
    assert [e.model_dump() for e in a.error_list] == [e.model_dump() for e in b.error_list]
    assert a.acknowledgments == b.acknowledgments
    for i, (x, y) in enumerate(zip(a.transactions, b.transactions, strict=True)):
        _same_model(x, y, f"set {i}")
        if x.order is not None:  # the rows the store gets: the JSON the store keeps
            assert x.order.model_dump_json() == y.order.model_dump_json()
            for la, lb in zip(x.order.lines, y.order.lines, strict=True):
                assert la.model_dump_json() == lb.model_dump_json()


def _same_model(a, b, where: str) -> None:
    assert type(a) is type(b), where
    assert a == b, where
    assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__, where
    assert type(a.__pydantic_fields_set__) is type(b.__pydantic_fields_set__), where
    assert a.__pydantic_extra__ == b.__pydantic_extra__, where
    assert a.__pydantic_private__ == b.__pydantic_private__, where
    assert list(a.__dict__) == list(b.__dict__), where
    for name in type(a).model_fields:
        _same_value(getattr(a, name), getattr(b, name), f"{where}.{name}")


def _same_value(va, vb, where: str) -> None:
    from datetime import datetime

    from pydantic import BaseModel

    assert type(va) is type(vb), where
    if isinstance(va, BaseModel):
        _same_model(va, vb, where)
    elif isinstance(va, list):
        for i, (x, y) in enumerate(zip(va, vb, strict=True)):
            _same_value(x, y, f"{where}[{i}]")
    elif isinstance(va, dict):
        assert list(va.items()) == list(vb.items()), where
    elif isinstance(va, datetime):
        assert type(va.tzinfo) is type(vb.tzinfo), where
    else:
        assert va == vb, where
