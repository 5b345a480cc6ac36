"""Inside-sales CSV uploads → canonical orders.

Reps export orders from whatever tool they use: the header decides which column is what
(known aliases, any order, comma/semicolon/tab/pipe), one row per line with the order
columns repeated. Validation is per row and per column; an order with a bad row is held
back with the row and column named, the file's other orders go through.

Encodings: UTF-8 (with or without BOM), UTF-16 (Excel "Unicode Text"; BOM or detected),
otherwise Windows-1252 — the one used is recorded. A NUL character anywhere is an error on
its row (a NUL in the first 4 KB of a file that is not UTF-16: the file is binary).

Numbers: plain digits with one decimal separator, '.' or ',' — decided once per file from
the values that can only be read one way (``12,50`` → comma; ``2.5`` → dot). A value that
could be read both ways (``1,234``) in a file that does not say is refused, as is a file
that uses both; thousands grouping (``1.234,50``, ``1,234.50``, ``1 234,50``) is read per
the file's convention. No exponents, NaN or infinities. Quantities keep at most 3 decimals
and 11 integer digits, prices 4 and 10 (the store's bounds, ``orderflow.domain.models``).

CSV injection: values are never evaluated; an identifier that a spreadsheet would evaluate
(``=``, ``+``, ``@``, tab/CR/LF, or ``-`` unless the value is a plain number) is refused, and
such free text (description, rep) is stored neutralised with a leading apostrophe.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from pydantic import ValidationError

from orderflow.domain.models import (
    MAX_INT,
    PRICE_PRECISION,
    PRICE_SCALE,
    QUANTITY_PRECISION,
    QUANTITY_SCALE,
    Address,
    Channel,
    IntakeError,
    Order,
    OrderLine,
    ProductId,
    Provenance,
    looks_like_formula,
    numeric_misfit,
    order_id_for,
    spreadsheet_safe,
)

# normalised header → canonical field
ALIASES = {
    "ponumber": "po_number",
    "po": "po_number",
    "pono": "po_number",
    "custpo": "po_number",
    "purchaseorder": "po_number",
    "customerid": "customer_id",
    "cust": "customer_id",
    "customer": "customer_id",
    "custno": "customer_id",
    "account": "customer_id",
    "shiptoid": "ship_to_id",
    "shipto": "ship_to_id",
    "podate": "po_date",
    "orderdate": "po_date",
    "date": "po_date",
    "requestedshipdate": "requested_ship_date",
    "reqship": "requested_ship_date",
    "shipby": "requested_ship_date",
    "shipdate": "requested_ship_date",
    "lineno": "line_no",
    "ln": "line_no",
    "line": "line_no",
    "itemid": "item",
    "item": "item",
    "sku": "item",
    "itemno": "item",
    "customerpartnumber": "customer_part_number",
    "custpart": "customer_part_number",
    "cpn": "customer_part_number",
    "description": "description",
    "desc": "description",
    "quantity": "quantity",
    "qty": "quantity",
    "uom": "uom",
    "um": "uom",
    "unit": "uom",
    "unitprice": "unit_price",
    "price": "unit_price",
    "rep": "rep",
    "enteredby": "rep",
    "customername": "customer_name",
}
REQUIRED = ("po_number", "customer_id", "quantity", "uom")
DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y", "%d.%m.%Y")
MAX_ROWS = 50_000


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower().replace("#", "no"))


IDENTIFIERS = ("customer_id", "po_number", "ship_to_id")
LINE_IDENTIFIERS = ("item", "customer_part_number", "uom")


@dataclass
class CsvParse:
    orders: list[Order] = field(default_factory=list)
    errors: list[IntakeError] = field(default_factory=list)
    rows: int = 0
    encoding: str | None = None
    #: the file's decimal separator ('.' or ','), None when no value needed one
    decimal_separator: str | None = None


def _err(
    code: str,
    message: str,
    where: str | None = None,
    action: str = "Correct the file and upload it again (or fix and replay this message).",
) -> IntakeError:
    return IntakeError(code=code, message=message, where=where, action=action)


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 text without a BOM: mostly-ASCII text has a NUL in every other byte."""
    if len(sample) < 4:
        return None
    sample = sample[: len(sample) - len(sample) % 2]
    half = len(sample) // 2
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.4 * half and even <= 0.05 * half:
        return "utf-16-le"
    if even >= 0.4 * half and odd <= 0.05 * half:
        return "utf-16-be"
    return None


