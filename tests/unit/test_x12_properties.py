"""Property tests (hypothesis) over the X12 reader, the 850 parser and the 997/TA1 builder:
whatever the bytes, ``parse`` gives a specific outcome — orders, or findings with a TA1/997
rejection — never an unhandled exception or ``x12.internal_error``; every acknowledgment we
build reads back through our own reader without a finding; an accepted set always carries
an order that the canonical model accepts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import examples

from orderflow.channels.x12 import parse
from orderflow.channels.x12.validate import envelope_findings
from orderflow.domain.models import Order

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
SETTINGS = settings(
    max_examples=examples(1000), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _outcome_is_specific(data: bytes) -> None:
    result = parse(data, received_at=NOW, our_id="DISTRIB")
    codes = [e.code for e in result.error_list]
    assert "x12.internal_error" not in codes, result.error_list
    for e in result.error_list:
        assert e.code.startswith("x12.") and e.message
    if not result.accepted:
        assert (
            codes or not result.interchanges or any(not t.accepted for t in result.transactions)
        ), "a file not accepted must say why"
    for t in result.transactions:
        if t.accepted and t.set_id == "850":  # an order, or (BEG01 01/03/04/05) a change
            assert (t.order is None) != (t.change is None)
            if t.order is not None:
                Order.model_validate(t.order.model_dump())  # the model accepts what it produced
        if t.ack_code == "R":
            assert t.order is None and t.ak5_codes
    for ack in result.acknowledgments:
        assert envelope_findings(ack) == [], ack
    # Rejected interchanges are answered by a TA1 R; rejected sets by a 997 AK5 R.
    for ic in result.interchanges:
        if ic.rejected:
            assert ic.ta1 is not None and ic.ta1_code == "R"
        else:
            for g in ic.groups:
                if g.functional_id != "FA" and any(t.ack_code == "R" for t in g.transactions):
                    assert g.ack_997 is not None and "AK5*R" in g.ack_997.replace(
                        ic.delimiters.element, "*"
                    )


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes(data):
    _outcome_is_specific(data)


GOOD = (
    "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*00401"
    "*000000905*1*P*>~GS*PO*BUYERAPP*SELLERAPP*20261128*0930*42*X*004010~ST*850*0001~"
    "BEG*00*SA*PO1001**20261128~N1*ST*STORE 12*92*0012~PO1*1*2*EA*1.50*PE*BP*P1~"
    "PO1*2*3*CA*10*PE*BP*P2~CTT*2~SE*7*0001~GE*1*42~IEA*1*000000905~"
)


def test_the_seed_is_a_good_interchange():
    result = parse(GOOD.encode(), received_at=NOW)
    assert result.accepted and len(result.orders) == 1 and result.error_list == []


_HOSTILE = st.sampled_from(
    [
        "",
        "0",
        "0.0001",
        "-1",
        "9" * 30,
        "9" * 5000,
        "١٢",
        "５",
        "\x00",
        "*",
        "~",
        ">",
        "^",
        "\r\n",
        "ISA",
        "SE",
        "1e308",
        "NaN",
        "U" * 300,
        "é",
        "\ud7ff",
    ]
)


@st.composite
def mutated(draw) -> bytes:
    """The good interchange with a few elements replaced, characters inserted or deleted,
    or segments dropped/duplicated: close enough to X12 to reach the deep code."""
    segs = GOOD.split("~")[:-1]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["element", "insert", "delete", "drop", "dup", "swap"]))
        i = draw(st.integers(0, len(segs) - 1))
        if kind == "element":
            els = segs[i].split("*")
            j = draw(st.integers(0, len(els) - 1))
            els[j] = draw(_HOSTILE | st.text(max_size=12))
            segs[i] = "*".join(els)
        elif kind == "insert":
            k = draw(st.integers(0, len(segs[i])))
            segs[i] = segs[i][:k] + draw(_HOSTILE | st.text(max_size=4)) + segs[i][k:]
        elif kind == "delete" and segs[i]:
            k = draw(st.integers(0, len(segs[i]) - 1))
            segs[i] = segs[i][:k] + segs[i][k + draw(st.integers(1, 5)) :]
        elif kind == "drop" and len(segs) > 1:
            del segs[i]
        elif kind == "dup":
            segs.insert(i, segs[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(segs) - 1))
            segs[i], segs[j] = segs[j], segs[i]
    text = "~".join(segs) + "~"
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@SETTINGS
@given(mutated())
def test_mutated_interchanges(data):
    _outcome_is_specific(data)


@SETTINGS
@given(
    st.sampled_from("*|^!\x1d\x7f~'\n"),
    st.sampled_from("~'\n\r\x1c*|:"),
    st.sampled_from(">:^*~\x1f"),
    st.sampled_from(["U", "^", "*", "~", " ", "!"]),
    st.sampled_from(["00401", "00501", "00403", "00200", "0050X"]),
)
def test_any_delimiters(e, s, c, rep, version):
    text = GOOD.replace("*", "\x01").replace("~", "\x02").replace(">", "\x03")
    text = text.replace("\x01U\x0100401\x01", f"\x01{rep}\x01{version}\x01")
    text = text.replace("\x01", e).replace("\x02", s).replace("\x03", c)
    _outcome_is_specific(text.encode("utf-8", errors="replace"))
