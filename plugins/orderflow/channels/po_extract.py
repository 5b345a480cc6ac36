"""Purchase-order field logic: positioned text → header fields and lines, each with a
confidence, then resolution against master data (customer, ship-to, items).

Two steps, both pure:

1. :func:`extract` reads a document's cells (from a text layer or OCR, see
   :mod:`orderflow.channels.pdf_text`) into a :class:`RawPO`: labelled header values
   (label then value to the right or below it, or in the same run), the issuer's name, the
   ship-to block, and the line table (header row → columns; each row parsed right to left
   by type: ``[amount] price [uom] qty``, then line number, identifiers and description by
   column). Nothing here knows a particular layout.
2. :func:`resolve` maps what was read onto master data with a :class:`~.catalog.Catalog`
   and e-mail hints (subject, body, file name), and states a confidence per field.

Confidence policy — what a number means (calibrated against the sandbox, see
``benchmarks/po_extraction_accuracy.py``):

* ``0.99`` a value from a text layer next to its label that passed its format check, or an
  exact catalogue identification; arithmetic (qty × price = amount) confirms qty and price.
* ``≤ 0.80`` an OCR read that nothing independent confirms (``OCR_READ_CAP``); engines'
  own word confidences are poorly calibrated on degraded scans, and measured field accuracy
  on the sandbox's scans is far below this, so these always reach a person.
* ``≤ 0.92`` an OCR read confirmed independently (arithmetic, an exact catalogue hit, the
  same PO number typed in the e-mail) — ``CONFIRMED_CAP``.
* ``0.0`` a value the document has but we could not read; the field holds a placeholder
  (e.g. quantity 1) only because the canonical model requires one — a person must correct it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from orderflow.channels.catalog import (
    STANDARD_UOMS,
    Catalog,
    Suggestion,
    fold_code,
    norm_code,
    norm_text,
)
from orderflow.channels.pdf_text import Cell, Page

TEXT_READ = 0.99
TEXT_UNCHECKED = 0.97  # a text-layer value without an independent check (no amount column)
OCR_READ_CAP = 0.80
CONFIRMED_CAP = 0.92
ABSENT = 0.90  # a text-layer document simply has no such field

# ---------------------------------------------------------------------------- data


@dataclass(slots=True)
class Read:
    """A value as read, its confidence, and where it was found."""

    value: Any
    confidence: float
    where: str = ""
    raw: str = ""


@dataclass(slots=True)
class Row:
    page: int
    cells: list[Cell]

    @property
    def text(self) -> str:
        return " ".join(c.text for c in self.cells)

    @property
    def y0(self) -> float:
        return min(c.y0 for c in self.cells)

    @property
    def y1(self) -> float:
        return max(c.y1 for c in self.cells)

    @property
    def h(self) -> float:
        hs = sorted(c.h for c in self.cells)
        return hs[len(hs) // 2]


@dataclass
class RawLine:
    page: int
    row_text: str
    line_no: int | None = None
    codes: list[tuple[str | None, str]] = field(default_factory=list)  # (qualifier hint, value)
    description: str | None = None
    quantity: Read | None = None
    uom: Read | None = None
    unit_price: Read | None = None
    amount: Read | None = None
    readable: bool = True


@dataclass
class ShipToBlock:
    lines: list[str] = field(default_factory=list)
    name: str | None = None
    id_candidates: list[str] = field(default_factory=list)
    address_lines: list[str] = field(default_factory=list)
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    confidence: float = 1.0


@dataclass
class RawPO:
    """Everything read from one document, before master data."""

    pages: int
    ocr: bool
    fields: dict[str, Read] = field(default_factory=dict)  # po_number, po_date, ...
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    labels_seen: set[str] = field(default_factory=set)
    buyer_name: Read | None = None
    ship_to: ShipToBlock | None = None
    lines: list[RawLine] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    totals: dict[str, Read] = field(default_factory=dict)  # subtotal, tax, total
    tokens: list[tuple[str, float]] = field(default_factory=list)  # every token + conf
    text: str = ""


# ---------------------------------------------------------------------------- parsing


_L = r"\s*[:#.]?\s*"
FIELD_LABELS: list[tuple[str, re.Pattern[str]]] = [
    (
        "requested_ship_date",
        re.compile(
            r"^(?:ship\s*by|req(?:uested|\.|uired)?\s*(?:ship\s*)?date|req\.?\s*ship|"
            r"deliver(?:y)?\s*(?:by|date)|need(?:ed)?\s*by|required\s*by|ship\s*date|"
            r"due\s*date|delivery\s*required)" + _L,
            re.I,
        ),
    ),
    (
        "po_date",
        re.compile(
            r"^(?:p\.?\s*o\.?\s*date|order\s*date|dated(?:\s*as)?|issue\s*date|"
            r"date(?:\s*(?:of\s*order|issued|ordered))?)" + _L,
            re.I,
        ),
    ),
    (
        "po_number",
        re.compile(
            r"^(?:(?:p\.?\s*o\.?|purchase\s*order|order)\s*(?:number|num\.?|no\.?|#)|"
            r"(?:purchase\s*order|p\.?\s*o\.?|no\.?)(?=(?:\s*[:#.]\s*|\s+)[A-Z0-9-]*\d))" + _L,
            re.I,
        ),
    ),
    (
        "account",
        re.compile(
            r"^(?:customer\s*(?:account|acct|no\.?|number|#|id)|account(?:\s*(?:no\.?|number|#))?|"
            r"acct\.?(?:\s*(?:no\.?|#))?|cust(?:omer)?\s*#)" + _L,
            re.I,
        ),
    ),
    ("terms", re.compile(r"^(?:payment\s*terms|terms)" + _L, re.I)),
    ("ship_via", re.compile(r"^(?:ship\s*via|carrier|routing)" + _L, re.I)),
]
SHIP_TO_LABEL = re.compile(
    r"^(?:ship(?:ped)?\s*to|deliver\s*to|consignee)(?:\s*address)?\b\s*[:#.]?\s*(.*)$", re.I
)
SECTION_LABEL = re.compile(
    r"^(?:vendor|supplier|bill(?:ed)?\s*to|sold\s*to|ship(?:ped)?\s*from|remit|invoice\s*to|"
    r"ln|line|description|details|qty|quantity|item|terms|notes?|p\.?o\.?\b|purchase\s*order)\b",
    re.I,
)
SUBLABEL = re.compile(
    r"^(company(?:\s*name)?|name|attn|attention|address|vendor\s*name|contact|ship-?to\s*(?:#|no\.?|id))"
    r"\s*[:#.]?\s*",
    re.I,
)
CONTACT_TAIL = re.compile(r"\s*\b(?:phone|tel|fax|e-?mail)\s*[:#.]?.*$", re.I)
CITY_LINE = re.compile(r"^(.+?),?\s+([A-Z]{2})\.?,?\s+(\d{5}(?:-\d{4})?)$")
TOTAL_CELL = re.compile(
    r"^(sub\s*-?\s*total|grand\s*total|order\s*total|total|(?:sales\s*)?tax|freight|"
    r"shipping(?:\s*(?:&|and)\s*handling)?|handling)(?:\s+[A-Z]{3})?\s*[:.]?\s*(\$?\s*[\d,]+(?:\.\d{2})?)?\.?$",
    re.I,
)
FOOTER = re.compile(
    r"^(?:buyer|signed|signature|authori[sz]ed|questions|acct|additional\s*notes)\b", re.I
)
PO_VALUE = re.compile(r"^[A-Z0-9][A-Z0-9\-/._]{1,29}$", re.I)
TITLE_WORDS = re.compile(r"\b(?:purchase\s*order|p\.\s*o\.)(?:\s*#)?$|^purchase\s*order\b", re.I)

COLUMN_ALIASES: dict[str, str] = {}
for _role, _names in {
    "line": ["ln", "line", "#", "line #", "line no", "ln #", "no", "item line"],
    "cpn": [
        "your part #",
        "your part",
        "customer part",
        "customer part #",
        "cust part",
        "cust part #",
        "buyer part",
        "buyer part #",
        "your item #",
        "cpn",
    ],
    "ours": [
        "our item #",
        "our item",
        "our part #",
        "vendor part",
        "vendor part #",
        "sku",
        "vendor item",
        "mfr part",
        "catalog #",
        "catalog no",
        "supplier part",
    ],
    "code": [
        "item",
        "item #",
        "item no",
        "item number",
        "part #",
        "part",
        "part no",
        "part number",
        "product code",
        "code",
        "article",
    ],
    "description": [
        "description",
        "desc",
        "details",
        "item description",
        "product description",
        "product",
        "description of goods",
        "goods",
    ],
    "quantity": ["qty", "quantity", "qty ordered", "order qty", "ordered", "qty."],
    "uom": ["uom", "u/m", "um", "unit", "units", "uofm", "u of m"],
    "unit_price": ["unit price", "price", "unit cost", "price each", "rate", "cost", "price/unit"],
    "amount": [
        "extended",
        "amount",
        "total",
        "ext",
        "ext price",
        "extended price",
        "line total",
        "net amount",
        "ext. price",
        "total price",
        "value",
    ],
}.items():
    for _n in _names:
        COLUMN_ALIASES[_n] = _role
LEFT_ROLES = ("line", "cpn", "ours", "code", "description")
CODE_ROLES = {"cpn": "BP", "ours": "VP", "code": None}

MONEY = re.compile(r"^\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,4})?$|^\$?\d+,\d{2}$")
NUMBER = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
INT = re.compile(r"^\d{1,3}$")
CODE_LIKE = re.compile(r"^(?=.*\d)[A-Z0-9][A-Z0-9\-/._]{2,}$")
DATE_FORMATS = (
    "%m/%d/%Y",
    "%m/%d/%y",
    "%Y-%m-%d",
    "%b %d, %Y",
    "%B %d, %Y",
    "%b %d %Y",
    "%d %b %Y",
    "%d.%m.%Y",
    "%m-%d-%Y",
    "%Y/%m/%d",
    "%d-%b-%Y",
    "%d-%b-%y",
)
_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "—": "-", "–": "-"})
_OCR_JUNK = re.compile(r"[^A-Za-z0-9 .,:;/#\-$&'()%@+]")
_DIGIT_FIX = str.maketrans(
    {
        "O": "0",
        "o": "0",
        "D": "0",
        "Q": "0",
        "l": "1",
        "I": "1",
        "|": "1",
        "i": "1",
        "S": "5",
        "s": "5",
        "B": "8",
        "Z": "2",
        "z": "2",
        "g": "9",
    }
)


def parse_date(text: str) -> tuple[date | None, bool]:
    """→ (date, ambiguous): ambiguous when day and month could be swapped (US order taken)."""
    text = " ".join((text or "").replace(",", ", ").split()).replace(" ,", ",").replace(",,", ",")
    words = text.split()
    for n in (3, 2, 1):
        candidate = " ".join(words[:n]).rstrip(".;")
        for fmt in DATE_FORMATS:
            try:
                d = datetime.strptime(candidate, fmt).date()  # noqa: DTZ007 - a calendar date
            except ValueError:
                continue
            if 2000 <= d.year <= 2100:
                ambiguous = (
                    fmt in ("%m/%d/%Y", "%m/%d/%y", "%m-%d-%Y") and d.day <= 12 and d.day != d.month
                )
                return d, ambiguous
    return None, False


def parse_money(token: str) -> Decimal | None:
    t = token.strip().lstrip("$")
    if re.fullmatch(r"\d+,\d{2}", t):
        t = t.replace(",", ".")
    try:
        value = Decimal(t.replace(",", ""))
    except InvalidOperation:
        return None
    return value if value >= 0 else None


def ocr_number(token: str) -> str:
    """Repair look-alike letters in a token that is meant to be a number."""
    t = token.strip("'\"‘’“”|;:_~`()")
    if t.endswith(".") and re.fullmatch(r"\$?[\d,]+(?:\.\d+)?", t[:-1]):
        t = t[:-1]  # a speck read as a full stop after the number
    if sum(ch.isdigit() for ch in t) >= max(1, len(t) - 1):
        t = t.translate(_DIGIT_FIX)
    return t


def _clean(text: str, ocr: bool) -> str:
    if ocr:
        text = text.translate(_QUOTES)
        text = _OCR_JUNK.sub(" ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------- layout


def phrases(page: Page) -> list[Cell]:
    """OCR words → phrases (words closer than a letter height on one engine line), the
    unit a text layer already has. Text-layer pages pass through."""
    if not page.ocr:
        return page.cells
    out: list[Cell] = []
    for c in sorted(page.cells, key=lambda c: (c.line_key or (0,), c.x0)):
        text = _clean(c.text, True)
        if not text:
            continue
        prev = out[-1] if out else None
        if (
            prev is not None
            and c.line_key is not None
            and prev.line_key == c.line_key
            and c.x0 - prev.x1 < 1.0 * max(prev.h, c.h)
        ):
            out[-1] = Cell(
                prev.text + " " + text,
                prev.x0,
                min(prev.y0, c.y0),
                c.x1,
                max(prev.y1, c.y1),
                conf=min(prev.conf, c.conf),
                line_key=c.line_key,
            )
        else:
            out.append(Cell(text, c.x0, c.y0, c.x1, c.y1, conf=c.conf, line_key=c.line_key))
    return out


def rows_of(page: Page, cells: list[Cell]) -> list[Row]:
    """Cells → rows (top to bottom, cells left to right): the OCR engine's own lines, or
    cells whose vertical centres agree within half a letter height."""
    if page.ocr and cells and all(c.line_key is not None for c in cells):
        groups: dict[tuple[int, ...], list[Cell]] = {}
        for c in cells:
            groups.setdefault(c.line_key, []).append(c)  # type: ignore[arg-type]
        rows = [Row(page.number, sorted(g, key=lambda c: c.x0)) for g in groups.values()]
        return sorted(rows, key=lambda r: r.y0)
    rows: list[Row] = []
    current: list[Cell] = []
    yc = 0.0
    for c in sorted(cells, key=lambda c: c.yc):
        if current and abs(c.yc - yc) < 0.45 * min(c.h, current[0].h):
            current.append(c)
            yc = sum(x.yc for x in current) / len(current)
        else:
            if current:
                rows.append(Row(page.number, sorted(current, key=lambda c: c.x0)))
            current, yc = [c], c.yc
    if current:
        rows.append(Row(page.number, sorted(current, key=lambda c: c.x0)))
    return rows


# ---------------------------------------------------------------------------- extract


def extract(pages: list[Page]) -> RawPO:
    """Read a purchase order's fields from positioned text (any layout, text or OCR)."""
    ocr = any(p.ocr for p in pages)
    raw = RawPO(pages=len(pages), ocr=ocr)
    candidates: dict[str, list[Read]] = {}
    header: list[tuple[str, Cell]] | None = None
    texts = []
    for page in pages:
        cells = phrases(page)
        rows = rows_of(page, cells)
        texts.append("\n".join(r.text for r in rows))
        raw.tokens += [(t, c.conf) for c in cells for t in c.text.split()]
        _header_fields(page, rows, raw, candidates)
        if page.number == pages[0].number:
            raw.buyer_name = _issuer(page, rows)
        if raw.ship_to is None:
            raw.ship_to = _ship_to(page, rows)
        header = _lines(page, rows, raw, header)
        _totals(rows, raw)
    raw.text = "\n\f".join(texts)
    for name, reads in candidates.items():
        raw.fields[name], conflict = _vote(reads)
        if conflict:
            raw.conflicts[name] = conflict
    return raw


