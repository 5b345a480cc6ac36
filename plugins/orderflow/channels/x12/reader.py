"""Reading X12 text: decoding, delimiters from the ISA, segments, interchange boundaries.

Real files bend the standard, so the reader is lenient where the meaning is still clear
and says so (a finding), and strict where guessing could invent or lose data:

- Delimiters come from each ISA: element separator = the character after ``ISA``,
  component separator = ISA16, segment terminator = the character after ISA16. A line end
  there means line ends terminate segments. Spaces between ISA16 and a line end are padding.
- When the ISA is not the standard 106 characters (mis-padded ISA06/ISA08, found in real
  files), the fields are found by counting element separators instead; the interchange is
  read, and the deviation is noted (TA1 "accepted with errors").
- When the terminator is not a line end, every CR/LF is removed: that undoes files
  hard-wrapped at 80 columns and indentation between segments alike.
- The repetition separator is ISA11 for ISA12 ≥ 00402 when ISA11 is not alphanumeric.
- Bytes are decoded as UTF-8 (BOM stripped), UTF-16 when it has a BOM, else latin-1, so a
  multi-byte terminator (e.g. U+2026) is one character and nothing ever fails to decode.

The text is scanned once, segment by segment (``str.find`` from a cursor), so time is
linear in the file size.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .elements import ascii_int, is_time, x12_date
from .findings import RESEND, Finding
from .results import Delimiters

ISA_LENGTH = 106
_SEP_POSITIONS = (3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103)
_FIELD_LENGTHS = {1: 2, 2: 10, 3: 2, 4: 10, 5: 2, 6: 15, 7: 2, 8: 15, 9: 6, 10: 4, 11: 1}
_FIELD_LENGTHS |= {12: 5, 13: 9, 14: 1, 15: 1}
# TA105 note codes for a bad value in ISA01..ISA16.
_TA1_NOTE_FOR_FIELD = {
    1: "010",
    2: "011",
    3: "012",
    4: "013",
    5: "005",
    6: "006",
    7: "007",
    8: "008",
    9: "014",
    10: "015",
    11: "016",
    12: "017",
    13: "018",
    14: "019",
    15: "020",
    16: "027",
}
_ISA_FIELD_NAMES = {
    1: "authorization qualifier",
    2: "authorization information",
    3: "security qualifier",
    4: "security information",
    5: "sender qualifier",
    6: "sender id",
    7: "receiver qualifier",
    8: "receiver id",
    9: "date",
    10: "time",
    11: "standards id / repetition separator",
    12: "version",
    13: "control number",
    14: "acknowledgment requested",
    15: "usage indicator",
}
_MAX_ISA_SPAN = 400  # characters scanned for a (mis-padded, wrapped) ISA
_BETWEEN = " \t\r\n\x00\x1a\ufeff\f\v"  # what may sit between interchanges
_STRIP = " \t\r\n\f\v"
_LINE_END = ("\r", "\n")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_CONTENT = re.compile(rb"[^ \t\r\n\x00\x1a]")
_VERSION = re.compile(r"^00[2-9][0-9][0-9]$", re.ASCII)


@dataclass(slots=True)
class Segment:
    """One segment: ``elements[0]`` is the tag; ``index`` is its 1-based position in the file."""

    tag: str
    elements: list[str]
    index: int

    def el(self, n: int) -> str:
        """Element ``n`` (1-based) with surrounding spaces removed, ``""`` when absent."""
        return self.elements[n].strip() if n < len(self.elements) else ""


class FastSet:
    """A whole 850 set read by the fast path (``fast850``) in place of its segments: its
    order (a ``fast850.LightOrder``), the segments it spans, its ST's index in the file,
    ST02 and SE01. ``result`` is the set's ``TransactionResult`` (built when first asked)."""

    __slots__ = ("_result", "control", "count", "order", "se01", "st_index")
    tag = ""  # never a segment's tag: the walk tells it by its type

    def __init__(self, order: object, count: int, st_index: int, control: str, se01: str):
        self.order, self.count, self.st_index = order, count, st_index
        self.control, self.se01 = control, se01
        self._result = None

    @property
    def result(self):  # type: ignore[no-untyped-def]
        if self._result is None:
            self._result = self.order.set_result(self)  # type: ignore[attr-defined]
        return self._result

    @property
    def se(self) -> Segment:
        return Segment("SE", ["SE", self.se01, self.control], self.st_index + self.count - 1)


