"""X12 data element definitions and the one place element values are checked and converted.

Every number the X12 channel reads goes through :func:`ascii_int` / :func:`count_value` /
:func:`decimal_value`: only ASCII digits count as digits (``"١٢"`` and ``"５"`` are not
numbers in X12, although Python's ``int()`` would read them), and a value's length is
checked against its element definition *before* it is converted, so no value can reach
``int()`` with thousands of digits (Python's int/str conversion limit) or ``Decimal`` with an
unbounded exponent.

:data:`SEGMENTS` holds the definitions (X12 004010–005010 dictionary: reference number,
type, minimum/maximum length, requirement, code list where OrderFlow depends on it) of the
envelope segments and of every 850 segment the mapper reads. :func:`check_segment` reports
each violation with its AK4 syntax error code (AK403):

=====  ==================================================
1      mandatory data element missing
4      data element too short
5      data element too long
6      invalid character in data element
7      invalid code value
8      invalid date
9      invalid time
=====  ==================================================

Types: ``AN`` string, ``ID`` code, ``N0``/``N2`` integer (implied decimals), ``R`` decimal
number, ``DT`` date (CCYYMMDD; YYMMDD before 004010), ``TM`` time (HHMM[SS[d..]]). For
numeric types the length counts digits only (not the sign or decimal point), as X12 says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_SIGNED_INT = re.compile(r"-?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)
_TIME = re.compile(r"([01][0-9]|2[0-3])[0-5][0-9]([0-5][0-9][0-9]{0,2})?", re.ASCII)
# C0 controls and DEL are in no X12 character set (NUL, BEL, ESC… inside a value are
# transmission garbage or an attack, never data).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CODE_CHARS = re.compile(r"[A-Za-z0-9 ]+", re.ASCII)

MAX_CONTROL_DIGITS = 9
"""The longest control number X12 has (ISA13, GS06/GE02: 9 digits; ST02/SE02: 4–9)."""


def ascii_int(value: str, max_digits: int) -> int | None:
    """``value`` as a non-negative integer when it is 1..``max_digits`` ASCII digits."""
    v = value.strip()
    if not v or len(v) > max_digits or _ASCII_DIGITS.fullmatch(v) is None:
        return None
    return int(v)


def count_value(value: str, max_digits: int = 10) -> int | None:
    """A count (SE01 1/10, GE01 1/6, IEA01 1/5, CTT01 1/6, AK9 counts): ASCII digits only,
    at most ``max_digits`` of them (leading zeros allowed beyond that, as they change
    nothing), else None."""
    v = value.strip().lstrip("0") or ("0" if value.strip() else "")
    if not v or len(v) > max_digits or _ASCII_DIGITS.fullmatch(v) is None:
        return None
    return int(v)


def same_control(a: str, b: str) -> bool:
    """Two control numbers are the same (leading zeros aside); digits only, bounded."""
    a, b = a.strip(), b.strip()
    if a == b:
        return True
    x, y = count_value(a, MAX_CONTROL_DIGITS), count_value(b, MAX_CONTROL_DIGITS)
    return x is not None and x == y


def decimal_value(value: str, max_digits: int = 15) -> Decimal | None:
    """An X12 R value (optional minus, digits, optional point) of at most ``max_digits``
    digits as a ``Decimal``; None when it is not one."""
    v = value.strip()
    if _DECIMAL.fullmatch(v) is None or sum(c.isdigit() for c in v) > max_digits:
        return None
    return Decimal(v)


def x12_date(value: str, century: str = "") -> date | None:
    """CCYYMMDD, or YYMMDD with ``century`` (DTM05) or a 50-year window; ASCII digits only."""
    v = value.strip()
    if _ASCII_DIGITS.fullmatch(v) is None:
        return None
    try:
        if len(v) == 8:
            return date(int(v[:4]), int(v[4:6]), int(v[6:]))
        if len(v) == 6:
            yy = int(v[:2])
            cc = ascii_int(century, 2)
            cc = cc if cc is not None else (20 if yy < 50 else 19)
            return date(cc * 100 + yy, int(v[2:4]), int(v[4:]))
    except ValueError:
        return None
    return None


def is_time(value: str) -> bool:
    return _TIME.fullmatch(value.strip()) is not None


# ------------------------------------------------------------------------------ definitions
@dataclass(frozen=True, slots=True)
class El:
    ref: str
    type: str  # AN, ID, N0, N2, R, DT, TM
    min: int
    max: int
    required: bool = False
    codes: frozenset[str] | None = None


def _e(ref: str, type_: str, mn: int, mx: int, req: str = "O", codes: str | None = None) -> El:
    return El(ref, type_, mn, mx, req == "M", frozenset(codes.split()) if codes else None)


_UOM = _e("355", "ID", 2, 2)
_ID_QUAL = _e("235", "ID", 2, 2)
_PROD_ID = _e("234", "AN", 1, 48)
_NAME = _e("93", "AN", 1, 60)
_FREE = _e("352", "AN", 1, 80)
_PRODUCT_PAIRS = (_ID_QUAL, _PROD_ID) * 10  # PO106/PO107 … PO124/PO125

SEGMENTS: dict[str, tuple[El | None, ...]] = {
    # envelopes (ISA is read by position in the reader)
    "GS": (
        _e("479", "ID", 2, 2, "M"),
        _e("142", "AN", 2, 15, "M"),
        _e("124", "AN", 2, 15, "M"),
        _e("373", "DT", 6, 8, "M"),
        _e("337", "TM", 4, 8, "M"),
        _e("28", "N0", 1, 9, "M"),
        _e("455", "ID", 1, 2, "M"),
        _e("480", "AN", 1, 12, "M"),
    ),
    "GE": (_e("97", "N0", 1, 6, "M"), _e("28", "N0", 1, 9, "M")),
    "IEA": (_e("I16", "N0", 1, 5, "M"), _e("I12", "N0", 9, 9, "M")),
    "ST": (_e("143", "ID", 3, 3, "M"), _e("329", "AN", 4, 9, "M"), _e("1705", "AN", 1, 35)),
    "SE": (_e("96", "N0", 1, 10, "M"), _e("329", "AN", 4, 9, "M")),
    # 850 header
    "BEG": (
        _e("353", "ID", 2, 2, "M"),
        _e("92", "ID", 2, 2, "M"),
        _e("324", "AN", 1, 22, "M"),
        _e("328", "AN", 1, 30),
        _e("373", "DT", 6, 8, "M"),
        _e("367", "AN", 1, 30),
        _e("587", "ID", 2, 2),
        _e("1019", "ID", 3, 3),
        _e("1166", "ID", 2, 2),
        _e("1232", "ID", 2, 2),
        _e("786", "ID", 2, 2),
        _e("640", "ID", 2, 2),
    ),
    "CUR": (_e("98", "ID", 2, 3, "M"), _e("100", "ID", 3, 3, "M")),
    "REF": (_e("128", "ID", 2, 3, "M"), _e("127", "AN", 1, 50), _e("352", "AN", 1, 80)),
    "PER": (
        _e("366", "ID", 2, 2, "M"),
        _NAME,
        _e("365", "ID", 2, 2),
        _e("364", "AN", 1, 256),
        _e("365", "ID", 2, 2),
        _e("364", "AN", 1, 256),
        _e("365", "ID", 2, 2),
        _e("364", "AN", 1, 256),
        _e("443", "AN", 1, 20),
    ),
    "DTM": (
        _e("374", "ID", 3, 3, "M"),
        _e("373", "DT", 6, 8),
        _e("337", "TM", 4, 8),
        _e("623", "ID", 2, 2),
        _e("1250", "ID", 2, 3),
        _e("1251", "AN", 1, 35),
    ),
    "TD5": (
        _e("133", "ID", 1, 2),
        _e("66", "ID", 1, 2),
        _e("67", "AN", 2, 80),
        _e("91", "ID", 1, 2),
        _e("387", "AN", 1, 35),
        _e("368", "ID", 2, 2),
        _e("309", "ID", 1, 2),
        _e("310", "AN", 1, 30),
        _e("731", "ID", 1, 2),
        _e("732", "ID", 2, 2),
        _e("733", "ID", 2, 2),
        _e("284", "ID", 1, 3),
    ),
    "ITD": (
        _e("336", "ID", 2, 2),
        _e("333", "ID", 1, 2),
        _e("338", "R", 1, 6),
        _e("370", "DT", 6, 8),
        _e("351", "N0", 1, 3),
        _e("446", "DT", 6, 8),
        _e("386", "N0", 1, 3),
        _e("362", "N2", 1, 10),
        _e("388", "N2", 1, 10),
        _e("389", "N2", 1, 10),
        _e("342", "R", 1, 5),
        _FREE,
        _e("765", "N0", 1, 2),
        _e("107", "ID", 1, 2),
        _e("954", "R", 1, 10),
    ),
    "SAC": (
        _e("248", "ID", 1, 1, "M", "A C N"),
        _e("1300", "ID", 4, 4),
        _e("559", "ID", 2, 2),
        _e("1301", "AN", 1, 10),
        _e("610", "N2", 1, 15),
        _e("378", "ID", 1, 1),
        _e("332", "R", 1, 6),
        _e("118", "R", 1, 9),
        _UOM,
        _e("380", "R", 1, 15),
        _e("380", "R", 1, 15),
        _e("331", "ID", 2, 2),
        _e("127", "AN", 1, 50),
        _e("770", "AN", 1, 20),
        _FREE,
        _e("819", "ID", 2, 3),
    ),
    "N9": (_e("128", "ID", 2, 3, "M"), _e("127", "AN", 1, 50), _e("369", "AN", 1, 45)),
    "MSG": (_e("933", "AN", 1, 264, "M"), _e("934", "ID", 2, 2), _e("1470", "N0", 1, 9)),
    "NTE": (_e("363", "ID", 3, 3), _FREE),
    "N1": (
        _e("98", "ID", 2, 3, "M"),
        _NAME,
        _e("66", "ID", 1, 2),
        _e("67", "AN", 2, 80),
        _e("706", "ID", 2, 2),
        _e("98", "ID", 2, 3),
    ),
    "N2": (_NAME, _NAME),
    "N3": (_e("166", "AN", 1, 55, "M"), _e("166", "AN", 1, 55)),
    "N4": (
        _e("19", "AN", 2, 30),
        _e("156", "ID", 2, 2),
        _e("116", "ID", 3, 15),
        _e("26", "ID", 2, 3),
        _e("309", "ID", 1, 2),
        _e("310", "AN", 1, 30),
        _e("1715", "ID", 1, 3),
    ),
    # 850 detail
    "PO1": (
        _e("350", "AN", 1, 20),
        _e("330", "R", 1, 15),
        _UOM,
        _e("212", "R", 1, 17),
        _e("639", "ID", 2, 2),
        *_PRODUCT_PAIRS,
    ),
    "PID": (
        _e("349", "ID", 1, 1, "M", "F S X"),
        _e("750", "ID", 2, 3),
        _e("559", "ID", 2, 2),
        _e("751", "AN", 1, 12),
        _FREE,
    ),
    "PO4": (
        _e("356", "N0", 1, 6),
        _e("357", "R", 1, 8),
        _UOM,
        _e("103", "AN", 3, 5),
        _e("187", "ID", 1, 2),
        _e("384", "R", 1, 9),
        _UOM,
        _e("385", "R", 1, 9),
        _UOM,
        _e("82", "R", 1, 8),
        _e("189", "R", 1, 8),
        _e("65", "R", 1, 8),
        _UOM,
        _e("810", "N0", 1, 6),
    ),
    # 850 summary
    "CTT": (_e("354", "N0", 1, 6, "M"), _e("347", "R", 1, 10)),
}
"""Element definitions by segment id; index 0 is element 01."""

MAX_PO1_LOOPS = 100_000
"""The PO1 loop of the 850 repeats at most 100,000 times (X12 004010–005010)."""


@dataclass(frozen=True, slots=True)
class ElementError:
    position: int
    ref: str
    code: str  # AK403
    value: str
    message: str


def check_value(
    el: El, v: str, version: str = "", *, controls: bool = True
) -> tuple[str, str] | None:
    """(AK403 code, what is wrong) for the value ``v`` (already stripped), or None.
    ``controls=False``: the caller knows ``v`` has no control character."""
    t = el.type
    if controls and _CONTROL.search(v):
        return "6", "contains a control character"
    if t in ("N0", "N2"):
        if _SIGNED_INT.fullmatch(v) is None:
            return "6", "is not a whole number of ASCII digits"
        n = len(v) - (v[0] == "-")  # digits only, after the optional sign
    elif t == "R":
        if _DECIMAL.fullmatch(v) is None:
            return "6", "is not a decimal number of ASCII digits"
        n = len(v) - (v[0] == "-") - ("." in v)  # digits, a sign and at most one point
    elif t == "DT":
        if len(v) not in (6, 8) or x12_date(v) is None:
            return "8", "is not a valid date (CCYYMMDD)"
        return None
    elif t == "TM":
        if not is_time(v):
            return "9", "is not a valid time (HHMM[SS])"
        return None
    else:
        n = len(v)
        if t == "ID" and _CODE_CHARS.fullmatch(v) is None:
            return "6", "is not a code (letters and digits only)"
    if n < el.min:
        return "4", f"is shorter than its minimum of {el.min}"
    if n > el.max:
        return "5", f"is longer than its maximum of {el.max}"
    if el.codes is not None and v not in el.codes:
        return "7", f"is not one of the codes {', '.join(sorted(el.codes))}"
    return None


def check_segment(elements: list[str], separator: str | None = None) -> list[ElementError]:
    """Every element of a segment (``elements[0]`` is its id) checked against its definition.
    Segments without definitions are not checked.

    ``separator``: the element separator ``elements`` were split at (so no element holds
    it). Given, the segment is first matched whole against :func:`valid_segment_pattern`:
    a match means every element is valid (nothing to report); anything else is checked
    element by element below, which alone says what is wrong."""
    defs = SEGMENTS.get(elements[0])
    if defs is None:
        return []
    if separator is not None:
        fast = _VALID.get((elements[0], separator), _UNSET)
        if fast is _UNSET:
            fast = valid_segment_pattern(elements[0], separator)
            if len(_VALID) < 4096:
                _VALID[(elements[0], separator)] = fast
        if fast is not None and fast.fullmatch(separator.join(elements)) is not None:
            return []
    out: list[ElementError] = []
    tag = elements[0]
    n = len(elements)
    # one search over the segment instead of one per element (elements never hold "*"
    # as a separator here: any join character outside the control range would do)
    controls = _CONTROL.search("|".join(elements)) is not None
    for i, el in enumerate(defs, start=1):
        v = elements[i].strip(" ") if i < n else ""
        if not v:
            if el.required:
                out.append(ElementError(i, el.ref, "1", "", f"{tag}{i:02d} is required"))
            continue
        bad = check_value(el, v, controls=controls)
        if bad is not None:
            code, what = bad
            shown = v if len(v) <= 40 else f"{v[:40]}… ({len(v):,} characters)"
            out.append(ElementError(i, el.ref, code, v[:99], f"{tag}{i:02d} {shown!r} {what}"))
    return out


# ------------------------------------------------------------------------------ fast path
_UNSET = object()
_VALID: dict[tuple[str, str], re.Pattern[str] | None] = {}
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])"  # day 01-28: every month
    "|(?:0[13-9]|1[0-2])(?:29|30)"  # 29 and 30: every month but February
    "|(?:0[13578]|1[02])31)"  # 31
)  # February 29 is left to the element-by-element check (leap years)


def _value_pattern(el: El, sep: str) -> str | None:
    """A regex for values of ``el`` that :func:`check_value` accepts, with no space at either
    end (a subset of them is enough: what it does not match is checked element by element),
    or None when there is no such pattern."""
    if el.codes is not None and el.type != "ID":
        return None  # code lists are matched for ID elements only
    any_char = f"[^\\x00-\\x1f\\x7f{re.escape(sep)}]"
    no_space = f"[^\\x00-\\x1f\\x7f {re.escape(sep)}]"
    lo, hi = el.min, el.max
    if el.type == "AN":
        if hi < 1 or lo > hi:
            return None
        if hi == 1:
            return no_space
        if lo <= 1:
            return f"{no_space}(?:{any_char}{{0,{hi - 2}}}{no_space})?"
        return f"{no_space}{any_char}{{{lo - 2},{hi - 2}}}{no_space}"
    if el.type == "ID":
        if el.codes is not None:
            codes = sorted(
                c
                for c in el.codes
                if lo <= len(c) <= hi and _CODE_CHARS.fullmatch(c) and " " not in c
            )
            return f"(?:{'|'.join(re.escape(c) for c in codes)})" if codes else None
        return f"[A-Za-z0-9]{{{lo},{hi}}}"
    if el.type in ("N0", "N2"):
        return f"-?[0-9]{{{lo},{hi}}}"
    if el.type == "R":
        if lo > 1:
            return None
        # at most ``hi`` digits and points together: at most ``hi`` digits
        return f"-?(?=[0-9.]{{1,{hi}}}(?:{re.escape(sep)}|\\Z))(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)"
    if el.type == "DT":
        return f"(?:(?:19|20)[0-9]{{2}}{_MONTH_DAY}|[0-9]{{2}}{_MONTH_DAY})"
    if el.type == "TM":
        return "(?:[01][0-9]|2[0-3])[0-5][0-9](?:[0-5][0-9][0-9]{0,2})?"
    return None


def valid_segment_pattern(tag: str, sep: str) -> re.Pattern[str] | None:
    """A regex the whole segment text (its elements joined by ``sep``) fully matches only when
    :func:`check_segment` finds nothing wrong in it: required elements present, every value
    of its type and length, no control character anywhere. None when the tag has no
    definitions or a definition has no pattern. Values with spaces at either end, codes with
    spaces inside, February 29 and R values of exactly the maximum digits with a point are
    not matched (valid or not, the element-by-element check decides them); nor is anything
    when the separator is "-" or "." (the patterns' sign and decimal point)."""
    defs = SEGMENTS.get(tag)
    if defs is None or len(sep) != 1 or sep.isalnum() or ord(sep) < 32 or sep == "\x7f":
        return None
    if sep in ("-", "."):  # a sign or a decimal point in the patterns: no pattern
        return None
    e = re.escape(sep)
    rest = f"(?:{e}[^\\x00-\\x1f\\x7f]*)?"  # elements past the definitions: not checked
    required_after = False
    for el in reversed(defs):
        if el is None:
            return None
        value = _value_pattern(el, sep)
        if value is None:
            return None
        slot = value if el.required else f"(?:{value})?"
        required_after = required_after or el.required
        rest = f"{e}{slot}{rest}" if required_after else f"(?:{e}{slot}{rest})?"
    return re.compile(re.escape(tag) + rest)