def decode(raw: bytes) -> tuple[str | None, str | None, list[IntakeError]]:
    """The file's text and the encoding it was read with, or the error that stops it."""
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)
    encoding = encoding or _utf16_without_bom(raw[:4096])
    if encoding is None and b"\x00" in raw[:4096]:
        return None, None, [_err("csv.binary", "the file is binary, not a CSV text file")]
    if encoding is not None:
        try:
            return raw.decode(encoding), encoding, []
        except UnicodeDecodeError as exc:
            return (
                None,
                encoding,
                [
                    _err(
                        "csv.bad_encoding",
                        f"the file looks like {encoding.upper()} but byte {exc.start} is "
                        "not valid in it",
                        action="Export the file again as CSV UTF-8.",
                    )
                ],
            )
    try:
        return raw.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        # Spreadsheet exports on Windows are often cp1252; accept, and say so.
        return raw.decode("cp1252", errors="replace"), "cp1252", []


def parse(
    raw: bytes,
    *,
    partner_id: str = "inside-sales",
    source_ref: str | None = None,
    message_id: int | None = None,
    sha: str | None = None,
) -> CsvParse:
    out = CsvParse()
    text, out.encoding, errors = decode(raw)
    if text is None:
        out.errors = errors
        return out
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        out.errors.append(_err("csv.empty", "the file has no header row"))
        return out
    columns = {i: ALIASES.get(_norm(h)) for i, h in enumerate(header)}
    present = set(columns.values())
    missing = [c for c in REQUIRED if c not in present]
    if "item" not in present and "customer_part_number" not in present:
        missing.append("item or customer_part_number")
    if missing:
        unknown = [h for i, h in enumerate(header) if columns[i] is None]
        out.errors.append(
            _err(
                "csv.missing_columns",
                f"required column(s) missing: {', '.join(missing)}"
                + (f"; unrecognised headers: {', '.join(unknown)[:500]}" if unknown else ""),
                where="header row",
                action="Export with the standard inside-sales layout.",
            )
        )
        return out

    grouped: OrderedDict[tuple[str, str], list[tuple[int, dict]]] = OrderedDict()
    try:
        for rowno, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            out.rows += 1
            if out.rows > MAX_ROWS:
                out.errors.append(
                    _err(
                        "csv.too_many_rows", f"more than {MAX_ROWS} rows", action="Split the file."
                    )
                )
                out.orders = []
                return out
            rec = {columns[i]: cell.strip() for i, cell in enumerate(row) if columns.get(i)}
            if len(row) != len(header):
                out.errors.append(
                    _err(
                        "csv.ragged_row",
                        f"row {rowno} has {len(row)} cells, header has {len(header)}",
                        where=f"row {rowno}",
                    )
                )
                continue
            grouped.setdefault((rec.get("customer_id", ""), rec.get("po_number", "")), []).append(
                (rowno, rec)
            )
    except csv.Error as exc:
        out.errors.append(
            _err("csv.malformed", f"unreadable CSV: {exc}", where=f"row {reader.line_num}")
        )

    numbers = _NumberFormat.of(
        rec.get(name) for rows in grouped.values() for _, rec in rows for name in NUMERIC
    )
    out.decimal_separator = numbers.decimal
    for (customer_id, po_number), rows in grouped.items():
        order, errs = _order(
            customer_id, po_number, rows, partner_id, source_ref, message_id, sha, numbers
        )
        out.errors += errs
        if order is not None:
            out.orders.append(order)
    return out


