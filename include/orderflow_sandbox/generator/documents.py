"""Human-channel documents: PDF purchase orders (three layouts, plus scanned-looking images
with no text layer), the e-mails that carry them, and inside-sales CSV exports.

Customers keep one PO form (layout by customer), as they do in life, so an extractor can
learn a layout; scanned ones are rendered straight to pixels with Pillow (noise, skew, blur,
low contrast) and wrapped as an image-only PDF or sent as PNG, which is what makes them
"low confidence". Everything is deterministic: reportlab runs with ``invariant=1``, MIME
boundaries and Message-IDs derive from the order, noise from a seeded generator.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from reportlab import rl_config
from reportlab.lib.colors import Color, black, white
from reportlab.lib.pagesizes import letter
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from orderflow_sandbox.generator.day import DocLine, PurchaseOrderDoc
from orderflow_sandbox.generator.world import DISTRIBUTOR_NAME, ORDERS_MAILBOX

PAGE_W, PAGE_H = letter
DISTRIBUTOR_ADDRESS = (
    DISTRIBUTOR_NAME,
    "1200 Commerce Dr",
    "Carlisle, PA 17013",
)
LAYOUTS = ("classic", "form", "modern")


# ---------------------------------------------------------------------------- helpers


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _qty(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _addr_lines(addr: dict) -> list[str]:
    city = f"{addr['city']}, {addr['region']} {addr.get('postal_code') or ''}".rstrip()
    return [
        x
        for x in (
            addr["name"],
            addr.get("address_line1") or "",
            addr.get("address_line2") or "",
            city,
        )
        if x
    ]


def _fit(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _our_part(ln: DocLine) -> str:
    return ln.vendor_part or ln.item_id or ""


def _chunks(lines: list[DocLine], per_page: int) -> list[list[DocLine]]:
    return [lines[i : i + per_page] for i in range(0, len(lines), per_page)] or [[]]


# ---------------------------------------------------------------------------- PDF layouts


def render_pdf(doc: PurchaseOrderDoc, layout: int) -> bytes:
    """A text-layer PDF in one of :data:`LAYOUTS`."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=letter, invariant=1, pageCompression=1)
    c.setTitle(f"Purchase Order {doc.po_number}")
    c.setAuthor(doc.customer_name)
    (_classic, _form, _modern)[layout % 3](c, doc)
    c.save()
    return buf.getvalue()


