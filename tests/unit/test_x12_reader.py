"""X12 reader: delimiters from the ISA, formats seen in real files, envelope checks, and
bad input that must be quarantined with a clear error instead of crashing."""

from __future__ import annotations

import codecs
import random
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from orderflow.channels.x12 import Delimiters, parse
from orderflow.channels.x12.writer import functional_group, interchange, transaction_set

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def po850(po_number: str = "PO1001", lines: int = 2, control: str = "0001") -> list[list[str]]:
    body = [
        ["BEG", "00", "SA", po_number, "", "20261128"],
        ["N1", "ST", "STORE 12", "92", "0012"],
    ]
    body += [["PO1", str(i + 1), "2", "EA", "1.50", "PE", "BP", f"P{i}"] for i in range(lines)]
    body.append(["CTT", str(lines)])
    return transaction_set("850", control, body)


def group(sets: list[list[list[str]]], control: int = 1, version: str = "004010"):
    return functional_group(
        "PO",
        sender="BUYERAPP",
        receiver="SELLERAPP",
        control_number=control,
        now=NOW,
        version=version,
        sets=sets,
    )


def edi(groups, d: Delimiters | None = None, version: str = "00401", control: int = 1) -> str:
    return interchange(
        groups,
        d=d or Delimiters(),
        sender=("ZZ", "BUYER"),
        receiver=("ZZ", "SELLER"),
        control_number=control,
        now=NOW,
        version=version,
    )


def one_po(d: Delimiters | None = None, version: str = "00401", **kw) -> str:
    return edi([group([po850(**kw)])], d=d, version=version)


def codes(result) -> set[str]:
    return {e.code for e in result.error_list}


# ------------------------------------------------------------------ delimiters and formats
@pytest.mark.parametrize(
    ("element", "segment", "component", "suffix"),
    [
        pytest.param("*", "~", ">", "", id="star-tilde"),
        pytest.param("*", "~", ":", "\n", id="star-tilde-colon-lf"),
        pytest.param("*", "~", ">", "\r\n", id="tilde-crlf"),
        pytest.param("|", "\n", ">", "", id="pipe-newline-only"),
        pytest.param("*", "\r\n", ">", "", id="crlf-only"),
        pytest.param("^", "'", ":", "", id="caret-apostrophe"),
        pytest.param("~", "*", ">", "\r\n", id="inverted-tilde-star"),
        pytest.param("\x7f", "\x15", ">", "", id="control-chars"),
        pytest.param("*", "\u2026", ":", "\r\n", id="multibyte-terminator"),
        pytest.param("*", "\x15", "}", "\r\n", id="nak-then-crlf"),
    ],
)
def test_delimiters_are_taken_from_the_isa(element, segment, component, suffix):
    d = Delimiters(element=element, segment=segment, component=component, suffix=suffix)
    result = parse(one_po(d).encode())

    assert result.accepted, result.error_list
    (ic,) = result.interchanges
    assert ic.delimiters.element == element
    assert ic.delimiters.component == component
    assert ic.delimiters.segment == segment
    assert ic.delimiters.suffix == suffix
    assert [len(o.lines) for o in result.orders] == [2]


def test_repetition_separator_is_isa11_from_00402_on():
    v5 = parse(one_po(Delimiters(repetition="^"), version="00501").encode())
    v4 = parse(one_po(version="00401").encode())

    assert v5.accepted
    assert v5.interchanges[0].delimiters.repetition == "^"
    assert v4.interchanges[0].delimiters.repetition is None  # ISA11 'U' is the standards id


@pytest.mark.parametrize("version", ["00200", "00300", "00305", "00401", "00403", "00501"])
def test_isa_versions(version):
    result = parse(one_po(version=version).encode())

    assert result.accepted, result.error_list
    assert result.interchanges[0].version == version


def test_utf8_bom_and_indentation_between_segments():
    text = one_po(Delimiters(suffix="\r\n"))
    indented = "\r\n".join("   " + line for line in text.split("\r\n"))
    result = parse(codecs.BOM_UTF8 + indented.encode())

    assert result.accepted, result.error_list
    assert result.encoding == "utf-8"
    assert len(result.orders) == 1


