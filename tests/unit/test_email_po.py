"""The e-mail PO channel on bad input: every case ends in a clear, coded error (or a
warning), never an exception, and the message's good attachments are still read."""

from __future__ import annotations

import io
import json
import zlib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from orderflow.channels.email_po import (
    EXTRACTOR_VERSION,
    Catalog,
    EmailParse,
    _group_images,
    parse_document,
    parse_email,
    safe_filename,
)
from orderflow.channels.pdf_text import Limits, OcrEngine
from orderflow.domain.models import Order

NO_OCR = OcrEngine(cmd="/nonexistent/tesseract")


@pytest.fixture(scope="module")
def day(po_day) -> Path:
    return po_day


@pytest.fixture(scope="module")
def catalog(day) -> Catalog:
    w = json.loads((day / "world.json").read_text())
    return Catalog(w["customers"], w["ship_tos"], w["items"], w["xrefs"])


@pytest.fixture(scope="module")
def samples(day) -> list[tuple[dict, bytes, bytes]]:
    """(truth, raw e-mail, its PDF) for clean text-layer e-mails."""
    rows = [json.loads(line) for line in (day / "orders.jsonl").read_text().splitlines()]
    out = []
    for r in sorted(rows, key=lambda r: r["artefact"] or ""):
        if r["channel"] != "email" or r["defects"]:
            continue
        raw = (day / r["artefact"]).read_bytes()
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        pdf = next(p.get_content() for p in msg.iter_attachments())
        out.append((r, raw, pdf))
    return out


def _mail(
    attachments: list[tuple[bytes, str, str]], sender: str = "Buyer <buyer@x.example>", **headers
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Order Desk <orders@distributor.example>"
    msg["Subject"] = headers.get("subject", "Purchase order")
    msg.set_content(headers.get("body", "Please see attached."))
    for data, name, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def _codes(res: EmailParse) -> list[str]:
    return [e.code for e in res.errors]


def _assert_actionable(res: EmailParse) -> None:
    for e in res.errors:
        assert e.code and e.message and e.action, e


# ---------------------------------------------------------------------------- the message


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02 binary junk \xff\xfe" * 50,
        b"%PDF-1.4 this is not a mail",
        b"just some words without any header at all\n\nand a paragraph",
    ],
    ids=["binary", "pdf-bytes", "plain-text"],
)
def test_non_mime_bytes_are_quarantined(raw, catalog):
    res = parse_email(raw, catalog=catalog)
    assert res.orders == []
    assert _codes(res) == ["email.malformed"]
    _assert_actionable(res)


def test_empty_message(catalog):
    assert _codes(parse_email(b"", catalog=catalog)) == ["email.empty"]
    assert _codes(parse_email(b"   \r\n", catalog=catalog)) == ["email.empty"]


def test_mail_without_attachment(catalog):
    res = parse_email(_mail([], body="PO 12345 for ship-to X: 10 x widgets"), catalog=catalog)
    assert res.orders == [] and _codes(res) == ["email.no_attachment"]
    _assert_actionable(res)


def test_non_utf8_headers_do_not_crash_and_the_sender_still_counts(samples, catalog):
    truth, raw, _ = samples[0]
    head, body = raw.split(b"\r\n\r\n", 1) if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)
    email_addr = (
        next(line for line in head.splitlines() if line.startswith(b"From:"))
        .split(b"<")[1]
        .split(b">")[0]
    )
    bad = [line for line in head.splitlines() if not line.startswith((b"From:", b"Subject:"))]
    bad += [
        b"From: J\xf6rg M\xfcller \xff\xfe <" + email_addr + b">",
        b"Subject: Bestellung \x81\x8d\x9d PO\xa0#",
    ]
    res = parse_email(b"\n".join(bad) + b"\n\n" + body, catalog=catalog)
    assert res.errors == []
    (order,) = res.orders
    assert order.customer_id == truth["customer_id"]
    assert order.po_number == truth["po_number"]
    json.dumps(res.details)  # everything reported is printable


def test_attachment_too_large(samples, catalog):
    _, _, pdf = samples[0]
    res = parse_email(
        _mail([(pdf, "PO.pdf", "application/pdf")]), catalog=catalog, max_attachment_bytes=1000
    )
    assert _codes(res) == ["email.attachment_too_large"]
    assert "limit" in res.errors[0].message
    _assert_actionable(res)


def test_huge_message_is_refused_before_parsing(catalog):
    raw = b"From: a@b.example\r\nSubject: x\r\n\r\n" + b"A" * (9 * 2**20)
    res = parse_email(raw, catalog=catalog, max_attachment_bytes=2**20)
    assert _codes(res) == ["email.too_large"]