def _classic(c: Canvas, doc: PurchaseOrderDoc) -> None:
    """Letterhead, boxed PO facts, vendor/ship-to blocks, ruled line table."""
    pages = _chunks(doc.lines, 26)
    cols = [
        (40, "Ln"),
        (62, "Your Part #"),
        (150, "Our Item #"),
        (240, "Description"),
        (430, "Qty"),
        (468, "UoM"),
        (500, "Unit Price"),
        (556, "Extended"),
    ]
    for p, chunk in enumerate(pages):
        c.setFont("Helvetica-Bold", 14)
        c.drawString(40, 750, doc.customer_name)
        c.setFont("Helvetica", 9)
        for i, text in enumerate(_addr_lines(doc.bill_to)[1:]):
            c.drawString(40, 736 - 11 * i, text)
        c.setFont("Helvetica-Bold", 18)
        c.drawRightString(572, 750, "PURCHASE ORDER")
        c.rect(380, 660, 192, 80)
        c.setFont("Helvetica", 9)
        facts = [
            ("PO Number:", doc.po_number),
            ("PO Date:", doc.po_date.strftime("%m/%d/%Y")),
            ("Ship By:", doc.requested_ship_date.strftime("%m/%d/%Y")),
            ("Terms:", doc.terms_code),
            ("Account:", doc.customer_id),
        ]
        for i, (label, value) in enumerate(facts):
            c.drawString(386, 728 - 14 * i, label)
            c.drawString(450, 728 - 14 * i, value)
        if p == 0:
            _block(c, 40, 640, "VENDOR", list(DISTRIBUTOR_ADDRESS))
            _block(
                c,
                320,
                640,
                "SHIP TO",
                [*_addr_lines(doc.ship_to), f"Ship-to #: {doc.ship_to['ship_to_id']}"],
            )
        top = 560 if p == 0 else 640
        c.setFont("Helvetica-Bold", 8)
        c.line(40, top + 12, 572, top + 12)
        for x, name in cols:
            (c.drawRightString if x >= 430 else c.drawString)(
                x + (20 if x >= 430 else 0), top, name
            )
        c.line(40, top - 4, 572, top - 4)
        c.setFont("Helvetica", 8)
        y = top - 16
        for ln in chunk:
            c.drawString(40, y, str(ln.line_no))
            c.drawString(62, y, _fit(ln.customer_part_number or "", 16))
            c.drawString(150, y, _fit(_our_part(ln), 17))
            c.drawString(240, y, _fit(ln.description, 36))
            c.drawRightString(450, y, _qty(ln.quantity))
            c.drawRightString(488, y, ln.uom)
            c.drawRightString(520, y, _money(ln.unit_price))
            c.drawRightString(576, y, _money(ln.quantity * ln.unit_price))
            y -= 16
        c.line(40, y + 8, 572, y + 8)
        if p == len(pages) - 1:
            total = sum(ln.quantity * ln.unit_price for ln in doc.lines)
            c.setFont("Helvetica-Bold", 9)
            c.drawRightString(520, y - 6, "Total USD")
            c.drawRightString(576, y - 6, _money(total))
        c.setFont("Helvetica", 7)
        c.drawString(40, 40, f"Buyer: {doc.buyer_name}  {doc.buyer_phone}  {doc.buyer_email}")
        c.drawRightString(572, 40, f"PO {doc.po_number}  page {p + 1} of {len(pages)}")
        c.showPage()


def _block(c: Canvas, x: float, y: float, title: str, lines: list[str]) -> None:
    c.setFont("Helvetica-Bold", 9)
    c.drawString(x, y, title)
    c.setFont("Helvetica", 9)
    for i, text in enumerate(lines):
        c.drawString(x, y - 12 * (i + 1), text)


def _form(c: Canvas, doc: PurchaseOrderDoc) -> None:
    """A dense, gridded pre-printed form: labelled cells, small type, one item column."""
    pages = _chunks(doc.lines, 38)
    for p, chunk in enumerate(pages):
        c.setFont("Helvetica-Bold", 12)
        c.drawString(36, 760, f"{doc.customer_name.upper()} — P.O.")
        cells = [
            ("P.O. NO.", doc.po_number),
            ("DATE", doc.po_date.isoformat()),
            ("REQ. DATE", doc.requested_ship_date.isoformat()),
            ("TERMS", doc.terms_code),
            ("SHIP VIA", doc.carrier[1] if doc.carrier else "BEST WAY"),
            ("F.O.B.", "DEST"),
        ]
        for i, (label, value) in enumerate(cells):
            x = 36 + i * 90
            c.rect(x, 718, 90, 30)
            c.setFont("Helvetica", 6)
            c.drawString(x + 3, 740, label)
            c.setFont("Helvetica", 9)
            c.drawString(x + 3, 724, _fit(value, 16))
        c.rect(36, 640, 270, 70)
        c.rect(306, 640, 270, 70)
        c.setFont("Helvetica", 6)
        c.drawString(39, 702, "SHIP TO  " + doc.ship_to["ship_to_id"])
        c.drawString(309, 702, "VENDOR")
        c.setFont("Helvetica", 8)
        for i, text in enumerate(_addr_lines(doc.ship_to)):
            c.drawString(40, 690 - 10 * i, text)
        for i, text in enumerate(DISTRIBUTOR_ADDRESS):
            c.drawString(310, 690 - 10 * i, text)
        heads = [
            (36, "ITEM NO."),
            (140, "DESCRIPTION"),
            (380, "QTY"),
            (420, "U/M"),
            (460, "PRICE"),
            (520, "AMOUNT"),
        ]
        c.setFont("Helvetica-Bold", 7)
        for x, name in heads:
            c.rect(
                x, 620, (heads[heads.index((x, name)) + 1][0] if name != "AMOUNT" else 576) - x, 14
            )
            c.drawString(x + 2, 624, name)
        c.setFont("Helvetica", 7.5)
        y = 608
        for ln in chunk:
            c.drawString(38, y, _fit(ln.customer_part_number or _our_part(ln), 20))
            c.drawString(142, y, _fit(ln.description, 48))
            c.drawRightString(416, y, _qty(ln.quantity))
            c.drawString(422, y, ln.uom)
            c.drawRightString(516, y, _money(ln.unit_price))
            c.drawRightString(574, y, _money(ln.quantity * ln.unit_price))
            c.setStrokeColor(Color(0.7, 0.7, 0.7))
            c.line(36, y - 3, 576, y - 3)
            c.setStrokeColor(black)
            y -= 14
        if p == len(pages) - 1:
            c.setFont("Helvetica-Bold", 8)
            c.drawRightString(
                574, y - 8, "TOTAL " + _money(sum(ln.quantity * ln.unit_price for ln in doc.lines))
            )
        c.setFont("Helvetica", 6)
        c.drawString(
            36,
            30,
            f"Acct {doc.customer_id} · Authorized by {doc.buyer_name} · sheet {p + 1}/{len(pages)}",
        )
        c.showPage()