def test_file_hard_wrapped_at_80_columns():
    text = one_po()
    wrapped = "\n".join(text[i : i + 80] for i in range(0, len(text), 80))
    assert "\n" in wrapped[:106]  # the ISA itself is split
    result = parse(wrapped.encode())

    assert result.accepted, result.error_list
    assert result.orders[0].lines[1].customer_part_number == "P1"


def test_hand_written_pipe_file_with_newline_terminators():
    text = (
        "ISA|00|          |00|          |ZZ|11111          |ZZ|22222          "
        "|120827|1444|U|00305|000000010|0|P|>\n"
        "GS|PO|11111|22222|20120827|1444|100001|X|004010\n"
        "ST|850|0001\nBEG|00|NE|12345678||20120827\nN1|ST||15|3333333\n"
        "PO1|1|25|EA|||UP|999999999991\nCTT|1\nSE|6|0001\nGE|1|100001\nIEA|1|000000010\n"
    )
    result = parse(text.encode())

    assert result.accepted, result.error_list
    (order,) = result.orders
    assert order.po_number == "12345678"
    assert order.lines[0].product_ids[0].qualifier == "UP"


def test_two_interchanges_two_groups_three_sets():
    first = edi(
        [group([po850("A1"), po850("A2", control="0002")], 1), group([po850("B1")], 2)],
        control=7,
    )
    second = edi([group([po850("C1", lines=3)], 3)], control=8)
    result = parse((first + "\r\n" + second).encode())

    assert result.accepted, result.error_list
    assert [i.control_number for i in result.interchanges] == ["000000007", "000000008"]
    assert [len(i.groups) for i in result.interchanges] == [2, 1]
    assert [o.po_number for o in result.orders] == ["A1", "A2", "B1", "C1"]
    assert [t.control_number for t in result.transactions] == ["0001", "0002", "0001", "0001"]
    assert len(result.acknowledgments) == 3  # one 997 per group


def test_interchanges_with_different_delimiters_in_one_file():
    a = edi([group([po850()])], control=1)
    b = edi([group([po850()])], d=Delimiters(element="|", segment="\n"), control=2)
    result = parse((a + b).encode())

    assert result.accepted, result.error_list
    assert [i.delimiters.element for i in result.interchanges] == ["*", "|"]


def test_mis_padded_isa_is_read_by_counting_separators():
    text = one_po().replace("*BUYER          *", "*BUYER         *", 1)  # ISA06: 14 chars
    result = parse(text.encode())

    assert result.accepted, result.error_list
    (ic,) = result.interchanges
    assert codes(result) == {"x12.isa_padding"}
    assert "ISA06" in result.error_list[0].message
    assert (ic.ta1_code, ic.ta1_note) == ("E", "006")
    assert ic.sender_id == "BUYER"
    assert len(result.orders) == 1


def test_mis_padded_isa_with_space_then_crlf_as_terminator():
    text = one_po(Delimiters(segment="\r\n")).replace("*BUYER          *", "*BUYER         *")
    text = text.replace("*>\r\n", "*> \r\n", 1)
    result = parse(text.encode())

    assert result.accepted, result.error_list
    assert result.interchanges[0].delimiters.segment == "\r\n"


def test_latin1_bytes_fall_back_without_crashing():
    text = one_po().replace("STORE 12", "CAF\u00c9 12")
    result = parse(text.encode("latin-1"))

    assert result.accepted, result.error_list
    assert result.encoding == "latin-1"
    assert result.orders[0].ship_to.name == "CAF\u00c9 12"


def test_utf16_with_bom():
    result = parse(one_po().encode("utf-16"))

    assert result.accepted, result.error_list
    assert result.encoding == "utf-16"


