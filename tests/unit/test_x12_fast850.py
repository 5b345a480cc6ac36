"""The 850 reader's whole-set fast path (issue #13 D5) reads exactly what the slow path reads.

``fast850`` recognises a well-formed, ordinary 850 with one regex and builds its order from
the regex's groups; anything it does not accept in full is read segment by segment as
before. For the benchmark's files, the sandbox generator's real 850s, the conformance corpus
and mutated sets (a character changed, removed or added, a segment repeated or dropped
anywhere), reading with the fast path and without it must give equal results: orders field
by field (the type of every value, the fields set, the JSON the store keeps), findings, and
997 text."""

from __future__ import annotations

import importlib.util
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import assert_same_x12_results, examples

from orderflow.channels.x12 import X12Stream, fast850, parse, prechecked

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
HEAD = (
    "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
    "00401*000000001*0*P*>~\nGS*PO*BUYER*SELLER*20261128*0930*1*X*004010~\n"
)


def _read(data: bytes, **kw):
    kw = {"received_at": NOW, "source_ref": "drop/BUYER/po.x12", "partner_id": "BUYER"} | kw
    return parse(data, **kw)


def _both(data: bytes, **kw):
    """(fast path, slow path) results of ``data``, and how many sets the fast path read."""
    assert fast850.ENABLED
    before = fast850.sets_read
    fast = _read(data, **kw)
    taken = fast850.sets_read - before
    fast850.ENABLED = False
    try:
        slow = _read(data, **kw)
    finally:
        fast850.ENABLED = True
    assert fast850.sets_read - before == taken  # the switch switches it off
    return fast, slow, taken


def _interchange(sets: list[list[str]], term: str = "~\n") -> bytes:
    out = HEAD
    for k, body in enumerate(sets, start=1):
        segs = [f"ST*850*{k:04d}", *body, f"SE*{len(body) + 2}*{k:04d}"]
        out += "".join(s + term for s in segs)
    out += f"GE*{len(sets)}*1~\nIEA*1*000000001~\n"
    return out.encode()