def _modern(c: Canvas, doc: PurchaseOrderDoc) -> None:
    """A two-column 'modern SaaS' PO: colour band, bill/ship columns, zebra-striped table."""
    pages = _chunks(doc.lines, 24)
    band = Color(0.12, 0.23, 0.42)
    zebra = Color(0.94, 0.95, 0.97)
    for p, chunk in enumerate(pages):
        c.setFillColor(band)
        c.rect(0, 712, PAGE_W, 80, stroke=0, fill=1)
        c.setFillColor(white)
        c.setFont("Helvetica-Bold", 20)
        c.drawString(40, 755, "Purchase Order")
        c.setFont("Helvetica", 11)
        c.drawString(40, 735, f"No. {doc.po_number}")
        c.drawRightString(572, 755, doc.customer_name)
        c.setFont("Helvetica", 8)
        c.drawRightString(572, 740, doc.buyer_email)
        c.setFillColor(black)
        top = 690
        if p == 0:
            _block(c, 40, 690, "Bill to", _addr_lines(doc.bill_to))
            _block(c, 320, 690, "Ship to", [*_addr_lines(doc.ship_to), doc.ship_to["ship_to_id"]])
            meta = [
                ("Order date", doc.po_date.strftime("%b %d, %Y")),
                ("Deliver by", doc.requested_ship_date.strftime("%b %d, %Y")),
                ("Payment terms", doc.terms_code),
                ("Customer account", doc.customer_id),
            ]
            for i, (label, value) in enumerate(meta):
                c.setFont("Helvetica", 7)
                c.drawString(40 + 135 * i, 610, label.upper())
                c.setFont("Helvetica-Bold", 10)
                c.drawString(40 + 135 * i, 597, value)
            top = 570
        heads = [
            (40, "#"),
            (58, "Item"),
            (140, "Customer part"),
            (222, "Description"),
            (450, "Qty"),
            (470, "Unit"),
            (520, "Price"),
            (572, "Total"),
        ]
        c.setFont("Helvetica-Bold", 8)
        for x, name in heads:
            (c.drawRightString if x >= 450 and name != "Unit" else c.drawString)(x, top, name)
        c.setFont("Helvetica", 8)
        y = top - 18
        for i, ln in enumerate(chunk):
            if i % 2 == 0:
                c.setFillColor(zebra)
                c.rect(36, y - 4, 540, 16, stroke=0, fill=1)
                c.setFillColor(black)
            c.drawString(40, y, str(ln.line_no))
            c.drawString(58, y, _fit(_our_part(ln), 15))
            c.drawString(140, y, _fit(ln.customer_part_number or "", 15))
            c.drawString(222, y, _fit(ln.description, 40))
            c.drawRightString(450, y, _qty(ln.quantity))
            c.drawString(470, y, ln.uom)
            c.drawRightString(520, y, _money(ln.unit_price))
            c.drawRightString(572, y, _money(ln.quantity * ln.unit_price))
            y -= 18
        if p == len(pages) - 1:
            c.setFont("Helvetica-Bold", 10)
            c.drawRightString(
                572,
                y - 10,
                f"Total {doc.currency} {_money(sum(ln.quantity * ln.unit_price for ln in doc.lines))}",
            )
        c.setFont("Helvetica", 7)
        c.drawString(40, 30, f"Questions? {doc.buyer_name}, {doc.buyer_phone}")
        c.drawRightString(572, 30, f"{p + 1}/{len(pages)}")
        c.showPage()


