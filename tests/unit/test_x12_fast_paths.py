"""The reader's fast paths (issue #13 D5) decide exactly as the checks they stand in for:
a segment the whole-segment pattern accepts is one the element-by-element check finds
nothing wrong in. (Speed itself is a benchmark figure: benchmarks/x12_reader.py.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import examples

from orderflow.channels.x12.elements import SEGMENTS, check_segment, valid_segment_pattern

_PIECES = [
    "",
    " ",
    "0",
    "1",
    "9",
    "00",
    "12",
    "-",
    ".",
    "-1",
    "1.5",
    ".5",
    "5.",
    "1.50",
    "A",
    "EA",
    "PE",
    "BP",
    "ST",
    "Z9",
    "a",
    "20261128",
    "20260229",
    "20240229",
    "20261131",
    "261128",
    "00000101",
    "19991231",
    "0930",
    "2359",
    "2400",
    "093015",
    "09301599",
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    "\t",
    "\u00a0",
    "\u2026",
    "\uff15",
    "\u0661",
    "x" * 20,
    "9" * 16,
    "1" * 10,
    "F",
    "S",
    "X",
    "C",
    "N",
    "ABC",
    "A B",
    " A",
    "A ",
    "~",
    ">",
    "^",
    "|",
]
_SEPARATORS = ["*", "|", "^", "]", "-", ".", "+", "\\", "\u2026"]


@st.composite
def segments(draw):
    tag = draw(st.sampled_from(sorted(SEGMENTS)))
    sep = draw(st.sampled_from(_SEPARATORS))
    n = draw(st.integers(0, len(SEGMENTS[tag]) + 2))
    values = [
        "".join(draw(st.lists(st.sampled_from(_PIECES), max_size=3))).replace(sep, "")
        for _ in range(n)
    ]
    return tag, sep, [tag, *values]


@settings(max_examples=examples(5000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments())
def test_a_segment_the_pattern_accepts_has_no_element_error(case):
    tag, sep, elements = case
    pattern = valid_segment_pattern(tag, sep)
    slow = check_segment(elements)
    if pattern is not None and pattern.fullmatch(sep.join(elements)):
        assert slow == []
    assert check_segment(elements, sep) == slow


@pytest.mark.parametrize(
    "text",
    [
        "PO1*1*2*EA*1.50*PE*BP*PART0000001",
        "BEG*00*SA*PO1**20261128",
        "N1*ST*STORE 12*92*0012",
        "GS*PO*BUYER*SELLER*20261128*0930*1*X*004010",
        "CTT*5",
        "SE*10*0001",
        "DTM*002*20261130",
    ],
)
def test_common_valid_segments_take_the_fast_path(text):
    tag = text.split("*")[0]
    assert valid_segment_pattern(tag, "*").fullmatch(text)


# ------------------------------------------------------------------ the reader's blocks
def _segments(text: str) -> list:
    from orderflow.channels.x12.reader import read_interchanges

    raws, found = read_interchanges(text)
    return [
        (
            r.isa.start,
            r.isa.end,
            r.isa_index,
            [(s.tag, s.elements, s.index) for s in r.segments],
            (r.iea.elements, r.iea.index) if r.iea else None,
            (r.last.elements, r.last.index) if r.last else None,
        )
        for r in raws
    ] + [(f.code, f.message) for f in found]


def _interchange_text(n: int, *, term: str, suffix: str, control: int) -> str:
    isa = (
        "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
        f"00401*{control:09d}*0*P*>"
    )
    segs = ["GS*PO*BUYER*SELLER*20261128*0930*1*X*004010", "ST*850*0001", "BEG*00*SA*PO1**20261128"]
    segs += [f"PO1*{k}*2*EA*1.50*PE*BP*P{k}" for k in range(1, n + 1)]
    segs += [f"SE*{n + 3}*0001", "GE*1*1", f"IEA*1*{control:09d}"]
    return "".join(s + term + suffix for s in [isa, *segs])


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    layout=st.sampled_from(
        [("~", ""), ("~", "\n"), ("~", "\r\n"), ("\n", ""), ("\r\n", ""), ("\r", "")]
    ),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    block=st.integers(1, 64),
    junk=st.sampled_from(["", "\n", "\r\n\r\n", "  \n"]),
    cut=st.integers(0, 30),
)
def test_reading_in_blocks_of_any_size_reads_the_same_segments(
    monkeypatch, layout, sizes, block, junk, cut
):
    """Block boundaries (inside a CRLF, a segment, between interchanges) change nothing:
    segments, their indexes, where each interchange ends and what follows are the same as
    when the whole text is one block."""
    from orderflow.channels.x12 import reader

    term, suffix = layout
    text = junk.join(
        _interchange_text(n, term=term, suffix=suffix, control=i + 1) for i, n in enumerate(sizes)
    )
    if cut:  # a truncated last interchange, or one cut before its IEA by the next ISA
        text = text[: len(text) - cut]
    monkeypatch.setattr(reader, "_FIRST_BLOCK", 1 << 30)
    whole = _segments(text)
    monkeypatch.setattr(reader, "_FIRST_BLOCK", block)
    monkeypatch.setattr(reader, "_MAX_BLOCK", max(block, 97))
    assert _segments(text) == whole


# ---------------------------------------------------------------- a line over the PO1 limit
_LINE_VALUES = [
    "",
    "1",
    "2",
    "0.5",
    ".5",
    "5.",
    "1.50",
    "1.5000",
    "0001.50000",
    "12345678901",
    "123456789012",
    "1234567890.1234",
    "12345678901.123",
    "1.1234",
    "+1",
    "9" * 15,
    "EA",
    "PE",
    "BP",
    "x" * 35,
    "x" * 36,
    "y" * 200,
    "y" * 201,
    "A\x00B",
    "\u00e9\u2026",
]


@settings(max_examples=examples(3000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_LINE_VALUES), min_size=5, max_size=5),
    st.lists(st.tuples(st.sampled_from(_LINE_VALUES), st.sampled_from(_LINE_VALUES)), max_size=3),
)
def test_a_line_said_to_fit_is_one_the_model_takes(values, pairs):
    """Over the 100,000-line limit only a line's findings are wanted; ``_line_fits`` skips
    building its OrderLine. What it says fits, the model (the store's bounds) must take."""
    from decimal import Decimal, InvalidOperation

    from orderflow.channels.x12.po850 import _Line, _line_fits
    from orderflow.channels.x12.reader import Segment
    from orderflow.domain.models import OrderLine

    v1, qty, uom, price, basis = values
    try:
        quantity = Decimal(qty)
        unit_price = Decimal(price) if price else None
    except InvalidOperation:
        return  # not a number: the mapper reports it before asking
    if quantity <= 0 or not uom:
        return  # reported before asking (bad or zero quantity, no unit)
    ids = [{"qualifier": q, "value": v} for q, v in pairs if q and v]
    line = _Line(Segment("PO1", ["PO1", *values], 1))
    if not _line_fits(v1, qty, uom, price, basis, ids, line):
        return
    OrderLine(
        line_no=1,
        source_line_id=v1 or None,
        product_ids=ids,
        customer_part_number=ids[0]["value"] if ids else None,
        quantity=quantity,
        uom=uom,
        unit_price=unit_price,
        price_basis=basis or None,
    )
