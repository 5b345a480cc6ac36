"""997 and TA1: content, counts, codes, envelope round trip through our own reader; CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from orderflow.channels.x12 import Delimiters, build_997, build_ta1, parse
from orderflow.channels.x12.cli import x12
from orderflow.channels.x12.writer import functional_group, interchange, transaction_set

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)


def po(po_number: str, control: str, *, qty: str = "2", ctt: str = "1"):
    body = [
        ["BEG", "00", "SA", po_number, "", "20261128"],
        ["PO1", "1", qty, "EA", "1.50", "PE", "BP", "P1"],
        ["CTT", ctt],
    ]
    return transaction_set("850", control, body)


def edi(
    sets,
    *,
    d: Delimiters | None = None,
    version: str = "00401",
    gs_version: str = "004010",
    ack_requested: bool = False,
) -> str:
    gs = functional_group(
        "PO",
        sender="BUYERAPP",
        receiver="SELLERAPP",
        control_number=42,
        now=NOW,
        version=gs_version,
        sets=sets,
    )
    return interchange(
        [gs],
        d=d or Delimiters(),
        sender=("ZZ", "BUYER"),
        receiver=("01", "123456789"),
        control_number=905,
        now=NOW,
        version=version,
        ack_requested=ack_requested,
    )


def segments(text: str, d: Delimiters | None = None) -> list[list[str]]:
    d = d or Delimiters()
    return [s.strip().split(d.element) for s in text.split(d.segment) if s.strip()]


def ak(text: str) -> list[str]:
    return [
        "*".join(s) for s in segments(text) if s[0] in ("AK1", "AK2", "AK3", "AK4", "AK5", "AK9")
    ]


# ------------------------------------------------------------------ 997 content
def test_997_all_accepted():
    result = parse(edi([po("A", "0001"), po("B", "0002")]).encode(), received_at=NOW)
    (g,) = result.interchanges[0].groups

    assert ak(g.ack_997) == [
        "AK1*PO*42",
        "AK2*850*0001",
        "AK5*A",
        "AK2*850*0002",
        "AK5*A",
        "AK9*A*2*2*2",
    ]


def test_997_envelope_goes_back_to_the_sender():
    result = parse(edi([po("A", "0001")]).encode(), received_at=NOW)
    ack = result.interchanges[0].groups[0].ack_997
    segs = segments(ack)

    isa, gs = segs[0], segs[1]
    assert (isa[5], isa[6].strip(), isa[7], isa[8].strip()) == ("01", "123456789", "ZZ", "BUYER")
    assert (isa[9], isa[10], isa[12], isa[13]) == ("261128", "0930", "00401", "000000001")
    assert gs[:4] == ["GS", "FA", "SELLERAPP", "BUYERAPP"]
    assert (gs[4], gs[6], gs[8]) == ("20261128", "1", "004010")
    assert [s[0] for s in segs] == [
        "ISA",
        "GS",
        "ST",
        "AK1",
        "AK2",
        "AK5",
        "AK9",
        "SE",
        "GE",
        "IEA",
    ]
    assert segs[-3] == ["SE", "6", "0001"]
    assert segs[-2] == ["GE", "1", "1"]
    assert segs[-1] == ["IEA", "1", "000000001"]


def test_997_partially_accepted():
    bad = po("B", "0002", qty="TWO")
    result = parse(edi([po("A", "0001"), bad]).encode())
    (g,) = result.interchanges[0].groups

    assert g.ack_code == "P"
    assert ak(g.ack_997) == [
        "AK1*PO*42",
        "AK2*850*0001",
        "AK5*A",
        "AK2*850*0002",
        "AK3*PO1*3*PO1*8",
        "AK4*2*330*6*TWO",
        "AK5*R*5",
        "AK9*P*2*2*1",
    ]
    assert [o.po_number for o in result.orders] == ["A"]


def test_997_all_rejected():
    result = parse(edi([po("A", "0001", qty="")]).encode())

    assert ak(result.interchanges[0].groups[0].ack_997)[-2:] == ["AK5*R*5", "AK9*R*1*1*0"]


def test_997_accepted_with_errors():
    result = parse(edi([po("A", "0001", ctt="2")]).encode())

    assert ak(result.interchanges[0].groups[0].ack_997) == [
        "AK1*PO*42",
        "AK2*850*0001",
        "AK3*CTT*4*CTT",
        "AK5*E*5",
        "AK9*E*1*1*1",
    ]


def test_997_for_a_rejected_group_lists_only_sets_with_their_own_errors():
    text = edi([po("A", "0001"), po("B", "0002", qty="X")]).replace("GE*2*", "GE*3*")
    result = parse(text.encode())
    (g,) = result.interchanges[0].groups

    assert ak(g.ack_997) == [
        "AK1*PO*42",
        "AK2*850*0002",
        "AK3*PO1*3*PO1*8",
        "AK4*2*330*6*X",
        "AK5*R*5",
        "AK9*R*3*2*0*5",
    ]
    assert result.orders == []


def test_997_for_005010_carries_the_version_and_st03():
    sets = [po("A", "0001")]
    sets[0][0].append("005010")
    result = parse(edi(sets, version="00501", gs_version="005010").encode())
    (g,) = result.interchanges[0].groups

    assert ak(g.ack_997)[:2] == ["AK1*PO*42*005010", "AK2*850*0001*005010"]
    isa = segments(g.ack_997)[0]
    assert (isa[11], isa[12]) == ("^", "00501")


def test_997_for_003010_uses_six_digit_gs_date():
    result = parse(edi([po("A", "0001")], gs_version="003010").encode(), received_at=NOW)
    gs = segments(result.interchanges[0].groups[0].ack_997)[1]

    assert (gs[4], gs[8]) == ("261128", "003010")


def test_997_uses_the_partners_delimiters():
    d = Delimiters(element="|", segment="\n", component=":")
    result = parse(edi([po("A", "0001")], d=d).encode())
    ack = result.interchanges[0].groups[0].ack_997

    assert ack.startswith("ISA|00|")
    assert "\nAK9|A|1|1|1\n" in ack


def test_997_for_unsupported_set():
    body = [["BSN", "00", "1", "20261128", "1200"]]
    result = parse(edi([transaction_set("856", "0001", body)]).encode())

    assert ak(result.interchanges[0].groups[0].ack_997)[-2:] == ["AK5*R*1", "AK9*R*1*1*0"]


def test_build_997_with_our_id_control_number_and_time():
    result = parse(edi([po("A", "0001")]).encode())
    ic = result.interchanges[0]
    ack = build_997(ic.groups[0], ic, our_id="DISTRIB", control_number=1234, now=LATER)
    isa, gs = segments(ack)[:2]

    assert (isa[5], isa[6].strip(), isa[9], isa[10]) == ("ZZ", "DISTRIB", "261128", "1015")
    assert isa[13] == "000001234"
    assert gs[2] == "DISTRIB"
    assert gs[6] == "1234"


@pytest.mark.parametrize(
    "d",
    [
        Delimiters(),
        Delimiters(element="|", segment="\n"),
        Delimiters(element="~", segment="*", suffix="\r\n"),
        Delimiters(element="\x7f", segment="\x15"),
    ],
    ids=["default", "newline", "inverted", "control"],
)
def test_our_997_reads_back_as_a_valid_997_interchange(d):
    text = edi([po("A", "0001"), po("B", "0002", qty="X"), po("C", "0003", ctt="5")], d=d)
    ack = parse(text.encode()).interchanges[0].groups[0].ack_997

    back = parse(ack.encode())
    assert back.accepted, back.error_list
    (ic,) = back.interchanges
    assert (ic.sender_id, ic.receiver_id) == ("123456789", "BUYER")
    (g,) = ic.groups
    assert g.functional_id == "FA"
    assert g.ack_997 is None
    summary = g.transactions[0].acknowledgment
    assert (summary.functional_id, summary.group_control_number) == ("PO", "42")
    assert summary.transactions == {"0001": "A", "0002": "R", "0003": "E"}
    assert (summary.group_status, summary.included, summary.received, summary.accepted) == (
        "P",
        3,
        3,
        2,
    )


# ------------------------------------------------------------------ TA1
def _ta1(result) -> list[str]:
    (ic,) = result.interchanges
    seg = next(s for s in segments(ic.ta1) if s[0] == "TA1")
    return seg


def test_no_ta1_when_all_is_well_and_none_requested():
    assert parse(edi([po("A", "0001")]).encode()).interchanges[0].ta1 is None


def test_ta1_when_requested():
    result = parse(edi([po("A", "0001")], ack_requested=True).encode())

    assert _ta1(result) == ["TA1", "000000905", "261128", "0930", "A", "000"]
    assert result.interchanges[0].groups[0].ack_997 is not None


@pytest.mark.parametrize(
    ("mutate", "code", "note"),
    [
        pytest.param(lambda t: t.replace("IEA*1*000000905", "IEA*1*000000906"), "R", "001"),
        pytest.param(lambda t: t.replace("IEA*1*", "IEA*2*"), "R", "021"),
        pytest.param(lambda t: t[: t.index("IEA")], "R", "023"),
        pytest.param(lambda t: t.replace("*BUYER          *", "*BUYER         *"), "E", "006"),
        pytest.param(lambda t: t.replace("*00401*", "*00040*", 1), "E", "017"),
        pytest.param(lambda t: t.replace("*0*P*>", "*0*X*>", 1), "E", "020"),
    ],
    ids=["control-mismatch", "group-count", "premature-end", "padding", "version", "usage"],
)
def test_ta1_note_codes(mutate, code, note):
    result = parse(mutate(edi([po("A", "0001")])).encode())
    (ic,) = result.interchanges

    assert _ta1(result)[4:] == [code, note]
    assert (ic.ta1_code, ic.ta1_note) == (code, note)
    assert (ic.groups[0].ack_997 is None) == (code == "R")
    assert bool(result.orders) == (code != "R")


def test_ta1_reads_back():
    result = parse(edi([po("A", "0001")]).replace("IEA*1*", "IEA*2*").encode())
    ta1 = result.interchanges[0].ta1
    back = parse(ta1.encode())

    assert back.accepted, back.error_list
    assert back.interchanges[0].received_ta1[0]["note_code"] == "021"
    assert back.interchanges[0].groups == []


def test_build_ta1_directly():
    result = parse(edi([po("A", "0001")]).replace("IEA*1*000000905", "IEA*1*9").encode())
    text = build_ta1(result.interchanges[0], our_id="DISTRIB", control_number=77, now=LATER)
    segs = segments(text)

    assert segs[1] == ["TA1", "000000905", "261128", "0930", "R", "001"]
    assert segs[2] == ["IEA", "0", "000000077"]


# ------------------------------------------------------------------ CLI
@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.edi"
    good.write_text(edi([po("A", "0001"), po("B", "0002")]))
    bad = tmp_path / "bad.edi"
    bad.write_text(edi([po("A", "0001")]).replace("SE*5*0001", "SE*6*0001"))
    broken = tmp_path / "broken.edi"
    broken.write_text(edi([po("A", "0001")]).replace("IEA*1*", "IEA*2*"))
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\x01binary")
    return {"good": good, "bad": bad, "broken": broken, "junk": junk}


def test_cli_parse_prints_orders_as_json(files):
    res = CliRunner().invoke(x12, ["parse", str(files["good"])])

    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["accepted"] is True
    assert [o["po_number"] for o in out["orders"]] == ["A", "B"]
    assert out["orders"][0]["lines"][0]["quantity"] == "2"
    assert out["errors"] == []


def test_cli_parse_prints_errors_and_exits_1(files):
    res = CliRunner().invoke(x12, ["parse", str(files["bad"])])

    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["orders"] == []
    assert [e["code"] for e in out["errors"]] == ["x12.se_count_mismatch"]
    assert "x12.se_count_mismatch: SE01 says '6' segments" in res.stderr


def test_cli_ack_prints_the_997(files):
    res = CliRunner().invoke(x12, ["ack", str(files["good"]), "--our-id", "DISTRIB"])

    assert res.exit_code == 0, res.output
    assert "GS*FA*DISTRIB*BUYERAPP*" in res.stdout
    assert "AK9*A*2*2*2~" in res.stdout
    assert "TA1" not in res.stdout


def test_cli_ack_prints_the_ta1_for_a_rejected_envelope(files):
    res = CliRunner().invoke(x12, ["ack", str(files["broken"]), "--control-number", "500"])

    assert res.exit_code == 0
    assert "TA1*000000905*261128*0930*R*021~" in res.stdout
    assert "*000000500*" in res.stdout
    assert "AK1" not in res.stdout


def test_cli_ack_on_non_x12_exits_1(files):
    res = CliRunner().invoke(x12, ["ack", str(files["junk"])])

    assert res.exit_code == 1
    assert "x12.not_text" in res.stderr