def _vote(reads: list[Read]) -> tuple[Read, list[str]]:
    """The most frequent value wins; disagreement lowers confidence (a person looks)."""
    counts: dict[str, list[Read]] = {}
    for r in reads:
        counts.setdefault(str(r.value), []).append(r)
    ranked = sorted(counts.values(), key=lambda rs: (-len(rs), reads.index(rs[0])))
    best = ranked[0]
    conf = max(r.confidence for r in best)
    others = [str(rs[0].value) for rs in ranked[1:]]
    if others:
        conf = min(conf, 0.6)
    return Read(best[0].value, conf, best[0].where, best[0].raw), others


def _label(text: str) -> tuple[str, str] | None:
    for name, pattern in FIELD_LABELS:
        m = pattern.match(text)
        if m:
            return name, text[m.end() :].strip()
    return None


def _header_fields(page: Page, rows: list[Row], raw: RawPO, out: dict[str, list[Read]]) -> None:
    base = TEXT_READ if not page.ocr else OCR_READ_CAP
    for ri, row in enumerate(rows):
        for ci, cell in enumerate(row.cells):
            hit = _label(cell.text)
            if hit is None:
                continue
            name, rest = hit
            raw.labels_seen.add(name)
            options: list[tuple[str, Cell]] = []
            if rest:
                if _validate(name, rest, page.ocr) is None:
                    continue  # "label" followed by something else: not this field's label
                options.append((rest, cell))
            right = [
                c
                for c in row.cells[ci + 1 :]
                if c.x0 - cell.x1 < max(10 * cell.h, 0.3 * page.width)
            ]
            if right and _label(right[0].text) is None:
                options.append((right[0].text, right[0]))
            below = [
                c
                for r in rows[ri + 1 : ri + 4]
                for c in r.cells
                if cell.y1 - 0.2 * cell.h <= c.y0 <= cell.y1 + 2.6 * cell.h
                and c.x1 > cell.x0 - 2 * cell.h
                and c.x0 < cell.x1 + 2 * cell.h
            ]
            below.sort(key=lambda c: (c.y0, abs(c.x0 - cell.x0)))
            if below and _label(below[0].text) is None:
                options.append((below[0].text, below[0]))
            for text, src in options:
                value = _validate(name, text, page.ocr)
                if value is None:
                    continue
                conf = base if not page.ocr else min(OCR_READ_CAP, src.conf)
                if name in ("po_date", "requested_ship_date") and value[1]:
                    conf = min(conf, TEXT_UNCHECKED)
                out.setdefault(name, []).append(
                    Read(value[0], conf, f"page {page.number}: {cell.text[:40]!r}", text)
                )
                break


