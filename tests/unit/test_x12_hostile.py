"""X12 under hostile input (issue #13): one fixed case per defect, each asserting its specific
outcome (the finding, the TA1/997 codes), plus the CLI's option and message checks.

The property tests (any bytes → a specific outcome) are in ``test_x12_properties.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from orderflow.channels.x12 import parse
from orderflow.channels.x12.cli import x12
from orderflow.channels.x12.reader import read_interchanges
from orderflow.channels.x12.validate import envelope_findings

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def isa(
    *,
    e: str = "*",
    c: str = ">",
    rep: str = "U",
    version: str = "00401",
    control: str = "000000905",
    ack: str = "0",
) -> str:
    fields = ["ISA", "00", " " * 10, "00", " " * 10, "ZZ", "BUYER".ljust(15)]
    fields += ["ZZ", "SELLER".ljust(15), "261128", "0930", rep, version, control, ack, "P", c]
    return e.join(fields)


def x12_text(
    body: list[list[str]],
    *,
    e: str = "*",
    s: str = "~",
    c: str = ">",
    rep: str = "U",
    version: str = "00401",
    gs01: str = "PO",
    gs08: str = "004010",
    se01: str | None = None,
    se02: str = "0001",
    ge01: str = "1",
    ge02: str = "42",
    iea01: str = "1",
    ctt: list[str] | None = None,
) -> str:
    """One interchange, one group, one set around ``body``, written by hand (not by our
    writer, which refuses what these tests need to send)."""
    st = [["ST", "850", "0001"], *body]
    if ctt is not None:
        st.append(ctt)
    st.append(["SE", se01 if se01 is not None else str(len(st) + 1), se02])
    segs = [
        ["GS", gs01, "BUYERAPP", "SELLERAPP", "20261128", "0930", "42", "X", gs08],
        *st,
        ["GE", ge01, ge02],
        ["IEA", iea01, "000000905"],
    ]
    return isa(e=e, c=c, rep=rep, version=version) + s + "".join(e.join(x) + s for x in segs)


def po_body(
    *,
    po: str = "PO1001",
    qty: str = "2",
    uom: str = "EA",
    price: str = "1.50",
    beg_date: str = "20261128",
) -> list[list[str]]:
    return [
        ["BEG", "00", "SA", po, "", beg_date],
        ["PO1", "1", qty, uom, price, "PE", "BP", "P1"],
    ]


def codes(result) -> list[str]:
    return [e.code for e in result.error_list]


def ack_segments(text: str) -> list[str]:
    return [s.strip() for s in text.split("~") if s.strip().startswith("AK")]


def _reads_back(ack: str) -> None:
    """An acknowledgment we send must read back through our own reader without a finding."""
    assert envelope_findings(ack) == []


# ------------------------------------------------------------------ D6 huge counts
@pytest.mark.parametrize(
    ("field", "kw", "code", "expect"),
    [
        ("SE01", {"se01": "9" * 5000}, "x12.se_count_mismatch", ("set", "AK5*R*4")),
        ("SE02", {"se02": "1" * 5000}, "x12.st_se_control_mismatch", ("set", "AK5*R*3")),
        ("GE01", {"ge01": "7" * 5000}, "x12.ge_count_mismatch", ("group", "AK9*R*1*1*0*5")),
        ("GE02", {"ge02": "4" * 5000}, "x12.ge_control_mismatch", ("group", "AK9*R*1*1*0*4")),
        ("IEA01", {"iea01": "1" * 5000}, "x12.iea_count_mismatch", ("ta1", "R*021")),
        ("CTT01", {"ctt": ["CTT", "5" * 5000]}, "x12.element_invalid", ("set", "AK5*R*5")),
    ],
)
def test_d6_count_fields_of_thousands_of_digits_are_rejected_not_crashing(field, kw, code, expect):
    result = parse(x12_text(po_body(), **kw).encode(), received_at=NOW)
    assert "x12.internal_error" not in codes(result)
    assert code in codes(result), field
    ic = result.interchanges[0]
    level, text = expect
    if level == "ta1":
        assert ic.ta1 is not None and f"*{text}~" in ic.ta1
        _reads_back(ic.ta1)
    else:
        ack = ic.groups[0].ack_997
        assert ack is not None
        assert text in ack_segments(ack)
        _reads_back(ack)


def test_d6_ge01_with_leading_zeros_is_still_a_count():
    result = parse(x12_text(po_body(), ge01="0" * 5000 + "1").encode())
    assert result.accepted and len(result.orders) == 1


# ------------------------------------------------------------------ D10 delimiter collisions
@pytest.mark.parametrize(
    ("kw", "note", "said"),
    [
        ({"e": "*", "s": "*"}, "004", "segment terminator and the element separator"),
        ({"e": "*", "c": "~", "s": "~"}, "027", "component separator"),
        ({"e": "*", "c": "*"}, "027", "component separator"),
        ({"rep": "~", "version": "00501", "gs08": "005010"}, "016", "repetition separator"),
        ({"rep": ">", "version": "00501", "gs08": "005010"}, "016", "repetition separator"),
    ],
)
def test_d10_delimiter_collisions_get_a_readable_ta1_reject(kw, note, said):
    result = parse(x12_text(po_body(), **kw).encode(), received_at=NOW)
    assert result.orders == []
    assert not result.accepted
    ic = result.interchanges[0]
    assert ic.rejected and ic.ta1_code == "R" and ic.ta1_note == note
    assert any(said in e.message for e in ic.errors)
    # The TA1 is written with usable delimiters and reads back clean.
    assert ic.ta1 is not None
    _reads_back(ic.ta1)
    raws, found = read_interchanges(ic.ta1)
    assert found == []
    ta1 = raws[0].segments[0]
    assert ta1.elements == ["TA1", "000000905", "261128", "0930", "R", note]


# ------------------------------------------------------------------ D12 lax envelope values
@pytest.mark.parametrize("gs01", ["OW", "IN", "FA"])
def test_d12_an_850_in_a_group_of_another_kind_is_rejected(gs01):
    result = parse(x12_text(po_body(), gs01=gs01).encode(), received_at=NOW)
    assert result.orders == []
    t = result.transactions[0]
    assert t.ack_code == "R" and t.ak5_codes == ["6"]
    assert "x12.functional_group_mismatch" in codes(result)
    if gs01 != "FA":  # a group of 997s is never acknowledged
        assert "AK5*R*6" in ack_segments(result.interchanges[0].groups[0].ack_997)


def test_d12_isa11_u_in_00501_is_rejected_with_ta1_016():
    result = parse(x12_text(po_body(), version="00501", gs08="005010").encode(), received_at=NOW)
    ic = result.interchanges[0]
    assert result.orders == [] and ic.rejected
    assert (ic.ta1_code, ic.ta1_note) == ("R", "016")
    _reads_back(ic.ta1)


def test_d12_isa11_repetition_separator_in_00501_is_fine():
    result = parse(x12_text(po_body(), rep="^", version="00501", gs08="005010").encode())
    assert result.accepted and len(result.orders) == 1


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"qty": "١٢"}, "x12.850_bad_quantity"),
        ({"qty": "５"}, "x12.850_bad_quantity"),
        ({"price": "١.٥"}, "x12.850_bad_price"),
        ({"beg_date": "２０２６１１２８"}, "x12.850_bad_date"),
    ],
)
def test_d12_non_ascii_digits_are_not_numbers(kw, code):
    result = parse(x12_text(po_body(**kw)).encode(), received_at=NOW)
    assert result.orders == []
    assert code in codes(result)
    assert result.transactions[0].ack_code == "R"


@pytest.mark.parametrize(
    "kw", [{"se01": "５"}, {"ge01": "١"}, {"iea01": "١"}, {"ctt": ["CTT", "١"]}]
)
def test_d12_non_ascii_digits_in_counts_do_not_count(kw):
    result = parse(x12_text(po_body(), **kw).encode(), received_at=NOW)
    assert any("mismatch" in c for c in codes(result))


# ------------------------------------------------------------------ D11 / D15 the CLI
@pytest.fixture
def files(tmp_path):
    out = {}
    out["po"] = tmp_path / "po.x12"
    out["po"].write_text(x12_text(po_body()))
    ack = parse(out["po"].read_bytes(), received_at=NOW, our_id="DISTRIB").interchanges[0]
    out["997"] = tmp_path / "their997.x12"
    out["997"].write_text(ack.groups[0].ack_997)
    return out


def test_d11_ack_of_a_received_997_says_why_nothing_is_sent(files):
    res = CliRunner().invoke(x12, ["ack", str(files["997"])])
    assert res.exit_code == 0
    assert res.stdout == ""
    assert "acknowledges our group 42 (PO): accepted, 1 of 1 set(s) accepted" in res.stderr
    assert "acknowledgments are not acknowledged" in res.stderr


def test_d11_parse_of_a_997_says_what_it_acknowledges(files):
    res = CliRunner().invoke(x12, ["parse", str(files["997"])])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    [got] = out["acknowledgments_received"]
    assert got["acknowledges_group"] == "42"
    assert got["group_status"] == "A"
    assert got["sets"] == {"0001": "A"}
    assert "acknowledges our group 42" in res.stderr


def test_d11_ack_failure_always_explains_itself(tmp_path):
    junk = tmp_path / "junk.x12"
    junk.write_text("hello")
    res = CliRunner().invoke(x12, ["ack", str(junk)])
    assert res.exit_code == 1 and "x12.no_isa" in res.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--control-number", "-5"], "--control-number"),
        (["--control-number", "0"], "--control-number"),
        (["--control-number", "1000000000"], "--control-number"),
        (["--control-number", "999999999"], "only 1 remain"),
        (["--our-id", "X" * 16], "2 to 15"),
        (["--our-id", "A*B"], "not an X12 interchange id"),
        (["--our-qualifier", "ZZZ"], "qualifier"),
    ],
)
def test_d15_ack_options_are_validated(files, args, said):
    # one PO with ISA14 = 0 and no errors: one 997 only, so 999999999 fits; ask for a TA1 too
    text = files["po"].read_text().replace("*0*P*>", "*1*P*>", 1)
    files["po"].write_text(text)
    res = CliRunner().invoke(x12, ["ack", str(files["po"]), *args])
    assert res.exit_code == 2, res.output
    assert said in res.output
    assert "ISA" not in res.stdout


def test_d15_last_control_number_is_usable_and_not_wrapped(files):
    res = CliRunner().invoke(x12, ["ack", str(files["po"]), "--control-number", "999999999"])
    assert res.exit_code == 0
    assert "*999999999*0*P*" in res.stdout and "*000000000*" not in res.stdout


def test_d15_writer_refuses_control_numbers_outside_nine_digits():
    from orderflow.channels.x12.writer import check_control_number

    for bad in (0, -5, 1_000_000_000, True):
        with pytest.raises(ValueError, match="is not between 1 and 999,999,999"):
            check_control_number(bad)
    assert check_control_number(999_999_999) == 999_999_999


# ------------------------------------------------------------------ D8 element definitions
@pytest.mark.parametrize(
    ("kw", "segment", "ak4"),
    [
        ({"qty": "1" * 26}, "PO1", "AK4*2*330*5*" + "1" * 26),
        ({"price": "9" * 40}, "PO1", "AK4*4*212*5*" + "9" * 40),
        ({"uom": "U" * 500}, "PO1", "AK4*3*355*5*" + "U" * 99),
        ({"po": "P" * 10_000}, "BEG", "AK4*3*324*5*" + "P" * 99),
        ({"uom": "E"}, "PO1", "AK4*3*355*4*E"),
        ({"uom": "E\x00"}, "PO1", "AK4*3*355*6*E"),  # our 997 never echoes the NUL
        ({"po": "PO\x07BELL"}, "BEG", "AK4*3*324*6*PO BELL"),
    ],
)
def test_d8_elements_outside_their_x12_definition_are_rejected_with_ak3_ak4(kw, segment, ak4):
    result = parse(x12_text(po_body(**kw)).encode(), received_at=NOW)
    assert result.orders == [] and not result.accepted
    t = result.transactions[0]
    assert t.ack_code == "R" and "5" in t.ak5_codes
    ack = result.interchanges[0].groups[0].ack_997
    aks = ack_segments(ack)
    position = 2 if segment == "BEG" else 3
    assert any(s.startswith(f"AK3*{segment}*{position}*") for s in aks), aks
    assert ak4 in aks, aks
    assert aks[-2] == "AK5*R*5"
    _reads_back(ack)


def test_d8_every_element_of_a_segment_is_checked_not_only_the_mapped_ones():
    body = [*po_body(), ["N1", "ST", "N" * 61, "92", "0012"], ["DTM", "002", "20261399"]]
    result = parse(x12_text(body).encode(), received_at=NOW)
    aks = ack_segments(result.interchanges[0].groups[0].ack_997)
    assert "AK4*2*93*5*" + "N" * 61 in aks
    assert "AK4*2*373*8*20261399" in aks


@pytest.mark.parametrize(
    ("qty", "price"), [("9" * 11, "0.0001"), ("1", "9" * 10 + ".9999"), ("0.001", "1")]
)
def test_d8_a_valid_po_at_the_limits_is_accepted(qty, price):
    body = po_body(po="P" * 22, qty=qty, price=price, uom="CA")
    result = parse(x12_text(body).encode(), received_at=NOW)
    assert result.accepted and result.transactions[0].ack_code == "A"
    line = result.orders[0].lines[0]
    assert line.quantity == Decimal(qty) and line.unit_price == Decimal(price)


def test_d1_an_order_total_the_store_cannot_hold_is_rejected():
    result = parse(x12_text(po_body(qty="9" * 11, price="9" * 10)).encode(), received_at=NOW)
    assert result.orders == [] and result.transactions[0].ack_code == "R"
    assert "x12.850_invalid" in codes(result)
    assert "order total" in result.error_list[0].message


# ------------------------------------------------------------------ D1 the model's bounds
@pytest.mark.parametrize(
    ("kw", "ak4"),
    [
        ({"qty": "0.0001"}, "AK4*2*330*5*0.0001"),
        ({"qty": "1000000000000"}, "AK4*2*330*5*1000000000000"),
        ({"price": "1000000000000"}, "AK4*4*212*5*1000000000000"),
        ({"price": "1.00001"}, "AK4*4*212*5*1.00001"),
    ],
)
def test_d1_values_the_store_cannot_hold_are_rejected_with_ak4_not_ak5_a(kw, ak4):
    result = parse(x12_text(po_body(**kw)).encode(), received_at=NOW)
    assert result.orders == []
    assert "x12.850_value_out_of_range" in codes(result)
    aks = ack_segments(result.interchanges[0].groups[0].ack_997)
    assert ak4 in aks and aks[-2] == "AK5*R*5", aks


def test_d1_more_po1_loops_than_x12_allows_are_rejected(monkeypatch):
    from orderflow.channels.x12 import po850

    monkeypatch.setattr(po850, "MAX_PO1_LOOPS", 3)
    body = [po_body()[0]] + [["PO1", str(i), "1", "EA"] for i in range(1, 5)]
    result = parse(x12_text(body).encode(), received_at=NOW)
    assert result.orders == [] and "x12.850_too_many_lines" in codes(result)
    assert "AK3*PO1*6*PO1*4" in ack_segments(result.interchanges[0].groups[0].ack_997)
