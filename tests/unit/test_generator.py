"""The order-day generator: reproducible, on-mix, and internally consistent — clean orders
really are releasable against the generated master data, and every labelled defect really
trips its rule."""

from __future__ import annotations

import csv
import email
import hashlib
import io
import json
from collections import Counter, defaultdict
from datetime import date
from email import policy
from pathlib import Path

import pytest
from pypdf import PdfReader

from orderflow_sandbox.generator import generate
from orderflow_sandbox.generator.day import CREDIT_RATES, DEFECT_RATES, DUPLICATE_RATE

# Generates whole days: the full tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.slow

SMALL = {"orders_per_day": 400, "customers": 200, "items": 800, "business_date": date(2025, 3, 3)}
CONTRACT_FILES = ("world.json", "orders.jsonl", "ground_truth.jsonl", "deliveries.jsonl")
CATEGORIES = {
    "pricing_mismatch",
    "expired_contract",
    "unknown_item",
    "ship_to_incomplete",
    "credit_limit",
    "credit_hold",
    "short_stock",
    "substitution_needed",
    "duplicate_suspect",
    "low_confidence_extraction",
    "master_data_quality",
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Day:
    """A generated directory, loaded once, with the lookups the checks need."""

    def __init__(self, root: Path):
        self.root = root
        self.world = json.loads((root / "world.json").read_text())
        self.orders = _jsonl(root / "orders.jsonl")
        self.truth = {t["submission_id"]: t for t in _jsonl(root / "ground_truth.jsonl")}
        self.deliveries = _jsonl(root / "deliveries.jsonl")
        self.manifest = json.loads((root / "manifest.json").read_text())
        w = self.world
        self.items = {i["item_id"]: i for i in w["items"]}
        self.by_vendor_part = {i["vendor_part"]: i["item_id"] for i in w["items"]}
        self.by_upc = {i["upc"]: i["item_id"] for i in w["items"]}
        self.customers = {c["customer_id"]: c for c in w["customers"]}
        self.ship_tos = {s["ship_to_id"]: s for s in w["ship_tos"]}
        self.credit = {a["customer_id"]: a for a in w["credit_accounts"]}
        self.stock = {(r["item_id"], r["dc_id"]): r["on_hand"] for r in w["inventory"]}
        self.xref: dict[tuple[str, str], set[str]] = defaultdict(set)
        for x in w["xrefs"]:
            self.xref[(x["customer_id"], x["customer_part_number"])].add(x["item_id"])
        self.contracts: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for k in w["contracts"]:
            self.contracts[(k["customer_id"], k["item_id"])].append(k)
        self.bad_items = {d["id"] for d in w["master_data_defects"] if d["entity"] == "item"}

    def active(self, customer_id: str, item_id: str, on: str) -> list[dict]:
        return [
            k
            for k in self.contracts[(customer_id, item_id)]
            if k["effective_from"] <= on
            and (k["expires_on"] is None or on <= k["expires_on"])
            and k["effective_from"] <= (k["expires_on"] or "9999")
        ]

    def resolve(self, customer_id: str, qualifier: str, value: str) -> set[str]:
        if qualifier in ("BP", "IN"):
            return self.xref.get((customer_id, value), set())
        if qualifier in ("VP", "VN"):
            return {self.by_vendor_part[value]} if value in self.by_vendor_part else set()
        if qualifier == "UP":
            return {self.by_upc[value]} if value in self.by_upc else set()
        if qualifier == "EN":
            return {self.by_upc[value[1:]]} if value[1:] in self.by_upc else set()
        return {value} if value in self.items else set()

    def clean(self) -> list[dict]:
        return [o for o in self.orders if not o["defects"]]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Day:
    root = tmp_path_factory.mktemp("gen-small")
    generate(root, seed=11, **SMALL)
    return Day(root)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Day:
    """Big enough for the mix to be statistically fair, small enough to take seconds."""
    root = tmp_path_factory.mktemp("gen-mix")
    generate(
        root, seed=5, orders_per_day=3000, customers=900, items=3000, business_date=date(2025, 3, 4)
    )
    return Day(root)


def _digest(root: Path) -> dict[str, str]:
    files = [root / name for name in CONTRACT_FILES] + sorted((root / "artefacts").rglob("*.*"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---------------------------------------------------------------------------- reproducibility


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, seed=3, **SMALL)
    generate(b, seed=3, **SMALL)
    generate(c, seed=4, **SMALL)
    assert _digest(a) == _digest(b)
    for name in ("world.json", "orders.jsonl", "ground_truth.jsonl"):
        assert (a / name).read_bytes() != (c / name).read_bytes()


def test_several_days_are_consecutive_business_days(tmp_path):
    generate(
        tmp_path,
        seed=2,
        days=2,
        orders_per_day=150,
        customers=100,
        items=500,
        business_date=date(2025, 3, 7),
    )  # a Friday: the next day is Monday
    day = Day(tmp_path)
    ids = [o["submission_id"] for o in day.orders]
    assert len(ids) == len(set(ids))
    assert [o["arrival_at"] for o in day.orders] == sorted(o["arrival_at"] for o in day.orders)
    refs = {o["order_ref"].split("-")[1] for o in day.orders}
    assert refs == {"20250307", "20250310"}
    assert day.world["business_date"] == "2025-03-07"
    assert day.world["days"] == 2
    assert day.manifest["business_dates"] == ["2025-03-07", "2025-03-10"]
    per_day = Counter(o["order_ref"].split("-")[1] for o in day.orders if o["duplicate_of"] is None)
    assert set(per_day.values()) == {150}


@pytest.mark.parametrize(("orders", "customers", "items"), [(12, 8, 60), (60, 25, 150)])
def test_tiny_worlds_still_generate_consistently(tmp_path, orders, customers, items):
    generate(
        tmp_path,
        seed=1,
        orders_per_day=orders,
        customers=customers,
        items=items,
        business_date=date(2025, 3, 3),
    )
    day = Day(tmp_path)
    assert len(day.orders) >= orders
    _check_clean_orders_releasable(day)
    _check_defects_trip(day)


# ---------------------------------------------------------------------------- shape


def test_files_and_ground_truth_line_up(small):
    assert [o["submission_id"] for o in small.orders] == sorted(small.truth)
    for o in small.orders:
        t = small.truth[o["submission_id"]]
        assert t["order_ref"] == o["order_ref"]
        assert t["expected"] in {"release", "hold", "duplicate", "quarantine"}
        assert set(t["exception_categories"]) <= CATEGORIES
        assert o["channel"] in {"edi", "portal", "email", "csv"}
        assert (o["client_request_id"] is not None) == (o["channel"] == "portal")
        assert (o["artefact"] is None) == (o["channel"] == "portal")
        assert (o["partner_id"] is not None) == (o["channel"] == "edi")
        assert [ln["line_no"] for ln in o["lines"]] == list(range(1, len(o["lines"]) + 1))
        if o["duplicate_of"]:
            assert t["expected"] == "duplicate"
    assert [o["arrival_at"] for o in small.orders] == sorted(o["arrival_at"] for o in small.orders)


def test_every_delivery_exists_and_covers_its_submissions(small):
    assert [d["at"] for d in small.deliveries] == sorted(d["at"] for d in small.deliveries)
    covered = set()
    by_id = {o["submission_id"]: o for o in small.orders}
    for d in small.deliveries:
        assert (small.root / d["path"]).is_file()
        for sid in d["submission_ids"]:
            assert by_id[sid]["artefact"] == d["path"]
            assert by_id[sid]["arrival_at"] == d["at"]
            covered.add(sid)
    assert covered == {o["submission_id"] for o in small.orders if o["channel"] != "portal"}
    names = [Path(d["path"]).name for d in small.deliveries]
    assert len(names) == len(set(names))  # the service drops them into shared folders


def test_master_data_has_the_documented_shape(small):
    w = small.world
    assert {d["dc_id"] for d in w["dcs"]} == {"DC-EAST", "DC-WEST"}
    assert len(w["customers"]) == SMALL["customers"]
    assert len(w["items"]) == SMALL["items"]
    assert not any(
        k.startswith("_") for row in w["customers"] + w["items"] + w["ship_tos"] for k in row
    )
    for p in w["partners"]:
        assert len(p["isa_id"]) == 15
        assert (p["repetition_sep"] is not None) == (p["isa_version"] == "00501")
    edi_customers = {p["customer_id"] for p in w["partners"]}
    assert all(
        (c["edi_partner_id"] is not None) == (c["customer_id"] in edi_customers)
        for c in w["customers"]
    )
    kinds = {d["kind"] for d in w["master_data_defects"]}
    assert {"orphan_xref", "duplicate_customer_part_number"} <= kinds
    assert kinds & {"nonpositive_weight", "invalid_uom"}
    assert kinds & {"missing_postal_code", "missing_address"}


# ---------------------------------------------------------------------------- mix


def test_channel_and_defect_mix_is_on_target(large):
    n_sub = len(large.orders)
    distinct = sum(1 for o in large.orders if o["duplicate_of"] is None)
    channels = Counter(o["channel"] for o in large.orders)
    for channel, share in {"edi": 0.45, "portal": 0.30, "email": 0.15, "csv": 0.10}.items():
        assert abs(channels[channel] / n_sub - share) < 0.04, (channel, channels[channel] / n_sub)
    defects = Counter(d for o in large.orders for d in o["defects"])
    rates = {**DEFECT_RATES, **CREDIT_RATES, "duplicate": DUPLICATE_RATE}
    for kind, rate in rates.items():
        assert abs(defects[kind] / distinct - rate) <= max(0.3 * rate, 0.003), (
            kind,
            defects[kind] / distinct,
        )
    attention = sum(
        1
        for t in large.truth.values()
        if t["expected"] != "release" or t["substitutions"] or t["backorder_lines"]
    )
    assert 0.15 <= attention / n_sub <= 0.21
    lines = [len(o["lines"]) for o in large.orders]
    assert 4.0 <= sum(lines) / len(lines) <= 6.0
    assert Counter(lines).most_common(1)[0][0] <= 3
    assert max(lines) >= 30
    splits = sum(1 for t in large.truth.values() if t["split"])
    assert 0.01 <= splits / n_sub <= 0.05


# ---------------------------------------------------------------------------- consistency


def _check_clean_orders_releasable(day: Day) -> None:
    releasable = [
        o
        for o in day.orders
        if day.truth[o["submission_id"]]["expected"] == "release" and not o["defects"]
    ]
    assert releasable
    demand: Counter[str] = Counter()
    exposure: Counter[str] = Counter()
    for o in releasable:
        cust, st = o["customer_id"], day.ship_tos[o["ship_to_id"]]
        assert st["address_line1"], o["submission_id"]
        assert st["postal_code"], o["submission_id"]
        for ln in o["lines"]:
            assert day.resolve(cust, ln["id_qualifier"], ln["id_value"]) == {ln["item_id"]}, (
                o["submission_id"],
                ln,
            )
            assert ln["item_id"] not in day.bad_items
            item = day.items[ln["item_id"]]
            assert ln["uom"] == item["uom"]
            assert not item["discontinued"]
            active = day.active(cust, ln["item_id"], o["po_date"])
            assert len(active) <= 1, (o["submission_id"], ln)
            if active:
                k = active[0]
                assert (
                    abs(ln["unit_price"] - k["unit_price"]) / k["unit_price"] * 100
                    <= k["tolerance_pct"]
                )
            else:  # no contract at all (an expired-only pair would be an expired_contract)
                assert not day.contracts[(cust, ln["item_id"])], (o["submission_id"], ln)
                assert ln["unit_price"] == item["list_price"], (o["submission_id"], ln)
            demand[ln["item_id"]] += ln["quantity"]
            exposure[cust] += ln["quantity"] * ln["unit_price"]
    for o in releasable:
        t = day.truth[o["submission_id"]]
        fits = [
            dc
            for dc in ("DC-EAST", "DC-WEST")
            if all(day.stock[(ln["item_id"], dc)] >= demand[ln["item_id"]] for ln in o["lines"])
        ]
        if t["split"]:
            assert not fits
            assert all(
                max(day.stock[(ln["item_id"], dc)] for dc in ("DC-EAST", "DC-WEST"))
                >= demand[ln["item_id"]]
                for ln in o["lines"]
            )
        else:
            assert fits, o["submission_id"]
    for cust, amount in exposure.items():
        acct = day.credit[cust]
        assert not acct["on_hold"]
        assert acct["credit_limit"] - acct["open_ar"] >= amount


def _check_defects_trip(day: Day) -> None:
    for o in day.orders:
        if not o["defects"] or o["duplicate_of"]:
            continue
        (kind,) = o["defects"]
        cust, lines = o["customer_id"], o["lines"]
        acct = day.credit[cust]
        amount = sum(ln["quantity"] * ln["unit_price"] for ln in lines)
        if kind == "pricing_mismatch":
            assert any(
                (a := day.active(cust, ln["item_id"], o["po_date"]))
                and abs(ln["unit_price"] - a[0]["unit_price"]) / a[0]["unit_price"] * 100
                > a[0]["tolerance_pct"]
                for ln in lines
            )
        elif kind == "expired_contract":
            assert any(
                not day.active(cust, ln["item_id"], o["po_date"])
                and any(
                    k["unit_price"] == ln["unit_price"] and k["expires_on"] < o["po_date"]
                    for k in day.contracts[(cust, ln["item_id"])]
                )
                for ln in lines
            )
        elif kind == "unknown_item":
            assert any(not day.resolve(cust, ln["id_qualifier"], ln["id_value"]) for ln in lines)
        elif kind == "ship_to_incomplete":
            st = day.ship_tos[o["ship_to_id"]]
            assert not st["address_line1"] or not st["postal_code"]
        elif kind == "credit_hold":
            assert acct["on_hold"]
        elif kind == "credit_limit":
            assert acct["credit_limit"] - acct["open_ar"] < amount
            assert not acct["on_hold"]
        elif kind in ("short_stock", "short_stock_substitute"):
            short = [
                ln
                for ln in lines
                if day.stock[(ln["item_id"], "DC-EAST")] + day.stock[(ln["item_id"], "DC-WEST")]
                < ln["quantity"]
            ]
            assert len(short) == 1
            subs = day.items[short[0]["item_id"]]["substitute_item_ids"]
            t = day.truth[o["submission_id"]]
            if kind == "short_stock":
                assert not subs
                assert t["backorder_lines"] == [short[0]["line_no"]] or t[
                    "exception_categories"
                ] == ["short_stock"]
            else:
                assert t["substitutions"][0]["substitute_item_id"] in subs
                sub = t["substitutions"][0]["substitute_item_id"]
                assert (
                    max(day.stock[(sub, dc)] for dc in ("DC-EAST", "DC-WEST"))
                    >= short[0]["quantity"]
                )
                accepts = day.customers[cust]["accepts_substitutes"]
                assert t["expected"] == ("release" if accepts else "hold")
        elif kind == "master_data_quality":
            assert any(
                ln["item_id"] in day.bad_items
                or len(day.active(cust, ln["item_id"], o["po_date"])) > 1
                for ln in lines
            )


def test_clean_orders_are_really_releasable(small):
    _check_clean_orders_releasable(small)


def test_defective_orders_really_trip_their_rule(small):
    _check_defects_trip(small)


def test_consistency_holds_at_mix_scale(large):
    _check_clean_orders_releasable(large)
    _check_defects_trip(large)


def test_duplicates_resend_the_same_po_through_another_channel(large):
    by_id = {o["submission_id"]: o for o in large.orders}
    dups = [o for o in large.orders if o["duplicate_of"]]
    assert dups
    for d in dups:
        orig = by_id[d["duplicate_of"]]
        assert (orig["customer_id"], orig["po_number"]) == (d["customer_id"], d["po_number"])
        assert orig["channel"] != d["channel"]
        assert orig["arrival_at"] < d["arrival_at"]
    keys = Counter(
        (o["customer_id"], o["po_number"]) for o in large.orders if not o["duplicate_of"]
    )
    assert max(keys.values()) == 1


# ---------------------------------------------------------------------------- documents


def _attachments(path: Path) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "orders@distributor.example"
    assert msg["From"].addresses[0].addr_spec.startswith("buyer@")
    assert msg["From"].addresses[0].domain.endswith(".example")
    return [(part.get_content_type(), part.get_content()) for part in msg.iter_attachments()]


def test_pdfs_have_text_unless_scanned(small):
    seen = Counter()
    for o in (o for o in small.orders if o["channel"] == "email"):
        scanned = "low_confidence_extraction" in o["defects"]
        for ctype, data in _attachments(small.root / o["artefact"]):
            seen[(ctype, scanned)] += 1
            if ctype == "image/png":
                assert scanned
                assert data.startswith(b"\x89PNG")
                continue
            assert ctype == "application/pdf"
            text = "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
            if scanned:
                assert not text.strip()
            else:
                assert o["po_number"] in text
    assert seen[("application/pdf", False)]
    assert seen[("application/pdf", True)]


def test_csv_exports_parse_and_carry_every_line(small):
    by_id = {o["submission_id"]: o for o in small.orders}
    headers = set()
    for d in (d for d in small.deliveries if d["channel"] == "csv"):
        text = (small.root / d["path"]).read_text()
        dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;")
        rows = list(csv.reader(io.StringIO(text), dialect))
        headers.add(tuple(rows[0]))
        assert len(rows) - 1 == sum(len(by_id[s]["lines"]) for s in d["submission_ids"])
        po_col = next(
            i for i, h in enumerate(rows[0]) if h.lower().replace(" ", "") in ("po_number", "po#")
        )
        assert {r[po_col] for r in rows[1:]} == {by_id[s]["po_number"] for s in d["submission_ids"]}
    assert len(headers) >= 2
