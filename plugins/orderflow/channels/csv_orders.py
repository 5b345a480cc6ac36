"""Inside-sales CSV uploads → canonical orders.

Reps export orders from whatever tool they use: the header decides which column is what
(known aliases, any order, comma/semicolon/tab), one row per line with the order columns
repeated. Validation is per row and per column; an order with a bad row is held back with
the row and column named, the file's other orders go through.

CSV injection: values are never evaluated; an identifier that looks like a spreadsheet
formula (``=``, ``+``, ``@``, tab/CR, or ``-`` not followed by a digit) is rejected, and such a
description is neutralised with a leading apostrophe before it is stored.
"""

from __future__ import annotations

import csv
import io
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from orderflow.domain.models import (
    Address,
    Channel,
    IntakeError,
    Order,
    OrderLine,
    ProductId,
    Provenance,
    order_id_for,
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
FORMULA = re.compile(r"^[=+@\t\r]|^-(?![\d.])")
DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y", "%d.%m.%Y")
MAX_ROWS = 50_000


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower().replace("#", "no"))


@dataclass
class CsvParse:
    orders: list[Order] = field(default_factory=list)
    errors: list[IntakeError] = field(default_factory=list)
    rows: int = 0


def _err(
    code: str,
    message: str,
    where: str | None = None,
    action: str = "Correct the file and upload it again (or fix and replay this message).",
) -> IntakeError:
    return IntakeError(code=code, message=message, where=where, action=action)


def decode(raw: bytes) -> tuple[str | None, list[IntakeError]]:
    if b"\x00" in raw[:4096]:
        return None, [_err("csv.binary", "the file is binary, not a CSV text file")]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        # Spreadsheet exports on Windows are often cp1252; accept, and say so.
        return raw.decode("cp1252", errors="replace"), []


def parse(
    raw: bytes,
    *,
    partner_id: str = "inside-sales",
    source_ref: str | None = None,
    message_id: int | None = None,
    sha: str | None = None,
) -> CsvParse:
    out = CsvParse()
    text, errors = decode(raw)
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
                + (f"; unrecognised headers: {', '.join(unknown)}" if unknown else ""),
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

    for (customer_id, po_number), rows in grouped.items():
        order, errs = _order(customer_id, po_number, rows, partner_id, source_ref, message_id, sha)
        out.errors += errs
        if order is not None:
            out.orders.append(order)
    return out


def _order(customer_id, po_number, rows, partner_id, source_ref, message_id, sha):
    errs: list[IntakeError] = []
    first_row, head = rows[0]
    for name in ("customer_id", "po_number", "ship_to_id"):
        value = head.get(name, "")
        if value and FORMULA.match(value):
            errs.append(
                _err(
                    "csv.formula_value",
                    f"{name} {value[:30]!r} looks like a spreadsheet formula; refusing it",
                    where=f"row {first_row}, column {name}",
                )
            )
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
    for n, (rowno, rec) in enumerate(rows, start=1):
        where = f"row {rowno}"
        qty = _decimal(rec.get("quantity"))
        price = _decimal(rec.get("unit_price"))
        if qty is None or qty <= 0:
            errs.append(
                _err(
                    "csv.bad_quantity",
                    f"quantity {rec.get('quantity')!r} is not a positive number",
                    where=f"{where}, column quantity",
                )
            )
            continue
        if rec.get("unit_price") and (price is None or price < 0):
            errs.append(
                _err(
                    "csv.bad_price",
                    f"unit price {rec.get('unit_price')!r} is not a valid amount",
                    where=f"{where}, column unit_price",
                )
            )
            continue
        item, cpn = rec.get("item") or None, rec.get("customer_part_number") or None
        if not item and not cpn:
            errs.append(
                _err(
                    "csv.no_product",
                    "neither item nor customer part number given",
                    where=f"{where}, columns item/customer_part_number",
                )
            )
            continue
        for name, value in (("item", item), ("customer_part_number", cpn), ("uom", rec.get("uom"))):
            if value and FORMULA.match(value):
                errs.append(
                    _err(
                        "csv.formula_value",
                        f"{name} {value[:30]!r} looks like a spreadsheet formula; refusing it",
                        where=f"{where}, column {name}",
                    )
                )
        description = rec.get("description") or None
        if description and FORMULA.match(description):
            description = "'" + description  # neutralised: shown and exported as text
        pids = []
        if cpn:
            pids.append(ProductId(qualifier="BP", value=cpn))
        if item:
            pids.append(ProductId(qualifier="VN", value=item))
        try:
            line_no = int(rec.get("line_no") or n)
        except ValueError:
            line_no = n
        lines.append(
            OrderLine(
                line_no=line_no,
                product_ids=pids,
                customer_part_number=cpn,
                description=description,
                quantity=qty,
                uom=(rec.get("uom") or "").upper(),
                unit_price=price,
                source_line_id=str(rowno),
            )
        )
    if errs or not lines:
        if not errs:
            errs.append(
                _err("csv.no_lines", f"PO {po_number} has no valid lines", where=f"row {first_row}")
            )
        for e in errs:
            e.message = f"PO {po_number or '?'} (customer {customer_id or '?'}): {e.message}"
        return None, errs
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
        references={"rep": head["rep"]} if head.get("rep") else {},
        provenance=Provenance(
            channel=Channel.CSV,
            partner_id=partner_id,
            message_id=message_id,
            source_ref=source_ref,
            document_sha256=sha,
        ),
    )
    return order, []


def _decimal(value: str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(value.replace("$", "").replace(",", "").strip())
    except InvalidOperation:
        return None


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