def _bench():
    spec = importlib.util.spec_from_file_location("x12_bench", ROOT / "benchmarks/x12_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ------------------------------------------------------------------ generated files
@pytest.mark.parametrize("partner", [False, True], ids=["bench", "partner"])
def test_the_benchmark_files_are_read_whole_and_equal(tmp_path, partner):
    path = tmp_path / "many.x12"
    _bench()._write(path, 60_000, 5, partner)
    data = path.read_bytes()
    fast, slow, taken = _both(data)
    assert_same_x12_results(fast, slow)
    assert fast.accepted and len(fast.orders) == data.count(b"ST*850") > 100
    assert taken == len(fast.orders)  # every set was read whole
    if partner:
        order = fast.orders[0]
        assert order.ship_to.city == "SPRINGFIELD" and order.requested_delivery_date
        assert order.lines[0].description == "WIDGET 1 BLUE 12MM PK10"


def test_sets_larger_than_the_readers_blocks_are_read_whole():
    """The reader splits the text a block at a time (4 KiB first, doubling): sets that run
    past a block's end, and sets starting right at a block's start, are skipped exactly."""
    sets = [
        ["BEG*00*SA*PO" + str(k) + "**20261128", "N1*ST*STORE 12*92*0012"]
        + [f"PO1*{n}*{k}*EA*1.50*PE*BP*PART{n:07d}" for n in range(1, 40 * k + 2)]
        + [f"CTT*{40 * k + 1}"]
        for k in range(1, 12)
    ]
    data = _interchange(sets)
    assert len(data) > 60_000
    fast, slow, taken = _both(data)
    assert_same_x12_results(fast, slow)
    assert taken == len(sets) == len(fast.orders)


def test_a_single_po_past_the_loop_limit_is_left_to_the_slow_path(tmp_path):
    path = tmp_path / "single.x12"
    _bench()._write(path, 4_500_000, None)  # > 100,000 PO1 loops
    before = fast850.sets_read
    stream = X12Stream(path.read_bytes())
    results = [ev for ev in stream if hasattr(ev, "set_id")]
    assert fast850.sets_read == before
    assert [e.code for e in results[0].errors] == ["x12.850_too_many_lines"]


def test_the_sandbox_generators_850s_read_the_same(tmp_path):
    from orderflow_sandbox.generator import generate

    generate(tmp_path, seed=5, orders_per_day=120, customers=60, items=300)
    files = [p for p in (tmp_path / "artefacts" / "edi").rglob("*") if p.is_file()]
    assert len(files) > 10
    taken = 0
    for path in files:
        fast, slow, n = _both(path.read_bytes(), partner_id=path.parent.name)
        assert_same_x12_results(fast, slow)
        taken += n
    assert taken > 10  # most of them are read whole (not those hard-wrapped at 80 columns)


CORPUS = Path(os.environ.get("ORDERFLOW_X12_CORPUS") or "/nonexistent")


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no X12 corpus (ORDERFLOW_X12_CORPUS)")
def test_the_conformance_corpus_reads_the_same():
    files = sorted(p for p in CORPUS.iterdir() if p.is_file())
    assert files
    for path in files:
        fast, slow, _ = _both(path.read_bytes(), partner_id=None)
        assert_same_x12_results(fast, slow)


# ------------------------------------------------------------------ what the fast path takes
_GOOD_TEXT = st.sampled_from(
    ["A", "STORE 12", "ACME CORP", "\u00e9t\u00e9 \u2026", "a  b", "x" * 22]
)


@st.composite
def _clean_set(draw, edges: bool = False) -> list[str]:
    """An 850 body (BEG to CTT) of the shape the fast path reads; ``edges``: quantities and
    prices at the store's bounds too (a total near numeric(14, 2) is left to the model)."""
    body = [
        f"BEG*00*{draw(st.sampled_from(['SA', 'DS']))}*{draw(_GOOD_TEXT)}*"
        f"{draw(st.sampled_from(['', 'R1']))}*"
        f"{draw(st.sampled_from(['20261128', '19991231', '261128', '991231', '491231']))}"
        + draw(st.sampled_from(["", "*", "*CT9"]))
    ]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["DTM", "CUR", "REF", "PER", "ITD", "TD5"]))
        if kind == "DTM":
            body.append(
                f"DTM*{draw(st.sampled_from(['002', '010', '001', '999', '106']))}*"
                f"{draw(st.sampled_from(['20261201', '20270131', '20260430', '501231']))}"
            )
        elif kind == "CUR":
            body.append(f"CUR*BY*{draw(st.sampled_from(['USD', 'EUR', 'CAD']))}")
        elif kind == "REF":
            body.append(f"REF*{draw(st.sampled_from(['IA', 'DP', 'IA']))}*{draw(_GOOD_TEXT)}")
        elif kind == "PER":
            body.append(
                "PER*BD*"
                + draw(st.sampled_from(["", draw(_GOOD_TEXT)]))
                + draw(st.sampled_from(["", "*TE*555 0100", "*TE*555 0100*EM*a@b.example"]))
            )
        elif kind == "ITD":
            body.append(draw(st.sampled_from(["ITD*01*3*2**10**30", "ITD*01*3***0**30", "ITD"])))
        else:
            body.append(draw(st.sampled_from(["TD5*O*2*UPSN*M*UPS GROUND", "TD5****M", "TD5"])))
    for code in draw(st.lists(st.sampled_from(["ST", "BT", "BY"]), max_size=3, unique=True)):
        body.append(
            f"N1*{code}"
            + draw(st.sampled_from(["", "*", f"*{draw(_GOOD_TEXT)}", "*NAME*92*0012", "**1*ID"]))
        )
        if draw(st.booleans()):
            body.append(f"N2*ATTN {draw(_GOOD_TEXT)}" + draw(st.sampled_from(["", "*DOCK 4"])))
        if draw(st.booleans()):
            body.append(f"N3*{draw(_GOOD_TEXT)}" + draw(st.sampled_from(["", "*SUITE 5"])))
        if draw(st.booleans()):
            body.append(draw(st.sampled_from(["N4*SPRINGFIELD*IL*62701*US", "N4", "N4**ON"])))
    n = draw(st.integers(1, 4))
    for k in range(1, n + 1):
        ids = "".join(
            f"*{q}*{v}"
            for q, v in draw(
                st.lists(
                    st.tuples(st.sampled_from(["BP", "VN", "IN", "UP", "CB"]), _GOOD_TEXT),
                    max_size=3,
                )
            )
        )
        qty = draw(st.sampled_from(["1", "2", "12.5", ".5", "1000", "5."]))
        price = draw(st.sampled_from(["1.50", "", "0", "99999.9999", "12", ".25"]))
        if edges and draw(st.booleans()):
            qty = draw(st.sampled_from(["99999999999.999", "0.001", "00000000001"]))
            price = draw(st.sampled_from(["9999999999.9999", "0.0001", ""]))
        basis = "PE" if price else ""
        v1 = draw(st.sampled_from([str(k), "", f"L{k}"]))
        line = f"PO1*{v1}*{qty}*{draw(st.sampled_from(['EA', 'CA']))}*{price}*{basis}{ids}"
        body.append(line)
        if draw(st.booleans()):
            body.append(f"PID*F****{draw(_GOOD_TEXT)}")
        if draw(st.booleans()):
            body.append(draw(st.sampled_from(["PO4*6", "PO4*12*1.5*LB*BOX", "PO4**2"])))
    body.append(f"CTT*{n}" + draw(st.sampled_from(["", "*12", "*1.5"])))
    return body


