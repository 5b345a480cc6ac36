"""An 850 over the PO1 loop limit (issue #13 D5): its lines are checked only for their
findings, and a line whose PO1 matches ``po850._quiet_po1`` is not checked at all. That is
only right if such a line can never have a finding: proven here on hostile PO1 values, and
on whole sets read with the shortcut and without it."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st
from tests_support import assert_same_x12_results, examples

from orderflow.channels.x12 import parse, po850
from orderflow.channels.x12.elements import MAX_PO1_LOOPS
from orderflow.channels.x12.reader import Segment
from orderflow.channels.x12.validate import TxnWork

ROOT = Path(__file__).resolve().parents[2]

# values a PO1 element may hold: the ordinary, the bounds, and what the checks remark on
_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "2",
            "0",
            "00",
            "0.000",
            ".5",
            "5.",
            "12.5",
            "-1",
            "+1",
            "1e3",
            "1,5",
            "99999999999.999",
            "999999999999",
            "0.0001",
            "9999999999.9999",
            "12345678901.2345",
            "EA",
            "CA",
            "ea",
            "E",
            "EAC",
            "PE",
            "BP",
            "VN",
            "IN",
            "UP",
            "CB",
            "PART-1/2.A",
            "P" * 48,
            "P" * 49,
            "L" * 20,
            "L" * 21,
            " 1",
            "1 ",
            "A B",
            "A\x00",
            "\u00a0A",
            "Ω",
            "\ud800",
            ">",
            "1.50",
            "12",
            ".25",
        ]
    ),
    st.text(alphabet="0123456789.-AZaz/ ", max_size=14),
)


# (ordinary values, near misses) per element
_V1 = (["", "1", "L7"], ["L" * 21, " 1", "A\x00", "1_2"])
_QTY = (["1", "2", "12.5", ".5", "5.", "1000", "99999999999.999"], ["0", "00", "0.000", "-1"])
_QTY_MISSES = ["1,5", " 1", "1e3", "", "999999999999", ".0001", "+1", "\u0661"]
_UOM = (["EA", "CA"], ["", "ea", "E", "EAC", "E ", "Ω1"])
_PRICE = (["", "1.50", "0", ".25", "9999999999.9999"], ["-1", "1,50", " 1", "99999999999"])
_QUAL = (["BP", "VN", "IN"], ["", "bp", "B", "B P"])
_ID = (["P1", "A-1", "X/2", "9.9", "P" * 48], ["", "P" * 49, "-P", "P.", "P 1", "P\x00"])


@st.composite
def _po1(draw) -> list[str]:
    """PO1 elements shaped like a line, each element now and then a near miss or anything
    at all (about a third are quiet); or anything at all."""
    if draw(st.integers(0, 5)) == 0:
        return ["PO1", *draw(st.lists(_VALUES, max_size=14))]

    def v(values: tuple[list[str], list[str]], *more: str) -> str:
        k = draw(st.integers(0, 13))
        if k == 0:
            return draw(_VALUES)
        if k <= 2:
            return draw(st.sampled_from(values[1] + list(more)))
        return draw(st.sampled_from(values[0]))

    price = v(_PRICE)
    els = ["PO1", v(_V1), v(_QTY, *_QTY_MISSES), v(_UOM), price]
    els.append(v((["PE"] if price else [""], ["" if price else "PE", "pe", "P"])))
    for _ in range(draw(st.integers(0, 11))):
        els += [v(_QUAL), v(_ID)]
    return els[: draw(st.integers(2, len(els)))] if draw(st.booleans()) else els


def _mapper() -> po850._Mapper:
    st_seg = Segment("ST", ["ST", "850", "0001"], 3)
    ctx = po850.MapContext(
        partner_id="BUYER",
        sender_id="BUYER",
        interchange_control="000000001",
        group_control="1",
        version="004010",
        element="*",
    )
    return po850._Mapper(TxnWork(st=st_seg, segments=[st_seg], last=st_seg), ctx)


@settings(max_examples=examples(3000), deadline=None)
@given(_po1())
def test_a_quiet_po1_has_nothing_to_remark_on(elements):
    """Whatever a quiet PO1 holds, the full check of its line (``_line`` with only the
    findings wanted) makes no finding and no note, and keeps the line."""
    quiet = po850._quiet_po1("*").fullmatch("*".join(elements)) is not None
    m = _mapper()
    kept = m._line(7, po850._Line(Segment("PO1", elements, 9)), keep=False)
    if quiet:
        assert kept is not None and m.findings == [] and m.notes == []
    event("quiet" if quiet else "checked")


def test_quiet_matches_the_ordinary_lines_and_not_the_remarkable_ones():
    """The property above is not empty: ordinary PO1s are quiet, and each thing the check
    remarks on makes a PO1 not quiet."""
    quiet = po850._quiet_po1("*")
    for text in [
        "PO1*1*2*EA*1.50*PE*BP*PART0000001",
        "PO1**12.5*CA",
        "PO1*L7*.5*EA**",
        "PO1*3*1000*EA*0*PE*BP*A-1*VN*X/2*IN*9.9",
    ]:
        assert quiet.fullmatch(text), text
    for text in [
        "PO1*1*0*EA*1.50",  # quantity 0: left out, with a note
        "PO1*1*-2*EA",  # negative
        "PO1*1*2**1.50",  # no unit
        "PO1*1*2*EA**PE",  # a basis without a price (C0504)
        "PO1*1*2*EA*1.50*PE*BP",  # a qualifier without its id
        "PO1*1*2*EA*1.50*PE*BP*X*",  # a trailing empty element: left to the full check
        "PO1*1*2*EA*1,50",  # not a number
        "PO1*1*2*EA*1.50*PE*BP* P1",  # a space at a value's end (stripped by the check)
    ]:
        assert quiet.fullmatch(text) is None, text
    assert po850._quiet_po1("-") is None and po850._quiet_po1(None) is None


def _single_po(path: Path, bad: dict[int, str]) -> bytes:
    """The benchmark's single PO past the loop limit, some lines replaced by ``bad``."""
    spec = importlib.util.spec_from_file_location("x12_bench", ROOT / "benchmarks/x12_reader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    bench._write(path, 4_300_000, None)
    text = path.read_text()
    for n, line in bad.items():
        old = f"PO1*{n}*2*EA*1.50*PE*BP*PART{n:07d}~"
        assert old in text
        text = text.replace(old, line + "~", 1)
    return text.encode()


def test_a_set_over_the_loop_limit_reads_the_same_with_and_without_quiet_lines(tmp_path):
    """The findings of the lines kept before the limit (a bad quantity, a basis without a
    price, a lone qualifier, a quantity 0) are made either way, and nothing else changes."""
    bad = {
        3: "PO1*3*ABC*EA*1.50*PE*BP*PART0000003",
        40_000: "PO1*40000*2*EA**PE*BP*PART0040000",
        99_999: "PO1*99999*2*EA*1.50*PE*BP",
        100_000: "PO1*100000*0*EA*1.50*PE*BP*PART0100000",
    }
    data = _single_po(tmp_path / "single.x12", bad)
    assert data.count(b"PO1*") > MAX_PO1_LOOPS
    # one clock for both reads: the acknowledgments carry the time they were made (HHMM),
    # and two reads of 100,000 lines straddled a minute on a loaded machine
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    quiet = parse(data, partner_id="BUYER", received_at=at)
    po850.QUIET_LINES = False
    try:
        full = parse(data, partner_id="BUYER", received_at=at)
    finally:
        po850.QUIET_LINES = True
    assert_same_x12_results(quiet, full)
    codes = sorted(e.code for e in quiet.error_list)
    assert "x12.850_too_many_lines" in codes and "x12.850_bad_quantity" in codes
    assert "x12.syntax_note" in codes and quiet.orders == []
