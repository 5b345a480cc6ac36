"""E-mailed (and dropped) purchase orders → canonical orders.

A buyer mails a PO as a PDF (text layer) or a scan (image-only PDF, PNG/JPEG/TIFF). This
module opens the message, picks the PO attachments, reads them (:mod:`.pdf_text`), extracts
and resolves the fields (:mod:`.po_extract`) and returns one :class:`Order` per PO, each with
a confidence per header field and per line field.

* **Who sent it** decides the customer: the sender's address is looked up in master data
  (exact address 1.0, domain only 0.9); the account number on the document corroborates it.
* **Low confidence is not an error.** An order whose lowest confidence is under the threshold
  is still returned (so it is stored and visible) and listed in ``low_confidence``; the caller
  opens a ``low_confidence_extraction`` exception for a person to confirm it. Only a document
  that yields no PO number or no lines is an error (``po.no_po_number``, ``po.no_lines``).
* **Nothing is guessed silently.** ``OrderLine.item_id`` is set only on an exact
  identification (customer part number through a cross-reference, vendor part, UPC, item id);
  otherwise the best catalogue candidate and its score go into the order's ``notes`` and into
  ``details["suggestions"]``, not into the order.
* **Bad input never raises**: non-MIME bytes, missing or unsupported attachments, oversized,
  encrypted, truncated or malformed PDFs, decompression bombs, archives, hostile file
  names, broken header encodings — each becomes an :class:`IntakeError` with a code, a
  message and an action, and the message's other attachments are still processed.
  Attachment file names are labels only: they are sanitised and never used as paths.

Pure apart from running the ``tesseract`` binary for scans: no Airflow, no database, no
network.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from orderflow.channels.catalog import Catalog
from orderflow.channels.pdf_text import (
    IMAGE_MAGIC,
    DocumentError,
    Limits,
    OcrEngine,
    Page,
    read_images,
    read_pdf,
    tesseract_version,
)
from orderflow.channels.po_extract import Hints, ResolvedPO, extract, resolve
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

__all__ = [
    "EXTRACTOR_VERSION",
    "Catalog",
    "EmailParse",
    "PreparedEmail",
    "parse_document",
    "parse_email",
    "prepare_email",
]

EXTRACTOR_VERSION = "po-extract@1"
HEADER_FIELDS = ("po_number", "po_date", "customer_id", "ship_to", "requested_ship_date")
MAX_PARTS = 100
MAX_BODY_CHARS = 100_000
#: one header field (unfolded, before any decoding): the standard's line limit is 998; long
#: legitimate headers (References, DKIM) stay well under this. Decoding cost grows with
#: length (an 8 KB header decodes in ≤ 0.4 s and ≈ 10 MB; 600 KB took 3.3 GB).
MAX_HEADER_CHARS = 8 * 1024
#: all header fields of all MIME parts of one message together
MAX_HEADER_TOTAL = 128 * 1024
#: the whole message, as a multiple of the attachment limit (base64 costs 4/3): a PO and its
#: covering note fit; the parsed message costs a few times its size
MESSAGE_FACTOR = 1.6
SMALL_INLINE_IMAGE = 15_000  # logos and signature images, not PO scans
PDF_TYPES = {"application/pdf", "application/x-pdf", "application/acrobat"}
ARCHIVE = re.compile(r"\.(zip|7z|rar|gz|tgz|tar|bz2|xz|cab|arj|lzh)$", re.I)
OFFICE = re.compile(r"\.(docx?|xlsx?|pptx?|od[tsp]|rtf)$", re.I)  # ZIP inside, but not archives
ARCHIVE_MAGIC = (b"PK\x03\x04", b"7z\xbc\xaf", b"Rar!", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
PAGE_SUFFIX = re.compile(r"^(.*?)[_\- ]?(?:p|page|pg)[_\- ]?(\d{1,3})$", re.I)
PO_MENTION = re.compile(
    r"\b(?:p\.?\s?o\.?|purchase\s+order|order)\s*(?:number|no\.?|#)?\s*[:#]?\s*"
    r"([A-Z0-9][A-Z0-9\-/._]*\d[A-Z0-9\-/._]*)",
    re.I,
)
SHIP_TO_MENTION = re.compile(
    r"\bship[\s-]*to\s*(?:#|no\.?|id)?\s*[:#]?\s*([A-Z0-9][A-Z0-9\-_/.]*\d[A-Z0-9\-_/.]*)", re.I
)
ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass
class EmailParse:
    """What one e-mail (or dropped document) yields."""

    orders: list[Order] = field(default_factory=list)
    errors: list[IntakeError] = field(default_factory=list)
    #: per order below the threshold: order_id, po_number, attachment, min_confidence and
    #: ``fields`` ([{field, confidence, value}] of everything under the threshold)
    low_confidence: list[dict[str, Any]] = field(default_factory=list)
    attachments: int = 0
    pages: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Doc:
    name: str
    content_type: str
    kind: str  # pdf | image
    parts: list[bytes]  # one PDF, or the pages of a scan sent as several images
    sha256: str


@dataclass
class PreparedEmail:
    """A message opened and its documents read (:func:`prepare_email`): the costly,
    store-independent half of :func:`parse_email` (PDF parsing in the reader process, OCR),
    which the mailbox intake runs ahead of the store, in parallel over messages."""

    raw: bytes
    out: EmailParse
    opened: tuple[Message | None, str | None, str, list[_Doc]] | None
    failure: Exception | None = None
    #: document sha256 → (pages, used OCR, seconds) or the exception reading it raised
    reads: dict[str, tuple[list[Page], bool, float] | BaseException] = field(default_factory=dict)


# ---------------------------------------------------------------------------- entry points


def prepare_email(
    raw: bytes,
    *,
    max_attachment_bytes: int = 20 * 2**20,
    ocr: OcrEngine | None = None,
    limits: Limits | None = None,
) -> PreparedEmail:
    """Open ``raw`` and read every distinct document it carries (text layers, OCR of
    scans), without a catalogue or a store: hand the result to :func:`parse_email`
    (``prepared=``) to extract the orders. Never raises."""
    out = EmailParse(details={"extractor": EXTRACTOR_VERSION, "attachments": [], "warnings": []})
    try:
        opened = _open_message(raw, max_attachment_bytes, out)
    except Exception as exc:  # a parser bug must not crash the batch
        return PreparedEmail(raw, out, None, exc)
    prepared = PreparedEmail(raw, out, opened)
    if opened[0] is None:
        return prepared
    limits = limits or Limits()
    engine = ocr or OcrEngine(timeout_s=limits.ocr_timeout_s, workers=limits.ocr_workers)
    for doc in opened[3]:
        if doc.sha256 in prepared.reads:
            continue  # the same file attached twice: read once
        t0 = time.perf_counter()
        try:
            pages, used_ocr = _pages(doc, limits, engine)
        except Exception as exc:  # re-raised where parse_email reads it
            prepared.reads[doc.sha256] = exc
        else:
            prepared.reads[doc.sha256] = (pages, used_ocr, time.perf_counter() - t0)
    return prepared


def parse_email(
    raw: bytes,
    *,
    catalog: Catalog,
    source_ref: str | None = None,
    message_id: int | None = None,
    sha: str | None = None,
    received_at: datetime | None = None,
    max_attachment_bytes: int = 20 * 2**20,
    confidence_threshold: float = 0.85,
    ocr: OcrEngine | None = None,
    limits: Limits | None = None,
    prepared: PreparedEmail | None = None,
) -> EmailParse:
    """One RFC 5322 message → orders (one per PO attachment), errors and low-confidence list.

    ``ocr``: the OCR engine for scans (default: ``tesseract`` on the PATH); pass
    ``OcrEngine(cmd="/nonexistent")`` to refuse scans with ``ocr.unavailable``.
    ``prepared``: what :func:`prepare_email` made of these same bytes (with the same
    limits), so the documents are not read again; ignored when it is of other bytes.
    """
    t0 = time.perf_counter()
    if prepared is not None and prepared.raw is not raw and prepared.raw != raw:
        prepared = None
    reads = prepared.reads if prepared is not None else None
    if prepared is not None:
        out = prepared.out
        t0 -= sum(r[2] for r in prepared.reads.values() if isinstance(r, tuple))
    else:
        out = EmailParse(
            details={"extractor": EXTRACTOR_VERSION, "attachments": [], "warnings": []}
        )
    try:
        if prepared is None:
            msg, sender, hints_text, docs = _open_message(raw, max_attachment_bytes, out)
        elif prepared.failure is not None:
            raise prepared.failure
        else:
            assert prepared.opened is not None
            msg, sender, hints_text, docs = prepared.opened
    except Exception as exc:  # a parser bug must not crash the batch
        out.details.pop("unsupported", None)
        out.errors.append(
            _err("email.malformed", f"the message could not be parsed ({exc.__class__.__name__})")
        )
        return out
    if msg is None:
        return out
    sent = _sent_date(msg)
    hints = Hints(
        sender=sender,
        po_numbers=_po_mentions(hints_text),
        ship_to_ids=[m.group(1).rstrip(".") for m in SHIP_TO_MENTION.finditer(hints_text)],
        received=(received_at or sent).date() if (received_at or sent) else None,
    )
    context = {
        "subject": _clean(_header(msg, "Subject"))[:200],
        "message_id": _clean(_header(msg, "Message-ID"))[:200],
    }
    out.details.update(sender=sender, subject=context["subject"])
    _parse_docs(
        docs,
        out,
        catalog=catalog,
        hints=hints,
        context=context,
        partner=sender,
        source_ref=source_ref,
        message_id=message_id,
        sha=sha,
        received_at=received_at,
        threshold=confidence_threshold,
        ocr=ocr,
        limits=limits,
        reads=reads,
    )
    # Attachments we cannot read are only worth an error when nothing else made an order
    # (then one of them may be the PO); beside a PO they are noted, not failed.
    unsupported = out.details.pop("unsupported", [])
    if out.orders:
        out.details["warnings"] += [f"{e.code}: {e.message}" for e in unsupported]
    else:
        out.errors += unsupported
    out.details["seconds"] = round(time.perf_counter() - t0, 4)
    return out


def parse_document(
    data: bytes,
    *,
    catalog: Catalog,
    filename: str | None = None,
    customer_id: str | None = None,
    source_ref: str | None = None,
    message_id: int | None = None,
    sha: str | None = None,
    received_at: datetime | None = None,
    max_attachment_bytes: int = 20 * 2**20,
    confidence_threshold: float = 0.85,
    ocr: OcrEngine | None = None,
    limits: Limits | None = None,
) -> EmailParse:
    """A PO file from a drop folder (no e-mail around it). ``customer_id`` is given when the
    folder belongs to one customer; otherwise the account on the document names the
    customer, with a confidence that sends the order to a person."""
    t0 = time.perf_counter()
    out = EmailParse(details={"extractor": EXTRACTOR_VERSION, "attachments": [], "warnings": []})
    name = safe_filename(filename, out.details["warnings"]) if filename else "document"
    doc = _classify(name, "application/octet-stream", data, max_attachment_bytes, out, 1)
    if doc is None:
        out.errors += out.details.pop("unsupported", [])
        if not out.errors:
            out.errors.append(
                _err(
                    "email.unsupported_attachment",
                    f"{name}: not a PDF or an image",
                    action="Drop purchase orders as PDF (or scanned image) files.",
                )
            )
        return out
    sender = None
    if customer_id and customer_id in catalog.customer:
        sender = catalog.customer[customer_id].get("email")
    hints = Hints(
        sender=sender,
        po_numbers=_po_mentions(name.replace("_", " ")),
        received=received_at.date() if received_at else None,
    )
    _parse_docs(
        [doc],
        out,
        catalog=catalog,
        hints=hints,
        context={},
        partner=customer_id or "drop-folder",
        source_ref=source_ref,
        message_id=message_id,
        sha=sha,
        received_at=received_at,
        threshold=confidence_threshold,
        ocr=ocr,
        limits=limits,
    )
    out.details["seconds"] = round(time.perf_counter() - t0, 4)
    return out


# ---------------------------------------------------------------------------- the message


def _open_message(
    raw: bytes, max_attachment_bytes: int, out: EmailParse
) -> tuple[Message | None, str | None, str, list[_Doc]]:
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        out.errors.append(_err("email.empty", "the message is empty (no bytes)"))
        return None, None, "", []
    max_message = max(int(MESSAGE_FACTOR * max_attachment_bytes), 8 * 2**20)
    if len(raw) > max_message:
        out.errors.append(
            _err(
                "email.too_large",
                f"the message is {len(raw) // 2**20} MB, over the {max_message // 2**20} MB limit",
                action="Ask the customer to send the purchase order as a smaller PDF.",
            )
        )
        return None, None, "", []
    # Parsing stores header fields raw; they are decoded only when read, so their sizes are
    # checked here, before anything reads one.
    msg = BytesParser(policy=policy.default).parsebytes(bytes(raw))
    too_long = _header_too_long(msg)
    if too_long is not None:
        out.errors.append(too_long)
        return None, None, "", []
    known = [h for h in ("From", "To", "Subject", "Date", "Content-Type", "Message-ID") if h in msg]
    if not known:
        out.errors.append(
            _err(
                "email.malformed",
                "the file is not an e-mail message (no From/To/Subject/Content-Type headers)",
                action="Check the mailbox export; replay the message once it is a complete e-mail.",
            )
        )
        return None, None, "", []
    sender = _sender(msg)
    if sender is None:
        out.details["warnings"].append("email.no_sender: no readable From address")
    texts = [_header(msg, "Subject")]
    docs: list[_Doc] = []
    images: list[tuple[str, str, bytes, int]] = []
    n_parts = 0
    for part in msg.walk():
        n_parts += 1
        if n_parts > MAX_PARTS:
            out.errors.append(
                _err(
                    "email.too_many_parts",
                    f"the message has more than {MAX_PARTS} MIME parts; the rest were not read",
                )
            )
            break
        if part.is_multipart():
            continue
        ctype = _safe(part.get_content_type, "application/octet-stream")
        filename = _safe(part.get_filename, None)
        disposition = _safe(part.get_content_disposition, None)
        if ctype in ("text/plain", "text/html") and not filename and disposition != "attachment":
            texts.append(_body_text(part, ctype))
            continue
        out.attachments += 1
        idx = out.attachments
        name = safe_filename(filename, out.details["warnings"]) if filename else f"attachment-{idx}"
        if _encoded_size(part) > max_attachment_bytes * 1.05:
            out.errors.append(_too_large(name, idx, _encoded_size(part), max_attachment_bytes))
            continue
        data = _safe(lambda p=part: p.get_payload(decode=True), None) or b""
        if len(data) > max_attachment_bytes:
            out.errors.append(_too_large(name, idx, len(data), max_attachment_bytes))
            continue
        if (
            ctype.startswith("image/")
            and len(data) < SMALL_INLINE_IMAGE
            and (disposition == "inline" or _header(part, "Content-ID"))
        ):
            out.details["attachments"].append({"name": name, "skipped": "small inline image"})
            out.attachments -= 1
            continue
        doc = _classify(name, ctype, data, max_attachment_bytes, out, idx)
        if doc is None:
            continue
        if doc.kind == "image":
            images.append((name, ctype, data, idx))
        else:
            docs.append(doc)
    docs += _group_images(images)
    if not docs:
        out.errors += out.details.pop("unsupported", [])
    if not docs and not out.errors:
        out.errors.append(
            _err(
                "email.no_attachment",
                "the message has no PDF or image attachment, so there is no purchase order to read",
                action="Ask the customer to attach the purchase order (PDF), or key it in.",
            )
        )
    return msg, sender, "\n".join(texts)[:MAX_BODY_CHARS], docs


def _header_too_long(msg: Message) -> IntakeError | None:
    """The first header field over :data:`MAX_HEADER_CHARS` (or the message's header fields
    over :data:`MAX_HEADER_TOTAL` together), as an error; None when all are in bounds."""
    total = 0
    for n, part in enumerate(msg.walk(), start=1):
        if n > MAX_PARTS + 1:
            break  # the rest is not read (email.too_many_parts)
        for name, value in part.raw_items():
            size = len(name) + len(value)
            total += size
            where = "the message" if n == 1 else f"MIME part {n}"
            label = _clean(str(name))[:40]
            if size > MAX_HEADER_CHARS:
                return _err(
                    "email.header_too_long",
                    f"the {label} header of {where} is {size:,} characters long, over the "
                    f"{MAX_HEADER_CHARS:,} limit: refused before decoding (a header this long "
                    "is not from a mail program; it can exhaust the mail parser)",
                    where=f"{where}, header {label}",
                    action="Do not answer the message from this file; if the sender is a real "
                    "customer, ask them to send the purchase order again in an ordinary e-mail.",
                )
            if total > MAX_HEADER_TOTAL:
                return _err(
                    "email.header_too_long",
                    f"the message's header fields take more than {MAX_HEADER_TOTAL // 1024} KB "
                    "together: refused before decoding",
                    where=where,
                    action="Do not answer the message from this file; if the sender is a real "
                    "customer, ask them to send the purchase order again in an ordinary e-mail.",
                )
    return None


def _classify(
    name: str, ctype: str, data: bytes, max_bytes: int, out: EmailParse, idx: int
) -> _Doc | None:
    """Decide what an attachment is by its bytes first (names and types lie)."""
    sha = hashlib.sha256(data).hexdigest()
    head = data[:1024]
    if len(data) > max_bytes:
        out.errors.append(_too_large(name, idx, len(data), max_bytes))
        return None
    office = OFFICE.search(name) or "officedocument" in ctype or "opendocument" in ctype
    if (data.startswith(ARCHIVE_MAGIC) and not office) or ARCHIVE.search(name):
        out.errors.append(
            _err(
                "email.unsupported_attachment",
                f"{name} is an archive; archives are not opened (they can hide or bomb content)",
                where=f"attachment {idx} ({name})",
                action="Ask the customer to attach the purchase order PDF itself, not a ZIP.",
            )
        )
        return None
    if b"%PDF-" in head:
        return _Doc(name, "application/pdf", "pdf", [data], sha)
    if data.startswith(IMAGE_MAGIC):
        return _Doc(name, ctype if ctype.startswith("image/") else "image", "image", [data], sha)
    if ctype in PDF_TYPES or name.lower().endswith(".pdf"):
        out.errors.append(
            _err(
                "pdf.malformed",
                f"{name} is labelled as a PDF but is not one (no %PDF header)"
                + (" — it is empty" if not data else ""),
                where=f"attachment {idx} ({name})",
                action="Ask the customer to send the purchase order again.",
            )
        )
        return None
    if ctype.startswith("image/"):
        out.errors.append(
            _err(
                "image.malformed",
                f"{name} is labelled as an image but its bytes are not a known image format",
                where=f"attachment {idx} ({name})",
                action="Ask the customer to send the purchase order again.",
            )
        )
        return None
    out.details["attachments"].append(
        {"name": name, "content_type": ctype, "skipped": "not a PO format"}
    )
    if ctype.startswith(("application/", "text/")) and ctype not in (
        "application/pgp-signature",
        "application/pkcs7-signature",
    ):
        # an error only if the message turns out to hold no PO at all (see _open_message):
        # a business card or a calendar invite beside the PO PDF is not a problem
        out.details.setdefault("unsupported", []).append(
            _err(
                "email.unsupported_attachment",
                f"{name} ({ctype}) is not a PDF or an image; it was not read",
                where=f"attachment {idx} ({name})",
                action="If it is a purchase order, ask the customer for a PDF, or key it in.",
            )
        )
    return None


def _group_images(images: list[tuple[str, str, bytes, int]]) -> list[_Doc]:
    """Scans sent as one image per page (``PO_123_p1.png``, ``PO_123_p2.png``) are one PO."""
    groups: dict[str, list[tuple[int, str, str, bytes]]] = {}
    for name, ctype, data, idx in images:
        stem = name.rsplit(".", 1)[0]
        m = PAGE_SUFFIX.match(stem)
        key, page = (m.group(1).lower(), int(m.group(2))) if m else (f"{stem.lower()}#{idx}", 0)
        groups.setdefault(key, []).append((page, name, ctype, data))
    docs = []
    for members in groups.values():
        members.sort(key=lambda m: m[0])
        parts = [m[3] for m in members]
        digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()
        docs.append(_Doc(members[0][1], members[0][2], "image", parts, digest))
    return docs


# ---------------------------------------------------------------------------- documents


def _parse_docs(
    docs: list[_Doc],
    out: EmailParse,
    *,
    catalog: Catalog,
    hints: Hints,
    context: dict[str, str],
    partner: str | None,
    source_ref: str | None,
    message_id: int | None,
    sha: str | None,
    received_at: datetime | None,
    threshold: float,
    ocr: OcrEngine | None,
    limits: Limits | None,
    reads: dict[str, tuple[list[Page], bool, float] | BaseException] | None = None,
) -> None:
    limits = limits or Limits()
    engine = ocr or OcrEngine(timeout_s=limits.ocr_timeout_s, workers=limits.ocr_workers)
    seen_po: dict[str, str] = {}  # PO number -> the attachment it was read from
    seen_sha: dict[str, str] = {}
    suggestions: dict[str, Any] = {}
    for n, doc in enumerate(docs, start=1):
        info: dict[str, Any] = {"name": doc.name, "kind": doc.kind, "sha256": doc.sha256}
        out.details["attachments"].append(info)
        if doc.sha256 in seen_sha:  # the same file attached again: one document, read once
            info["duplicate_of"] = seen_sha[doc.sha256]
            out.details["warnings"].append(
                f"email.duplicate_attachment: {doc.name} is the same file as "
                f"{seen_sha[doc.sha256]}; read once"
            )
            continue
        seen_sha[doc.sha256] = doc.name
        t0 = time.perf_counter()
        try:
            read = reads.get(doc.sha256) if reads is not None else None
            if read is None:
                pages, used_ocr = _pages(doc, limits, engine)
            elif isinstance(read, BaseException):
                raise read
            else:
                pages, used_ocr, took = read
                t0 -= took
        except DocumentError as exc:
            info["error"] = exc.code
            out.errors.append(
                IntakeError(
                    code=exc.code,
                    message=f"{doc.name}: {exc.message}",
                    where=f"attachment {n} ({doc.name})",
                    action=exc.action,
                )
            )
            continue
        except Exception as exc:  # a reader bug must not crash the batch
            info["error"] = "pdf.malformed"
            out.errors.append(
                _err(
                    "pdf.malformed",
                    f"{doc.name}: the document could not be read ({exc.__class__.__name__})",
                    where=f"attachment {n} ({doc.name})",
                )
            )
            continue
        out.pages += len(pages)
        info.update(pages=len(pages), ocr=used_ocr, read_seconds=round(time.perf_counter() - t0, 4))
        if used_ocr:
            out.details["ocr_engine"] = tesseract_version(engine.cmd)
        if not any(p.cells for p in pages):
            out.errors.append(
                _err(
                    "ocr.failed" if used_ocr else "po.no_text",
                    f"{doc.name}: no text could be read from the document",
                    where=f"attachment {n} ({doc.name})",
                    action="Key the order in from the attachment, or ask the customer for a "
                    "PDF with a text layer.",
                )
            )
            continue
        t1 = time.perf_counter()
        where = f"attachment {n} ({doc.name})"
        try:
            resolved = resolve(extract(pages), catalog, hints)
        except Exception as exc:  # an extractor bug must not crash the batch
            info["error"] = "po.extraction_failed"
            out.errors.append(
                _err(
                    "po.extraction_failed",
                    f"{doc.name}: the fields could not be extracted ({exc.__class__.__name__}: "
                    f"{str(exc)[:120]})",
                    where=where,
                    action="Key the order in from the attachment and report the message to "
                    "the OrderFlow team (it is kept for replay).",
                )
            )
            continue
        info["extract_seconds"] = round(time.perf_counter() - t1, 4)
        if not resolved.po_number:
            info["error"] = "po.no_po_number"
            out.errors.append(
                _err(
                    "po.no_po_number",
                    f"{doc.name}: no purchase-order number found"
                    + (" (the scan is hard to read)" if used_ocr else ""),
                    where=where,
                    action="Key the order in with its PO number, or ask the customer to resend.",
                )
            )
            continue
        if not resolved.lines:
            info["error"] = "po.no_lines"
            out.errors.append(
                _err(
                    "po.no_lines",
                    f"{doc.name}: PO {resolved.po_number} has no order lines that could be read"
                    + (" (the scan is hard to read)" if used_ocr else ""),
                    where=where,
                    action="Key the lines in from the attachment, or ask the customer to resend.",
                )
            )
            continue
        first = seen_po.get(resolved.po_number)
        if first is not None:  # one PO, one order, however many documents carry it
            info["error"] = "po.duplicate_in_message"
            out.errors.append(
                _err(
                    "po.duplicate_in_message",
                    f"{doc.name}: PO {resolved.po_number} was already read from {first} in "
                    "this message; it was not made into a second order",
                    where=where,
                    action="Compare the two attachments; if this one is a revision, apply the "
                    "change to the order (or ask the customer for a change order).",
                )
            )
            continue
        seen_po[resolved.po_number] = doc.name
        discriminator = sha or doc.sha256
        try:
            order = _order(
                resolved,
                doc,
                catalog=catalog,
                partner=partner,
                context=context,
                source_ref=source_ref,
                message_id=message_id,
                sha=sha,
                received_at=received_at,
                used_ocr=used_ocr,
                discriminator=discriminator,
            )
        except ValueError as exc:  # pydantic: a value the canonical model refuses
            info["error"] = "po.invalid"
            out.errors.append(
                _err(
                    "po.invalid",
                    f"{doc.name}: PO {resolved.po_number} does not make a valid order: "
                    f"{str(exc).splitlines()[0][:160]}",
                    where=where,
                    action="Key the order in from the attachment, or ask the customer to resend.",
                )
            )
            continue
        out.orders.append(order)
        info["order_id"] = order.order_id
        line_suggestions = [
            {
                "line_no": i,
                "candidates": [
                    {
                        "item_id": s.item_id,
                        "score": round(s.score, 3),
                        "basis": s.basis,
                        "description": s.description,
                    }
                    for s in ln.suggestions
                ],
            }
            for i, ln in enumerate(resolved.lines, start=1)
            if ln.suggestions
        ]
        if line_suggestions:
            suggestions[order.order_id] = line_suggestions
        if order.min_confidence < threshold:
            out.low_confidence.append(_low_confidence(order, resolved, doc.name, threshold))
    if suggestions:
        out.details["suggestions"] = suggestions


def _pages(doc: _Doc, limits: Limits, engine: OcrEngine) -> tuple[list[Page], bool]:
    if doc.kind == "pdf":
        return read_pdf(doc.parts[0], limits, ocr=engine)
    return read_images(doc.parts, limits, ocr=engine), True


def _order(
    r: ResolvedPO,
    doc: _Doc,
    *,
    catalog: Catalog,
    partner: str | None,
    context: dict[str, str],
    source_ref: str | None,
    message_id: int | None,
    sha: str | None,
    received_at: datetime | None,
    used_ocr: bool,
    discriminator: str,
) -> Order:
    notes = list(r.notes)
    lines = []
    for i, ln in enumerate(r.lines, start=1):
        conf = dict(ln.confidence)
        quantity, uom = ln.quantity, ln.uom
        if quantity is None:
            quantity, conf["quantity"] = Decimal(1), 0.0
            notes.append(f"line {i}: quantity unreadable — placeholder 1, confirm it")
        if not uom:
            uom, conf["uom"] = "EA", min(conf.get("uom", 0.0), 0.3)
            notes.append(f"line {i}: no unit of measure read — placeholder EA, confirm it")
        notes += ln.notes
        lines.append(
            OrderLine(
                line_no=i,
                source_line_id=str(ln.line_no),
                product_ids=[ProductId(qualifier=q, value=v[:80]) for q, v in ln.product_ids],
                customer_part_number=(ln.customer_part_number or None),
                item_id=ln.item_id,
                description=(ln.description or None) and ln.description[:200],
                quantity=quantity,
                uom=uom[:10],
                unit_price=ln.unit_price,
                confidence=conf,
            )
        )
    ship_to = None
    if r.ship_to is not None or r.ship_to_id:
        b = r.ship_to
        ship_to = Address(
            name=b.name if b else None,
            party_id=r.ship_to_id,
            party_id_qualifier="92" if r.ship_to_id else None,
            address_lines=b.address_lines if b else [],
            city=b.city if b else None,
            region=b.region if b else None,
            postal_code=b.postal_code if b else None,
        )
    references = {k: v for k, v in context.items() if v}
    references.update(attachment=doc.name, attachment_sha256=doc.sha256)
    confidence = {k: r.confidence.get(k, 0.0) for k in HEADER_FIELDS}
    confidence["line_count"] = r.confidence.get("line_count", 0.0)
    po = r.po_number or ""
    return Order(
        order_id=order_id_for(Channel.EMAIL, r.customer_id or partner, po, discriminator),
        po_number=po,
        po_date=r.po_date,
        customer_id=r.customer_id,
        buyer=Address(name=r.buyer_name[:120]) if r.buyer_name else None,
        ship_to=ship_to,
        requested_ship_date=r.requested_ship_date,
        carrier_routing=r.ship_via,
        payment_terms=r.terms,
        references=references,
        lines=lines,
        notes=notes,
        confidence=confidence,
        provenance=Provenance(
            channel=Channel.EMAIL,
            partner_id=partner,
            message_id=message_id,
            source_ref=f"{source_ref}#{doc.name}" if source_ref else doc.name,
            document_sha256=sha or doc.sha256,
            received_at=received_at,
            extraction_model=EXTRACTOR_VERSION + ("+ocr" if used_ocr else ""),
        ),
    )


def _low_confidence(order: Order, r: ResolvedPO, name: str, threshold: float) -> dict[str, Any]:
    fields = [
        {"field": k, "confidence": v, "value": r.read.get(k, "")}
        for k, v in order.confidence.items()
        if v < threshold
    ]
    for ln, rl in zip(order.lines, r.lines, strict=True):
        for k, v in ln.confidence.items():
            if v < threshold:
                fields.append(
                    {
                        "field": f"line {ln.line_no} {k}",
                        "confidence": v,
                        "value": rl.read.get(k, ""),
                    }
                )
    return {
        "order_id": order.order_id,
        "po_number": order.po_number,
        "attachment": name,
        "min_confidence": order.min_confidence,
        "ocr": r.ocr,
        "fields": fields,
    }


# ---------------------------------------------------------------------------- helpers


def safe_filename(name: str | None, warnings: list[str] | None = None) -> str:
    """A MIME file name as a label: last path component, printable, ≤ 100 characters.
    Never used as a path; a name that tries to be one is reported."""
    original = _clean(str(name or ""))
    base = re.split(r"[\\/]", original)[-1]
    base = " ".join(re.sub(r"[^\w .()+-]", "_", base).split()).strip(" .") or "attachment"
    if warnings is not None and (
        base != original or ".." in original or original.startswith(("/", "\\"))
    ):
        warnings.append(
            f"email.unsafe_filename: attachment name {original[:80]!r} sanitised to {base[:100]!r}"
        )
    return base[:100]


def _clean(text: str) -> str:
    """Header text as safe, printable str (broken encodings come back as surrogates)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"[\x00-\x1f\x7f]", " ", text).strip()