_MUTANTS = st.sampled_from(
    ["*", "~", "\n", "\r", " ", "\t", "\x00", "\u00a0", "\ud800", "0", "9", "A", "-", ".", ">"]
)


def _share_parties(sets: list[list[str]]) -> list[list[str]]:
    """Every set with the first set's N1 loops (in place of its own, before its lines)."""
    loops = [s for s in sets[0] if s[:2] in ("N1", "N2", "N3", "N4")]
    out = []
    for body in sets:
        rest = [s for s in body if s[:2] not in ("N1", "N2", "N3", "N4")]
        at = next(k for k, s in enumerate(rest) if s.startswith("PO1"))
        out.append(rest[:at] + loops + rest[at:])
    return out


def test_a_groups_repeated_n1_loops_read_the_same_in_every_set():
    """Each distinct N1 loops' text is read once per group: sets sharing them, a set with
    other loops between them, one whose copy differs by a character, and another group with
    the same loops all read as the slow path reads them."""
    lines = ["PO1*1*2*EA*1.50*PE*BP*P1", "CTT*1"]
    loops = ["N1*ST*STORE 12*92*0012", "N3*1200 INDUSTRIAL PKWY", "N4*SPRINGFIELD*IL*62701*US"]
    other = ["N1*ST*STORE 14*92*0014", "N1*BT*HEAD OFFICE*92*0001"]
    bodies = [
        [f"BEG*00*SA*PO{k}**20261128", *ls, *lines]
        for k, ls in enumerate(
            [loops, loops, other, loops, [*loops[:2], "N4*SPRINGFIELD*IL*62702*US"], loops]
        )
    ]
    one = _interchange(bodies).decode()
    group = one[one.index("GS*") : one.index("IEA*")]
    data = one[: one.index("IEA*")] + group.replace("*1*X*", "*2*X*") + "IEA*2*000000001~\n"
    data = data.replace("GE*6*1~\nIEA", "GE*6*2~\nIEA")  # the second group's trailer
    fast, slow, taken = _both(data.encode())
    assert_same_x12_results(fast, slow)
    assert taken == 12 == len(fast.orders)
    cities = [o.ship_to.postal_code if o.ship_to else None for o in fast.orders[:6]]
    assert cities == ["62701", "62701", None, "62701", "62702", "62701"]
    assert fast.orders[2].bill_to.name == "HEAD OFFICE"


@st.composite
def mutated_files(draw) -> bytes:
    """One to three clean sets, then (usually) one mutation anywhere in their text: a
    character replaced, removed or inserted, a segment repeated or dropped."""
    sets = draw(st.lists(_clean_set(edges=True), min_size=1, max_size=3))
    if draw(st.booleans()):
        sets = _share_parties(sets)  # a group's repeated N1 loops are read once (then mutated)
    data = _interchange(sets).decode()
    start = data.index("ST*850")
    end = data.rindex("GE*")
    kind = draw(st.sampled_from(["none", "replace", "remove", "insert", "repeat", "drop"]))
    if kind in ("replace", "remove", "insert"):
        at = draw(st.integers(start, end - 1))
        c = draw(_MUTANTS)
        data = data[:at] + (c if kind != "remove" else "") + data[at + (kind != "insert") :]
    elif kind in ("repeat", "drop"):
        segs = data[start:end].split("~\n")[:-1]
        k = draw(st.integers(0, len(segs) - 1))
        segs[k : k + 1] = [segs[k]] * (2 if kind == "repeat" else 0)
        data = data[:start] + "".join(s + "~\n" for s in segs) + data[end:]
    return data.encode("utf-8", errors="surrogatepass")