# ------------------------------------------------------------------ not X12 at all
@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"", "x12.empty", id="empty"),
        pytest.param(b" \r\n\t ", "x12.empty", id="whitespace"),
        pytest.param(b"UNA:+.? 'UNB+UNOC:3+SENDER+RECEIVER'", "x12.edifact", id="edifact"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "x12.not_text", id="png"),
        pytest.param(b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "x12.not_text", id="zip"),
        pytest.param(b"order_id,sku,qty\n1,A,2\n", "x12.no_isa", id="csv"),
        pytest.param(b"ISA*00*  ", "x12.isa_malformed", id="truncated-isa"),
        pytest.param(b"ISA0000000", "x12.isa_malformed", id="alnum-separator"),
    ],
)
def test_non_x12_content_is_rejected_with_a_clear_code(data, code):
    result = parse(data)

    assert not result.accepted
    assert [e.code for e in result.errors] == [code]
    assert result.errors[0].message
    assert result.errors[0].action


def test_isa_that_lost_its_last_elements():
    text = one_po()
    isa_end = text.index("~")
    truncated = "*".join(text[:isa_end].split("*")[:14]) + text[isa_end:]  # ISA14-16 lost
    result = parse(truncated.encode())

    (err,) = result.errors
    assert err.code == "x12.isa_malformed"
    assert "only 13 of its 16 elements" in err.message
    assert result.interchanges == []


def test_too_large_is_quarantined_unread():
    result = parse(one_po().encode(), max_bytes=100)

    assert [e.code for e in result.errors] == ["x12.too_large"]


def test_every_truncation_is_reported_never_raised():
    data = one_po(Delimiters(suffix="\n")).encode()
    for cut in range(0, len(data) - 1, 7):
        result = parse(data[:cut])
        assert not result.accepted, cut
        assert result.error_list, cut
        assert result.orders == [] or codes(result) - {"x12.iea_missing"} == set()


def test_random_corruption_never_raises():
    rng = random.Random(7)
    base = bytearray((one_po() * 2).encode())
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        result = parse(bytes(data))
        assert not any(e.code == "x12.internal_error" for e in result.error_list)


def test_trailing_garbage_after_the_last_interchange():
    result = parse((one_po() + "\nthis is not edi").encode())

    assert codes(result) == {"x12.trailing_data"}
    assert len(result.orders) == 1  # the complete interchange is still read
    assert not result.accepted


# ------------------------------------------------------------------ envelope errors
def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_iea_missing():
    text = one_po()
    result = parse(text[: text.index("IEA")].encode())

    ic = result.interchanges[0]
    assert codes(result) == {"x12.iea_missing"}
    assert (ic.rejected, ic.ta1_code, ic.ta1_note) == (True, "R", "023")
    assert result.orders == []
    assert ic.ta1 is not None
    assert all(g.ack_997 is None for g in ic.groups)  # the TA1 answers instead


def test_iea_missing_when_the_next_interchange_starts():
    text = one_po()
    first = text[: text.index("IEA")]
    result = parse((first + one_po()).encode())

    assert [i.rejected for i in result.interchanges] == [True, False]
    assert len(result.orders) == 1


def test_iea_control_mismatch():
    result = parse(_mutate(one_po(), "IEA*1*000000001", "IEA*1*000000002").encode())

    ic = result.interchanges[0]
    assert codes(result) == {"x12.iea_control_mismatch"}
    assert (ic.ta1_code, ic.ta1_note) == ("R", "001")
    assert "000000002" in result.error_list[0].message


def test_iea_count_mismatch():
    result = parse(_mutate(one_po(), "IEA*1*", "IEA*2*").encode())

    assert codes(result) == {"x12.iea_count_mismatch"}
    assert result.interchanges[0].ta1_note == "021"
    assert result.orders == []


def test_ge_missing():
    text = one_po()
    text = text[: text.index("GE*")] + text[text.index("IEA") :]
    result = parse(text.encode())

    (g,) = result.interchanges[0].groups
    assert codes(result) == {"x12.ge_missing"}
    assert (g.rejected, g.ack_code, g.ak9_codes) == (True, "R", ["3"])
    assert result.orders == []


def test_ge_count_mismatch():
    result = parse(_mutate(one_po(), "GE*1*", "GE*2*").encode())

    (g,) = result.interchanges[0].groups
    assert codes(result) == {"x12.ge_count_mismatch"}
    assert (g.ack_code, g.ak9_codes) == ("R", ["5"])
    assert "AK9*R*2*1*0*5" in g.ack_997