# ---------------------------------------------------------------------------- scanned


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_scan_pages(
    doc: PurchaseOrderDoc, rng: np.random.Generator, dpi: int = 100
) -> list[Image.Image]:
    """The PO as a photocopy would look after a fax/scanner: pixels only, degraded."""
    w, h = int(8.5 * dpi), int(11 * dpi)
    s = dpi / 72.0
    pages = _chunks(doc.lines, 30)
    out = []
    for p, chunk in enumerate(pages):
        img = Image.new("L", (w, h), 255)
        d = ImageDraw.Draw(img)
        big, mid, small = _font(int(15 * s)), _font(int(10 * s)), _font(int(8 * s))
        d.text((40 * s, 40 * s), doc.customer_name, fill=0, font=big)
        d.text((400 * s, 40 * s), "PURCHASE ORDER", fill=0, font=big)
        d.text((400 * s, 64 * s), f"PO #: {doc.po_number}", fill=0, font=mid)
        d.text((400 * s, 78 * s), f"Date: {doc.po_date.strftime('%m/%d/%y')}", fill=0, font=mid)
        d.text(
            (400 * s, 92 * s),
            f"Need by: {doc.requested_ship_date.strftime('%m/%d/%y')}",
            fill=0,
            font=mid,
        )
        for i, text in enumerate(
            ["SHIP TO:", *_addr_lines(doc.ship_to), doc.ship_to["ship_to_id"]]
        ):
            d.text((40 * s, (80 + 12 * i) * s), text, fill=0, font=mid)
        y = 180 * s
        d.line((36 * s, y - 4 * s, 576 * s, y - 4 * s), fill=0, width=2)
        for x, name in (
            (40, "LN"),
            (64, "PART #"),
            (170, "DESCRIPTION"),
            (420, "QTY"),
            (460, "UM"),
            (500, "PRICE"),
        ):
            d.text((x * s, y), name, fill=0, font=small)
        y += 16 * s
        for ln in chunk:
            d.text((40 * s, y), str(ln.line_no), fill=0, font=small)
            d.text((64 * s, y), (ln.customer_part_number or _our_part(ln))[:18], fill=0, font=small)
            d.text((170 * s, y), ln.description[:40], fill=0, font=small)
            d.text((420 * s, y), _qty(ln.quantity), fill=0, font=small)
            d.text((460 * s, y), ln.uom, fill=0, font=small)
            d.text((500 * s, y), _money(ln.unit_price), fill=0, font=small)
            y += 15 * s
        d.text((40 * s, 740 * s), f"Signed: {doc.buyer_name}   page {p + 1}", fill=0, font=small)
        out.append(_degrade(img, rng))
    return out


