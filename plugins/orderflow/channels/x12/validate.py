"""Envelope structure and checks: ISA/IEA, GS/GE, ST/SE nesting, counts and control numbers.

Outcomes (the reasons are in DESIGN.md §5: exactly one outcome per message, nothing used
that may be incomplete):

- Interchange: IEA missing (TA1 note 023), IEA02 ≠ ISA13 (001), IEA01 ≠ number of groups
  (021), a transaction set outside any group (024) → the interchange is rejected; nothing in
  it is used and the TA1 answers (no 997). Stray non-ST segments outside groups are noted.
- Group: GE missing (AK905 3), GE02 ≠ GS06 (4), GE01 ≠ number of sets (5), unusable GS
  (6) → the group is rejected (AK9 R); its sets are not used.
- Set: SE missing (AK502 2), SE02 ≠ ST02 (3), SE01 ≠ segments counted (4), bad ST01/ST02
  (6/7), ST02 repeated in the group (23) → the set is rejected (AK5 R).

A count mismatch means something may have been lost in transit, so it rejects (the partner
must resend) rather than being merely noted: a TA1/997 "E" would tell them not to resend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .elements import ascii_int, count_value, is_time, same_control
from .findings import RESEND, Finding
from .reader import FastSet, RawInterchange, Segment
from .results import SegmentNote

_TAG = re.compile(r"^[A-Z][A-Z0-9]{1,2}$")
_ENVELOPE = frozenset(("ST", "SE", "GS", "GE"))
#: tags that matched ``_TAG`` (a set lookup per segment instead of a regex match); bounded,
#: so hostile files of ever-new tags cannot grow it
_GOOD_TAGS: set[str] = set()
_MAX_GOOD_TAGS = 4096

FUNCTIONAL_ID = {
    "850": "PO",
    "855": "PR",
    "856": "SH",
    "810": "IN",
    "860": "PC",
    "865": "CA",
    "997": "FA",
    "999": "FA",
    "940": "OW",
    "945": "SW",
    "820": "RA",
    "846": "IB",
    "852": "PD",
    "824": "AG",
    "864": "TX",
    "214": "QM",
    "204": "SM",
    "990": "GF",
}
"""GS01 functional identifier code each transaction set belongs in (X12 dictionary)."""


@dataclass(slots=True)
class TxnWork:
    st: Segment
    segments: list[Segment]  # ST … SE inclusive (SE absent when missing); see ``sink``
    se: Segment | None = None
    findings: list[Finding] = field(default_factory=list)
    count: int = 1  # segments ST … SE received so far
    last: Segment | None = None  # the last segment received
    bad_tags: list[Segment] = field(default_factory=list)  # segments whose tag is no tag
    #: when set, body segments (between ST and SE) go to it as they arrive instead of being
    #: kept in ``segments``: a streamed set never holds its body
    sink: Callable[[Segment], None] | None = None

    def add(self, seg: Segment, *, body: bool = True) -> None:
        self.count += 1
        self.last = seg
        if not _TAG.match(seg.tag):
            self.bad_tags.append(seg)
        if body and self.sink is not None:
            self.sink(seg)
        else:
            self.segments.append(seg)

    @property
    def control(self) -> str:
        return self.st.el(2)

    @property
    def set_id(self) -> str:
        return self.st.el(1)

    def where(self, seg: Segment | None = None, element: int | None = None) -> str:
        out = f"ST {self.control or '?'} ({self.set_id or '?'})"
        if seg is not None:
            pos = seg.index - self.st.index + 1
            out += f" / segment {pos} {seg.tag}"
            if element is not None:
                out += f"{element:02d}"
        return out

    def position(self, seg: Segment) -> int:
        return seg.index - self.st.index + 1


@dataclass(slots=True)
class GroupWork:
    gs: Segment | None  # None for sets found outside any GS
    ge: Segment | None = None
    txns: list[TxnWork] = field(default_factory=list)  # empty when streamed (keep_txns)
    findings: list[Finding] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # ST02s of the group
    n_txns: int = 0
    first_st_index: int | None = None

    def el(self, n: int) -> str:
        return self.gs.el(n) if self.gs is not None else ""

    @property
    def where(self) -> str:
        return f"GS {self.el(6) or '?'} ({self.el(1) or '?'})"


@dataclass(slots=True)
class InterchangeWork:
    raw: RawInterchange
    groups: list[GroupWork] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    ta1_segments: list[Segment] = field(default_factory=list)
    done: dict = field(default_factory=dict)  # id(group) → its sets' results (parser)

    @property
    def where(self) -> str:
        isa = self.raw.isa
        return f"interchange {isa.el(13)} from {isa.el(5)}:{isa.el(6)}"


_same_control = same_control


def _count_ok(declared: str, actual: int) -> bool:
    return count_value(declared) == actual


def check_envelopes(
    raw: RawInterchange, on_txn: Callable[[GroupWork, TxnWork], None] | None = None
) -> InterchangeWork:
    """Nest the interchange's segments into groups and sets, and check every envelope.

    ``on_txn(group, txn)`` is called as soon as a set is complete and checked; its segments
    are released after the call (the set keeps its ST and its segment count), so a
    streamed interchange never holds more than one set's segments."""
    ic = InterchangeWork(raw=raw, findings=list(raw.isa.findings) + list(raw.findings))
    for g, t in walk_envelopes(ic):
        if t is not None and on_txn is not None:
            on_txn(g, t)
            t.segments = [t.st]
    return ic


