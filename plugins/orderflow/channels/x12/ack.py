"""Acknowledgments: the 997 we send for every functional group received, the TA1 for the
interchange envelope, and reading the 997s partners send us.

997 (one interchange per group, back to the sender, version = the received GS08):

- AK1: GS01, GS06 (+ GS08 from 005010 on).
- Per set: AK2 (ST01, ST02), AK3 (segment id, position from ST = 1, loop id, error code)
  and AK4 (element position, reference number, error code, bad value) where we can point at
  them, AK5 (A / E / R + reasons). In a rejected group, only the sets with their own errors
  are listed. 005010's 997 keeps AK3/AK4 (IK3/IK4 belong to the 999).
- AK9: A, E, P (some sets rejected) or R; sets declared (GE01), received, accepted; reasons.

TA1 (TA101 ISA13, TA102/103 ISA09/10, TA104 A/E/R, TA105 note code) in an interchange of
its own with IEA01 = 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from . import writer
from .elements import ascii_int, count_value
from .findings import Finding
from .results import AckReceived, Delimiters, GroupResult, InterchangeResult
from .validate import TxnWork
from .writer import SegmentValues, functional_group


def _version_5010(version: str) -> bool:
    n = ascii_int(version[:3], 3)
    return n is not None and n >= 5


def _isa_version(received: str) -> str:
    return received if re.fullmatch(r"00[2-9][0-9][0-9]", received, re.ASCII) else "00401"


def _parties(
    ic: InterchangeResult, our_id: str | None, our_qualifier: str
) -> tuple[tuple[str, str], tuple[str, str]]:
    us = (our_qualifier, our_id) if our_id else (ic.receiver_qualifier, ic.receiver_id)
    return us, (ic.sender_qualifier, ic.sender_id)


def _utc(now: datetime) -> datetime:
    return now if now.tzinfo is None else now.astimezone(UTC)


def ak_segments(group: GroupResult, sets: Sequence[Any] | None = None) -> list[SegmentValues]:
    return list(iter_ak_segments(group, sets))


def iter_ak_segments(
    group: GroupResult, sets: Sequence[Any] | None = None
) -> Iterator[SegmentValues]:
    """The AK1 … AK9 body of the 997 for ``group``. ``sets``: what the 997 needs of each
    set (``set_id``, ``control_number``, ``implementation_ref``, ``accepted``, ``ack_code``,
    ``ak5_codes``, ``segment_notes``), when the group does not hold its transactions (a
    streamed parse); default ``group.transactions``."""
    v5 = _version_5010(group.version)
    yield ["AK1", group.functional_id, group.control_number] + ([group.version] if v5 else [])
    txns = group.transactions if sets is None else sets
    # a streamed parse keeps an 850 accepted as is as its ST02 alone (``parser.SetAcks``)
    entries = txns.compact() if hasattr(txns, "compact") else txns
    for t in entries:
        if type(t) is str:
            if not group.rejected:
                yield ["AK2", "850", t]
                yield _AK5_ACCEPTED
            continue
        if group.rejected and t.ack_code == "A":
            continue
        ak2 = ["AK2", t.set_id, t.control_number]
        if v5 and t.implementation_ref:
            ak2.append(t.implementation_ref)
        yield ak2
        for note in t.segment_notes:
            yield ["AK3", note.segment_id, str(note.position), note.loop_id or "", note.code or ""]
            for el in note.elements:
                yield ["AK4", str(el.position), el.reference or "", el.code, (el.value or "")[:99]]
        yield ["AK5", t.ack_code, *t.ak5_codes[:5]]
    received = len(txns)
    declared = count_value(group.declared_count or "", 6)
    included = str(declared) if declared is not None else str(received)
    entries = txns.compact() if hasattr(txns, "compact") else txns
    accepted = 0 if group.rejected else sum(1 for t in entries if type(t) is str or t.accepted)
    yield ["AK9", group.ack_code, included, str(received), str(accepted), *group.ak9_codes[:5]]


_AK5_ACCEPTED = ("AK5", "A")


def _streamed_set(
    set_id: str, control: str, body: Iterator[SegmentValues]
) -> Iterator[SegmentValues]:
    """:func:`~.writer.transaction_set` for a body rendered as it is made: a 997 for a group
    of 100,000s of sets never holds a list of its AK2/AK5 segments (SE01 counted on the way)."""
    yield ["ST", set_id, control]
    n = 0
    for seg in body:
        n += 1
        yield seg
    yield ["SE", str(n + 2), control]


def build_997(
    group: GroupResult,
    interchange: InterchangeResult,
    *,
    our_id: str | None = None,
    our_qualifier: str = "ZZ",
    control_number: int,
    now: datetime,
    delimiters: Delimiters | None = None,
    sets: Sequence[Any] | None = None,
) -> str:
    """Our 997 for ``group``, in its own interchange addressed back to the sender.

    ``our_id``/``our_qualifier`` name us in ISA06/ISA05 and GS02; by default we answer as the
    id the partner addressed (their ISA07/ISA08 and GS03). ``control_number`` (allocated by
    the store) is used for ISA13 and GS06; ST02 is 0001. ``delimiters`` default to the
    partner's own.
    """
    ic = interchange
    now = _utc(now)
    us, them = _parties(ic, our_id, our_qualifier)
    gs, ge = functional_group(  # GS and GE around one set, the 997 (GE01 = 1)
        "FA",
        sender=our_id or group.receiver,
        receiver=group.sender,
        control_number=control_number,
        now=now,
        # GS08 echoed when it has something writable (a NUL or a delimiter alone would be
        # written as a blank GS08, which our own reader refuses)
        version=group.version if any(c.isalnum() for c in group.version) else "004010",
        agency=group.agency,
        sets=[[]],
    )
    return writer.interchange(
        [chain([gs], _streamed_set("997", "0001", iter_ak_segments(group, sets)), [ge])],
        d=delimiters or ic.delimiters,
        sender=us,
        receiver=them,
        control_number=control_number,
        now=now,
        version=_isa_version(ic.version),
        usage=ic.usage,
    )


def build_ta1(
    interchange: InterchangeResult,
    *,
    our_id: str | None = None,
    our_qualifier: str = "ZZ",
    control_number: int,
    now: datetime,
    delimiters: Delimiters | None = None,
) -> str:
    """Our TA1 for the received interchange: its control number, date and time, the outcome
    (A/E/R) and the note code, inside an interchange of our own (IEA01 = 0)."""
    ic = interchange
    now = _utc(now)
    us, them = _parties(ic, our_id, our_qualifier)
    date = ic.date.strftime("%y%m%d") if ic.date else now.strftime("%y%m%d")
    time = ic.time if re.fullmatch(r"[0-9]{4}", ic.time, re.ASCII) else now.strftime("%H%M")
    ctrl = ic.control_number.zfill(9)[-9:]
    ta1 = ["TA1", ctrl, date, time, ic.ta1_code, ic.ta1_note]
    return writer.interchange(
        [],
        d=delimiters or ic.delimiters,
        sender=us,
        receiver=them,
        control_number=control_number,
        now=now,
        version=_isa_version(ic.version),
        usage=ic.usage,
        extra=[ta1],
    )


# ------------------------------------------------------------------------------ reading
_AK5 = {"A", "E", "M", "R", "W", "X"}
_AK9 = {"A", "E", "M", "P", "R", "W", "X"}


def read_997(t: TxnWork) -> tuple[AckReceived | None, list[Finding]]:
    """What a partner's 997 says about one of our groups; findings when it is unreadable."""
    problems: list[str] = []
    ak1 = next((s for s in t.segments if s.tag == "AK1"), None)
    ak9 = next((s for s in t.segments if s.tag == "AK9"), None)
    if ak1 is None:
        problems.append("it has no AK1 segment")
    else:
        if not re.fullmatch(r"[A-Z]{2}", ak1.el(1)):
            problems.append(f"AK101 {ak1.el(1)!r} is not a functional identifier code")
        if ascii_int(ak1.el(2), 9) is None:
            problems.append(f"AK102 {ak1.el(2)!r} is not a group control number")
    if ak9 is None:
        problems.append("it has no AK9 segment")
    else:
        if ak9.el(1) not in _AK9:
            problems.append(f"AK901 {ak9.el(1)!r} is not an acknowledgment code")
        for k in (2, 3, 4):
            if count_value(ak9.el(k), 6) is None:
                problems.append(f"AK90{k} {ak9.el(k)!r} is not a count")
    sets: dict[str, str] = {}
    current: str | None = None
    for s in t.segments:
        if s.tag == "AK2":
            current = s.el(2)
            if not re.fullmatch(r"[0-9]{3}", s.el(1), re.ASCII) or not current:
                problems.append(
                    f"AK2 (segment {t.position(s)} of the set) does not name a transaction set"
                )
        elif s.tag == "AK3":
            if count_value(s.el(2), 6) is None:
                problems.append(f"AK302 {s.el(2)!r} is not a segment position")
        elif s.tag == "AK4":
            if not re.fullmatch(r"[0-9]{1,2}([^0-9][0-9]{1,2})?", s.el(1), re.ASCII):
                problems.append(f"AK401 {s.el(1)!r} is not an element position")
            if s.el(2) and ascii_int(s.el(2), 4) is None:
                problems.append(f"AK402 {s.el(2)!r} is not an element reference number")
        elif s.tag == "AK5":
            if s.el(1) not in _AK5:
                problems.append(f"AK501 {s.el(1)!r} is not an acknowledgment code")
            if current is not None:
                sets[current] = s.el(1)
                current = None
    if problems:
        return None, [
            Finding(
                "x12.997_invalid",
                f"The 997 {t.control} received cannot be read: " + "; ".join(problems) + ".",
                where=t.where(),
                action="The acknowledgment was not matched to our outbound documents; ask the "
                "partner to fix their 997 and check our outbound group's status with them.",
                ak5_code="5",
            )
        ]
    assert ak1 is not None
    assert ak9 is not None
    return (
        AckReceived(
            functional_id=ak1.el(1),
            group_control_number=ak1.el(2),
            group_status=ak9.el(1),
            included=count_value(ak9.el(2), 6),
            received=count_value(ak9.el(3), 6),
            accepted=count_value(ak9.el(4), 6),
            transactions=sets,
        ),
        [],
    )