# ---------------------------------------------------------------------------- PDFs


def test_encrypted_pdf(samples, catalog):
    import pypdf

    _, _, pdf = samples[0]
    writer = pypdf.PdfWriter()
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        writer.add_page(page)
    writer.encrypt("secret")
    buf = io.BytesIO()
    writer.write(buf)
    res = parse_email(_mail([(buf.getvalue(), "PO.pdf", "application/pdf")]), catalog=catalog)
    assert res.orders == [] and _codes(res) == ["pdf.encrypted"]
    assert "password" in res.errors[0].action


def test_pdf_with_only_an_owner_password_is_read(samples, catalog):
    """Permissions-only encryption (no password to open) hides nothing: read it."""
    import pypdf

    truth, _, pdf = samples[0]
    writer = pypdf.PdfWriter()
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        writer.add_page(page)
    writer.encrypt(user_password="", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    res = parse_email(_mail([(buf.getvalue(), "PO.pdf", "application/pdf")]), catalog=catalog)
    assert res.errors == [] and res.orders[0].po_number == truth["po_number"]


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95])
def test_truncated_pdf(keep, samples, catalog):
    _, _, pdf = samples[0]
    res = parse_email(
        _mail([(pdf[: int(len(pdf) * keep)], "PO.pdf", "application/pdf")]), catalog=catalog
    )
    assert res.orders == [] and _codes(res) == ["pdf.malformed"]
    _assert_actionable(res)


def test_pdf_label_on_non_pdf_bytes(catalog):
    res = parse_email(
        _mail([(b"<html>not a pdf</html>", "PO.pdf", "application/pdf")]), catalog=catalog
    )
    assert _codes(res) == ["pdf.malformed"]


def _pdf_with_stream(stream: bytes) -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def test_pdf_decompression_bomb(catalog):
    z = zlib.compressobj(9)
    chunk = b"\x00" * 2**20
    stream = b"".join(z.compress(chunk) for _ in range(24)) + z.flush()  # 24 MB → ~24 KB
    bomb = _pdf_with_stream(stream)
    assert len(bomb) < 64 * 1024
    res = parse_email(
        _mail([(bomb, "PO.pdf", "application/pdf")]),
        catalog=catalog,
        limits=Limits(max_inflated_bytes=16 * 2**20),
    )
    assert res.orders == [] and _codes(res) == ["pdf.bomb"]
    assert "bomb" in res.errors[0].message


def test_pdf_with_a_huge_page_count(catalog):
    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(500):
        writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    res = parse_email(_mail([(buf.getvalue(), "PO.pdf", "application/pdf")]), catalog=catalog)
    assert res.orders == [] and _codes(res) == ["pdf.too_many_pages"]
    assert "500 pages" in res.errors[0].message


def test_pdf_with_an_absurd_image(catalog):
    stream = zlib.compress(b"q 612 0 0 792 0 0 cm /Im1 Do Q")
    pdf = _pdf_with_stream(stream).replace(
        b"%PDF-1.4\n",
        b"%PDF-1.4\n% << /Type /XObject /Subtype /Image /Width 90000 /Height 90000 >>\n",
    )
    res = parse_email(_mail([(pdf, "scan.pdf", "application/pdf")]), catalog=catalog)
    assert _codes(res) == ["pdf.bomb"]


def test_blank_pdf_has_no_text(catalog):
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    res = parse_email(_mail([(buf.getvalue(), "PO.pdf", "application/pdf")]), catalog=catalog)
    assert _codes(res) == ["po.no_text"]


# ---------------------------------------------------------------------------- attachments