@lru_cache(maxsize=1)
def _noise_field() -> np.ndarray:
    """One fixed field of sensor noise (unit variance), twice a page in each direction.

    Pages take a random window of it: as noisy as fresh noise to the eye and to an OCR
    engine, but a quarter of the cost of drawing ~1M normals per page.
    """
    return np.random.default_rng(20240607).standard_normal((2400, 1900), dtype=np.float32)


def _degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Low contrast, sensor noise, specks, a slight skew and blur."""
    lo, hi = float(rng.uniform(50, 90)), float(rng.uniform(185, 225))
    img = img.rotate(
        float(rng.uniform(-2.5, 2.5)), resample=Image.Resampling.BILINEAR, fillcolor=255
    )
    img = img.filter(ImageFilter.BoxBlur(float(rng.uniform(0.4, 0.9))))
    field = _noise_field()
    h, w = img.height, img.width
    y, x = int(rng.integers(0, field.shape[0] - h)), int(rng.integers(0, field.shape[1] - w))
    noise = field[y : y + h, x : x + w]
    a = np.asarray(img, dtype=np.float32) * ((hi - lo) / 255.0) + lo
    a += noise * float(rng.uniform(10, 22))
    a[noise > 3.0] = lo  # dust specks
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")


def images_to_pdf(pages: list[Image.Image], title: str) -> bytes:
    """An image-only PDF (no text layer), one JPEG per page, like a scanner produces."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=letter, invariant=1)
    c.setTitle(title)
    c.setCreator("Scan to PDF")
    # ASCII85 is pure Python without reportlab's C accelerator: 20x slower than raw binary.
    saved, rl_config.useA85 = rl_config.useA85, 0
    try:
        for img in pages:
            jpg = io.BytesIO()
            img.save(jpg, format="JPEG", quality=55)
            jpg.seek(0)
            c.drawImage(ImageReader(jpg), 0, 0, width=PAGE_W, height=PAGE_H)
            c.showPage()
        c.save()
    finally:
        rl_config.useA85 = saved
    return buf.getvalue()


def image_png(img: Image.Image) -> bytes:
    """A phone-photo-sized PNG; posterised so noise does not balloon the file."""
    small = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.BILINEAR)
    small = small.point(lambda v: (v >> 4) << 4)
    buf = io.BytesIO()
    small.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


# ---------------------------------------------------------------------------- e-mail


SUBJECTS = (
    "PO {po}",
    "Purchase Order {po} - {name}",
    "New order {po}",
    "FW: PO# {po}",
    "Order {po} attached",
)