@dataclass(slots=True)
class IsaHeader:
    elements: list[str]  # [ "ISA", ISA01 .. ISA16 ], values as sent (padding kept)
    delimiters: Delimiters
    start: int  # offset of "ISA" in the text
    end: int  # offset just after the terminator (and its line end)
    findings: list[Finding] = field(default_factory=list)
    fatal: Finding | None = None  # fields readable, delimiters unusable: TA1 R, body unread

    def el(self, n: int) -> str:
        return self.elements[n].strip()


@dataclass(slots=True)
class RawInterchange:
    isa: IsaHeader
    isa_index: int
    segments: list[Segment]  # between ISA and IEA, exclusive (an iterator when streamed)
    iea: Segment | None
    findings: list[Finding] = field(default_factory=list)
    last: Segment | None = None  # the last segment read before the IEA
    #: (regex, hook) set by the envelope walk to read well-formed 850 sets whole: at an
    #: ``ST*850`` the regex is matched at the segment's offset and ``hook(match, index)``
    #: returns a :class:`FastSet` (the set's segments are then skipped) or None (read as usual)
    fast: tuple | None = None


@dataclass(slots=True)
class Decoded:
    text: str | None
    encoding: str | None
    finding: Finding | None = None


# ------------------------------------------------------------------------------ decoding
def decode(data: bytes) -> Decoded:
    """Bytes → text. UTF-8 (BOM stripped) or UTF-16 with a BOM, else latin-1; never raises."""
    if _CONTENT.search(data) is None:  # (a search: ``strip`` would copy a 32 MB file)
        return Decoded(
            None,
            None,
            Finding(
                "x12.empty",
                "The file is empty (or only whitespace): there is no interchange to read.",
                where="file",
                action="Check the transfer that delivered it; ask the partner to resend.",
            ),
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return Decoded(data.decode("utf-16"), "utf-16")
        except UnicodeDecodeError:
            pass
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        return Decoded(data.decode("latin-1"), "latin-1")


def _control_share(sample: str) -> float:
    if not sample:
        return 0.0
    bad = sum(1 for c in sample if ord(c) < 32 and c not in "\t\r\n\x15\x1c\x1d\x1e\x1f\x07")
    return bad / len(sample)


def not_x12(text: str) -> Finding | None:
    """A finding when the text does not start with an ISA (after BOM and whitespace)."""
    lead = text.lstrip(_BETWEEN)
    if lead[:8].replace("\r", "").replace("\n", "").startswith("ISA"):
        return None
    sample = lead[:2048]
    if lead.startswith(("UNA", "UNB")):
        return Finding(
            "x12.edifact",
            "This is an EDIFACT interchange (it starts with UNA/UNB), not X12.",
            where="file start",
            action="Route it to the EDIFACT channel, or ask the partner for X12 850s.",
        )
    if "\x00" in sample or _control_share(sample) > 0.05:
        return Finding(
            "x12.not_text",
            "The file is binary, not text (it contains NUL or other control bytes), so it "
            "cannot be an X12 interchange.",
            where="file start",
            action="Check what was dropped in the EDI folder (a zip, PDF or image?); "
            "ask the partner to send the X12 file itself.",
        )
    preview = "".join(c if c.isprintable() else "?" for c in lead[:30])
    return Finding(
        "x12.no_isa",
        f"The file does not start with an ISA interchange header; it starts with {preview!r}.",
        where="file start",
        action="Check that this is an X12 file; " + RESEND,
    )


# ------------------------------------------------------------------------------ the ISA
def _strip_newlines(raw: str) -> tuple[str, list[int]]:
    """``raw`` without CR/LF, and for each kept character its index in ``raw``."""
    keep = [i for i, c in enumerate(raw) if c not in "\r\n"]
    return "".join(raw[i] for i in keep), keep


def _fixed_layout(w: str) -> bool:
    if len(w) < ISA_LENGTH:
        return False
    e = w[3]
    return all(w[p] == e for p in _SEP_POSITIONS) and w.count(e, 0, 105) == 16


def _counted(w: str) -> tuple[list[str], int] | None:
    """Find ISA01..ISA15 by counting element separators; returns elements and ISA16's index."""
    e = w[3]
    seps = [3]
    for _ in range(15):
        nxt = w.find(e, seps[-1] + 1)
        if nxt < 0:
            return None
        seps.append(nxt)
    i16 = seps[-1] + 1
    if i16 >= len(w):
        return None
    values = ["ISA"] + [w[seps[k] + 1 : seps[k + 1]] for k in range(15)] + [w[i16]]
    return values, i16


def read_isa(text: str, pos: int, ordinal: int) -> IsaHeader | Finding:
    """Read the ISA that starts at ``pos``: its fields, the delimiters, where it ends."""
    raw = text[pos : pos + _MAX_ISA_SPAN]
    clean, keep = _strip_newlines(raw)
    where = f"interchange {ordinal} (ISA)"
    if len(clean) < 4:
        return _isa_error(where, "the file ends inside the ISA header")
    e = clean[3]
    if e.isalnum() or e in _STRIP:
        return _isa_error(where, f"the element separator after 'ISA' is {e!r}", note="026")

    findings: list[Finding] = []
    window, mapping = raw, None  # mapping: window index → raw index, when unwrapped
    if _fixed_layout(raw):
        values = [*raw[:103].split(e), raw[104]]
        i16 = 104
    elif ("\r" in raw[:ISA_LENGTH] or "\n" in raw[:ISA_LENGTH]) and _fixed_layout(clean):
        window, mapping = clean, keep
        values = [*clean[:103].split(e), clean[104]]
        i16 = 104
    else:
        counted = _counted(raw)
        nl_inside = counted is not None and re.search(r"[\r\n]", raw[: counted[1]]) is not None
        if counted is None or nl_inside:
            counted = _counted(clean)
            window, mapping = clean, keep
        if counted is None:
            return _isa_error(
                where, "it does not have the 16 elements an ISA needs (truncated or garbled)"
            )
        values, i16 = counted
        # A terminator then "GS*" inside the counted span: the ISA lost its last elements.
        gs = re.search(f"(?<![A-Za-z0-9 {re.escape(e)}])GS{re.escape(e)}", window[: i16 + 3])
        if gs is not None and gs.start() > 3:  # the separators counted run into the GS
            k = window.count(e, 0, gs.start() - 1)
            return _isa_error(
                where,
                f"it has only {k} of its 16 elements before the GS segment starts "
                f"(ISA{k + 1:02d}–ISA16 are missing, so the component separator and the "
                "segment terminator are unknown)",
            )
        findings += _padding_findings(values, where)

    term = _terminator(window, i16 + 1)
    end_w = i16 + 1
    fatal: Finding | None = None
    segment, suffix = "~", ""
    if term is None:
        after = window[i16 + 1 : i16 + 2]
        fatal = _isa_error(
            where, f"no usable segment terminator after ISA16 (found {after!r})", note="004"
        )
    else:
        segment, suffix, end_w = term
    comp = values[16]
    version = values[12].strip()
    rep = values[11]
    repetition = None
    if fatal is not None:
        pass
    elif segment == e:
        fatal = _isa_error(
            where,
            f"the segment terminator and the element separator are both {e!r}, so segments "
            "and elements cannot be told apart",
            note="004",
        )
    elif comp.isalnum() or comp in (e, segment) or comp in _STRIP:
        what = (
            "a letter or digit"
            if comp.isalnum()
            else "a space"
            if comp in _STRIP
            else ("the element separator" if comp == e else "the segment terminator")
        )
        fatal = _isa_error(where, f"ISA16 component separator {comp!r} is {what}", note="027")
    elif version >= "00402":
        # ISA11 is the repetition separator from 00402 on. 00501 and later must send one;
        # 00402–00403 files still often carry the old standards id "U": tolerated there.
        if rep.isalnum() or rep in _STRIP:
            if version >= "00501":
                fatal = _isa_error(
                    where,
                    f"ISA11 is {rep!r}, but in version {version} ISA11 is the repetition "
                    "separator: a character that is not a letter, digit or space",
                    note="016",
                )
        elif rep in (e, comp, segment):
            fatal = _isa_error(
                where,
                f"ISA11 repetition separator {rep!r} is also used as another delimiter",
                note="016",
            )
        else:
            repetition = rep
    if fatal is not None:
        # The fields are known, so the partner gets a TA1 (R) - written with standard
        # delimiters, since theirs cannot be written unambiguously.
        header = IsaHeader(values, Delimiters(), pos, pos + len(raw), findings, fatal=fatal)
        problem = _check_isa_values(header, where)
        return problem if problem is not None else header
    end = (mapping[end_w - 1] + 1 if end_w > 0 else 0) if mapping is not None else end_w
    delimiters = Delimiters(
        element=e, component=comp, repetition=repetition, segment=segment, suffix=suffix
    )
    header = IsaHeader(values, delimiters, pos, pos + end, findings)
    problem = _check_isa_values(header, where)
    if isinstance(problem, Finding) and problem.severity == "reject":
        return problem
    return header


def _terminator(w: str, t: int) -> tuple[str, str, int] | None:
    """(terminator, suffix, index after them) for the character(s) at ``w[t]``."""
    if t >= len(w):
        return None
    c = w[t]
    j = t
    while c in " \t":  # padding before a line end
        j += 1
        if j >= len(w):
            return None
        c = w[j]
        if c not in " \t\r\n":
            return None  # a space as terminator: not supported, data has spaces
    if c in "\r\n":
        seg = "\r\n" if w.startswith("\r\n", j) else c
        return seg, "", j + len(seg)
    if c.isalnum():
        return None
    m = _NEWLINE.match(w, t + 1)
    suffix = m.group(0) if m else ""
    return c, suffix, t + 1 + len(suffix)


def _isa_error(where: str, what: str, note: str | None = None) -> Finding:
    return Finding(
        "x12.isa_malformed",
        f"The ISA interchange header cannot be read: {what}.",
        where=where,
        action="Nothing in this interchange was read. " + RESEND,
        ta1_note=note,
    )


def _padding_findings(values: list[str], where: str) -> list[Finding]:
    bad = [
        f"ISA{k:02d} ({_ISA_FIELD_NAMES[k]}) {values[k]!r} has {len(values[k])} characters, "
        f"the standard fixes {n}"
        for k, n in _FIELD_LENGTHS.items()
        if len(values[k]) != n
    ]
    if not bad:
        return []
    first = next(k for k, n in _FIELD_LENGTHS.items() if len(values[k]) != n)
    return [
        Finding(
            "x12.isa_padding",
            "The ISA header is not the fixed 106 characters: "
            + "; ".join(bad)
            + ". It was read by counting separators.",
            where=where,
            action="The interchange was accepted; ask the partner to fix the padding of their "
            "ISA (their translator's fixed-length settings).",
            severity="note",
            ta1_note=_TA1_NOTE_FOR_FIELD[first],
        )
    ]


def _check_isa_values(h: IsaHeader, where: str) -> Finding | None:
    """Content checks on ISA fields; rejecting ones are returned, notes are appended."""
    ctrl = h.el(13)
    if ascii_int(ctrl, 9) is None:
        return Finding(
            "x12.isa_malformed",
            f"ISA13 interchange control number {h.elements[13]!r} is not a number, so the "
            "interchange cannot be tracked or checked for duplicates.",
            where=where,
            action=RESEND,
            ta1_note="018",
        )
    version = h.el(12)
    if not _VERSION.match(version):
        h.findings.append(
            Finding(
                "x12.isa_version_unknown",
                f"ISA12 version {version!r} is not an X12 interchange version (00200…00801); "
                "the interchange was read with the usual rules.",
                where=where,
                action="Ask the partner to send a valid ISA12 (e.g. 00401 or 00501).",
                severity="note",
                ta1_note="017",
            )
        )
    checks = (
        (9, len(h.el(9)) == 6 and x12_date(h.el(9), "20") is not None, "a YYMMDD date"),
        (10, len(h.el(10)) == 4 and is_time(h.el(10)), "an HHMM time"),
        (14, h.el(14) in ("0", "1"), "0 or 1"),
        (15, h.el(15) in ("P", "T", "I"), "P, T or I"),
    )
    for k, ok, expected in checks:
        if not ok:
            h.findings.append(
                Finding(
                    "x12.isa_invalid_value",
                    f"ISA{k:02d} ({_ISA_FIELD_NAMES[k]}) is {h.elements[k]!r}, expected "
                    f"{expected}.",
                    where=where,
                    action="The interchange was accepted; ask the partner to fix their ISA.",
                    severity="note",
                    ta1_note=_TA1_NOTE_FOR_FIELD[k],
                )
            )
    return None


# ------------------------------------------------------------------------------ segments
def read_interchanges(text: str) -> tuple[list[RawInterchange], list[Finding]]:
    """Split the text into interchanges (ISA … IEA) of segments. File-level findings second.
    Holds every segment of the file: for documents we build and tests. ``parse`` streams
    with :func:`iter_interchanges` instead."""
    findings: list[Finding] = []
    out = []
    for ic in iter_interchanges(text, findings):
        ic.segments = list(ic.segments)
        out.append(ic)
    return out, findings


def iter_interchanges(text: str, findings: list[Finding]) -> Iterator[RawInterchange]:
    """The interchanges of ``text``, one at a time; each one's ``segments`` is an iterator
    that reads the body lazily (consume it before asking for the next interchange), so only
    the segments in use are in memory. File-level findings are appended to ``findings``."""
    n = len(text)
    pos = _skip(text, 0)
    index = 0
    count = 0
    last_control = ""
    while pos < n:
        head = text[pos : pos + 8].replace("\r", "").replace("\n", "")
        if not head.startswith("ISA"):
            preview = "".join(c if c.isprintable() else "?" for c in text[pos : pos + 30])
            after = f"after interchange {last_control}" if count else ""
            findings.append(
                Finding(
                    "x12.trailing_data",
                    f"Unexpected data {after} at character {pos}: {preview!r} is not an ISA "
                    "header, so it was not read.",
                    where=f"character {pos}",
                    action="Check whether an interchange is missing or cut; " + RESEND,
                )
            )
            return
        isa = read_isa(text, pos, count + 1)
        if isinstance(isa, Finding):
            findings.append(isa)
            return
        index += 1
        count += 1
        last_control = isa.el(13)
        ic = RawInterchange(isa=isa, isa_index=index, segments=[], iea=None)
        if isa.fatal is not None:
            yield ic  # answered by a TA1; nothing after it can be read
            return
        state = [0, index]
        body = _iter_body(text, ic, index, state)
        ic.segments = body  # type: ignore[assignment]
        yield ic
        for _ in body:  # whatever the consumer left unread
            pass
        pos, index = state
        pos = _skip(text, pos)


_FIRST_BLOCK = 1 << 12  # characters split at once (C speed), then walked segment by segment:
_MAX_BLOCK = 1 << 20  # the block doubles up to this, so a small interchange costs its size


def _iter_body(text: str, ic: RawInterchange, index: int, state: list[int]) -> Iterator[Segment]:
    """Segments after the ISA up to the IEA (kept in ``ic.iea``, not yielded); sets
    ``state`` to [next offset, last segment index] when done.

    The text is split a block at a time (``str.split`` on the terminator; the block ends at
    a terminator and doubles in size up to ``_MAX_BLOCK``), and offsets are only worked out
    where the interchange ends (:func:`_piece_offset`)."""
    d = ic.isa.delimiters
    e = d.element
    n = len(text)
    cur = ic.isa.end
    term = d.segment
    tl = len(term)
    newline = d.newline_terminated
    size = _FIRST_BLOCK
    last: Segment | None = None
    fast = None if newline else ic.fast  # read at the first segment: set by then
    if fast is not None:
        fast_re, fast_hook = fast
    try:
        while cur < n:
            if newline:
                m = _NEWLINE.search(text, min(cur + size, n))
                if m is None:
                    stop, after = n, n
                else:
                    stop, after = m.start(), m.end()
                    if text[stop] == "\n" and stop > cur and text[stop - 1] == "\r":
                        stop -= 1  # the block never ends between the CR and LF of a CRLF
                block = text[cur:stop]
                if "\r" in block:
                    block = block.replace("\r\n", "\n").replace("\r", "\n")
                pieces = block.split("\n")
                crlf = False
            else:
                stop = text.find(term, min(cur + size, n))
                if stop < 0:
                    stop, after = n, n
                else:
                    after = stop + tl
                block = text[cur:stop]
                pieces = block.split(term)
                crlf = "\n" in block or "\r" in block
            if size < _MAX_BLOCK:
                size <<= 1
            hint = cur  # offsets are found only for ST pieces, searching on from here
            jump = 0
            numbered = enumerate(pieces)
            for k, raw in numbered:
                # stripped first: a line end after the terminator is gone then, so the
                # (rare) line ends inside a segment are the only ones left to remove
                s = raw.strip(_STRIP)
                if crlf and ("\n" in s or "\r" in s):
                    s = s.replace("\r", "").replace("\n", "").strip(_STRIP)
                if not s:
                    continue
                elements = s.split(e)
                tag = elements[0]
                if tag == "IEA":
                    index += 1
                    ic.iea = Segment(tag, elements, index)
                    state[0] = min(_piece_offset(text, cur, k + 1, d), after)
                    state[1] = index
                    return
                if tag[:3] == "ISA" and len(s) > 3 and not s[3].isalnum():
                    # A new interchange began before this one's IEA (truncated or concatenated).
                    off = _piece_offset(text, cur, k, d)
                    lead = len(text[off : off + 400]) - len(text[off : off + 400].lstrip(_BETWEEN))
                    state[0], state[1] = off + lead, index
                    return
                if tag == "ST" and fast is not None and len(elements) > 1 and elements[1] == "850":
                    # where this piece starts: every terminator ends a piece, and no piece
                    # between ``hint`` and this one starts with this one's text (an earlier
                    # ST piece moved ``hint`` past itself)
                    at = cur if k == 0 else text.find(term + raw, hint - tl) + tl
                    hint = at + len(raw)
                    st_at = at + len(raw) - len(raw.lstrip("\r\n"))
                    exact = at >= cur and (text.startswith(term, hint) or hint == stop)
                    m = fast_re.match(text, st_at) if exact else None
                    got = fast_hook(m, index + 1) if m is not None else None
                    if got is not None:
                        index += got.count
                        last = got  # type: ignore[assignment]
                        yield got
                        # the sets right after it (line ends between them) are matched where
                        # they start, one after another, without splitting their segments
                        end = m.end()
                        while True:
                            at = end
                            while text[at : at + 1] in _LINE_END:
                                at += 1
                            m = fast_re.match(text, at)
                            got = fast_hook(m, index + 1) if m is not None else None
                            if got is None:
                                break
                            index += got.count
                            last = got  # type: ignore[assignment]
                            yield got
                            end = m.end()
                        jump = end  # read on (a new block) after the last set read whole
                        break
                index += 1
                last = Segment(tag, elements, index)
                yield last
            cur = jump or after
        state[0], state[1] = n, index
    finally:
        if last is not None:
            ic.last = last if type(last) is Segment else last.se  # type: ignore[attr-defined]


def _piece_offset(text: str, start: int, k: int, d: Delimiters) -> int:
    """The offset of the ``k``-th piece (0-based) of the text split at segment terminators
    from ``start`` (``len(text)`` when there are fewer terminators)."""
    pos, n = start, len(text)
    if d.newline_terminated:
        for _ in range(k):
            m = _NEWLINE.search(text, pos)
            if m is None:
                return n
            pos = m.end()
        return pos
    term = d.segment
    for _ in range(k):
        j = text.find(term, pos)
        if j < 0:
            return n
        pos = j + len(term)
    return pos


def _skip(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _BETWEEN:
        pos += 1
    return pos