def test_zip_attachment_is_refused_and_the_pdf_beside_it_still_read(samples, catalog):
    import zipfile

    truth, _, pdf = samples[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("PO.pdf", pdf)
    raw = _mail(
        [(buf.getvalue(), "orders.zip", "application/zip"), (pdf, "PO.pdf", "application/pdf")],
        sender=f"Buyer <{truth['customer_id']}@nowhere.example>",
    )
    res = parse_email(raw, catalog=catalog)
    assert _codes(res) == ["email.unsupported_attachment"]
    assert "archive" in res.errors[0].message
    assert [o.po_number for o in res.orders] == [truth["po_number"]]


def test_path_traversal_attachment_name(samples, catalog):
    truth, raw, pdf = samples[0]
    sender = BytesParser(policy=policy.default).parsebytes(raw)["From"]
    res = parse_email(
        _mail([(pdf, "../../etc/passwd.pdf", "application/pdf")], sender=str(sender)),
        catalog=catalog,
        source_ref="inbox/42.eml",
    )
    (order,) = res.orders
    assert order.po_number == truth["po_number"]
    assert order.provenance.source_ref == "inbox/42.eml#passwd.pdf"
    assert order.references["attachment"] == "passwd.pdf"
    assert any(w.startswith("email.unsafe_filename") for w in res.details["warnings"])
    assert not Path("passwd.pdf").exists()


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\windows\\system32\\po.pdf", "po.pdf"),
        ("/abs/path/PO 1.pdf", "PO 1.pdf"),
        ("PO\x00\r\n.pdf", "PO .pdf"),
        ("..", "attachment"),
        ("x" * 300 + ".pdf", "x" * 100),
    ],
)
def test_safe_filename(name, safe):
    assert safe_filename(name) == safe


def test_several_po_attachments_make_several_orders(samples, catalog):
    (t1, raw1, pdf1), (t2, _, pdf2) = samples[0], samples[1]
    sender = str(BytesParser(policy=policy.default).parsebytes(raw1)["From"])
    raw = _mail(
        [(pdf1, "a.pdf", "application/pdf"), (pdf2, "b.pdf", "application/pdf")], sender=sender
    )
    res = parse_email(raw, catalog=catalog, sha="f" * 64)
    assert [o.po_number for o in res.orders] == [t1["po_number"], t2["po_number"]]
    assert len({o.order_id for o in res.orders}) == 2
    assert res.attachments == 2 and res.pages == 2
    again = parse_email(raw, catalog=catalog, sha="f" * 64)
    assert [o.order_id for o in again.orders] == [o.order_id for o in res.orders]  # replay-stable


def test_scan_pages_sent_as_images_are_one_document():
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 10
    docs = _group_images(
        [
            ("PO_123_p2.png", "image/png", png + b"2", 2),
            ("PO_123_p1.png", "image/png", png + b"1", 1),
            ("PO_9.png", "image/png", png, 3),
        ]
    )
    assert [(d.name, len(d.parts)) for d in docs] == [("PO_123_p1.png", 2), ("PO_9.png", 1)]
    assert docs[0].parts[0].endswith(b"1")


def test_garbage_image_and_unsupported_types(catalog):
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    raw = _mail(
        [
            (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "PO.png", "image/png"),
            (b"PK\x05\x06" + b"\x00" * 18, "PO.docx", docx),
        ]
    )
    res = parse_email(raw, catalog=catalog)
    # the .docx is reported (ZIP-based: an archive), the broken image is an error of its own
    assert sorted(_codes(res)) == ["email.unsupported_attachment", "image.malformed"]
    _assert_actionable(res)
    res = parse_email(
        _mail([(b"Hello, see the order in the body", "notes.txt", "text/plain")]), catalog=catalog
    )
    assert _codes(res) == ["email.unsupported_attachment"]


def test_business_card_beside_the_po_is_only_a_warning(samples, catalog):
    truth, raw, pdf = samples[0]
    sender = str(BytesParser(policy=policy.default).parsebytes(raw)["From"])
    vcard = b"BEGIN:VCARD\r\nFN:Buyer\r\nEND:VCARD\r\n"
    res = parse_email(
        _mail(
            [(pdf, "PO.pdf", "application/pdf"), (vcard, "buyer.vcf", "text/vcard")], sender=sender
        ),
        catalog=catalog,
    )
    assert res.errors == [] and res.orders[0].po_number == truth["po_number"]
    assert any("buyer.vcf" in w for w in res.details["warnings"])
    json.dumps(res.details)


def test_image_bomb(catalog):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 MP, tiny file
    res = parse_email(_mail([(buf.getvalue(), "scan.png", "image/png")]), catalog=catalog)
    assert _codes(res) == ["image.bomb"]


# ---------------------------------------------------------------------------- customers


def test_unknown_sender_goes_to_a_person(samples, catalog):
    truth, _, pdf = samples[0]
    res = parse_email(
        _mail([(pdf, "PO.pdf", "application/pdf")], sender="someone@elsewhere.example"),
        catalog=catalog,
    )
    (order,) = res.orders
    # the document names an account, but an unknown sender cannot place orders for it alone
    assert order.customer_id == truth["customer_id"] or order.customer_id is None
    assert order.confidence["customer_id"] < 0.85
    (low,) = res.low_confidence
    assert low["order_id"] == order.order_id
    assert "customer_id" in {f["field"] for f in low["fields"]}


