"""What :func:`orderflow.channels.x12.parse` returns: one result per interchange, functional
group and transaction set, each with its errors and its acknowledgment outcome.

Three outcomes per level, the X12 way:

- ``A`` accepted;
- ``E`` accepted, errors noted (the data is used; the partner is told, must not resend);
- ``R`` rejected (nothing from it is used; the partner must fix and resend).

``errors`` lists every finding (noted and rejecting alike, as
:class:`~orderflow.domain.models.IntakeError`); the ``*_code`` fields say which outcome they
led to. ``segment_notes`` point the 997 (AK3/AK4) at the segment and element at fault.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orderflow.domain.changes import OrderChange
from orderflow.domain.models import IntakeError, Order

AckCode = Literal["A", "E", "R"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Delimiters(_Result):
    """The separators of one interchange, as read from its ISA (or chosen for writing).

    ``segment`` is the terminator character, or ``"\\n"`` / ``"\\r\\n"`` when line ends
    terminate segments. ``suffix`` is what the sender put after each terminator (often a
    line end); the writer repeats it so acknowledgments look like what the partner sends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    element: str = "*"
    component: str = ">"
    repetition: str | None = None
    segment: str = "~"
    suffix: str = ""

    @property
    def newline_terminated(self) -> bool:
        return self.segment in ("\n", "\r\n", "\r")


class ElementNote(_Result):
    """AK4: which element of a segment is wrong and why (X12 element syntax error code)."""

    position: int
    reference: str | None = Field(None, description="data element reference number, e.g. 330")
    code: str = Field(description="AK403: 1 missing, 2 conditional missing, 6 bad chars, 8 date")
    value: str | None = None


class SegmentNote(_Result):
    """AK3: a segment of a transaction set with an error (position counted from ST = 1)."""

    segment_id: str
    position: int
    loop_id: str | None = None
    code: str | None = Field(None, description="AK304: 1 unrecognised, 3 missing, 8 element errors")
    elements: list[ElementNote] = Field(default_factory=list)


class AckReceived(_Result):
    """The content of a 997 a partner sent us (acknowledging one of our groups)."""

    functional_id: str
    group_control_number: str
    group_status: str | None = Field(None, description="AK901: A, E, P, R, ...")
    included: int | None = Field(None, description="AK902: sets the group declared")
    received: int | None = Field(None, description="AK903")
    accepted: int | None = Field(None, description="AK904")
    transactions: dict[str, str] = Field(
        default_factory=dict, description="ST02 of our set → AK501 status"
    )


class TransactionResult(_Result):
    set_id: str = Field(description="ST01, e.g. 850")
    control_number: str = Field(description="ST02")
    implementation_ref: str | None = Field(None, description="ST03 (005010+)")
    segment_count: int = Field(description="segments from ST to SE inclusive, as received")
    declared_segment_count: str | None = Field(None, description="SE01 as sent")
    segment_index: int = Field(description="position of the ST segment in the file (1-based)")
    accepted: bool
    ack_code: AckCode
    ak5_codes: list[str] = Field(default_factory=list, description="AK502..: reasons for E/R")
    segment_notes: list[SegmentNote] = Field(default_factory=list)
    errors: list[IntakeError] = Field(default_factory=list)
    po_number: str | None = Field(
        None, description="BEG03 (850) / BCH03 (860), also when the set was rejected"
    )
    order: Order | None = None
    change: OrderChange | None = Field(
        None,
        description="a change to an order sent before: 850 BEG01 01/03 (cancel) or 04/05 "
        "(replace, ``order`` stays None), 860 (cancel or line changes)",
    )
    acknowledgment: AckReceived | None = Field(None, description="for a received 997")