def test_ge_control_mismatch():
    result = parse(_mutate(one_po(), "GE*1*1~", "GE*1*9~").encode())

    assert codes(result) == {"x12.ge_control_mismatch"}
    assert result.interchanges[0].groups[0].ak9_codes == ["4"]


def test_se_count_mismatch_message_says_what_where_and_what_to_do():
    result = parse(_mutate(one_po(), "SE*7*0001", "SE*8*0001").encode())

    (t,) = result.transactions
    (err,) = result.error_list
    assert err.code == "x12.se_count_mismatch"
    assert err.message.startswith("SE01 says '8' segments but transaction set 0001 has 7")
    assert "SE at segment 9" in err.message
    assert err.where == "ST 0001 (850) / segment 7 SE01"
    assert "resend" in err.action
    assert (t.accepted, t.ack_code, t.ak5_codes) == (False, "R", ["4"])


def test_st_se_control_mismatch():
    result = parse(_mutate(one_po(), "SE*7*0001", "SE*7*0002").encode())

    (t,) = result.transactions
    assert codes(result) == {"x12.st_se_control_mismatch"}
    assert t.ak5_codes == ["3"]


def test_se_missing():
    result = parse(_mutate(one_po(), "SE*7*0001~", "").encode())

    (t,) = result.transactions
    assert codes(result) == {"x12.se_missing"}
    assert t.ak5_codes == ["2"]


def test_transaction_set_outside_a_group():
    text = one_po()
    text = _mutate(text, text[text.index("GS*") : text.index("ST*")], "")
    text = _mutate(text, text[text.index("GE*") : text.index("IEA")], "")
    result = parse(_mutate(text, "IEA*1*", "IEA*0*").encode())

    assert codes(result) == {"x12.gs_missing"}
    assert result.interchanges[0].ta1_note == "024"


def test_duplicate_st02_in_a_group():
    result = parse(edi([group([po850("A"), po850("B")])]).encode())

    a, b = result.transactions
    assert a.accepted
    assert not b.accepted
    assert b.ak5_codes == ["23"]


def test_duplicate_interchange_in_one_file():
    result = parse((one_po() + one_po()).encode())

    assert [i.rejected for i in result.interchanges] == [False, True]
    assert result.interchanges[1].ta1_note == "025"
    assert len(result.orders) == 1


def test_unsupported_transaction_set():
    text = edi([group([transaction_set("856", "0001", [["BSN", "00", "1", "20261128", "1200"]])])])
    result = parse(text.encode())

    (t,) = result.transactions
    assert codes(result) == {"x12.unsupported_transaction"}
    assert (t.ack_code, t.ak5_codes) == ("R", ["1"])
    assert "856" in result.error_list[0].message


def test_received_ta1_interchange_is_read():
    text = (
        "ISA>00>1234567890>00>1234567890>28>PPPPP          >28>SSSSSS         "
        ">100624>1430>^>00501>000000001>0>P>+\r\n"
        "  TA1>900000001>100624>1430>R>006\r\nIEA>0>000000001"
    )
    result = parse(text.encode())

    assert result.accepted, result.error_list
    assert result.interchanges[0].received_ta1 == [
        {
            "control_number": "900000001",
            "date": "100624",
            "time": "1430",
            "ack_code": "R",
            "note_code": "006",
        }
    ]


def test_envelope_ids_are_exposed_for_duplicate_checks():
    result = parse(one_po().encode(), partner_id="ACME")

    ic = result.interchanges[0]
    g = ic.groups[0]
    t = g.transactions[0]
    assert (ic.sender_qualifier, ic.sender_id, ic.receiver_id) == ("ZZ", "BUYER", "SELLER")
    assert (ic.control_number, g.control_number, t.control_number) == ("000000001", "1", "0001")
    assert t.po_number == "PO1001"
    assert (g.sender, g.receiver, g.version) == ("BUYERAPP", "SELLERAPP", "004010")


def test_channels_import_no_airflow():
    code = (
        "import sys, orderflow.channels.x12, orderflow.channels.x12.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('airflow', 'psycopg', 'sqlalchemy', 'httpx', 'requests')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