def _sender(msg: Message) -> str | None:
    for header in ("From", "Sender", "Reply-To"):
        try:
            value = msg.get(header)
            if value is None:
                continue
            addresses = getattr(value, "addresses", None)
            if addresses:
                addr = addresses[0].addr_spec
            else:
                pairs = getaddresses([str(value)])
                addr = pairs[0][1] if pairs else ""
        except Exception:  # broken header encodings
            addr = ""
            value = _header(msg, header)  # as received: "Bob <b@x.com>, <" still names b@x.com
        addr = _clean(addr or "")
        if not ADDRESS.fullmatch(addr):
            m = ADDRESS.search(_clean(str(value or "")))
            addr = m.group(0) if m else ""
        if addr:
            return addr.lower()
    return None


def _po_mentions(text: str) -> list[str]:
    """PO numbers typed in a subject, body or file name. Only PO-like tokens (four or more
    characters, at least three digits): "order 25 more" must not contradict the document."""
    out = []
    for m in PO_MENTION.finditer(text):
        value = m.group(1).rstrip(".,;")
        if len(value) >= 4 and sum(ch.isdigit() for ch in value) >= 3:
            out.append(value)
    return out


def _sent_date(msg: Message) -> datetime | None:
    try:
        value = msg.get("Date")
        d = getattr(value, "datetime", None) or (
            parsedate_to_datetime(str(value)) if value else None
        )
    except Exception:  # a broken Date header is only a hint
        return None
    return d if d is not None and d.tzinfo is not None else None