class GroupResult(_Result):
    functional_id: str = Field(description="GS01, e.g. PO")
    sender: str = Field(description="GS02 application sender")
    receiver: str = Field(description="GS03 application receiver")
    date: str = Field(description="GS04 as sent")
    time: str = Field(description="GS05 as sent")
    control_number: str = Field(description="GS06")
    agency: str = Field("X", description="GS07")
    version: str = Field(description="GS08, e.g. 004010")
    declared_count: str | None = Field(None, description="GE01 as sent")
    segment_index: int = Field(description="position of the GS segment in the file (1-based)")
    rejected: bool = False
    ack_code: Literal["A", "E", "P", "R"] = Field(description="AK901 of our 997")
    ak9_codes: list[str] = Field(default_factory=list, description="AK905..: group errors")
    errors: list[IntakeError] = Field(default_factory=list)
    transactions: list[TransactionResult] = Field(default_factory=list)
    ack_997: str | None = Field(
        None,
        description="our 997 for this group, in its own interchange; None for received "
        "acknowledgments (997s are never acknowledged) and when the interchange was rejected "
        "(the TA1 answers instead)",
    )

    @property
    def accepted_count(self) -> int:
        return sum(1 for t in self.transactions if t.accepted)


class InterchangeResult(_Result):
    sender_qualifier: str = Field(description="ISA05")
    sender_id: str = Field(description="ISA06, trimmed")
    receiver_qualifier: str = Field(description="ISA07")
    receiver_id: str = Field(description="ISA08, trimmed")
    date: dt.date | None = Field(None, description="ISA09")
    time: str = Field(description="ISA10 HHMM as sent")
    control_number: str = Field(description="ISA13")
    version: str = Field(description="ISA12, e.g. 00401")
    ack_requested: bool = Field(description="ISA14 = 1")
    usage: str = Field(description="ISA15: P production, T test, I information")
    delimiters: Delimiters
    segment_index: int = Field(description="position of the ISA segment in the file (1-based)")
    rejected: bool = False
    ta1_code: AckCode = "A"
    ta1_note: str = Field("000", description="TA105 note code, 000 = no error")
    errors: list[IntakeError] = Field(default_factory=list)
    groups: list[GroupResult] = Field(default_factory=list)
    received_ta1: list[dict[str, str]] = Field(
        default_factory=list, description="TA1 segments a partner sent us, by element name"
    )
    ta1: str | None = Field(
        None,
        description="our TA1 interchange: when ISA14 asked for one, or the envelope was "
        "rejected or accepted with errors",
    )


class X12Result(_Result):
    """Everything read from one file. Never raised: bad input shows up in ``errors``."""

    source_ref: str | None = None
    partner_id: str | None = None
    document_sha256: str
    encoding: str | None = Field(None, description="utf-8, utf-16 or latin-1 (fallback)")
    errors: list[IntakeError] = Field(
        default_factory=list, description="file-level: not X12, unreadable ISA, trailing data"
    )
    interchanges: list[InterchangeResult] = Field(default_factory=list)

    @property
    def transactions(self) -> list[TransactionResult]:
        return [t for i in self.interchanges for g in i.groups for t in g.transactions]

    @property
    def orders(self) -> list[Order]:
        return [t.order for t in self.transactions if t.order is not None]

    @property
    def changes(self) -> list[OrderChange]:
        return [t.change for t in self.transactions if t.change is not None]

    @property
    def accepted(self) -> bool:
        """True when the file was read whole and every transaction set in it was accepted
        (possibly with errors noted)."""
        if self.errors or not self.interchanges:
            return False
        return all(
            not i.rejected
            and all(not g.rejected and all(t.accepted for t in g.transactions) for g in i.groups)
            for i in self.interchanges
        )

    @property
    def error_list(self) -> list[IntakeError]:
        """Every finding, file level first, then each interchange, group and set in order."""
        out = list(self.errors)
        for i in self.interchanges:
            out += i.errors
            for g in i.groups:
                out += g.errors
                for t in g.transactions:
                    out += t.errors
        return out

    @property
    def acknowledgments(self) -> list[str]:
        """Our TA1 and 997 interchanges, in file order."""
        out: list[str] = []
        for i in self.interchanges:
            if i.ta1:
                out.append(i.ta1)
            out += [g.ack_997 for g in i.groups if g.ack_997]
        return out