def _order(customer_id, po_number, rows, partner_id, source_ref, message_id, sha, numbers):
    errs: list[IntakeError] = []
    first_row, head = rows[0]
    for rowno, rec in rows:
        for name, value in rec.items():
            if "\x00" in value:
                errs.append(
                    _err(
                        "csv.nul_character",
                        f"column {name} contains a NUL character (byte 0): the file is "
                        "damaged or is not text",
                        where=f"row {rowno}, column {name}",
                    )
                )
    if errs:  # nothing else of a damaged row can be trusted
        return None, _for_po(po_number, customer_id, errs)
    for name in IDENTIFIERS:
        value = head.get(name, "")
        if looks_like_formula(value):
            errs.append(_formula(name, value, f"row {first_row}, column {name}"))
    if not customer_id or not po_number:
        errs.append(
            _err(
                "csv.missing_value",
                "customer_id and po_number are required on every row",
                where=f"row {first_row}",
            )
        )
    po_date, e = _date(head.get("po_date"), f"row {first_row}, column po_date")
    errs += e
    ship_date, e = _date(
        head.get("requested_ship_date"), f"row {first_row}, column requested_ship_date"
    )
    errs += e
    lines: list[OrderLine] = []
    line_rows: dict[int, int] = {}
    for n, (rowno, rec) in enumerate(rows, start=1):
        where = f"row {rowno}"
        qty, e = numbers.read(
            rec.get("quantity"), "quantity", where, QUANTITY_PRECISION, QUANTITY_SCALE
        )
        errs += e
        if qty is not None and qty <= 0:
            errs.append(
                _err(
                    "csv.bad_quantity",
                    f"quantity {rec.get('quantity')!r} is not a positive number",
                    where=f"{where}, column quantity",
                )
            )
        price, e = numbers.read(
            rec.get("unit_price"), "unit_price", where, PRICE_PRECISION, PRICE_SCALE
        )
        errs += e
        if price is not None and price < 0:
            errs.append(
                _err(
                    "csv.bad_price",
                    f"unit price {rec.get('unit_price')!r} is negative",
                    where=f"{where}, column unit_price",
                )
            )
        line_no, e = _line_no(rec.get("line_no"), n, where)
        errs += e
        if line_no is not None:
            if line_no in line_rows:
                errs.append(
                    _err(
                        "csv.duplicate_line_no",
                        f"line number {line_no} is used twice in this PO "
                        f"(rows {line_rows[line_no]} and {rowno})",
                        where=f"{where}, column line_no",
                    )
                )
            line_rows.setdefault(line_no, rowno)
        item, cpn = rec.get("item") or None, rec.get("customer_part_number") or None
        if not item and not cpn:
            errs.append(
                _err(
                    "csv.no_product",
                    "neither item nor customer part number given",
                    where=f"{where}, columns item/customer_part_number",
                )
            )
        for name in LINE_IDENTIFIERS:
            value = rec.get(name) or ""
            if looks_like_formula(value):
                errs.append(_formula(name, value, f"{where}, column {name}"))
        if errs or qty is None or line_no is None:
            if qty is None and not any(e.where and e.where.startswith(where) for e in errs):
                errs.append(
                    _err(
                        "csv.bad_quantity",
                        "quantity is missing",
                        where=f"{where}, column quantity",
                    )
                )
            continue
        description = rec.get("description") or None
        try:
            # an identifier past the model's bounds (a 1,000-digit item) is this row's error
            pids = [ProductId(qualifier="BP", value=cpn)] if cpn else []
            if item:
                pids.append(ProductId(qualifier="VN", value=item))
            lines.append(
                OrderLine(
                    line_no=line_no,
                    product_ids=pids,
                    customer_part_number=cpn,
                    description=spreadsheet_safe(description) if description else None,
                    quantity=qty,
                    uom=(rec.get("uom") or "").upper(),
                    unit_price=price,
                    source_line_id=str(rowno),
                )
            )
        except ValidationError as exc:
            errs += _invalid(exc, where)
    if errs or not lines:
        if not errs:
            errs.append(
                _err("csv.no_lines", f"PO {po_number} has no valid lines", where=f"row {first_row}")
            )
        return None, _for_po(po_number, customer_id, errs)
    try:
        order = Order(
            order_id=order_id_for(Channel.CSV, customer_id, po_number, "csv"),
            po_number=po_number,
            po_date=po_date,
            customer_id=customer_id,
            ship_to=Address(party_id=head.get("ship_to_id"), party_id_qualifier="92")
            if head.get("ship_to_id")
            else None,
            requested_ship_date=ship_date,
            lines=lines,
            references={"rep": spreadsheet_safe(head["rep"])} if head.get("rep") else {},
            provenance=Provenance(
                channel=Channel.CSV,
                partner_id=partner_id,
                message_id=message_id,
                source_ref=source_ref,
                document_sha256=sha,
            ),
        )
    except ValidationError as exc:
        return None, _for_po(po_number, customer_id, _invalid(exc, f"row {first_row}"))
    return order, []