@settings(
    max_examples=examples(1500),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated_files())
def test_mutated_sets_read_the_same_with_and_without_the_fast_path(data):
    fast, slow, _ = _both(data)
    assert_same_x12_results(fast, slow)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_clean_set(), min_size=1, max_size=3))
def test_clean_sets_are_read_whole(sets):
    fast, slow, taken = _both(_interchange(sets))
    assert_same_x12_results(fast, slow)
    assert taken == len(sets) == len(fast.orders)  # else the property above proves little


def test_a_set_with_one_odd_segment_goes_to_the_slow_path():
    clean = ["BEG*00*SA*PO1**20261128", "N1*ST*STORE 12*92*0012", "PO1*1*2*EA*1.50*PE*BP*P1"]
    clean.append("CTT*1")
    odd = [*clean[:2], "NTE*GEN*LEAVE AT DOCK 4", *clean[2:]]
    fast, slow, taken = _both(_interchange([clean, odd, clean]))
    assert_same_x12_results(fast, slow)
    assert taken == 2  # the first and the third
    assert [o.notes for o in fast.orders] == [[], ["LEAVE AT DOCK 4"], []]


@pytest.mark.parametrize(
    "change",
    [
        ("SE*6*0002", "SE*7*0002"),  # SE01 wrong: rejected
        ("SE*6*0002", "SE*6*0003"),  # SE02 ≠ ST02: rejected
        ("CTT*1~\nSE*6*0002", "CTT*2~\nSE*6*0002"),  # CTT01 wrong: noted
        ("PO1*1*2*EA*1.50*PE*BP*P2", "PO1*1*0*EA*1.50*PE*BP*P2"),  # quantity 0
        ("PO1*1*2*EA*1.50*PE*BP*P2", "PO1*1*2*EA**PE*BP*P2"),  # basis without price
        ("ST*850*0002", "ST*850*0001"),  # ST02 repeated in the group
        ("PO00000002", " PO00000002"),  # a space the slow path strips
        ("PO00000002**20261128", "PO00000002**20280229"),  # February 29: left to it
        ("PO00000002**20261128", "PO00000002**20260229"),  # no such date: rejected
        ("N1*ST*STORE 12*92*0012~\nPO1*1*2*EA*1.50*PE*BP*P2", "N1*ST*STORE 12*92~\nPO1*1*2"),
    ],
)
def test_what_the_slow_path_remarks_on_is_left_to_it(change):
    sets = [
        [f"BEG*00*SA*PO{k:08d}**20261128", "N1*ST*STORE 12*92*0012", f"PO1*1*2*EA*1.50*PE*BP*P{k}"]
        for k in (1, 2, 3)
    ]
    data = _interchange([[*body, "CTT*1"] for body in sets])
    old, new = change
    assert old.encode() in data
    mutated = data.replace(old.encode(), new.encode(), 1)
    fast, slow, taken = _both(mutated)
    assert_same_x12_results(fast, slow)
    assert taken <= 2  # the changed set was not read whole


def test_the_fast_path_follows_the_prechecked_switch():
    data = _interchange([["BEG*00*SA*PO1**20261128", "PO1*1*2*EA*1.50", "CTT*1"]])
    before = fast850.sets_read
    prechecked.ENABLED = False
    try:
        _read(data)
    finally:
        prechecked.ENABLED = True
    assert fast850.sets_read == before
    _read(data)
    assert fast850.sets_read == before + 1


@pytest.mark.parametrize("term", ["~", "~\r\n", "'\n"])
def test_other_line_ends_and_terminators(term):
    body = ["BEG*00*SA*PO1**20261128", "N1*ST*STORE 12*92*0012", "PO1*1*2*EA*1.50", "CTT*1"]
    data = _interchange([body, body[:1] + body[2:]], term=term)
    if term.startswith("'"):
        data = data.replace(b"~", b"'")
    fast, slow, taken = _both(data)
    assert_same_x12_results(fast, slow)
    assert fast.accepted and taken == 2