def walk_envelopes(
    ic: InterchangeWork,
    on_st: Callable[[GroupWork, TxnWork], None] | None = None,
    *,
    keep_txns: bool = True,
    fast: tuple | None = None,
) -> Iterator[tuple[GroupWork, TxnWork | None]]:
    """The checking walk behind :func:`check_envelopes`, as a stream: yields ``(group, set)``
    when a set is complete and checked, ``(group, None)`` when a group is closed and checked
    (in file order: a group's sets before the group), and leaves ``ic`` complete (its own
    checks done) when exhausted. ``on_st(group, set)`` is called at each ST, e.g. to give
    the set a ``sink`` for its body. With ``keep_txns=False`` groups only count their sets,
    so a streamed group does not grow with them.

    ``fast = (regex, build)``: well-formed 850 sets may be read whole (``fast850``):
    ``build(group, match, st_index)`` gives a :class:`FastSet` or None; it is asked only
    where the set's ST would open a set with nothing to remark on (no set open, inside a
    GS group, a new ST02). Such a set is yielded as ``(group, FastSet)`` (never with
    ``keep_txns``: only a streaming caller passes ``fast``)."""
    raw = ic.raw
    if raw.isa.fatal is not None:
        ic.findings.append(raw.isa.fatal)
        return
    group: GroupWork | None = None
    txn: TxnWork | None = None
    stray_outside: list[Segment] = []
    out: list[tuple[GroupWork, TxnWork | None]] = []

    def finish(g: GroupWork, t: TxnWork) -> None:
        _check_txn(t, g.seen)
        _check_functional_id(g, t)
        t.bad_tags = []
        out.append((g, t))

    def end_group(g: GroupWork) -> None:
        _check_group(ic, g)
        out.append((g, None))

    def close_txn(reason_seg: Segment | None) -> None:
        nonlocal txn
        if txn is None:
            return
        last = txn.last or txn.st
        after = (
            f"before {reason_seg.tag} at segment {reason_seg.index} of the file"
            if reason_seg
            else ""
        )
        txn.findings.append(
            Finding(
                "x12.se_missing",
                f"Transaction set {txn.control} ({txn.set_id}) has no SE trailer: it ends "
                f"{after or 'at the end of the file'} after {txn.count} segments "
                f"(last one {last.tag}). It may be truncated.",
                where=txn.where(),
                action=RESEND,
                ak5_code="2",
            )
        )
        finish(group, txn)  # type: ignore[arg-type]
        txn = None

    def close_group(reason_seg: Segment | None) -> None:
        nonlocal group
        if group is None:
            return
        if group.gs is not None:
            where = (
                f"before {reason_seg.tag} at segment {reason_seg.index} of the file"
                if reason_seg
                else ""
            )
            group.findings.append(
                Finding(
                    "x12.ge_missing",
                    f"Functional group {group.el(6)} has no GE trailer: it ends "
                    f"{where or 'at the end of the file'}. It may be truncated.",
                    where=group.where,
                    action=RESEND,
                    ak9_code="3",
                )
            )
        end_group(group)
        group = None

    if fast is not None:
        fast_re, build = fast

        def hook(m: re.Match[str], st_index: int) -> FastSet | None:
            g = group
            if txn is not None or g is None or g.gs is None or m["ctrl"] in g.seen:
                return None
            return build(g, m, st_index)

        raw.fast = (fast_re, hook)

    good = _GOOD_TAGS
    for seg in raw.segments:
        tag = seg.tag
        if txn is not None and tag not in _ENVELOPE:
            # the common case first: a segment of the open set (``TxnWork.add``, inlined)
            txn.count += 1
            txn.last = seg
            if tag not in good:
                if _TAG.match(tag) is None:
                    txn.bad_tags.append(seg)
                elif len(good) < _MAX_GOOD_TAGS:
                    good.add(tag)
            if txn.sink is not None:
                txn.sink(seg)
            else:
                txn.segments.append(seg)
            continue
        if type(seg) is FastSet:
            # a whole set, read by the fast path: ``hook`` let it through only where the ST
            # opens a set in a GS group with a new ST02, and its regex proved what
            # ``_check_txn`` and ``_check_functional_id`` would check (ST01 850 in a PO
            # group, SE02 = ST02, SE01 = the segments, every tag a tag): nothing to find
            group.n_txns += 1  # type: ignore[union-attr]
            group.seen.add(seg.control)  # type: ignore[union-attr]
            if group.first_st_index is None:  # type: ignore[union-attr]
                group.first_st_index = seg.st_index  # type: ignore[union-attr]
            yield group, seg  # type: ignore[misc]
            continue
        if tag == "ST":
            close_txn(seg)
            if group is None:
                group = GroupWork(gs=None)
                ic.groups.append(group)
            txn = TxnWork(st=seg, segments=[seg], last=seg)
            group.n_txns += 1
            if group.first_st_index is None:
                group.first_st_index = seg.index
            if keep_txns:
                group.txns.append(txn)
            if on_st is not None:
                on_st(group, txn)
        elif tag == "SE":
            if txn is not None:
                txn.add(seg, body=False)
                txn.se = seg
                finish(group, txn)  # type: ignore[arg-type]
                txn = None
            else:
                _stray(ic, group, seg)
        elif tag == "GS":
            close_txn(seg)
            if group is not None and group.gs is None:
                end_group(group)
                group = None
            close_group(seg)
            group = GroupWork(gs=seg)
            ic.groups.append(group)
        elif tag == "GE":
            close_txn(seg)
            if group is not None and group.gs is not None:
                group.ge = seg
                end_group(group)
                group = None
            else:
                _stray(ic, None, seg)
        elif tag == "TA1" and group is None:
            ic.ta1_segments.append(seg)
        elif group is not None and group.gs is not None:
            _stray(ic, group, seg)
        else:
            stray_outside.append(seg)
        if out:
            yield from out
            out.clear()
    close_txn(None)
    if group is not None:
        if group.gs is not None:
            close_group(None)
        else:
            end_group(group)
    yield from out
    out.clear()

    if stray_outside:
        s = stray_outside[0]
        ic.findings.append(
            Finding(
                "x12.segment_outside_group",
                f"{len(stray_outside)} segment(s) sit outside any functional group (first: "
                f"{s.tag} at segment {s.index} of the file); they were ignored.",
                where=ic.where,
                action="Ask the partner to fix their envelope (every segment belongs in GS…GE).",
                severity="note",
                ta1_note="024",
            )
        )
    _check_interchange(ic)