def test_domain_only_sender_is_confirmed_by_the_account_on_the_document(samples, catalog, day):
    world = json.loads((day / "world.json").read_text())
    emails = {c["customer_id"]: c["email"] for c in world["customers"]}
    for truth, _, pdf in samples[:6]:
        domain = emails[truth["customer_id"]].split("@")[1]
        res = parse_email(
            _mail([(pdf, "PO.pdf", "application/pdf")], sender=f"colleague@{domain}"),
            catalog=catalog,
        )
        (order,) = res.orders
        assert order.customer_id == truth["customer_id"]
        assert order.confidence["customer_id"] >= 0.9


def test_provenance_and_api_shape(samples, catalog):
    _, raw, _ = samples[0]
    at = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    res = parse_email(
        raw, catalog=catalog, source_ref="000001.eml", message_id=7, sha="a" * 64, received_at=at
    )
    assert isinstance(res, EmailParse) and res.attachments == 1 and res.pages == 1
    (order,) = res.orders
    assert isinstance(order, Order)
    p = order.provenance
    assert (p.channel, p.message_id, p.document_sha256, p.received_at) == ("email", 7, "a" * 64, at)
    assert p.extraction_model == EXTRACTOR_VERSION == "po-extract@1"
    assert p.partner_id and "@" in p.partner_id
    assert order.references["attachment"].endswith(".pdf")
    assert order.order_id.startswith("EMA-")


def test_drop_folder_document(samples, catalog):
    truth, _, pdf = samples[0]
    res = parse_document(
        pdf, catalog=catalog, filename="PO_upload.pdf", customer_id=truth["customer_id"]
    )
    (order,) = res.orders
    assert order.customer_id == truth["customer_id"] and order.confidence["customer_id"] == 1.0
    res = parse_document(b"GIF89a not really", catalog=catalog, filename="x.gif")
    assert _codes(res) == ["image.malformed"]
    assert _codes(parse_document(b"hello", catalog=catalog, filename="notes.txt")) == [
        "email.unsupported_attachment"
    ]


def test_an_extractor_bug_is_an_error_not_a_crash(samples, catalog, monkeypatch):
    import orderflow.channels.email_po as email_po

    def boom(pages):
        raise RuntimeError("bug")

    monkeypatch.setattr(email_po, "extract", boom)
    res = parse_email(samples[0][1], catalog=catalog)
    assert res.orders == [] and _codes(res) == ["po.extraction_failed"]


def test_scan_without_ocr_engine(catalog):
    from PIL import Image, ImageDraw

    img = Image.new("L", (850, 1100), 255)
    ImageDraw.Draw(img).text((50, 50), "PURCHASE ORDER  PO # 123", fill=0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    res = parse_email(
        _mail([(buf.getvalue(), "PO_123.png", "image/png")]), catalog=catalog, ocr=NO_OCR
    )
    assert _codes(res) == ["ocr.unavailable"]
    _assert_actionable(res)


# ---------------------------------------------------------------------------- OCR image size


class _SizeSpy(OcrEngine):
    """Tesseract as shipped, recording the size of every page image handed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def _page(self, image):
        self.sizes.append(image.size)
        return super()._page(image)


@pytest.mark.skipif(not OcrEngine().available, reason="tesseract is not installed")
def test_a_scan_over_the_ocr_pixel_cap_is_shrunk_in_the_reader_and_still_read():
    """A letter page scanned at 400 DPI (15 MP) goes through the forked reader, reaches OCR
    at most ``max_ocr_pixels`` (10 MP) and its text is still read."""
    from PIL import Image, ImageDraw, ImageFont

    from orderflow.channels.pdf_text import MAX_OCR_PIXELS, read_images

    page = Image.new("L", (3400, 4400), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=90)
    for i, text in enumerate(["PURCHASE ORDER", "PO Number 4500123456", "Qty 12 EA"]):
        draw.text((300, 300 + 200 * i), text, fill=0, font=font)
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    assert page.width * page.height > MAX_OCR_PIXELS

    spy = _SizeSpy()
    pages = read_images([buf.getvalue()], Limits(), ocr=spy)

    ((w, h),) = spy.sizes
    assert 0.95 * MAX_OCR_PIXELS <= w * h <= MAX_OCR_PIXELS
    assert abs(w / h - 3400 / 4400) < 0.01  # shrunk, not cropped or stretched
    words = " ".join(c.text for c in pages[0].cells)
    assert "4500123456" in words and "PURCHASE" in words, words