def _for_po(po_number: str, customer_id: str, errs: list[IntakeError]) -> list[IntakeError]:
    for e in errs:
        e.message = f"PO {po_number[:40] or '?'} (customer {customer_id[:40] or '?'}): {e.message}"
    return errs


def _formula(name: str, value: str, where: str) -> IntakeError:
    return _err(
        "csv.formula_value",
        f"{name} {value[:30]!r} looks like a spreadsheet formula; refusing it",
        where=where,
    )


def _invalid(exc: ValidationError, where: str) -> list[IntakeError]:
    """What the canonical model refused (the store's bounds), per field."""
    return [
        _err(
            "csv.invalid_value",
            f"{'.'.join(str(x) for x in err['loc']) or 'order'}: {err['msg']}",
            where=where,
        )
        for err in exc.errors(include_url=False, include_input=False)[:20]
    ]


def _line_no(value: str | None, position: int, where: str) -> tuple[int | None, list]:
    if not value:
        return position, []
    if re.fullmatch(r"[0-9]{1,10}", value) and 0 < int(value) <= MAX_INT:
        return int(value), []
    return None, [
        _err(
            "csv.bad_line_no",
            f"line number {value[:30]!r} is not a whole number from 1 to {MAX_INT}",
            where=f"{where}, column line_no",
        )
    ]


NUMERIC = ("quantity", "unit_price")
_CURRENCY_SIGNS = "$€£¥"
_GROUP_SPACES = " \u00a0\u202f'"
_SHAPE = re.compile(r"(?P<sign>[+-]?)(?P<body>[0-9][0-9.,\u00a0\u202f' ]*)")


def _grouped(text: str, seps: str) -> bool:
    """``text`` is digits in thousands groups separated by one of ``seps`` (1,234,567)."""
    return any(re.fullmatch(rf"[0-9]{{1,3}}(?:{re.escape(sep)}[0-9]{{3}})+", text) for sep in seps)


def _strip(value: str) -> str:
    v = value.strip()
    for sign in _CURRENCY_SIGNS:
        v = v.replace(sign, "")
    return v.strip()