def _stray(ic: InterchangeWork, group: GroupWork | None, seg: Segment) -> None:
    target = group.findings if group is not None else ic.findings
    target.append(
        Finding(
            "x12.segment_outside_transaction",
            f"Segment {seg.tag} at segment {seg.index} of the file sits outside any "
            "transaction set (between SE and ST); it was ignored.",
            where=group.where if group is not None else ic.where,
            action="Ask the partner to fix their envelope.",
            severity="note",
        )
    )


def _check_interchange(ic: InterchangeWork) -> None:
    isa = ic.raw.isa
    iea = ic.raw.iea
    ctrl = isa.el(13)
    if any(g.gs is None for g in ic.groups):
        ic.findings.append(
            Finding(
                "x12.gs_missing",
                f"Interchange {ctrl} has transaction sets outside any functional group "
                "(ST without a GS header).",
                where=ic.where,
                action="Nothing in this interchange was used. " + RESEND,
                ta1_note="024",
            )
        )
    if iea is None:
        last = ic.raw.last
        tail = f"after segment {last.index} ({last.tag})" if last else "right after the ISA"
        ic.findings.append(
            Finding(
                "x12.iea_missing",
                f"Interchange {ctrl} has no IEA trailer: it stops {tail}. The file is "
                "probably truncated.",
                where=ic.where,
                action="Nothing in this interchange was used. " + RESEND,
                ta1_note="023",
            )
        )
        return
    if not _same_control(iea.el(2), ctrl):
        ic.findings.append(
            Finding(
                "x12.iea_control_mismatch",
                f"IEA02 control number {iea.el(2)!r} does not match ISA13 {ctrl!r} "
                f"(IEA at segment {iea.index} of the file).",
                where=f"{ic.where} / IEA02",
                action="Nothing in this interchange was used. " + RESEND,
                ta1_note="001",
            )
        )
    n_groups = sum(1 for g in ic.groups if g.gs is not None)
    if not _count_ok(iea.el(1), n_groups):
        ic.findings.append(
            Finding(
                "x12.iea_count_mismatch",
                f"IEA01 says {iea.el(1)!r} functional groups but interchange {ctrl} has "
                f"{n_groups} (IEA at segment {iea.index} of the file). A group may have been lost.",
                where=f"{ic.where} / IEA01",
                action="Nothing in this interchange was used. "
                "Ask the partner to resend with a correct count.",
                ta1_note="021",
            )
        )


