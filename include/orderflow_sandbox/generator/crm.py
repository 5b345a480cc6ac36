"""The CRM's account context for a generated day, and which price differences it explains.

Built after the orders, from ``world.json``'s rows and the ``orders.jsonl`` rows, with a
random stream of its own (``[seed, 19]``): the orders, artefacts and master data of a seed
are byte-for-byte what they were before the CRM existed; only the CRM's records, the labels
below and the manifest's ``crm`` counts are new.

- Every customer has an account, with an owner (a sales rep) and the owner's team.
- Of the orders with a price outside their contract's tolerance (defect
  ``pricing_mismatch``), a share is **explained**: a valid quote (``QUOTE_SHARE``) or a
  special price agreement (``AGREEMENT_SHARE``) at exactly the order's price. The ground
  truth labels them ``price_explanations: [{line_no, source, document_id}]`` and expects
  them released. Another share carries a quote at that price that **expired** before the PO
  date (``EXPIRED_SHARE``): still held ``pricing_mismatch``, labelled
  ``pricing_cause: "quote_expired"`` (and the quote). The rest have no CRM document.
- Unrelated quotes and agreements (pairs no price difference uses) make the CRM look lived in.

The orchestrator's policy this assumes: a line whose price is outside its contract (or list)
tolerance is explained by a quote for that customer and item valid on the PO date at exactly
that price, or by an agreement valid on the PO date within the contract tolerance.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import numpy as np

QUOTE_SHARE = 0.25
AGREEMENT_SHARE = 0.15
EXPIRED_SHARE = 0.15

TEAMS = ("Key Accounts", "Field Sales East", "Field Sales West", "Inside Sales")
REPS = (
    ("Dana Whitfield", "Key Accounts"),
    ("Marcus Ortega", "Key Accounts"),
    ("Priya Raman", "Field Sales East"),
    ("Tom Kowalski", "Field Sales East"),
    ("Grace Lin", "Field Sales West"),
    ("Luis Navarro", "Field Sales West"),
    ("Ella Brooks", "Inside Sales"),
    ("Sam Adeyemi", "Inside Sales"),
)


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T09:00:00Z"


def _d(value: str) -> date:
    return date.fromisoformat(value)


def _active(contracts: list[dict], day: date) -> list[dict]:
    return [
        k
        for k in contracts
        if _d(k["effective_from"]) <= day
        and (k["expires_on"] is None or day <= _d(k["expires_on"]))
    ]


def _mismatch_line(order: dict, contracts: dict[tuple[str, str], list[dict]]) -> dict | None:
    """The line whose price is outside its live contract's tolerance (the injected defect)."""
    day = _d(order["po_date"])
    for ln in order["lines"]:
        live = _active(contracts.get((order["customer_id"], ln["item_id"]), []), day)
        if len(live) == 1:
            k = live[0]
            diff = abs(ln["unit_price"] - k["unit_price"]) / k["unit_price"] * 100
            if diff > k["tolerance_pct"]:
                return ln
    return None