def _validate(name: str, text: str, ocr: bool) -> tuple[Any, bool] | None:
    text = text.strip()
    if name == "po_number":
        token = text.split()[0].strip(":#.,;") if text.split() else ""
        if ocr:
            token = token.strip("'\"‘’|")
        if PO_VALUE.match(token) and any(ch.isdigit() for ch in token):
            return token.upper(), False
        return None
    if name in ("po_date", "requested_ship_date"):
        d, ambiguous = parse_date(text)
        return (d, ambiguous) if d else None
    if name == "account":
        token = text.split()[0].strip(":#.,;·") if text.split() else ""
        return (token.upper(), False) if token and any(ch.isdigit() for ch in token) else None
    if name in ("terms", "ship_via"):
        return (text[:40], False) if text and _label(text) is None else None
    return None


def _issuer(page: Page, rows: list[Row]) -> Read | None:
    """The buyer's company name: the biggest text in the top quarter of page one that is
    not the document title or a label."""
    best: Cell | None = None
    for row in rows:
        for c in row.cells:
            if c.y0 > 0.25 * page.height:
                continue
            text = re.sub(r"\s*[—–-]\s*P\.\s*O\.?$", "", c.text).strip()
            if (
                not re.search(r"[A-Za-z]{3}", text)
                or TITLE_WORDS.search(text)
                or _label(text)
                or SHIP_TO_LABEL.match(text)
                or SECTION_LABEL.match(text)
                or (page.ocr and c.conf < 0.5)
            ):
                continue
            if "@" in text or re.search(r"\b(phone|website|email|www\.)", text, re.I):
                continue
            if (
                best is None
                or c.h > best.h * 1.05
                or (abs(c.h - best.h) <= best.h * 0.05 and c.y0 < best.y0)
            ):
                best = Cell(text, c.x0, c.y0, c.x1, c.y1, c.conf)
    if best is None:
        return None
    conf = TEXT_READ if not page.ocr else min(OCR_READ_CAP, best.conf)
    return Read(best.text, conf, f"page {page.number}")