def _check_group(ic: InterchangeWork, g: GroupWork) -> None:
    if g.gs is None:
        return
    gs = g.gs
    if len(gs.elements) < 9 or not gs.el(1) or not gs.el(8):
        g.findings.append(
            Finding(
                "x12.gs_malformed",
                f"The GS header at segment {gs.index} of the file has "
                f"{len(gs.elements) - 1} elements; GS01 (functional id), GS06 (control number) "
                "and GS08 (version) are required.",
                where=g.where,
                action=RESEND,
                ak9_code="6",
            )
        )
    elif ascii_int(gs.el(6), 9) is None:
        g.findings.append(
            Finding(
                "x12.gs_malformed",
                f"GS06 group control number {gs.el(6)!r} is not a number.",
                where=f"{g.where} / GS06",
                action=RESEND,
                ak9_code="6",
            )
        )
    date = gs.el(4)
    if date and not re.fullmatch(r"[0-9]{6}|[0-9]{8}", date, re.ASCII):
        g.findings.append(
            Finding(
                "x12.gs_invalid_value",
                f"GS04 date {date!r} is not CCYYMMDD.",
                where=f"{g.where} / GS04",
                action="Noted; ask the partner to fix their GS.",
                severity="note",
            )
        )
    time = gs.el(5)
    if time and not is_time(time):
        g.findings.append(
            Finding(
                "x12.gs_invalid_value",
                f"GS05 time {time!r} is not HHMM[SS].",
                where=f"{g.where} / GS05",
                action="Noted; ask the partner to fix their GS.",
                severity="note",
            )
        )
    ge = g.ge
    if ge is None:
        return
    if not _same_control(ge.el(2), gs.el(6)):
        g.findings.append(
            Finding(
                "x12.ge_control_mismatch",
                f"GE02 control number {ge.el(2)!r} does not match GS06 {gs.el(6)!r} "
                f"(GE at segment {ge.index} of the file).",
                where=f"{g.where} / GE02",
                action="Nothing in this group was used. " + RESEND,
                ak9_code="4",
            )
        )
    if not _count_ok(ge.el(1), g.n_txns):
        g.findings.append(
            Finding(
                "x12.ge_count_mismatch",
                f"GE01 says {ge.el(1)!r} transaction sets but group {gs.el(6)} has "
                f"{g.n_txns} (GE at segment {ge.index} of the file). A set may have been lost.",
                where=f"{g.where} / GE01",
                action="Nothing in this group was used. "
                "Ask the partner to resend with a correct count.",
                ak9_code="5",
            )
        )


