"""Writing X12 with a partner's delimiters: segments, ST/SE sets, GS/GE groups, ISA/IEA.

Used for the 997 and TA1 now, and meant for the outbound 855/856/810 later. X12 has no
escape character, so a delimiter inside a value is replaced by a space (it would otherwise
split the element); trailing empty elements are dropped, as the standard requires.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import chain

from .results import Delimiters

SegmentValues = list[str]

_FALLBACK_REPETITION = "^|!{}"


MAX_CONTROL_NUMBER = 999_999_999
"""ISA13 and GS06 are 9 digits: 1 … 999,999,999 (0 is not a control number)."""


def check_control_number(n: int) -> int:
    """``n`` when it is a usable ISA13/GS06; ValueError otherwise (never wrapped silently:
    the caller's sequence decides what follows 999,999,999)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONTROL_NUMBER:
        raise ValueError(f"control number {n!r} is not between 1 and {MAX_CONTROL_NUMBER:,}")
    return n


def check_delimiters(d: Delimiters) -> Delimiters:
    """``d`` when an interchange written with it reads back unambiguously: one character
    each (the terminator may be a line end), all different, none a letter, digit or space.
    ValueError otherwise."""
    seps = [d.element, d.component, d.segment] + ([d.repetition] if d.repetition else [])
    singles = [d.element, d.component] + ([d.repetition] if d.repetition else [])
    if (
        any(len(c) != 1 for c in singles)
        or not (len(d.segment) == 1 or d.segment == "\r\n")
        or len(set(seps)) != len(seps)
        or any(c.isalnum() or c in " \t" for c in seps)
        or any(c in "\r\n" for c in singles)
        or any(c not in "\r\n" for c in d.suffix)
    ):
        raise ValueError(f"delimiters {d!r} cannot be written unambiguously")
    return d


_UNWRITABLE: dict[str, re.Pattern[str]] = {}  # delimiters → their and the controls' class


def _unwritable(forbidden: str) -> re.Pattern[str]:
    """The class of ``forbidden``'s characters and the control characters (one regex: a
    997 renders two segments per set of the group)."""
    pattern = _UNWRITABLE.get(forbidden)
    if pattern is None:
        pattern = re.compile(f"[{''.join(re.escape(c) for c in forbidden)}\\x00-\\x1f\\x7f]")
        if len(_UNWRITABLE) < 64:
            _UNWRITABLE[forbidden] = pattern
    return pattern


def _clean(value: str, forbidden: str) -> str:
    """``value`` with delimiters and control characters replaced by spaces."""
    return _unwritable(forbidden).sub(" ", value)


def render_segment(values: SegmentValues, d: Delimiters) -> str:
    """One segment with its terminator (and the partner's usual line end after it)."""
    e = d.element
    others = d.component + (d.repetition or "") + d.segment + "\r\n"
    out = [str(v) for v in values]
    text = e.join(out)
    # the usual case in one search: no value holds a delimiter or a control character (the
    # element separators in ``text`` are then only the ones joining the values)
    if text.count(e) != len(out) - 1 or _unwritable(others).search(text) is not None:
        out = [_clean(v, e + others) for v in out]
        text = e.join(out)
    if text.endswith(e):  # trailing empty elements are left out (never the segment id)
        while len(out) > 1 and out[-1] == "":
            out.pop()
        text = e.join(out)
    return text + d.segment + d.suffix


def render(segments: Iterable[SegmentValues], d: Delimiters) -> str:
    """The segments, rendered one at a time into one string (a 997 for a group of 100,000s
    of sets is written without a list of every rendered segment beside it)."""
    out = io.StringIO()
    write = out.write
    same: dict[tuple, str] = {}  # a tuple is a constant segment (e.g. AK5*A, once per set)
    # an AK2 of an 850 (one per set of a 997) whose ST02 is ASCII letters and digits holds
    # no delimiter and nothing to clean when no delimiter is a letter or digit: written as is
    plain = not any(c.isalnum() for c in d.element + d.component + (d.repetition or ""))
    ak2 = f"AK2{d.element}850{d.element}" if plain and not d.segment.isalnum() else None
    end = d.segment + d.suffix
    for s in segments:
        if type(s) is tuple:
            text = same.get(s)
            if text is None:
                text = same[s] = render_segment(s, d)
            write(text)
        elif ak2 is not None and len(s) == 3 and s[1] == "850" and s[0] == "AK2":
            c = s[2]
            if type(c) is str and c.isascii() and c.isalnum():
                write(ak2 + c + end)
            else:
                write(render_segment(s, d))
        else:
            write(render_segment(s, d))
    return out.getvalue()


def transaction_set(set_id: str, control: str, body: list[SegmentValues]) -> list[SegmentValues]:
    """ST … SE around ``body``; SE01 counts ST and SE too."""
    return [["ST", set_id, control], *body, ["SE", str(len(body) + 2), control]]


def writable(d: Delimiters, version: str) -> Delimiters:
    """Delimiters fit for writing an interchange of ``version``: a repetition separator
    from 00402 on (ISA11), none before (ISA11 is then the standards id ``U``)."""
    if version >= "00402":
        if d.repetition:
            return d
        used = d.element + d.component + d.segment
        rep = next((c for c in _FALLBACK_REPETITION if c not in used), None)
        return d.model_copy(update={"repetition": rep})
    return d.model_copy(update={"repetition": None}) if d.repetition else d


def interchange(
    groups: Sequence[Iterable[SegmentValues]],
    *,
    d: Delimiters,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    control_number: int,
    now: datetime,
    version: str = "00401",
    usage: str = "P",
    ack_requested: bool = False,
    extra: list[SegmentValues] | None = None,
) -> str:
    """A whole interchange: ISA, ``extra`` segments (e.g. TA1), each group, IEA.

    ``sender``/``receiver`` are (qualifier, id) pairs; ids are padded to 15 characters.
    """
    d = writable(d, version)
    ctrl = f"{check_control_number(control_number):09d}"
    check_delimiters(d)
    forbidden = d.element + d.component + (d.repetition or "") + d.segment + "\r\n"
    pad = lambda v, n: _clean(v, forbidden)[:n].ljust(n)  # noqa: E731
    isa = d.element.join(
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            pad(sender[0], 2),
            pad(sender[1], 15),
            pad(receiver[0], 2),
            pad(receiver[1], 15),
            now.strftime("%y%m%d"),
            now.strftime("%H%M"),
            d.repetition or "U",
            version,
            ctrl,
            "1" if ack_requested else "0",
            usage if usage in ("P", "T", "I") else "P",
            d.component,
        ]
    )
    body = chain(extra or (), *groups, [["IEA", str(len(groups)), ctrl]])
    return isa + d.segment + d.suffix + render(body, d)


def functional_group(
    functional_id: str,
    *,
    sender: str,
    receiver: str,
    control_number: int,
    now: datetime,
    version: str,
    agency: str = "X",
    sets: list[list[SegmentValues]],
) -> list[SegmentValues]:
    """GS … GE around ``sets`` (each already wrapped by :func:`transaction_set`).

    GS04 is CCYYMMDD, or YYMMDD for versions before 004010 where the date had six digits.
    """
    check_control_number(control_number)
    date = now.strftime("%y%m%d") if version[:6] < "004010" else now.strftime("%Y%m%d")
    gs = ["GS", functional_id, sender, receiver, date, now.strftime("%H%M")]
    gs += [str(control_number), agency or "X", version]
    return [gs, *[s for st in sets for s in st], ["GE", str(len(sets)), str(control_number)]]