def _ship_to(page: Page, rows: list[Row]) -> ShipToBlock | None:
    for ri, row in enumerate(rows):
        for cell in row.cells:
            m = SHIP_TO_LABEL.match(cell.text)
            if not m:
                continue
            block = ShipToBlock(confidence=1.0 if not page.ocr else OCR_READ_CAP)
            if m.group(1).strip():
                block.id_candidates.append(m.group(1).strip().split()[0])
            x_lo, x_hi = cell.x0 - 2 * cell.h, cell.x0 + 0.42 * page.width
            last_y = cell.y1
            for r in rows[ri + 1 : ri + 12]:
                mine = [c for c in r.cells if x_lo <= c.x0 < x_hi]
                if not mine:
                    continue
                y0 = min(c.y0 for c in mine)
                if y0 - last_y > 2.2 * cell.h:
                    break
                text = " ".join(c.text for c in mine)
                if SECTION_LABEL.match(text) and not SUBLABEL.match(text):
                    break
                block.lines.append(text)
                if page.ocr:
                    block.confidence = min(block.confidence, min(c.conf for c in mine))
                last_y = max(c.y1 for c in mine)
            _parse_block(block)
            return block
    return None


def _parse_block(block: ShipToBlock) -> None:
    rest: list[str] = []
    company = None
    for line in block.lines:
        line = CONTACT_TAIL.sub("", line).strip()
        m = SUBLABEL.match(line)
        if m:
            label, value = m.group(1).lower(), line[m.end() :].strip()
            if label.startswith("company"):
                company = value
                continue
            if label.startswith("ship"):
                if value:
                    block.id_candidates.append(value.split()[0])
                continue
            if label in ("attn", "attention", "contact", "vendor name", "name"):
                continue
            line = value
        if not line:
            continue
        c = CITY_LINE.match(line)
        if c and not block.city:
            block.city, block.region, block.postal_code = (
                c.group(1).strip(" ,"),
                c.group(2),
                c.group(3),
            )
            continue
        if " " not in line and CODE_LIKE.match(line.upper()) and not line.isdigit():
            block.id_candidates.append(line)
            continue
        rest.append(line)
    if company:
        block.name = company
    elif rest:
        block.name = rest.pop(0)
    block.address_lines = rest[:3]


# ---------------------------------------------------------------------------- lines


def _column_role(text: str, ocr: bool) -> str | None:
    key = re.sub(r"\s+", " ", text.lower().strip().rstrip(":.")).replace("no.", "no")
    if ocr:  # stray marks around a heading: "- -' Total"
        key = re.sub(r"^[^a-z0-9#]+|[^a-z0-9#]+$", "", key)
    if key in COLUMN_ALIASES:
        return COLUMN_ALIASES[key]
    if ocr and len(key) >= 3:
        from rapidfuzz import fuzz, process

        hit = process.extractOne(key, [k for k in COLUMN_ALIASES if len(k) >= 3], scorer=fuzz.ratio)
        if hit and hit[1] >= 80:
            return COLUMN_ALIASES[hit[0]]
    return None


def _find_header(rows: list[Row], ocr: bool) -> tuple[int, list[tuple[str, Cell]]] | None:
    for i, row in enumerate(rows):
        cols = [(role, c) for c in row.cells if (role := _column_role(c.text, ocr))]
        roles = {r for r, _ in cols}
        if len(roles) >= 3 and roles & {"quantity", "unit_price", "amount"}:
            return i, cols
    return None


def _lines(
    page: Page, rows: list[Row], raw: RawPO, previous: list[tuple[str, Cell]] | None
) -> list[tuple[str, Cell]] | None:
    """Parse the line table of one page; returns the header used (for continuation pages)."""
    found = _find_header(rows, page.ocr)
    if found:
        start, header = found[0] + 1, found[1]
        raw.columns = [r for r, _ in header]
    elif previous is not None:
        start, header = 0, previous
    elif page.ocr:
        _ocr_table(page, rows, raw)
        return None
    else:
        start, header = 0, None
    roles = {r for r, _ in header} if header else set()
    expect = len(raw.lines) + 1
    last: RawLine | None = None
    for row in rows[start:]:
        text = row.text
        if _total_cells(row):
            break
        if FOOTER.match(text):
            if header is not None:
                break
            continue
        line = _parse_row(row, header, roles, page.ocr, expect)
        if line is not None:
            raw.lines.append(line)
            last = line
            expect = (line.line_no or expect) + 1
        elif last is not None and header is not None and not page.ocr:
            # a wrapped description continues under the description column
            desc = [c for r, c in header if r == "description"]
            if (
                desc
                and all(c.x0 >= desc[0].x0 - c.h for c in row.cells)
                and not any(NUMBER.match(t) for t in text.split()[-1:])
            ):
                last.description = f"{last.description or ''} {text}".strip()
    return header


def _parse_row(
    row: Row,
    header: list[tuple[str, Cell]] | None,
    roles: set[str],
    ocr: bool,
    expect: int,
) -> RawLine | None:
    tokens: list[tuple[str, Cell]] = [(t, c) for c in row.cells for t in c.text.split()]
    if len(tokens) < 2:
        return None
    tail = _tail(tokens, roles, ocr)
    if tail is None:
        if not ocr or header is None:
            return None
        # OCR: a row that starts with the next line number is a line we could not read
        first = ocr_number(tokens[0][0])
        if INT.match(first) and 0 < int(first) <= expect + 2 and len(tokens) >= 3:
            return _unreadable(row, tokens[1:], int(first))
        return None
    n_left, values = tail
    left = tokens[:n_left]
    line = RawLine(row.page, row.text, **values)
    if ocr:
        for key in ("quantity", "uom", "unit_price", "amount"):
            r = getattr(line, key)
            if r is not None:
                r.confidence = min(OCR_READ_CAP, r.confidence)
    _left_part(line, left, header, ocr, expect)
    if not line.codes and not line.description:
        return None
    return line