def _reading(value: str) -> tuple[str, str | None]:
    """How a numeric cell can be read: ('plain'|'decimal'|'grouped'|'ambiguous'|'bad', the
    decimal separator it implies, if any)."""
    m = _SHAPE.fullmatch(_strip(value))
    if m is None:
        return "bad", None
    body = m["body"]
    marks = [c for c in body if c in ".,"]
    if len(set(marks)) == 2:  # 1.234,50 / 1,234.50: the last mark is the decimal separator
        dec = marks[-1]
        whole, _, frac = body.rpartition(dec)
        if not frac.isdigit() or not _grouped(whole, ".,".replace(dec, "")):
            return "bad", None
        return "decimal", dec
    if len(marks) > 1:  # 1,234,567 / 1.234.567: grouping only
        if not _grouped(body, marks[0]):
            return "bad", None
        return "grouped", "." if marks[0] == "," else ","
    if len(marks) == 1:
        dec = marks[0]
        whole, _, frac = body.partition(dec)
        if not frac.isdigit():
            return "bad", None
        if not whole.isdigit():  # 1 234,50: spaces group, so the mark is the decimal one
            return ("decimal", dec) if _grouped(whole, _GROUP_SPACES) else ("bad", None)
        if len(frac) == 3 and 1 <= len(whole) <= 3 and whole[0] != "0":
            return "ambiguous", None  # 1,234: a thousand, or one point two three four?
        return "decimal", dec
    if body.isdigit():
        return "plain", None
    return ("grouped", None) if _grouped(body, _GROUP_SPACES) else ("bad", None)


@dataclass
class _NumberFormat:
    """The file's decimal separator, decided from the values that can only be read one way."""

    decimal: str | None
    conflict: bool = False

    @classmethod
    def of(cls, values) -> _NumberFormat:
        seen = {sep for v in values if v for kind, sep in [_reading(v)] if sep}
        if len(seen) > 1:
            return cls(None, conflict=True)
        return cls(seen.pop() if seen else None)

    def read(
        self, value: str | None, column: str, where: str, precision: int, scale: int
    ) -> tuple[Decimal | None, list[IntakeError]]:
        if value is None or value == "":
            return None, []
        where = f"{where}, column {column}"
        kind, sep = _reading(value)
        if kind == "bad":
            return None, [
                _err(
                    f"csv.bad_{'quantity' if column == 'quantity' else 'price'}",
                    f"{column} {value[:30]!r} is not a number (digits with '.' or ',' as "
                    "decimal separator; no exponents, NaN or infinities)",
                    where=where,
                )
            ]
        if self.conflict and kind != "plain":
            return None, [
                _err(
                    "csv.mixed_decimal_separators",
                    f"{column} {value[:30]!r}: this file writes decimals both with '.' and "
                    "with ',', so no number with a separator can be read safely",
                    where=where,
                    action="Export the file again with one decimal separator.",
                )
            ]
        decimal = sep if kind == "decimal" else self.decimal
        if kind == "ambiguous" and decimal is None:
            return None, [
                _err(
                    "csv.ambiguous_number",
                    f"{column} {value[:30]!r} could be read with ',' or '.' as decimal "
                    "separator, and no other number in the file says which one it uses",
                    where=where,
                    action="Write the number without thousands separators (e.g. 1234 or "
                    "1.234 / 1,234 with the decimals spelled out) and upload again.",
                )
            ]
        v = _strip(value)
        for c in _GROUP_SPACES:
            v = v.replace(c, "")
        if decimal is None:
            decimal = "," if "." in v else "."  # grouped: the mark that is not decimal
        group = "," if decimal == "." else "."
        v = v.replace(group, "").replace(decimal, ".")
        number = Decimal(v)
        misfit = numeric_misfit(number, precision, scale)
        if misfit:
            return None, [
                _err(
                    f"csv.{'quantity' if column == 'quantity' else 'price'}_out_of_range",
                    f"{column} {value[:30]!r} {misfit}",
                    where=where,
                )
            ]
        return number, []


def _date(value: str | None, where: str) -> tuple[date | None, list[IntakeError]]:
    if not value:
        return None, []
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date(), []  # noqa: DTZ007 - a calendar date
        except ValueError:
            continue
    return None, [
        _err(
            "csv.bad_date",
            f"date {value!r} is not in a known format (YYYY-MM-DD or MM/DD/YYYY)",
            where=where,
        )
    ]