def build_email(
    doc: PurchaseOrderDoc, attachments: list[tuple[str, bytes, str, str]], at: datetime
) -> bytes:
    """An RFC 5322 message from the customer's buyer to the order desk with the PO attached."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{doc.buyer_name} <{doc.buyer_email}>"
    msg["To"] = f"Order Desk <{ORDERS_MAILBOX}>"
    msg["Subject"] = SUBJECTS[doc.key % len(SUBJECTS)].format(
        po=doc.po_number, name=doc.customer_name
    )
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = f"<po-{doc.po_number}.{doc.key}@{doc.domain}>"
    msg.set_content(
        f"Hello,\n\nPlease find attached our purchase order {doc.po_number}"
        f" for ship-to {doc.ship_to['ship_to_id']}.\nPlease confirm the ship date.\n\n"
        f"Thanks,\n{doc.buyer_name}\n{doc.customer_name}\n{doc.buyer_phone}\n"
    )
    for filename, data, maintype, subtype in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    msg.set_boundary(f"=_orderflow_{doc.key:08d}_=")
    return msg.as_bytes()


def email_for(
    doc: PurchaseOrderDoc,
    at: datetime,
    layout: int,
    scanned: bool,
    png: bool,
    rng: np.random.Generator,
) -> bytes:
    """Render the attachment(s) the way this customer sends them and wrap them in a message."""
    stem = f"PO_{doc.po_number}"
    if not scanned:
        return build_email(
            doc, [(f"{stem}.pdf", render_pdf(doc, layout), "application", "pdf")], at
        )
    pages = render_scan_pages(doc, rng)
    if png:
        files = [
            (
                f"{stem}_p{i + 1}.png" if len(pages) > 1 else f"{stem}.png",
                image_png(img),
                "image",
                "png",
            )
            for i, img in enumerate(pages)
        ]
        return build_email(doc, files, at)
    return build_email(
        doc,
        [
            (
                f"scan_{doc.key:06d}.pdf",
                images_to_pdf(pages, "Scanned Document"),
                "application",
                "pdf",
            )
        ],
        at,
    )


# ---------------------------------------------------------------------------- CSV


CSV_COLUMNS = {
    "A": [
        "order_date",
        "rep",
        "customer_id",
        "customer_name",
        "ship_to_id",
        "po_number",
        "requested_ship_date",
        "line_no",
        "item_id",
        "customer_part_number",
        "description",
        "quantity",
        "uom",
        "unit_price",
    ],
    "B": [
        "Cust #",
        "Ship To",
        "PO #",
        "PO Date",
        "Req Ship",
        "Ln",
        "Item",
        "Cust Part",
        "Description",
        "Qty",
        "U/M",
        "Price",
        "Entered By",
    ],
    "C": [
        "po_number",
        "customer_id",
        "ship_to_id",
        "po_date",
        "ship_by",
        "line",
        "sku",
        "cust_part",
        "qty",
        "uom",
        "price",
        "desc",
    ],
}


def render_csv(template: str, rep: str, docs: list[PurchaseOrderDoc]) -> bytes:
    """An inside-sales export: one row per line, order columns repeated on every row.

    Template A is ISO and plain; B is the old report with US dates, ``$`` prices and vendor
    catalogue numbers; C is semicolon-separated with a different column order.
    """
    buf = io.StringIO()
    w = csv.writer(
        buf,
        delimiter=";" if template == "C" else ",",
        lineterminator="\r\n",
        quoting=csv.QUOTE_MINIMAL if template != "B" else csv.QUOTE_ALL,
    )
    w.writerow(CSV_COLUMNS[template])
    for doc in docs:
        for ln in doc.lines:
            w.writerow(_csv_row(template, rep, doc, ln))
    return buf.getvalue().encode("utf-8")


def _csv_row(template: str, rep: str, doc: PurchaseOrderDoc, ln: DocLine) -> list[str]:
    if template == "A":
        return [
            doc.po_date.isoformat(),
            rep,
            doc.customer_id,
            doc.customer_name,
            doc.ship_to["ship_to_id"],
            doc.po_number,
            doc.requested_ship_date.isoformat(),
            str(ln.line_no),
            ln.item_id or "",
            ln.customer_part_number or "",
            ln.description,
            _qty(ln.quantity),
            ln.uom,
            f"{ln.unit_price:.2f}",
        ]
    if template == "B":
        return [
            doc.customer_id,
            doc.ship_to["ship_to_id"],
            doc.po_number,
            doc.po_date.strftime("%m/%d/%Y"),
            doc.requested_ship_date.strftime("%m/%d/%Y"),
            str(ln.line_no),
            ln.vendor_part or "",
            ln.customer_part_number or "",
            ln.description,
            _qty(ln.quantity),
            ln.uom,
            f"${ln.unit_price:,.2f}",
            rep,
        ]
    return [
        doc.po_number,
        doc.customer_id,
        doc.ship_to["ship_to_id"],
        doc.po_date.isoformat(),
        doc.requested_ship_date.isoformat(),
        str(ln.line_no),
        ln.item_id or "",
        ln.customer_part_number or "",
        _qty(ln.quantity),
        ln.uom,
        f"{ln.unit_price:.2f}",
        ln.description,
    ]
