"""Conformance of the X12 reader on real interchanges written by other projects.

The corpus lives outside the repository (licences): the directory named by
``ORDERFLOW_X12_CORPUS`` (CI sets it when the corpus is on the machine); its sibling ``expected/``
holds other tools' outputs (bots' 997s). Tests skip cleanly when it is absent. Every file
there must have an expectation in ``x12_expected.py``.

Also: every 850 file of a generated sandbox day parses into exactly the orders the
generator says it wrote, and its files labelled ``malformed_edi`` are rejected.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from orderflow.channels.x12 import parse

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("ORDERFLOW_X12_CORPUS") or "/nonexistent/ORDERFLOW_X12_CORPUS-unset")
EXPECTED_DIR = CORPUS.parent / "expected"


def _load_expectations():
    spec = importlib.util.spec_from_file_location("x12_expected", HERE / "x12_expected.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXP = _load_expectations()
FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no X12 corpus at {CORPUS}")


def _parse(name: str):
    return parse((CORPUS / name).read_bytes(), source_ref=name)


@needs_corpus
def test_every_corpus_file_has_an_expectation():
    missing = sorted(set(FILES) - set(EXP.EXPECTED))
    assert not missing, (
        f"{len(missing)} corpus file(s) have no expectation: {missing}. Decide the correct "
        "outcome of each and add it to tests/conformance/x12_expected.py (EXPECTED), with why."
    )


@needs_corpus
@pytest.mark.parametrize("name", FILES or ["<no corpus>"])
def test_corpus_file(name):
    if name not in EXP.EXPECTED:
        pytest.fail(
            f"{name} is new in {CORPUS}: add its expected outcome to "
            "tests/conformance/x12_expected.py (EXPECTED) after deciding what is correct."
        )
    want = EXP.EXPECTED[name]
    result = _parse(name)

    got = {
        "accepted": result.accepted,
        "orders": len(result.orders),
        "lines": sum(len(o.lines) for o in result.orders),
        "errors": sorted(e.code for e in result.error_list),
        "ta1": [(i.ta1_code, i.ta1_note) if i.ta1 else None for i in result.interchanges],
        "ak9": [g.ack_code if g.ack_997 else None for i in result.interchanges for g in i.groups],
        "sets": "".join(t.ack_code for t in result.transactions),
    }
    if "changes" in want:  # 850 BEG01 01/03/04/05 and 860: changes, not orders
        got["changes"] = [
            (c.kind.value, len(c.replacement.lines) if c.replacement else len(c.lines))
            for c in result.changes
        ]
    assert got == {k: want[k] for k in got}, want["why"]
    for e in result.error_list:  # every finding is actionable
        assert e.message, e
        assert e.where, e
    for order in result.orders:
        assert order.provenance.source_ref == name
        assert order.order_id.startswith("EDI-")


@needs_corpus
@pytest.mark.parametrize("name", sorted(EXP.BOTS_997))
def test_our_997_says_what_bots_says(name):
    if not EXPECTED_DIR.is_dir() or name not in FILES:
        pytest.skip(f"no {EXPECTED_DIR} or {name}")
    ours = {}
    for ack in _parse(name).acknowledgments:
        for t in parse(ack.encode()).transactions:
            ours[t.acknowledgment.group_control_number] = t.acknowledgment
    theirs = {}
    for other in EXP.BOTS_997[name]:
        for t in parse((EXPECTED_DIR / other).read_bytes()).transactions:
            theirs[t.acknowledgment.group_control_number] = t.acknowledgment

    assert theirs
    for group, ack in theirs.items():
        assert ours[group] == ack, f"group {group}"


@needs_corpus
def test_our_997s_for_the_corpus_read_back_as_valid_997s():
    checked = 0
    for name in FILES:
        result = _parse(name)
        for ic in result.interchanges:
            for g in ic.groups:
                if g.ack_997 is None:
                    continue
                back = parse(g.ack_997.encode())
                assert back.accepted, (name, back.error_list)
                (t,) = back.transactions
                summary = t.acknowledgment
                assert summary.group_control_number == g.control_number
                assert summary.transactions == {
                    x.control_number: x.ack_code
                    for x in g.transactions
                    if not (g.rejected and x.ack_code == "A")
                }
                checked += 1
    if not checked:
        pytest.skip("no acknowledged functional group in this corpus")


@needs_corpus
def test_ediengine_syntax_note_positions():
    if "ediengine__850.SyntaxNotes.ERR.edi" not in FILES:
        pytest.skip("file absent")
    result = _parse("ediengine__850.SyntaxNotes.ERR.edi")
    positions = [int(re.search(r"segment (\d+)", e.where).group(1)) for e in result.error_list]

    assert sorted(positions) == [13, 30, 30]  # what EdiEngine's own test asserts
    assert {m for e in result.error_list for m in re.findall(r"[PC]\d{4}", e.message)} == {
        "P0607",
        "C0506",
    }


@needs_corpus
def test_ediengine_control_number_messages_name_both_numbers():
    if "ediengine__ControlNumbersMismatch.edi" not in FILES:
        pytest.skip("file absent")
    text = " ".join(e.message for e in _parse("ediengine__ControlNumbersMismatch.edi").error_list)

    for a, b in (("000003438", "000003439"), ("3314", "3315"), ("0001", "0002")):
        assert a in text
        assert b in text


# ------------------------------------------------------------------ a generated sandbox day
def test_generated_day_parses_into_the_orders_generated(tmp_path):
    from orderflow_sandbox.generator import generate

    generate(tmp_path, seed=3, orders_per_day=200, customers=80, items=400)
    submissions = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    by_file = collections.defaultdict(list)
    for s in submissions:
        if s["channel"] == "edi":
            by_file[s["artefact"]].append(s)
    # customers' later changes (850 cancel/replace, 860) are files of their own: they carry
    # changes, never orders, and are delivered as recorded
    change_files = {
        d["path"]
        for d in map(json.loads, (tmp_path / "deliveries.jsonl").read_text().splitlines())
        if d.get("change_id") and d["channel"] == "edi"
    }
    files = [p for p in (tmp_path / "artefacts" / "edi").rglob("*") if p.is_file()]
    for path in [p for p in files if str(p.relative_to(tmp_path)) in change_files]:
        changed = parse(path.read_bytes(), partner_id=path.parent.name, source_ref=path.name)
        assert changed.changes and not changed.orders, path
    files = [p for p in files if str(p.relative_to(tmp_path)) not in change_files]
    assert files
    assert len(files) == len(by_file)

    problems = []
    malformed_seen = 0
    for path in files:
        rel = str(path.relative_to(tmp_path))
        subs = by_file[rel]
        good = [s for s in subs if "malformed_edi" not in s["defects"]]
        result = parse(path.read_bytes(), partner_id=subs[0]["partner_id"], source_ref=rel)
        got = sorted((o.po_number, len(o.lines)) for o in result.orders)
        want = sorted((s["po_number"], len(s["lines"])) for s in good)
        if got != want:
            problems.append(f"{rel}: orders {got} != {want}")
        if len(good) < len(subs):
            malformed_seen += 1
            if result.accepted:
                problems.append(f"{rel}: labelled malformed_edi but accepted")
        elif not result.accepted or result.error_list:
            problems.append(f"{rel}: {[(e.code, e.message) for e in result.error_list]}")
        for order, s in zip(
            sorted(result.orders, key=lambda o: o.po_number),
            sorted(good, key=lambda s: s["po_number"]),
            strict=False,
        ):
            quantities = [float(ln.quantity) for ln in order.lines]
            if quantities != [float(x["quantity"]) for x in s["lines"]]:
                problems.append(f"{rel}: {order.po_number} quantities {quantities}")
    assert not problems, "\n".join(problems)
    assert malformed_seen >= 1