def functional_id_ok(g: GroupWork, set_id: str) -> bool:
    """False when an 850, 860 or 997 sits in a group of another kind (see below)."""
    expected = FUNCTIONAL_ID.get(set_id) if set_id in ("850", "860", "997") else None
    return g.gs is None or expected is None or g.el(1) == expected


def _check_functional_id(g: GroupWork, t: TxnWork) -> None:
    """A set OrderFlow reads (850, 997) must sit in its own kind of group; other sets are
    rejected as not supported anyway."""
    expected = FUNCTIONAL_ID.get(t.set_id) if t.set_id in ("850", "860", "997") else None
    if g.gs is None or expected is None or g.el(1) == expected:
        return
    t.findings.append(
        Finding(
            "x12.functional_group_mismatch",
            f"Transaction set {t.set_id} (ST {t.control}) sits in a functional group whose GS01 "
            f"is {g.el(1)!r}; a {t.set_id} belongs in a {expected!r} group. It was not used: "
            "a mislabelled group suggests the file was built for another purpose or partner.",
            where=t.where(t.st, 1),
            action=f"Ask the partner to send their {t.set_id}s in GS01 {expected} groups. "
            + RESEND,
            ak5_code="6",
        )
    )


def _check_txn(t: TxnWork, seen: set[str]) -> None:
    st = t.st
    if not re.fullmatch(r"[0-9]{3}", t.set_id, re.ASCII):
        t.findings.append(
            Finding(
                "x12.st_malformed",
                f"ST01 transaction set identifier {t.set_id!r} is not a 3-digit code.",
                where=t.where(st, 1),
                action=RESEND,
                ak5_code="6",
            )
        )
    if not t.control:
        t.findings.append(
            Finding(
                "x12.st_malformed",
                "ST02 transaction set control number is empty.",
                where=t.where(st, 2),
                action=RESEND,
                ak5_code="7",
            )
        )
    elif t.control in seen:
        t.findings.append(
            Finding(
                "x12.duplicate_transaction_control",
                f"ST02 {t.control} is used by more than one transaction set in this group.",
                where=t.where(st, 2),
                action="The repeated set was not used. " + RESEND,
                ak5_code="23",
            )
        )
    seen.add(t.control)
    se = t.se
    if se is not None:
        if not _same_control(se.el(2), t.control):
            t.findings.append(
                Finding(
                    "x12.st_se_control_mismatch",
                    f"SE02 control number {se.el(2)!r} does not match ST02 {t.control!r} "
                    f"(SE at segment {se.index} of the file).",
                    where=t.where(se, 2),
                    action=RESEND,
                    ak5_code="3",
                )
            )
        if not _count_ok(se.el(1), t.count):
            t.findings.append(
                Finding(
                    "x12.se_count_mismatch",
                    f"SE01 says {se.el(1)!r} segments but transaction set {t.control} has "
                    f"{t.count} (SE at segment {se.index} of the file). A segment may be "
                    "missing, or two segments ran together (a missing terminator).",
                    where=t.where(se, 1),
                    action="Ask the partner to resend with a correct count.",
                    ak5_code="4",
                )
            )
    for seg in t.bad_tags:
        t.findings.append(
            Finding(
                "x12.segment_unrecognized",
                f"{seg.tag[:20]!r} at segment {seg.index} of the file is not a segment id; "
                "it was ignored.",
                where=t.where(seg),
                action="Ask the partner to check their translator's output.",
                severity="note",
                segment_note=SegmentNote(
                    segment_id=re.sub(r"[^A-Z0-9]", "", seg.tag.upper())[:3] or "UNK",
                    position=t.position(seg),
                    code="1",
                ),
            )
        )


def envelope_findings(text: str) -> list[Finding]:
    """Every finding our reader and envelope checks make of ``text`` (e.g. a document we
    built): file level, interchanges, groups and sets. Empty means it reads back clean."""
    from .reader import read_interchanges

    raws, found = read_interchanges(text)
    found = list(found)
    for raw in raws:
        work = check_envelopes(raw)
        found += work.findings
        for g in work.groups:
            found += g.findings
            for t in g.txns:
                found += t.findings
    return found