def _ocr_table(page: Page, rows: list[Row], raw: RawPO) -> None:
    """Lines of a scan whose column headings could not be read.

    The table is the run of consecutive *wide* rows (three or more phrases reaching into
    the right half of the page, below the letterhead) — the one holding a row that starts
    with a small line number if any does, else the longest. Its first row is dropped as the
    unreadable heading when it looks like one (no digits where the other rows have them, or
    heading words). A row whose values cannot be parsed still counts as a line
    (unreadable), so the person sees how many lines to key in.
    """

    def wide(row: Row) -> bool:
        return (
            len(row.cells) >= 3
            and row.y0 > 0.12 * page.height
            and any(c.x0 > 0.55 * page.width for c in row.cells)
            and any(c.x0 < 0.35 * page.width for c in row.cells)
            and not FOOTER.match(row.text)
            and not _total_cells(row)
        )

    runs: list[list[int]] = []
    for i, row in enumerate(rows):
        if wide(row):
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    if not runs:
        return

    def numbered(i: int) -> bool:
        token = ocr_number(rows[i].cells[0].text.split()[0])
        return bool(INT.match(token)) and 1 <= int(token) <= 99

    run = max(runs, key=lambda r: (any(numbered(i) for i in r), len(r)))
    if len(run) >= 2 and not numbered(run[0]):
        digits = [sum(ch.isdigit() for ch in rows[i].text) for i in run]
        heading = re.search(
            r"\b(?:qty|quantity|price|descr\w*|part|item|u/?m|amount)\b", rows[run[0]].text, re.I
        )
        if heading or (digits[0] == 0 and sorted(digits[1:])[len(digits[1:]) // 2] > 0):
            run = run[1:]
    start = run[0]
    rows = rows[: run[-1] + 1]
    pitch = None
    previous_y = None
    for row in rows[start:]:
        if FOOTER.match(row.text) or _total_cells(row) or re.search(r"\bpage\b", row.text, re.I):
            break
        if previous_y is not None:
            gap = row.y0 - previous_y
            if pitch is not None and gap > 2.5 * pitch:
                break
            pitch = gap if pitch is None else min(pitch, gap)
        previous_y = row.y0
        tokens = [(t, c) for c in row.cells for t in c.text.split()]
        if len(tokens) < 2:
            continue
        tail = _tail(tokens, set(), True)
        if tail is None:
            lead = ocr_number(tokens[0][0])
            raw.lines.append(_unreadable(row, tokens[1:] if INT.match(lead) else tokens, None))
            continue
        n_left, values = tail
        line = RawLine(row.page, row.text, **values)
        for key in ("quantity", "uom", "unit_price", "amount"):
            r = getattr(line, key)
            if r is not None:
                r.confidence = min(OCR_READ_CAP, r.confidence)
        _left_part(line, tokens[:n_left], None, True, len(raw.lines) + 1)
        raw.lines.append(line)


def _unreadable(row: Row, tokens: list[tuple[str, Cell]], line_no: int | None) -> RawLine:
    """An OCR row whose values did not parse: keep what can be recognised on its own (a
    known unit of measure, the integer before it, a price with cents) at low confidence."""
    line = RawLine(row.page, row.text, line_no=line_no, readable=False)
    words = [t for t, _ in tokens]
    for i in range(len(words) - 1, 0, -1):
        if words[i].upper() in STANDARD_UOMS and words[i].isupper():
            line.uom = Read(words[i], 0.3, raw=words[i])
            q = ocr_number(words[i - 1])
            if re.fullmatch(r"\d{1,4}", q) and int(q) > 0:
                line.quantity = Read(Decimal(q), 0.3, raw=words[i - 1])
            for w in words[i + 1 :]:
                if re.fullmatch(r"\d{1,5}\.\d{2}", ocr_number(w)):
                    line.unit_price = Read(parse_money(ocr_number(w)), 0.3, raw=w)
                    break
            break
    if words and CODE_LIKE.match(words[0].upper()) and len(words[0]) >= 5:
        line.codes.append((None, words[0]))
        words = words[1:]
    line.description = " ".join(words)[:80] or None
    return line


def _tail(
    tokens: list[tuple[str, Cell]], roles: set[str], ocr: bool
) -> tuple[int, dict[str, Read]] | None:
    """Right to left: ``[amount] price [uom] qty``. Returns (index of qty, reads)."""

    def kind(i: int) -> str:
        if i < 0:
            return ""
        t = tokens[i][0]
        n = ocr_number(t) if ocr else t
        if MONEY.match(n):
            return "money"
        if t.isalpha() and 1 <= len(t) <= 5 and t.upper() == t:
            return "uom"
        return ""

    def read(i: int, parse) -> Read:
        t, c = tokens[i]
        value = parse(ocr_number(t) if ocr else t)
        return Read(value, c.conf if ocr else TEXT_READ, raw=t)

    end = len(tokens) - 1
    while ocr and end > 0 and not re.search(r"[A-Za-z0-9]", tokens[end][0]):
        end -= 1
    patterns = [
        ("amount", "unit_price", "uom", "quantity"),
        ("amount", "unit_price", "quantity"),
        ("unit_price", "uom", "quantity"),
        ("unit_price", "quantity"),
    ]
    best: tuple[int, int, dict[str, Read]] | None = None
    best_score = -1
    for rank, pattern in enumerate(patterns):
        i = end
        ok = True
        for slot in pattern:
            k = kind(i)
            if (slot == "uom" and k != "uom") or (slot != "uom" and k != "money"):
                ok = False
                break
            i -= 1
        if not ok or i + 1 < 0:
            continue
        q = i + 1
        values: dict[str, Read] = {}
        for offset, slot in enumerate(reversed(pattern)):
            idx = q + offset
            if slot == "uom":
                t, c = tokens[idx]
                values["uom"] = Read(t.upper(), c.conf if ocr else TEXT_READ, raw=t)
            else:
                values[slot] = read(idx, parse_money)
        qty = values["quantity"].value
        if (
            qty is None
            or qty <= 0
            or not NUMBER.match(ocr_number(tokens[q][0]) if ocr else tokens[q][0])
        ):
            continue
        # Arithmetic decides between readings (qty x price = amount), then agreement with
        # the column headings; without headings three numbers must multiply out.
        score = 0
        if "amount" in values:
            price, amount = values["unit_price"].value, values["amount"].value
            multiplies = (
                price is not None
                and amount is not None
                and abs(qty * price - amount) <= max(Decimal("0.011"), amount / 1000)
            )
            if not roles and not multiplies:
                continue
            score += 4 if multiplies else 0
        if roles:
            score += ("amount" in roles) == ("amount" in values)
            score += ("uom" in roles) == ("uom" in values)
        if score > best_score:
            best, best_score = (rank, q, values), score
    return (best[1], best[2]) if best else None


def _left_part(
    line: RawLine,
    left: list[tuple[str, Cell]],
    header: list[tuple[str, Cell]] | None,
    ocr: bool,
    expect: int,
) -> None:
    if not left:
        return
    cols = [(r, c) for r, c in (header or []) if r in LEFT_ROLES]
    first = ocr_number(left[0][0]) if ocr else left[0][0]
    has_line_col = any(r == "line" for r, _ in cols)
    if INT.match(first) and (has_line_col or int(first) == expect) and len(left) > 1:
        line.line_no = int(first)
        left = left[1:]
    by_role: dict[str, list[str]] = {}
    if cols:
        for t, c in left:
            tol = 0.8 * c.h
            role = None
            for r, hc in cols:
                if r == "line":
                    continue
                if hc.x0 <= c.x0 + tol:
                    role = r
            if role is None:
                role = next((r for r, _ in cols if r != "line"), "description")
            by_role.setdefault(role, []).append(t)
        for role, qual in CODE_ROLES.items():
            words = by_role.get(role)
            if not words:
                continue
            if len(words) > 1 and role == "code" and "description" not in by_role:
                # one column for both (e.g. "Item"): the first token is the identifier
                line.codes.append((qual, words[0]))
                by_role.setdefault("description", []).extend(words[1:])
            else:
                line.codes.append((qual, "".join(words) if ocr else " ".join(words)))
        desc = by_role.get("description")
        line.description = _description(desc, ocr)
        return
    # no header: identifiers first (code-like tokens), then the description
    i = 0
    while i < len(left) and i < 2 and CODE_LIKE.match(left[i][0].upper()) and len(left) - i > 1:
        line.codes.append((None, left[i][0]))
        i += 1
    rest = [t for t, _ in left[i:]]
    line.description = _description(rest, ocr)


def _description(words: list[str] | None, ocr: bool) -> str | None:
    text = " ".join(words or [])
    if ocr:  # stray marks at the ends of an OCR'd cell
        text = text.strip(" -|.,;:'\"_~")
    return text or None


def _total_cells(row: Row) -> list[tuple[str, Decimal]]:
    """(label, amount) pairs of a totals row: a cell that is only a totals label (plus an
    amount, or the amount in the next cell)."""
    out = []
    for i, cell in enumerate(row.cells):
        m = TOTAL_CELL.match(cell.text.strip())
        if not m:
            continue
        label = re.sub(r"[\s-]", "", m.group(1).lower())
        amount = m.group(2)
        if amount is None:
            amount = next(
                (c.text for c in row.cells[i + 1 : i + 3] if MONEY.match(_amount_text(c.text))),
                None,
            )
        value = parse_money(_amount_text(amount)) if amount else None
        if value is not None:
            out.append((label, value))
    return out


def _amount_text(text: str) -> str:
    return text.replace("$", "").strip().rstrip(".,")


def _totals(rows: list[Row], raw: RawPO) -> None:
    for row in rows:
        conf = min((c.conf for c in row.cells), default=1.0)
        for label, value in _total_cells(row):
            key = (
                "subtotal"
                if label.startswith("sub")
                else "tax"
                if label.endswith("tax")
                else ("total" if label.endswith("total") else None)
            )
            if key:
                raw.totals.setdefault(key, Read(value, conf, f"page {row.page}", str(value)))


# ---------------------------------------------------------------------------- resolve


@dataclass
class Hints:
    """What the e-mail around the document says (typed by a person, not OCR'd)."""

    sender: str | None = None
    po_numbers: list[str] = field(default_factory=list)
    ship_to_ids: list[str] = field(default_factory=list)
    received: date | None = None


@dataclass
class ResolvedLine:
    line_no: int
    product_ids: list[tuple[str, str]]
    customer_part_number: str | None
    item_id: str | None
    description: str | None
    quantity: Decimal | None
    uom: str | None
    unit_price: Decimal | None
    confidence: dict[str, float]
    suggestions: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    read: dict[str, str] = field(default_factory=dict)  # field → value as read


@dataclass
class ResolvedPO:
    po_number: str | None
    po_date: date | None
    requested_ship_date: date | None
    customer_id: str | None
    ship_to_id: str | None
    ship_to: ShipToBlock | None
    buyer_name: str | None
    terms: str | None
    ship_via: str | None
    confidence: dict[str, float]
    read: dict[str, str]
    lines: list[ResolvedLine]
    notes: list[str]
    ocr: bool
    basis: dict[str, str] = field(default_factory=dict)


def resolve(raw: RawPO, catalog: Catalog | None, hints: Hints | None = None) -> ResolvedPO:
    """Map a :class:`RawPO` onto master data and state a confidence per field."""
    hints = hints or Hints()
    notes: list[str] = []
    conf: dict[str, float] = {}
    read: dict[str, str] = {}
    basis: dict[str, str] = {}

    po, conf["po_number"], basis["po_number"] = _resolve_po_number(raw, hints, notes)
    read["po_number"] = str(raw.fields["po_number"].value) if "po_number" in raw.fields else ""
    for name in ("po_date", "requested_ship_date"):
        r = raw.fields.get(name)
        read[name] = r.raw if r else ""
        if r is None:
            conf[name] = 0.0 if (raw.ocr or name in raw.labels_seen) else ABSENT
            continue
        conf[name] = r.confidence
        if name in raw.conflicts:
            notes.append(f"{name} differs within the document: {', '.join(raw.conflicts[name])}")
    po_date = raw.fields["po_date"].value if "po_date" in raw.fields else None
    rsd = raw.fields["requested_ship_date"].value if "requested_ship_date" in raw.fields else None
    if po_date and hints.received and not (-400 <= (hints.received - po_date).days <= 60):
        conf["po_date"] = min(conf["po_date"], 0.5)
        notes.append(
            f"PO date {po_date} is far from the date the e-mail was sent ({hints.received})"
        )
    if po_date and rsd and rsd < po_date:
        conf["requested_ship_date"] = min(conf["requested_ship_date"], 0.5)
        notes.append(f"requested ship date {rsd} is before the PO date {po_date}")

    customer_id, conf["customer_id"], basis["customer_id"] = _resolve_customer(
        raw, catalog, hints, notes
    )
    read["customer_id"] = (
        str(raw.fields["account"].value) if "account" in raw.fields else (hints.sender or "")
    )
    ship_to_id, conf["ship_to"], basis["ship_to"] = _resolve_ship_to(
        raw, catalog, customer_id, hints, notes
    )
    read["ship_to"] = " / ".join((raw.ship_to.lines if raw.ship_to else [])[:4])

    lines = [
        _resolve_line(i, ln, raw, catalog, customer_id) for i, ln in enumerate(raw.lines, start=1)
    ]
    conf["line_count"] = _line_count_confidence(raw, lines, notes)
    read["line_count"] = str(len(lines))
    return ResolvedPO(
        po_number=po,
        po_date=po_date,
        requested_ship_date=rsd,
        customer_id=customer_id,
        ship_to_id=ship_to_id,
        ship_to=raw.ship_to,
        buyer_name=raw.buyer_name.value if raw.buyer_name else None,
        terms=raw.fields["terms"].value if "terms" in raw.fields else None,
        ship_via=raw.fields["ship_via"].value if "ship_via" in raw.fields else None,
        confidence={k: round(max(0.0, min(1.0, v)), 3) for k, v in conf.items()},
        read=read,
        lines=lines,
        notes=notes,
        ocr=raw.ocr,
        basis=basis,
    )


def _resolve_po_number(raw: RawPO, hints: Hints, notes: list[str]) -> tuple[str | None, float, str]:
    from rapidfuzz import fuzz

    r = raw.fields.get("po_number")
    typed = [norm_code(p) for p in hints.po_numbers]
    if r is not None:
        value = norm_code(str(r.value))
        if value in typed:
            return value, max(r.confidence, 0.95 if raw.ocr else TEXT_READ), "document+email"
        if raw.ocr and typed:
            best = max(typed, key=lambda t: fuzz.ratio(fold_code(t), fold_code(value)))
            if fuzz.ratio(fold_code(best), fold_code(value)) >= 75:
                notes.append(
                    f"PO number read as {value!r} from the scan; the e-mail says {best!r} (taken)"
                )
                return best, 0.90, "email~document"
            if len(set(typed)) == 1:
                # a typed number beats a noisy read of a scan; the person sees both
                notes.append(
                    f"PO number read as {value!r} from the scan; the e-mail says {typed[0]!r} "
                    "(taken from the e-mail — confirm it)"
                )
                return typed[0], 0.80, "email(scan differs)"
        if "po_number" in raw.conflicts:
            notes.append(
                f"PO number differs within the document: {', '.join(raw.conflicts['po_number'])}"
            )
        elif typed and not raw.ocr and len(set(typed)) == 1:
            notes.append(f"the e-mail mentions PO {typed[0]}, the document says {value}")
            return value, min(r.confidence, 0.8), "document(email differs)"
        return value, r.confidence, "document"
    if len(set(typed)) == 1:
        notes.append(f"no PO number read from the document; taken from the e-mail ({typed[0]})")
        return typed[0], 0.80, "email"
    return None, 0.0, "none"


def _resolve_customer(
    raw: RawPO, catalog: Catalog | None, hints: Hints, notes: list[str]
) -> tuple[str | None, float, str]:
    if catalog is None:
        return None, 0.0, "no_catalog"
    cust, conf, basis = catalog.customer_for_sender(hints.sender)
    account = raw.fields.get("account")
    acct = norm_code(str(account.value)) if account else None
    known_acct = acct if acct in catalog.customer else None
    if cust:
        if known_acct == cust:
            return cust, 1.0, f"{basis}+account"
        if known_acct and known_acct != cust:
            notes.append(
                f"sender {hints.sender} is customer {cust}, the document names account {acct}"
            )
            return cust, 0.5, f"{basis}(account differs)"
        if basis == "domain" and raw.buyer_name:
            from rapidfuzz import fuzz

            name = catalog.customer[cust].get("name") or ""
            if fuzz.token_sort_ratio(norm_text(name), norm_text(raw.buyer_name.value)) >= 90:
                return cust, 0.95, "domain+name"
        return cust, conf, basis
    owners = catalog.customers_for_domain(hints.sender)
    if known_acct and known_acct in owners:
        return known_acct, 0.95, "domain+account"
    if known_acct:
        notes.append(
            f"sender {hints.sender or '?'} is not a known buyer address; the document names account {acct}"
        )
        return known_acct, 0.6, "account_only"
    notes.append(f"sender {hints.sender or '?'} is not a known buyer address")
    return None, 0.0, basis


def _resolve_ship_to(
    raw: RawPO, catalog: Catalog | None, customer_id: str | None, hints: Hints, notes: list[str]
) -> tuple[str | None, float, str]:
    block = raw.ship_to
    read_conf = TEXT_READ if not raw.ocr else OCR_READ_CAP
    if catalog is None:
        return (
            (block.id_candidates[0] if block and block.id_candidates else None),
            (read_conf if block and block.id_candidates else 0.0),
            "document",
        )
    mine = {norm_code(s["ship_to_id"]): s["ship_to_id"] for s in catalog.ship_tos_for(customer_id)}
    typed = [norm_code(s) for s in hints.ship_to_ids]
    candidates = list(block.id_candidates if block else []) + [t for t, _ in raw.tokens]
    found = next((mine[norm_code(c)] for c in candidates if norm_code(c) in mine), None)
    basis = "document"
    if found is None and raw.ocr and mine:
        folded = {fold_code(k): v for k, v in mine.items()}
        found = next((folded[fold_code(c)] for c in candidates if fold_code(c) in folded), None)
        basis = "document(ocr folded)"
    if found is not None:
        agrees = norm_code(found) in typed
        if raw.ocr:
            return (
                found,
                0.95 if agrees else CONFIRMED_CAP if basis == "document" else OCR_READ_CAP,
                basis,
            )
        return found, TEXT_READ, basis + ("+email" if agrees else "")
    typed_mine = [mine[t] for t in typed if t in mine]
    if typed_mine:
        notes.append(f"ship-to {typed_mine[0]} taken from the e-mail; not read from the document")
        return typed_mine[0], 0.80, "email"
    if block and block.id_candidates:
        other = block.id_candidates[0]
        owner = (
            catalog.ship_to.get(other, {}).get("customer_id") if other in catalog.ship_to else None
        )
        if owner and owner != customer_id:
            notes.append(
                f"ship-to {other} on the document belongs to customer {owner}, not {customer_id}"
            )
            return other, 0.4, "document(other customer)"
        if not raw.ocr and owner is None and not mine:
            return other, read_conf, "document(unknown)"
    if block and mine:
        return _ship_to_by_address(block, list(mine.values()), catalog, raw.ocr, notes)
    return None, 0.0 if (raw.ocr or block) else 0.5, "none"


def _ship_to_by_address(
    block: ShipToBlock, ids: list[str], catalog: Catalog, ocr: bool, notes: list[str]
) -> tuple[str | None, float, str]:
    from rapidfuzz import fuzz

    text = norm_text(" ".join(block.lines))
    scored = []
    for sid in ids:
        s = catalog.ship_to[sid]
        addr = " ".join(
            str(s.get(k) or "")
            for k in ("name", "address_line1", "address_line2", "city", "region", "postal_code")
        )
        scored.append((fuzz.token_set_ratio(text, norm_text(addr)) / 100, sid))
    scored.sort(reverse=True)
    if not scored or scored[0][0] < 0.6:
        return None, 0.0, "none"
    score, sid = scored[0]
    margin = score - (scored[1][0] if len(scored) > 1 else 0.0)
    conf = score * (0.9 if margin >= 0.05 else 0.6) * (0.85 if ocr else 1.0)
    notes.append(
        f"ship-to {sid} matched by address (score {score:.2f}); no ship-to number on the document"
    )
    return sid, conf, "address"


def _resolve_line(
    n: int, ln: RawLine, raw: RawPO, catalog: Catalog | None, customer_id: str | None
) -> ResolvedLine:
    ocr = raw.ocr
    conf: dict[str, float] = {}
    notes: list[str] = []
    read = {
        "quantity": ln.quantity.raw if ln.quantity else "",
        "uom": ln.uom.raw if ln.uom else "",
        "unit_price": ln.unit_price.raw if ln.unit_price else "",
        "item": " / ".join(v for _, v in ln.codes) or (ln.description or ""),
    }
    line_no = ln.line_no or n
    if not ln.readable:
        notes.append(f"line {line_no}: unreadable in the scan ({ln.row_text[:60]!r})")
    qty = ln.quantity.value if ln.quantity else None
    price = ln.unit_price.value if ln.unit_price else None
    amount = ln.amount.value if ln.amount else None
    checked = qty is not None and price is not None and amount is not None
    agrees = checked and abs(qty * price - amount) <= max(Decimal("0.011"), amount / 1000)
    for key, r in (("quantity", ln.quantity), ("unit_price", ln.unit_price)):
        if r is None or r.value is None:
            conf[key] = 0.0
        elif agrees:
            conf[key] = CONFIRMED_CAP if ocr else TEXT_READ
        elif checked:
            conf[key] = 0.5
            if key == "quantity":
                notes.append(f"line {line_no}: {qty} x {price} is not the line amount {amount}")
        else:
            conf[key] = min(r.confidence, OCR_READ_CAP) if ocr else TEXT_UNCHECKED
    uoms = catalog.uoms if catalog else None
    if ln.uom is None:
        conf["uom"] = 0.0 if ocr or not ln.readable else 0.3
    else:
        known = ln.uom.value in (uoms or _STANDARD_UOMS)
        conf["uom"] = (min(ln.uom.confidence, OCR_READ_CAP) if ocr else TEXT_READ) if known else 0.4

    product_ids: list[tuple[str, str]] = []
    item_id: str | None = None
    cpn: str | None = None
    item_conf = 0.0
    suggestions: list[Suggestion] = []
    matches = []
    for hint, value in ln.codes:
        value = value.strip()
        if not value:
            continue
        m = catalog.identify(value, customer_id, ocr=ocr) if catalog else None
        qual = (m.qualifier if m and m.qualifier else None) or hint
        if qual is None and catalog:
            qual = catalog.looks_like_code(value, customer_id)
        qual = qual or (
            "BP" if catalog and customer_id and catalog.cpns_of.get(customer_id) else "VP"
        )
        product_ids.append((qual, value))
        if qual == "BP" and cpn is None:
            cpn = value
        if m is not None:
            matches.append((value, m))
    found = {m.item_id for _, m in matches if m.item_id}
    if len(found) == 1:
        item_id = found.pop()
        how = next(m for _, m in matches if m.item_id == item_id)
        if not ocr:
            item_conf = TEXT_READ
        elif how.basis == "folded":
            sim = catalog.description_similarity(item_id, ln.description) if catalog else 0.0
            item_conf = CONFIRMED_CAP if sim >= 0.6 else OCR_READ_CAP
        else:
            item_conf = CONFIRMED_CAP
    elif len(found) > 1:
        notes.append(
            f"line {line_no}: the identifiers point at different items ({', '.join(sorted(found))})"
        )
        item_conf = 0.5
    else:
        ambiguous = [m for _, m in matches if m.candidates]
        if ambiguous:
            notes.append(
                f"line {line_no}: {ambiguous[0].basis.replace('_', ' ')} → {', '.join(ambiguous[0].candidates)}"
            )
        if product_ids:
            # the identifier is read; whether it exists is validation's question (unknown item)
            item_conf = TEXT_UNCHECKED if not ocr else min(OCR_READ_CAP, 0.6)
        if catalog:
            code = product_ids[0][1] if product_ids else None
            suggestions = catalog.suggest(ln.description, code, customer_id=customer_id)
            if not product_ids:
                item_conf = 0.9 * suggestions[0].score if suggestions else 0.0
        elif not product_ids:
            item_conf = 0.0
        if suggestions:
            s = suggestions[0]
            notes.append(
                f"line {line_no}: no exact match for {read['item'][:40]!r}; best catalogue candidate "
                f"{s.item_id} {s.description!r} (score {s.score:.2f} by {s.basis}) — not applied"
            )
    conf["item"] = item_conf
    return ResolvedLine(
        line_no=line_no,
        product_ids=product_ids,
        customer_part_number=cpn,
        item_id=item_id,
        description=ln.description,
        quantity=qty if qty is not None and qty > 0 else None,
        uom=ln.uom.value if ln.uom else None,
        unit_price=price,
        confidence={k: round(max(0.0, min(1.0, v)), 3) for k, v in conf.items()},
        suggestions=suggestions,
        notes=notes,
        read=read,
    )


_STANDARD_UOMS = frozenset(
    {"EA", "CS", "BX", "PK", "FT", "LB", "DZ", "PR", "RL", "GAL", "KG", "SET"}
)


def _line_count_confidence(raw: RawPO, lines: list[ResolvedLine], notes: list[str]) -> float:
    """Did we get every line? The document's total is the check; else contiguous numbers."""
    if not lines:
        return 0.0
    total = raw.totals.get("subtotal") or raw.totals.get("total")
    values = [
        (ln.quantity * ln.unit_price)
        if ln.quantity is not None and ln.unit_price is not None
        else None
        for ln in lines
    ]
    numbers = [ln.line_no for ln in lines]
    contiguous = numbers == list(range(1, len(lines) + 1))
    if total is not None and None not in values:
        s = sum(values, Decimal("0"))
        if abs(s - total.value) <= max(Decimal("0.02"), total.value / 2000):
            return CONFIRMED_CAP if raw.ocr else TEXT_READ
        if (
            "total" in raw.totals
            and "subtotal" in raw.totals
            and abs(s - raw.totals["total"].value) <= Decimal("0.02")
        ):
            return CONFIRMED_CAP if raw.ocr else TEXT_READ
        notes.append(f"the lines add up to {s}, the document's total is {total.value}")
        return 0.5
    if raw.ocr:
        return OCR_READ_CAP if contiguous else 0.5
    return TEXT_UNCHECKED if contiguous else 0.7


# ---------------------------------------------------------------------------- other OCR


def pages_from_read_result(doc: dict[str, Any]) -> list[Page]:
    """An Azure-style *Read* OCR result (``analyzeResult.readResults[].lines[]`` with
    ``boundingBox`` and per-word ``confidence``) → pages of cells: the format of the
    labelled ``po_docs`` corpus and of hosted OCR services a customer may already run."""
    result = doc.get("analyzeResult", doc)
    pages = []
    for n, rr in enumerate(result.get("readResults", []), start=1):
        cells = []
        for line in rr.get("lines", []):
            box = line.get("boundingBox") or [0] * 8
            xs, ys = box[0::2], box[1::2]
            words = line.get("words") or []
            conf = min((float(w.get("confidence", 1.0)) for w in words), default=1.0)
            cells.append(Cell(line.get("text", ""), min(xs), min(ys), max(xs), max(ys), conf=conf))
        pages.append(
            Page(n, float(rr.get("width") or 0), float(rr.get("height") or 0), cells, ocr=True)
        )
    return pages
