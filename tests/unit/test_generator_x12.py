"""Generated X12 850 files: well-formed envelopes for every partner dialect, and labelled
malformed files that really break a rule. The checker here is deliberately independent of
the writer (it only knows the X12 envelope rules)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from orderflow_sandbox.generator import generate

# Generates whole days: the full tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.slow


def envelope_problems(data: bytes) -> list[str]:
    """Every envelope rule the file breaks (empty list = well formed)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw = data.decode("ascii")
    if not raw.startswith("ISA") or len(raw) < 106:
        return ["no ISA"]
    element = raw[3]
    if raw[105] in "\r\n" and "\n" not in raw[:105] and "\r" not in raw[:105]:
        terminator, body = "\n", raw.replace("\r", "")
    else:  # CR/LF are cosmetic (pretty-printing or 80-column wrapping): drop them
        body = raw.replace("\r", "").replace("\n", "")
        terminator = body[105]
    segments = [s for s in body.split(terminator) if s.strip()]
    problems: list[str] = []
    isa = segments[0].split(element)
    if len(segments[0]) + 1 != 106 or len(isa) != 17:
        problems.append(f"ISA is {len(segments[0]) + 1} chars / {len(isa)} elements")
        return problems
    if terminator.isalnum() or isa[16].isalnum():
        problems.append("delimiter is alphanumeric")
    i, groups, isa_ctl = 1, 0, isa[13]
    while i < len(segments):
        seg = segments[i].split(element)
        if seg[0] == "GS":
            groups += 1
            gs_ctl, sets, i = seg[6], 0, i + 1
            while i < len(segments) and segments[i].split(element)[0] == "ST":
                st = segments[i].split(element)
                start = i
                while i < len(segments) and segments[i].split(element)[0] != "SE":
                    i += 1
                if i == len(segments):
                    return [*problems, "ST without SE"]
                se = segments[i].split(element)
                if int(se[1]) != i - start + 1:
                    problems.append(f"SE count {se[1]} != {i - start + 1}")
                if se[2] != st[2]:
                    problems.append("SE/ST control mismatch")
                sets, i = sets + 1, i + 1
            ge = segments[i].split(element) if i < len(segments) else ["<eof>"]
            if ge[0] != "GE":
                return [*problems, "GS without GE"]
            if int(ge[1]) != sets:
                problems.append(f"GE count {ge[1]} != {sets}")
            if ge[2] != gs_ctl:
                problems.append("GE/GS control mismatch")
            i += 1
        elif seg[0] == "IEA":
            if int(seg[1]) != groups:
                problems.append("IEA group count mismatch")
            if seg[2] != isa_ctl:
                problems.append("IEA/ISA control mismatch")
            i += 1
            if i < len(segments):  # another interchange in the same file
                rest = terminator.join(segments[i:]) + terminator
                return problems + envelope_problems(rest.encode("ascii"))
            return problems
        else:
            return [*problems, f"unexpected {seg[0]}"]
    return [*problems, "missing IEA"]


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen-x12")
    generate(
        root,
        seed=21,
        orders_per_day=2500,
        customers=600,
        items=1500,
        business_date=date(2025, 3, 5),
    )
    return root


def _edi_files(root: Path) -> list[tuple[dict, Path, list[dict]]]:
    orders = {
        o["submission_id"]: o
        for o in map(json.loads, (root / "orders.jsonl").read_text().splitlines())
    }
    deliveries = [json.loads(x) for x in (root / "deliveries.jsonl").read_text().splitlines()]
    return [
        (d, root / d["path"], [orders[s] for s in d["submission_ids"]])
        for d in deliveries
        if d["channel"] == "edi"
    ]


def test_clean_files_parse_and_malformed_ones_break_a_rule(day):
    files = _edi_files(day)
    assert files
    malformed = 0
    for _, path, orders in files:
        problems = envelope_problems(path.read_bytes())
        if any("malformed_edi" in o["defects"] for o in orders):
            malformed += 1
            assert len(orders) == 1
            assert problems, path
        else:
            assert problems == [], (path, problems)
    assert malformed > 0


def test_files_carry_their_orders(day):
    for d, path, orders in _edi_files(day):
        text = path.read_bytes().decode("ascii", "replace")
        flat = text.replace("\r", "").replace("\n", "")
        for o in orders:
            assert o["po_number"] in flat
            assert o["ship_to_id"] in flat
        partner_id = d["partner_id"]
        assert path.parent.name == partner_id
        assert all(o["partner_id"] == partner_id for o in orders)


def test_partner_dialects_and_batching_are_varied(day):
    world = json.loads((day / "world.json").read_text())
    partners = world["partners"]
    assert {p["isa_version"] for p in partners} >= {"00401", "00501"}
    assert len({(p["element_sep"], p["segment_term"]) for p in partners}) >= 2
    assert any(p["wrap80"] for p in partners)
    per_file: Counter[int] = Counter()
    shapes: Counter[tuple[int, int]] = Counter()
    for d, path, orders in _edi_files(day):
        data = path.read_bytes()
        per_file[len(orders)] += 1
        element = data.lstrip(b"\xef\xbb\xbf")[3:4]
        flat = data.replace(b"\r", b"").replace(b"\n", b"")
        shapes[(flat.count(b"ISA" + element), flat.count(b"GS" + element))] += 1
        partner = next(p for p in partners if p["partner_id"] == d["partner_id"])
        assert data.startswith(b"\xef\xbb\xbf") == partner["bom"]
        if partner["wrap80"]:
            assert max(len(line) for line in data.decode("ascii", "replace").splitlines()) <= 80
    assert max(per_file) > 1
    assert any(isa > 1 for isa, _ in shapes), "no file with several interchanges"
    assert any(gs > isa for isa, gs in shapes), "no interchange with several groups"


def test_malformations_are_labelled_and_varied(day):
    truth = {
        t["submission_id"]: t
        for t in map(json.loads, (day / "ground_truth.jsonl").read_text().splitlines())
    }
    kinds = Counter()
    for _, _, orders in _edi_files(day):
        for o in orders:
            if "malformed_edi" in o["defects"]:
                t = truth[o["submission_id"]]
                assert t["expected"] == "quarantine"
                kinds[t["notes"].rsplit(" ", 1)[-1]] += 1
    assert len(kinds) >= 3, kinds


def test_control_numbers_increase_per_partner(day):
    last: dict[str, int] = {}
    for d, path, _ in _edi_files(day):
        raw = (
            path.read_bytes()
            .lstrip(b"\xef\xbb\xbf")
            .decode("ascii")
            .replace("\r", "")
            .replace("\n", "")
        )
        element = raw[3]
        ctl = raw[:106].split(element)[13][:9]
        if not ctl.isdigit():
            continue
        n = int(ctl)
        assert n > last.get(d["partner_id"], -1)
        last[d["partner_id"]] = n