def build(
    seed: int, world: dict[str, Any], orders: list[dict], truths: list[dict]
) -> dict[str, Any]:
    """The CRM records (``world.json`` keys) and counts; labels ``truths`` in place."""
    rng = np.random.default_rng([seed, 19])
    first = _d(world["business_date"])
    accounts = []
    key_tiers = ("platinum", "gold")
    for c in world["customers"]:
        pool = [r for r in REPS if (r[1] == "Key Accounts") == (c["tier"] in key_tiers)]
        owner, team = pool[int(rng.integers(len(pool)))]
        accounts.append(
            {
                "account_id": "A" + c["customer_id"][1:],
                "customer_id": c["customer_id"],
                "name": c["name"],
                "owner": owner,
                "owner_email": owner.lower().replace(" ", ".") + "@distributor.example",
                "team": team,
                "updated_at": _stamp(first - timedelta(days=int(rng.integers(30, 400)))),
            }
        )
    contracts: dict[tuple[str, str], list[dict]] = {}
    for k in world["contracts"]:
        contracts.setdefault((k["customer_id"], k["item_id"]), []).append(k)

    candidates = []
    used: set[tuple[str, str]] = set()
    for o in orders:
        if o["duplicate_of"] is not None or o["defects"] != ["pricing_mismatch"]:
            continue
        ln = _mismatch_line(o, contracts)
        if ln is None or (o["customer_id"], ln["item_id"]) in used:
            continue
        used.add((o["customer_id"], ln["item_id"]))
        candidates.append((o, ln))
    order = rng.permutation(len(candidates)).tolist()
    n = len(candidates)
    n_quote = math.ceil(n * QUOTE_SHARE)
    n_agree = math.ceil(n * AGREEMENT_SHARE)
    n_expired = math.ceil(n * EXPIRED_SHARE)
    quotes: list[dict] = []
    agreements: list[dict] = []
    labels: dict[str, dict] = {}
    for rank, j in enumerate(order):
        o, ln = candidates[j]
        po_day = _d(o["po_date"])
        base = {"customer_id": o["customer_id"], "item_id": ln["item_id"], "currency": "USD"}
        if rank < n_quote or n_quote + n_agree <= rank < n_quote + n_agree + n_expired:
            expired = rank >= n_quote
            if expired:
                quoted = po_day - timedelta(days=int(rng.integers(40, 90)))
                expires = po_day - timedelta(days=int(rng.integers(1, 20)))
            else:
                quoted = po_day - timedelta(days=int(rng.integers(1, 25)))
                expires = po_day + timedelta(days=int(rng.integers(5, 60)))
            q = {
                "quote_id": f"Q{len(quotes) + 1:06d}",
                **base,
                "quoted_price": ln["unit_price"],
                "quoted_on": quoted.isoformat(),
                "expires_on": expires.isoformat(),
                "status": "issued",
                "updated_at": _stamp(quoted),
            }
            quotes.append(q)
            if expired:
                labels[o["order_ref"]] = {
                    "pricing_cause": "quote_expired",
                    "quote_id": q["quote_id"],
                    "line_no": ln["line_no"],
                }
            else:
                labels[o["order_ref"]] = {
                    "price_explanations": [
                        {"line_no": ln["line_no"], "source": "quote", "document_id": q["quote_id"]}
                    ]
                }
        elif rank < n_quote + n_agree:
            start = po_day - timedelta(days=int(rng.integers(10, 120)))
            a = {
                "agreement_id": f"SPA{len(agreements) + 1:05d}",
                **base,
                "unit_price": ln["unit_price"],
                "valid_from": start.isoformat(),
                "valid_to": (po_day + timedelta(days=int(rng.integers(30, 365)))).isoformat(),
                "updated_at": _stamp(start),
            }
            agreements.append(a)
            labels[o["order_ref"]] = {
                "price_explanations": [
                    {
                        "line_no": ln["line_no"],
                        "source": "agreement",
                        "document_id": a["agreement_id"],
                    }
                ]
            }

    # Lived-in noise: quotes and agreements on contracted pairs no price difference touches,
    # at the contract's own price (a contract-priced line stays explained by its contract).
    mismatched = {(o["customer_id"], ln["item_id"]) for o, ln in candidates}
    others = sorted(k for k in contracts if k not in mismatched)
    for j in rng.permutation(len(others))[: max(1, len(accounts) // 10)].tolist():
        cust, item = others[j]
        k = contracts[(cust, item)][0]
        quoted = first - timedelta(days=int(rng.integers(1, 60)))
        quotes.append(
            {
                "quote_id": f"Q{len(quotes) + 1:06d}",
                "customer_id": cust,
                "item_id": item,
                "currency": "USD",
                "quoted_price": k["unit_price"],
                "quoted_on": quoted.isoformat(),
                "expires_on": (quoted + timedelta(days=int(rng.integers(10, 90)))).isoformat(),
                "status": "issued",
                "updated_at": _stamp(quoted),
            }
        )

    for t in truths:
        label = labels.get(t["order_ref"])
        if label is None or t["expected"] == "duplicate":
            continue
        t.update(label)
        if "price_explanations" in label:
            t["expected"], t["exception_categories"] = "release", []
    return {
        "records": {
            "crm_accounts": accounts,
            "crm_agreements": agreements,
            "crm_quotes": quotes,
        },
        "counts": {
            "accounts": len(accounts),
            "agreements": len(agreements),
            "quotes": len(quotes),
            "explained_by_quote": min(n_quote, n),
            "explained_by_agreement": min(n_agree, max(0, n - n_quote)),
            "quote_expired": min(n_expired, max(0, n - n_quote - n_agree)),
        },
    }