def _body_text(part: Message, ctype: str) -> str:
    try:
        text = part.get_content() if isinstance(part, EmailMessage) else ""
    except Exception:  # unknown charsets, bad transfer encodings
        payload = _safe(lambda: part.get_payload(decode=True), b"") or b""
        text = payload.decode("utf-8", "replace")
    if not isinstance(text, str):
        text = ""
    if ctype == "text/html":
        text = re.sub(r"<[^>]{0,2000}>", " ", text)
    return _clean(text[:MAX_BODY_CHARS])


def _encoded_size(part: Message) -> int:
    payload = _safe(lambda: part.get_payload(decode=False), "")
    size = len(payload) if isinstance(payload, str | bytes) else 0
    cte = _header(part, "Content-Transfer-Encoding").lower()
    return size * 3 // 4 if "base64" in cte else size


def _header(part: Message, name: str) -> str:
    """A header field as text, "" when absent. The standard library's header parsers raise
    on some malformed values (``Message-ID: <`` → IndexError); such a field is returned as it
    was received (unfolded, undecoded) instead: a header is a hint, never a reason to fail."""
    try:
        value = part.get(name)
        return "" if value is None else str(value)
    except Exception:  # the header registry's parsers on hostile values
        for key, raw in part.raw_items():
            if key.lower() == name.lower():
                return re.sub(r"\r?\n[ \t]", " ", str(raw))
        return ""


def _safe(fn, default):
    try:
        return fn()
    except Exception:  # accessors raise on hostile input
        return default


def _too_large(name: str, idx: int, size: int, limit: int) -> IntakeError:
    return _err(
        "email.attachment_too_large",
        f"{name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit for a purchase order",
        where=f"attachment {idx} ({name})",
        action="Ask the customer to send a smaller PDF (a PO is normally well under 1 MB).",
    )


def _err(
    code: str,
    message: str,
    where: str | None = None,
    action: str = "Check the message; replay it once fixed, or key the order in.",
) -> IntakeError:
    return IntakeError(code=code, message=message, where=where, action=action)
