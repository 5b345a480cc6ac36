"""The 850 mapper's prechecked path (issue #13 D5) builds exactly what validation builds.

Canonical models whose values a conservative check proves valid are assembled without
pydantic's validation (``orderflow.channels.x12.prechecked``). For any generated 850 —
hostile values included: NUL, Unicode spaces at the ends, values one character past a bound,
numbers past numeric(14, 3)/(14, 4), bad dates, missing elements — reading it with the
prechecked path and with validation only must give equal results: the same orders (every
field, the type of every value, the fields set, the JSON the store keeps), the same changes,
findings, 997 AK3/AK4 detail and acknowledgments."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import assert_same_x12_results, examples

from orderflow.channels.x12 import fast850, parse, prechecked
from orderflow.channels.x12 import po850 as po850_module

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
HEAD = (
    "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
    "00401*000000001*0*P*>~\nGS*PO*BUYER*SELLER*20261128*0930*1*X*004010~\n"
)

# values a partner may send, good and hostile (X12 element checks refuse some, the model's
# bounds others, and some reach the order)
_TEXT = st.sampled_from(
    [
        "",
        "A",
        "STORE 12",
        "ACME CORP",
        "12 MAIN ST",
        "SPRINGFIELD",
        "IL",
        "62701",
        "US",
        "x" * 35,
        "x" * 36,
        "y" * 60,
        "z" * 201,
        "A\x00B",
        "\u00e9t\u00e9 \u2026",
        "\u00a0PADDED\u00a0",
        "\u3000WIDE",
        "TRAIL\x1c",
        "a b",
    ]
)
_NUMBER = st.sampled_from(
    [
        "",
        "0",
        "1",
        "2",
        "1.5",
        "1.50",
        ".5",
        "5.",
        "-1",
        "+1",
        "1.2345",
        "1.23456",
        "12345678901",
        "123456789012",
        "12345678901.123",
        "1234567890.1234",
        "99999999999.999",
        "0001.50000",
        "1e3",
        "abc",
        " 3 ",
    ]
)
_CODE = st.sampled_from(["", "EA", "CA", "PE", "BP", "VN", "UP", "IN", "CB", "ZZ", "E\x00"])
_DATE = st.sampled_from(["20261128", "20261201", "20261131", "261128", "", "2026112", "99999999"])


@st.composite
def _po1(draw, n: int) -> list[str]:
    els = [draw(st.sampled_from([str(n), "", f"L{n}", "x" * 21])), draw(_NUMBER), draw(_CODE)]
    els += [draw(_NUMBER), draw(st.sampled_from(["", "PE", "CT"]))]
    for _ in range(draw(st.integers(0, 3))):
        els += [draw(_CODE), draw(_TEXT | st.sampled_from(["PART1", "PART2", "0001234"]))]
    segs = ["PO1*" + "*".join(els)]
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["PID", "PO4", "DTM", "SAC", "N1"]))
        if kind == "PID":
            segs.append(f"PID*F****{draw(_TEXT)}")
        elif kind == "PO4":
            segs.append(f"PO4*{draw(_NUMBER)}*{draw(_NUMBER)}*{draw(_CODE)}")
        elif kind == "DTM":
            segs.append(f"DTM*{draw(st.sampled_from(['010', '002', '037']))}*{draw(_DATE)}")
        elif kind == "SAC":
            segs.append(f"SAC*{draw(st.sampled_from(['A', 'C', 'N']))}*D240***{draw(_NUMBER)}")
        else:
            segs.append(f"N1*ST*{draw(_TEXT)}*92*{draw(_TEXT)}")
    return segs


@st.composite
def purchase_orders(draw) -> bytes:
    """An interchange of one to three 850s, each with random header and line segments."""
    out = HEAD
    n_sets = draw(st.integers(1, 3))
    for k in range(1, n_sets + 1):
        purpose = draw(st.sampled_from(["00", "00", "00", "07", "01", "04", "06", "ZZ"]))
        segs = [
            f"BEG*{purpose}*{draw(st.sampled_from(['SA', 'DS', '']))}*"
            f"{draw(st.sampled_from([f'PO{k}', 'PO1', '', 'P' * 23]))}*"
            f"{draw(st.sampled_from(['', 'R1']))}*{draw(_DATE)}"
        ]
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["CUR", "REF", "PER", "DTM", "TD5", "ITD", "N1", "MSG"]))
            if kind == "CUR":
                segs.append(f"CUR*BY*{draw(st.sampled_from(['USD', 'eur', 'EURO', 'CAD']))}")
            elif kind == "REF":
                segs.append(f"REF*{draw(_CODE)}*{draw(_TEXT)}")
            elif kind == "PER":
                segs.append(f"PER*BD*{draw(_TEXT)}*TE*{draw(_TEXT)}")
            elif kind == "DTM":
                segs.append(
                    f"DTM*{draw(st.sampled_from(['002', '010', '001', '999']))}*{draw(_DATE)}"
                )
            elif kind == "TD5":
                segs.append(f"TD5*O*2*{draw(_TEXT)}*M*{draw(_TEXT)}")
            elif kind == "ITD":
                segs.append(f"ITD*01*3*{draw(_NUMBER)}**{draw(_NUMBER)}**30")
            elif kind == "MSG":
                segs.append(f"N9*L1*{draw(_TEXT)}")
                segs.append(f"MSG*{draw(_TEXT)}")
            else:
                code = draw(st.sampled_from(["ST", "BT", "BY", "SO", "VN"]))
                segs.append(
                    f"N1*{code}*{draw(_TEXT)}*{draw(st.sampled_from(['92', '']))}*{draw(_TEXT)}"
                )
                if draw(st.booleans()):
                    segs.append(f"N3*{draw(_TEXT)}*{draw(_TEXT)}")
                    segs.append(f"N4*{draw(_TEXT)}*{draw(_TEXT)}*{draw(_TEXT)}*{draw(_TEXT)}")
        n_lines = draw(st.integers(0, 4))
        for n in range(1, n_lines + 1):
            segs += draw(_po1(n))
        if draw(st.booleans()):
            segs.append(f"CTT*{draw(st.sampled_from([str(n_lines), '9', '']))}")
        body = [f"ST*850*{k:04d}", *segs]
        body.append(f"SE*{len(body) + 1}*{k:04d}")
        out += "~\n".join(s.replace("~", "-") for s in body) + "~\n"
    out += f"GE*{n_sets}*1~\nIEA*1*000000001~\n"
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    return out.encode(encoding, errors="replace")


def _both(data: bytes):
    """(prechecked path, validation only)"""
    assert prechecked.ENABLED
    fast = parse(data, received_at=NOW, source_ref="drop/BUYER/po.x12", partner_id="BUYER")
    prechecked.ENABLED = False
    try:
        slow = parse(data, received_at=NOW, source_ref="drop/BUYER/po.x12", partner_id="BUYER")
    finally:
        prechecked.ENABLED = True
    return fast, slow


def _assert_same(fast, slow) -> None:
    assert_same_x12_results(fast, slow)


@settings(
    max_examples=examples(2000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(purchase_orders())
def test_the_prechecked_path_builds_what_validation_builds(data):
    fast, slow = _both(data)
    _assert_same(fast, slow)


def test_a_clean_order_is_built_without_validation(monkeypatch):
    """The fast path is taken for an ordinary PO (else the property above proves nothing),
    and a value past a bound still goes to the model, whose refusal makes the AK3/AK4.
    (The segment-by-segment mapper's: the whole-set reader, ``fast850``, is switched off.)"""
    monkeypatch.setattr(fast850, "ENABLED", False)
    body = [
        "ST*850*0001",
        "BEG*00*SA*PO1**20261128",
        "N1*ST*STORE 12*92*0012",
        "PO1*1*2*EA*1.50*PE*BP*PART1",
        "PO1*2*123456789012*EA*1.50*PE*BP*PART2",  # 12 integer digits: numeric(14, 3) holds 11
        "CTT*2",
        "SE*7*0001",
    ]
    data = (HEAD + "~\n".join(body) + "~\nGE*1*1~\nIEA*1*000000001~\n").encode()
    built: list[str] = []
    for name in ("_LINE", "_ORDER", "_ADDRESS", "_PROVENANCE"):
        real = getattr(po850_module, name)
        monkeypatch.setattr(
            po850_module, name, lambda _real=real, _n=name, **kw: built.append(_n) or _real(**kw)
        )
    fast, slow = _both(data)
    _assert_same(fast, slow)
    assert built == ["_LINE"]  # the good line; the order is refused (the second line)
    (t,) = fast.transactions
    assert t.ack_code == "R"
    note = next(n for n in t.segment_notes if n.segment_id == "PO1")
    assert note.position == 5 and note.elements[0].position == 2
    assert note.elements[0].code == "5"

    built.clear()
    good = data.replace(b"123456789012", b"3")
    fast, slow = _both(good)
    _assert_same(fast, slow)
    assert sorted(built) == ["_ADDRESS", "_LINE", "_LINE", "_ORDER", "_PROVENANCE"]
    assert fast.orders and fast.orders[0].total is not None
