"""Documents → positioned text: PDF text layers, and OCR (Debian's ``tesseract`` binary) for
scans and images.

Output is a list of :class:`Page` holding :class:`Cell` s — a run of text with its box
(top-left origin, page units) and a read confidence (1.0 for a text layer, the engine's word
confidence for OCR). The field logic in :mod:`orderflow.channels.po_extract` works on cells
only, so it does not care where they came from.

Hostile input is expected (attachments come from the internet). Every limit below fails
with a :class:`DocumentError` naming what was wrong and what to do, never with a crash:

* isolation: every decoder of attachment bytes (PDFium for PDFs, Pillow for images) runs in a
  child process (:func:`read_pdf`, :func:`read_images`) with an address-space limit
  (``RLIMIT_AS``, ``reader_memory_bytes``), a CPU and a wall-clock limit
  (``reader_timeout_s``), no core dumps, no file writes and a minimal environment (no
  credentials). Whatever a file makes a decoder do — any filter chain, a bomb, a parser bug
  — costs at most that much: the child fails, the attachment gets ``pdf.too_large`` /
  ``pdf.timeout`` (``image.*`` for images), the worker is untouched;
* structure: not a PDF, malformed, encrypted with a user password, too many pages;
* bombs, refused early with a precise message: every stream is decoded through its own
  filter chain (``ASCIIHexDecode``, ``ASCII85Decode``, ``FlateDecode``, in any order and
  nesting; any end-of-line after ``stream``) in bounded chunks, and the document is refused
  once the total passes ``max_inflated_bytes``; images are refused above ``max_image_pixels``
  before they are decoded; pages render at a fixed DPI under ``max_ocr_pixels``;
* OCR: one ``tesseract`` process per page with a wall-clock timeout, a page budget per
  document, and ``OMP_THREAD_LIMIT=1`` (OCR of several pages runs in parallel instead); a
  page image is at most ``max_ocr_pixels`` as rendered or decoded, and stays under it when
  the OCR preparation enlarges it.

PDFium (via ``pypdfium2``, which pdfplumber depends on) does the parsing and rendering: it is
the engine Chrome uses on untrusted PDFs and is 5–20x faster than pure-Python parsers here.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass(slots=True)
class Cell:
    """One run of text as drawn (text layer) or one word (OCR), with its box."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    conf: float = 1.0
    line_key: tuple[int, ...] | None = None  # OCR: the engine's own line grouping

    @property
    def h(self) -> float:
        return max(self.y1 - self.y0, 1e-6)

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass(slots=True)
class Page:
    number: int  # 1-based
    width: float
    height: float
    cells: list[Cell] = field(default_factory=list)
    ocr: bool = False


MAX_OCR_PIXELS = 10_000_000  # a legal-size page at 300 DPI (letter: 8.4 MP)

#: Process-wide counters for benchmarks and profiling (never read by the intake itself):
#: ``readers`` forked reader processes, ``ocr_pages`` pages handed to tesseract,
#: ``ocr_seconds`` their wall-clock seconds (preparation + engine).
STATS: Counter[str] = Counter()
#: Pages prepared and OCR'd at once in this process, whatever the number of engines and
#: messages in flight (tesseract runs with ``OMP_THREAD_LIMIT=1``: one core each).
OCR_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one attachment. Defaults sized for purchase orders: a real PO is
    1–10 pages and well under 5 MB; each limit leaves an order of magnitude of headroom."""

    max_pages: int = 50
    max_inflated_bytes: int = 200 * 2**20
    max_image_pixels: int = 60_000_000  # ≈ a letter page at 900 DPI
    #: a page image handed to OCR (rendered, decoded or enlarged)
    max_ocr_pixels: int = MAX_OCR_PIXELS
    ocr_dpi: int = 300
    ocr_timeout_s: float = 30.0
    max_ocr_pages: int = 10
    ocr_workers: int = 2
    #: how far the reader process may grow its address space beyond the worker's
    reader_memory_bytes: int = 384 * 2**20
    reader_timeout_s: float = 60.0


class DocumentError(Exception):
    """A document that cannot be read, with a code, a message and an action for a person."""

    def __init__(self, code: str, message: str, action: str) -> None:
        super().__init__(message)
        self.code, self.message, self.action = code, message, action


ASK_RESEND = "Ask the customer to send the purchase order again as an ordinary PDF."

# A stream keyword (not the tail of ``endstream``) and its end-of-line (CRLF, LF or a bare
# CR, which PDFium accepts too).
_STREAM = re.compile(rb"(?<!end)stream(?:\r\n|\r|\n)")
_FILTER = re.compile(rb"/Filter\s*(\[[^\]]{0,512}\]|/[A-Za-z0-9]{1,40})")
_NAME = re.compile(rb"/([A-Za-z0-9]{1,40})")
_DIMENSIONS = re.compile(
    rb"/Width\s+(\d{1,9})\s*/Height\s+(\d{1,9})|/Height\s+(\d{1,9})\s*/Width\s+(\d{1,9})"
)
_INFLATE_CHUNK = 8 * 2**20
NOISY = 4.0  # background noise (grey levels) above which a scan counts as noisy
BOMB_ACTION = "Do not open this file; ask the sender for an ordinary PDF of the order."


# ---------------------------------------------------------------------------- PDF


def check_pdf_bytes(data: bytes, limits: Limits) -> None:
    """Refuse decompression bombs before any parser inflates them.

    Every ``stream … endstream`` is decoded through the filter chain its dictionary names
    (ASCIIHex, ASCII85 and Flate, in any order; the abbreviations too), in bounded chunks:
    the output of every stage counts, and the document is refused once the total passes
    ``max_inflated_bytes``. A stream without a readable ``/Filter`` is tried as Flate;
    other filters (images, LZW, run-length) end the check of that stream — the reader
    process's memory limit covers them. Image dictionaries are checked for absurd
    dimensions. Costs about a millisecond on an ordinary PO.
    """
    if not data.lstrip()[:1024].startswith(b"%PDF-") and b"%PDF-" not in data[:1024]:
        raise DocumentError(
            "pdf.malformed", "the attachment is not a PDF (no %PDF header)", ASK_RESEND
        )
    budget = limits.max_inflated_bytes
    total = 0
    for m in _STREAM.finditer(data):
        start = m.end()
        end = data.find(b"endstream", start)
        if end < 0:
            end = len(data)
        chunks: Iterable[bytes] = [data[start:end]]
        decoded = False
        for name in _filters(data, m.start()):
            stage = _DECODERS.get(name)
            if stage is None:
                break  # an image or a filter we do not decode here: the prefix still counts
            chunks = _counted(stage(chunks, budget), limits, len(data), total)
            decoded = True
        if decoded:
            for chunk in chunks:
                total += len(chunk)
    for m in _DIMENSIONS.finditer(data):
        w, h = (int(x) for x in (m.group(1, 2) if m.group(1) else m.group(4, 3)))
        if w * h > limits.max_image_pixels:
            raise DocumentError(
                "pdf.bomb",
                f"the PDF holds a {w}x{h} pixel image, over the "
                f"{limits.max_image_pixels // 1_000_000} MP limit",
                BOMB_ACTION,
            )


def _counted(chunks: Iterable[bytes], limits: Limits, size: int, before: int) -> Iterator[bytes]:
    """Pass ``chunks`` on, refusing the document once everything decoded so far (this stage
    included) passes the limit."""
    seen = before
    for chunk in chunks:
        seen += len(chunk)
        if seen > limits.max_inflated_bytes:
            raise DocumentError(
                "pdf.bomb",
                f"the PDF inflates to more than {limits.max_inflated_bytes // 2**20} MB "
                f"(from {size // 1024} KB): refused as a decompression bomb",
                BOMB_ACTION,
            )
        yield chunk


def _filters(data: bytes, stream_at: int) -> list[str]:
    """The filter chain named in the dictionary just before a ``stream`` keyword (Flate when
    none can be read: the old behaviour, and what a bomb without /Filter would be)."""
    head = data[max(0, stream_at - 4096) : stream_at]
    obj = head.rfind(b"obj")
    if obj >= 0:
        head = head[obj:]
    found = list(_FILTER.finditer(head))
    if not found:
        return ["FlateDecode"]
    names = [n.decode("ascii") for n in _NAME.findall(found[-1].group(1))]
    return [_ABBREVIATIONS.get(n, n) for n in names] or ["FlateDecode"]


def _inflate(chunks: Iterable[bytes], budget: int) -> Iterator[bytes]:
    d = zlib.decompressobj()
    try:
        for buf in chunks:
            while buf:
                out = d.decompress(buf, _INFLATE_CHUNK)
                buf = d.unconsumed_tail
                if out:
                    yield out
                if d.eof:
                    return
        while out := d.decompress(b"", _INFLATE_CHUNK):  # output zlib still holds
            yield out
    except zlib.error:
        return  # damaged or not Flate: PDFium decides (in its memory-limited process)


def _joined(chunks: Iterable[bytes], budget: int) -> bytes:
    """The whole input of a non-streaming stage; these stages shrink their input (hex by
    half) or grow it at most 4x (ASCII85 ``z``), so the input is bounded by the budget."""
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > budget:
            break
    return b"".join(parts)


def _ascii_hex(chunks: Iterable[bytes], budget: int) -> Iterator[bytes]:
    text = _joined(chunks, budget)
    text = re.sub(rb"[^0-9A-Fa-f]", b"", text.split(b">", 1)[0])
    if len(text) % 2:
        text += b"0"
    data = binascii.unhexlify(text)
    for i in range(0, len(data), _INFLATE_CHUNK):
        yield data[i : i + _INFLATE_CHUNK]


def _ascii85(chunks: Iterable[bytes], budget: int) -> Iterator[bytes]:
    text = _joined(chunks, budget)
    text = text.split(b"~>", 1)[0].removeprefix(b"<~")
    text = re.sub(rb"\s", b"", text)
    try:
        data = base64.a85decode(text)
    except ValueError:
        return
    for i in range(0, len(data), _INFLATE_CHUNK):
        yield data[i : i + _INFLATE_CHUNK]


_DECODERS = {"FlateDecode": _inflate, "ASCIIHexDecode": _ascii_hex, "ASCII85Decode": _ascii85}
_ABBREVIATIONS = {"Fl": "FlateDecode", "AHx": "ASCIIHexDecode", "A85": "ASCII85Decode"}


def read_pdf(data: bytes, limits: Limits, *, ocr: OcrEngine | None) -> tuple[list[Page], bool]:
    """A PDF → pages of cells; image-only pages are OCR'd when ``ocr`` is given.
    Returns (pages, used_ocr). Raises :class:`DocumentError`.

    The PDF is parsed (and scanned pages rendered) in a memory- and time-limited child
    process (:func:`run_reader`); OCR runs here, on the rendered pages."""
    pages, scans = run_reader("pdf", [data], limits, render_scans=ocr is not None)
    if scans and ocr is not None:
        done = ocr.pages([img for _, img in scans])
        for (i, _), page in zip(scans, done, strict=True):
            # OCR works in pixels; keep the PDF page's own number
            page.number = i + 1
            pages[i] = page
    return pages, bool(scans)


def extract_pdf(
    data: bytes, limits: Limits, *, render_scans: bool
) -> tuple[list[Page], list[tuple[int, Image.Image]]]:
    """The in-process reader (what the child process of :func:`read_pdf` runs): pages of
    cells, and the rendered image of every scanned page (no text layer) when
    ``render_scans``. Raises :class:`DocumentError`."""
    import pypdfium2 as pdfium

    check_pdf_bytes(data, limits)
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise DocumentError(
                "pdf.encrypted",
                "the PDF is password-protected, so its text cannot be read",
                "Ask the customer to send the purchase order without a password.",
            ) from exc
        raise DocumentError(
            "pdf.malformed", f"the PDF is damaged or truncated ({exc})", ASK_RESEND
        ) from exc
    try:
        n = len(doc)
        if n == 0:
            raise DocumentError("pdf.malformed", "the PDF has no pages", ASK_RESEND)
        if n > limits.max_pages:
            raise DocumentError(
                "pdf.too_many_pages",
                f"the PDF has {n} pages, over the limit of {limits.max_pages} for a purchase order",
                "Check the attachment is a purchase order; split it and send it again if so.",
            )
        pages: list[Page] = []
        scans: list[tuple[int, Image.Image]] = []
        for i in range(n):
            page = doc[i]
            try:
                width, height = page.get_size()
                cells = _text_cells(page, height)
                if sum(len(c.text) for c in cells) >= 20 or not _has_images(page):
                    pages.append(Page(i + 1, width, height, cells))
                    continue
                if not render_scans:
                    pages.append(Page(i + 1, width, height, cells, ocr=True))
                    continue
                if len(scans) >= limits.max_ocr_pages:
                    raise DocumentError(
                        "pdf.too_many_pages",
                        f"more than {limits.max_ocr_pages} scanned pages to OCR in one PDF",
                        "Ask the customer for a PDF with a text layer, or key the order in.",
                    )
                # Render at the scan's own resolution (no resampling before the
                # de-speckle filter); prepare_for_ocr enlarges it for the engine.
                dpi = min(limits.ocr_dpi, max(72.0, _image_dpi(page, width)))
                scale = dpi / 72
                cap = min(limits.max_image_pixels, limits.max_ocr_pixels)
                if width * height * scale * scale > cap:
                    scale = (cap / (width * height)) ** 0.5
                bitmap = page.render(scale=scale, grayscale=True)
                try:
                    scans.append((i, bitmap.to_pil().convert("L")))
                finally:
                    bitmap.close()
                pages.append(Page(i + 1, width, height, [], ocr=True))
            finally:
                page.close()
    except pdfium.PdfiumError as exc:
        raise DocumentError(
            "pdf.malformed", f"the PDF could not be read ({exc})", ASK_RESEND
        ) from exc
    finally:
        doc.close()
    return pages, scans


def _text_cells(page, page_height: float) -> list[Cell]:
    """One cell per text object (one ``Tj``/``TJ`` run): the unit a PO generator draws, so a
    table cell stays one cell even when its neighbour overlaps it. Adjacent objects on one
    baseline with no gap (generators that emit a glyph or a word per object) are merged."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    try:
        raw: list[Cell] = []
        for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_TEXT], textpage=textpage):
            try:
                text = obj.extract()
            except (pdfium.PdfiumError, ValueError, UnicodeDecodeError):
                continue  # one unreadable text object must not lose the page
            text = " ".join(text.replace("\x00", "").split())
            if not text:
                continue
            left, bottom, right, top = obj.get_bounds()
            raw.append(Cell(text, left, page_height - top, right, page_height - bottom))
    finally:
        textpage.close()
    return _merge_runs(raw)


def _merge_runs(cells: list[Cell]) -> list[Cell]:
    out: list[Cell] = []
    for c in cells:
        prev = out[-1] if out else None
        if (
            prev is not None
            and abs(prev.yc - c.yc) < 0.3 * min(prev.h, c.h)
            and -0.05 * c.h <= c.x0 - prev.x1 < 0.3 * c.h
        ):
            gap = c.x0 - prev.x1
            joiner = " " if gap > 0.12 * c.h and not prev.text.endswith(" ") else ""
            out[-1] = Cell(
                prev.text + joiner + c.text,
                prev.x0,
                min(prev.y0, c.y0),
                max(prev.x1, c.x1),
                max(prev.y1, c.y1),
            )
        else:
            out.append(c)
    return out


def _has_images(page) -> bool:
    import pypdfium2.raw as pdfium_c

    for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        return True
    return False


def _image_dpi(page, page_width: float) -> float:
    """The resolution of the largest image on a page (a scan is one page-sized image)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    best = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        try:
            px_w, _ = obj.get_px_size()
            left, _, right, _ = obj.get_bounds()
        except (pdfium.PdfiumError, ValueError):
            continue  # an unreadable image does not count
        if right - left > 0.3 * page_width:
            best = max(best, px_w / ((right - left) / 72))
    return best or 150.0


# ---------------------------------------------------------------------------- the reader process

_TOO_LARGE_ACTION = (
    "Do not open this file; ask the sender for an ordinary PDF of the order (or key it in)."
)


def read_images(parts: list[bytes], limits: Limits, *, ocr: OcrEngine) -> list[Page]:
    """Scanned pages sent as images (one file or several) → OCR'd pages. The images are
    decoded in the limited reader process; OCR runs here on the decoded pages."""
    _, scans = run_reader("image", parts, limits, render_scans=True)
    pages = ocr.pages([img for _, img in scans])
    for i, page in enumerate(pages, start=1):
        page.number = i
    return pages


def run_reader(
    kind: str, parts: list[bytes], limits: Limits, *, render_scans: bool
) -> tuple[list[Page], list[tuple[int, Image.Image]]]:
    """Run :func:`extract_pdf` (``kind="pdf"``) or :func:`open_image_pages` (``"image"``) in
    a forked child process whose address space may grow by at most
    ``reader_memory_bytes`` (``RLIMIT_AS``), with a CPU limit and a wall-clock timeout of
    ``reader_timeout_s`` (then SIGKILL). Forked, not spawned: PDFium and Pillow are already
    loaded, so isolation costs a few milliseconds, not an interpreter start. The child
    answers in JSON (pages and cells) and PNG (page images) over a pipe; nothing it sends is
    unpickled or trusted beyond its shape."""
    import pypdfium2  # noqa: F401  (loaded before the fork, not in the child)
    from PIL import Image, PngImagePlugin  # noqa: F401

    noun = "PDF" if kind == "pdf" else "image"
    status, out = _forked(
        lambda: _reader_work(kind, parts, limits, render_scans), limits, vm_now=_vm_size()
    )
    answer = _reader_answer(out) if status == 0 else None
    if status == "timeout" or (answer is None and status == -signal.SIGXCPU):
        raise DocumentError(
            f"{kind}.timeout",
            f"reading the {noun} took longer than {limits.reader_timeout_s:.0f} s: refused "
            "(a decompression bomb or a damaged file)",
            _TOO_LARGE_ACTION,
        )
    if answer is None:
        raise DocumentError(
            f"{kind}.too_large",
            f"reading the {noun} needs more than {limits.reader_memory_bytes // 2**20} MB of "
            f"memory, or crashed the reader (exit {status}): refused as a decompression bomb "
            "or a damaged file",
            _TOO_LARGE_ACTION,
        )
    if "error" in answer:
        e = answer["error"]
        raise DocumentError(str(e["code"])[:60], str(e["message"])[:500], str(e["action"])[:300])
    pages = [
        Page(
            int(pg["number"]),
            float(pg["width"]),
            float(pg["height"]),
            [Cell(str(t), float(a), float(b), float(c), float(d)) for t, a, b, c, d in pg["cells"]],
            ocr=bool(pg["ocr"]),
        )
        for pg in answer["pages"]
    ]
    scans = []
    for i, png in answer["scans"]:
        img = Image.open(io.BytesIO(base64.b64decode(png)))
        if img.width * img.height > limits.max_ocr_pixels:  # our own child: never expected
            raise DocumentError(
                f"{kind}.too_large", f"a page image over {limits.max_ocr_pixels} pixels", ASK_RESEND
            )
        scans.append((int(i), img.convert("L")))
    return pages, scans


def _vm_size() -> int:
    """This process's address space now (the child's limit is this plus the budget: a forked
    child starts with its parent's mappings)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _forked(work, limits: Limits, vm_now: int) -> tuple[int | str, bytes]:
    """``work()`` (→ bytes) in a forked child under the limits; (exit status, its output).
    The status is the exit code, minus the signal number, or ``"timeout"``."""
    import select
    import time

    STATS["readers"] += 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: limits first, then the hostile bytes; never returns
        code = 0
        try:
            os.close(r)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                signal.signal(sig, signal.SIG_DFL)
            cpu = int(limits.reader_timeout_s) + 1
            for which, value in (
                (resource.RLIMIT_AS, vm_now + limits.reader_memory_bytes),
                (resource.RLIMIT_CPU, cpu),
                (resource.RLIMIT_CORE, 0),
                (resource.RLIMIT_FSIZE, 0),
            ):
                resource.setrlimit(which, (value, value))
            data = memoryview(work())
            while data:
                data = data[os.write(w, data) :]
        except MemoryError:
            code = 3
        except BaseException:
            code = 4
        os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limits.reader_timeout_s
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        return "timeout", b""
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks)


def _reader_answer(stdout: bytes) -> dict | None:
    try:
        answer = json.loads(stdout)
    except ValueError:
        return None
    ok = isinstance(answer, dict) and (
        isinstance(answer.get("error"), dict)
        or (isinstance(answer.get("pages"), list) and isinstance(answer.get("scans"), list))
    )
    return answer if ok else None


def _reader_work(kind: str, parts: list[bytes], limits: Limits, render_scans: bool) -> bytes:
    """The child's side of :func:`run_reader`: read, answer in JSON."""
    try:
        if kind == "pdf":
            pages, scans = extract_pdf(parts[0], limits, render_scans=render_scans)
        else:
            pages, scans = [], []
            for part in parts:
                for img in open_image_pages(part, limits):
                    scans.append((len(scans), _fit(img, limits.max_ocr_pixels)))
                    if len(scans) > limits.max_ocr_pages:
                        raise DocumentError(
                            "pdf.too_many_pages",
                            f"more than {limits.max_ocr_pages} scanned pages in one purchase order",
                            "Ask the customer for a PDF with a text layer, or key the order in.",
                        )
        answer: dict = {
            "pages": [
                {
                    "number": pg.number,
                    "width": pg.width,
                    "height": pg.height,
                    "ocr": pg.ocr,
                    "cells": [[c.text, c.x0, c.y0, c.x1, c.y1] for c in pg.cells],
                }
                for pg in pages
            ],
            "scans": [],
        }
        for i, img in scans:
            buf = io.BytesIO()
            _fit(img, limits.max_ocr_pixels).save(buf, format="PNG", compress_level=1)
            answer["scans"].append([i, base64.b64encode(buf.getvalue()).decode("ascii")])
    except DocumentError as exc:
        answer = {"error": {"code": exc.code, "message": exc.message, "action": exc.action}}
    return json.dumps(answer).encode()


def _fit(img: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink an image (keeping its aspect) to at most ``max_pixels``."""
    from PIL import Image

    if img.width * img.height <= max_pixels:
        return img
    f = (max_pixels / (img.width * img.height)) ** 0.5
    size = (max(1, int(img.width * f)), max(1, int(img.height * f)))
    return img.resize(size, Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------------- images


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF8", b"BM")


def open_image_pages(data: bytes, limits: Limits) -> list[Image.Image]:
    """An image attachment (PNG, JPEG, TIFF incl. multi-page, GIF, BMP) → page images, with
    the pixel count checked before decoding."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DocumentError(
            "image.malformed", f"the image cannot be read ({exc.__class__.__name__})", ASK_RESEND
        ) from exc
    except Image.DecompressionBombError as exc:
        raise DocumentError("image.bomb", str(exc), "Do not open this file.") from exc
    out = []
    try:
        for n, frame in enumerate(ImageSequence.Iterator(img)):
            if n >= limits.max_ocr_pages:
                raise DocumentError(
                    "pdf.too_many_pages",
                    f"the image has more than {limits.max_ocr_pages} pages",
                    "Ask the customer for a PDF with a text layer, or key the order in.",
                )
            w, h = frame.size
            if w * h > limits.max_image_pixels:
                raise DocumentError(
                    "image.bomb",
                    f"the image is {w}x{h} pixels, over the {limits.max_image_pixels // 1_000_000} MP limit",
                    "Do not open this file; ask the sender for an ordinary scan.",
                )
            out.append(frame.convert("L"))
    except DocumentError:
        raise
    except Exception as exc:  # Pillow raises many types on truncated files
        raise DocumentError(
            "image.malformed",
            f"the image is damaged or truncated ({exc.__class__.__name__})",
            ASK_RESEND,
        ) from exc
    return out


# ---------------------------------------------------------------------------- OCR


@lru_cache(maxsize=4)
def tesseract_version(cmd: str = "tesseract") -> str | None:
    path = shutil.which(cmd)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
    return first[0].strip() if first else "tesseract"


@dataclass
class OcrEngine:
    """Tesseract through its command line, one process per page (a crash or a hang costs
    that page only); the pre-processing is in :func:`prepare_for_ocr`.

    Page segmentation (``psm``, None = by scan quality): a clean scan gets ``4`` (one
    column of lines of varying size: forms with big titles and boxed tables), a noisy one
    ``6`` (one uniform block: tesseract's layout analysis finds phantom columns in sensor
    noise and splits table rows). Measured: psm 4 reads the clean po_docs forms better
    (0.89 vs 0.82 of fields), psm 6 the sandbox's noisy faxes (19 of 20 POs vs 13)."""

    cmd: str = "tesseract"
    timeout_s: float = 30.0
    workers: int = 2
    psm: int | None = None
    max_pixels: int = MAX_OCR_PIXELS
    pages_done: int = 0
    seconds: float = 0.0

    @property
    def available(self) -> bool:
        return tesseract_version(self.cmd) is not None

    def pages(self, images: list[Image.Image]) -> list[Page]:
        import time
        from concurrent.futures import ThreadPoolExecutor

        if not self.available:
            raise DocumentError(
                "ocr.unavailable",
                "the purchase order is a scan (no text layer) and no OCR engine is installed",
                "Install tesseract-ocr on the workers, or key the order in from the attachment.",
            )
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max(1, min(self.workers, len(images)))) as pool:
            pages = list(pool.map(self._slotted, images))
        self.seconds += time.perf_counter() - t0
        self.pages_done += len(pages)
        STATS["ocr_pages"] += len(pages)
        STATS["ocr_seconds"] += time.perf_counter() - t0
        return pages

    def _slotted(self, image: Image.Image) -> Page:
        with OCR_SLOTS:  # waiting for a slot does not count against the page's timeout
            return self._page(image)

    def _page(self, image: Image.Image) -> Page:
        prepared, factor, noise = prepare_for_ocr(image, max_pixels=self.max_pixels)
        psm = self.psm if self.psm is not None else (6 if noise > NOISY else 4)
        buf = io.BytesIO()
        prepared.save(buf, format="PNG", compress_level=1)
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            proc = subprocess.run(
                [
                    shutil.which(self.cmd) or self.cmd,
                    "stdin",
                    "stdout",
                    "--psm",
                    str(psm),
                    "-l",
                    "eng",
                    # Tesseract 5 re-reads every line it is unsure of as white-on-black: on
                    # noisy scans that is most lines, for nothing (we whiten the paper).
                    # Measured on 50 sandbox scans: same fields read (line count better,
                    # 0.86 vs 0.76), a quarter less engine CPU.
                    "-c",
                    "tessedit_do_invert=0",
                    "tsv",
                ],
                input=buf.getvalue(),
                capture_output=True,
                timeout=self.timeout_s,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DocumentError(
                "ocr.failed",
                f"OCR of a scanned page took longer than {self.timeout_s:.0f} s",
                "Key the order in from the attachment, or ask the customer for a PDF with text.",
            ) from exc
        except OSError as exc:
            raise DocumentError(
                "ocr.unavailable",
                f"the OCR engine could not be started ({exc})",
                "Check the tesseract-ocr installation on the workers.",
            ) from exc
        if proc.returncode != 0:
            raise DocumentError(
                "ocr.failed",
                "the OCR engine failed on a scanned page: "
                + proc.stderr.decode("utf-8", "replace").strip()[-200:],
                "Key the order in from the attachment, or ask the customer for a PDF with text.",
            )
        return Page(
            0,
            prepared.width / factor,
            prepared.height / factor,
            parse_tsv(proc.stdout.decode("utf-8", "replace"), 1 / factor),
            ocr=True,
        )


def parse_tsv(tsv: str, scale: float = 1.0) -> list[Cell]:
    """Tesseract TSV → one cell per word, in the engine's line grouping."""
    cells = []
    for row in tsv.splitlines()[1:]:
        f = row.split("\t")
        if len(f) < 12 or f[0] != "5":
            continue
        text = f[11].strip()
        if not text:
            continue
        try:
            left, top, w, h, conf = int(f[6]), int(f[7]), int(f[8]), int(f[9]), float(f[10])
        except ValueError:
            continue
        cells.append(
            Cell(
                text,
                left * scale,
                top * scale,
                (left + w) * scale,
                (top + h) * scale,
                conf=max(0.0, min(1.0, conf / 100)),
                line_key=(int(f[2]), int(f[3]), int(f[4])),
            )
        )
    return cells


def prepare_for_ocr(
    image: Image.Image, target_width: int = 2550, max_pixels: int = MAX_OCR_PIXELS
) -> tuple[Image.Image, float, float]:
    """De-speckle, deskew, enlarge and whiten a scan for tesseract.

    Faxed/scanned POs arrive at 75–200 DPI with sensor noise, dust and a few degrees of
    skew; tesseract wants ~300 DPI (a letter page 2550 px wide), straight lines and a clean
    background. The median filter runs at the scan's own resolution, where a dust speck is
    one pixel; the background (the page's median grey, with its noise spread estimated from
    the brighter half) becomes white, ink is stretched to full contrast. Of the recipes
    measured on the sandbox's scans this one reads as much and leaves the engine the least
    noise to chew on (half the time per page). Returns the image, its scale relative to the
    input (cells are reported in input pixels) and the background noise after the median
    filter (grey levels; ~0 for a clean scan, 3–5 for the sandbox's faxes). The image is
    never more than ``max_pixels`` (it is shrunk first if larger, and enlarged only up to it):
    the float working copies cost 4–5 bytes a pixel.
    """
    import numpy as np
    from PIL import Image, ImageFilter

    gray = image.convert("L")
    shrunk = _fit(gray, max_pixels)
    base = shrunk.width / gray.width
    gray = shrunk
    noise = _noise_of(_histogram(gray))
    img = gray.filter(ImageFilter.MedianFilter(3))
    angle = estimate_skew(img)
    if abs(angle) >= 0.1:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    factor = 1.0
    room = (max_pixels / (img.width * img.height)) ** 0.5
    if img.width < 0.8 * target_width and room > 1.0:
        factor = min(4.0, target_width / img.width, room)
        img = img.resize(
            (round(img.width * factor), round(img.height * factor)), Image.Resampling.BICUBIC
        )
    # Statistics from the grey-level histogram and the contrast stretch as a 256-entry
    # table: the same values as computing them over the enlarged page's pixels (a sort
    # and a float copy of ~8 MP), at a fraction of the cost.
    hist = _histogram(img)
    background = _sorted_at(hist, 0.5)
    # a clean scan keeps its anti-aliased glyph edges; a noisy one loses the grey noise floor
    paper = background - (2.5 * max(2.0, _noise_of(hist)) if noise > NOISY else 0.5)
    ink = _sorted_at(hist, 0.003)
    levels = np.arange(256, dtype=np.float32)
    lut = np.clip((levels - ink) / max(paper - ink, 1.0) * 255.0, 0, 255)
    lut[levels >= paper] = 255
    out = lut.astype(np.uint8)[np.asarray(img, dtype=np.uint8)]
    remove_rules(
        out, min_run=max(40, out.shape[1] // 25), max_thickness=max(6, out.shape[1] // 100)
    )
    return Image.fromarray(out), factor * base, noise


def _histogram(img: Image.Image):
    import numpy as np

    return np.asarray(img.convert("L").histogram(), dtype=np.int64)


def _sorted_at(hist, q: float) -> float:
    """The ``q`` quantile (0–1) of the pixels a grey-level histogram counts, interpolated
    between neighbouring ranks as ``numpy.percentile`` does (0.5: ``numpy.median``)."""
    import numpy as np

    n = int(hist.sum())
    if n == 0:
        return 0.0
    cum = np.cumsum(hist)
    pos = q * (n - 1)
    lo = int(pos)
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
    return v_lo + (pos - lo) * (v_hi - v_lo)


def _noise_of(hist) -> float:
    """Background noise, from a grey-level histogram: the spread of the pixels brighter than
    the page's median grey (the paper side; ink does not reach it). A standard deviation,
    not a MAD, so that posterised images (grey levels in steps of 16) still measure their
    noise."""
    import numpy as np

    background = _sorted_at(hist, 0.5)
    levels = np.arange(256, dtype=np.float64)
    brighter = levels >= background
    count = hist[brighter].sum()
    if not count:
        return 0.0
    return float(np.sqrt((hist[brighter] * np.square(levels[brighter] - background)).sum() / count))


def remove_rules(a, min_run: int, max_thickness: int) -> None:
    """Whiten ruled lines (table grids, underlines) in place: dark runs of at least
    ``min_run`` pixels along a row (column) that are at most ``max_thickness`` pixels thick
    across it. Tesseract reads boxed cells badly — a grid line through a row of text makes
    it drop the row; the thickness bound keeps the dark bands of blurred text lines."""

    import numpy as np

    # found at half resolution (a rule is long; 4x less work), applied at full
    dark = np.ascontiguousarray(a[::2, ::2] < 128)
    rule = np.zeros_like(dark)
    for axis in (1, 0):
        d = dark if axis == 1 else np.ascontiguousarray(dark.T)
        along = _runs_at_least(d, max(2, min_run // 2))
        found = _runs_at_most(np.ascontiguousarray(along.T), max(1, max_thickness // 2)).T & along
        rule |= found if axis == 1 else found.T
    if rule.any():
        full = np.repeat(np.repeat(rule, 2, axis=0), 2, axis=1)[: a.shape[0], : a.shape[1]]
        a[full] = 255


def _runs_at_least(d, n: int):
    """Pixels of horizontal runs of ``True`` at least ``n`` long (per row of ``d``)."""
    import numpy as np

    if d.shape[1] < n:
        return np.zeros_like(d)
    s = np.concatenate(
        [np.zeros((d.shape[0], 1), np.int32), np.cumsum(d, axis=1, dtype=np.int32)], axis=1
    )
    full = (s[:, n:] - s[:, :-n]) == n  # window [i, i+n) all true
    marks = np.zeros((d.shape[0], d.shape[1] + 1), np.int32)
    marks[:, : full.shape[1]] += full
    marks[:, n : n + full.shape[1]] -= full
    return np.cumsum(marks, axis=1)[:, : d.shape[1]] > 0


def _runs_at_most(d, n: int):
    """Pixels of horizontal runs of ``True`` at most ``n`` long (per row of ``d``)."""
    import numpy as np

    padded = np.pad(d.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    keep = (ends - starts) <= n
    marks = np.zeros((d.shape[0], d.shape[1] + 1), np.int32)
    np.add.at(marks, (rows_s[keep], starts[keep]), 1)
    np.add.at(marks, (rows_s[keep], ends[keep]), -1)
    return np.cumsum(marks, axis=1)[:, : d.shape[1]] > 0


def estimate_skew(img: Image.Image, max_deg: float = 3.0, step: float = 0.1) -> float:
    """The rotation that makes text lines horizontal: the angle whose row-sum profile of the
    binarised page is sharpest (projection-profile method)."""
    import numpy as np
    from PIL import Image

    shrink = max(1, round(img.width / 500))
    small = img.resize((max(1, img.width // shrink), max(1, img.height // shrink)))
    a = np.asarray(small, dtype=np.uint8)
    threshold = _otsu(a)
    ink = Image.fromarray(((a < threshold) * 255).astype(np.uint8))
    best, best_score = 0.0, -1.0
    for angle in np.arange(-max_deg, max_deg + step / 2, step):
        rows = np.asarray(ink.rotate(float(angle), resample=Image.Resampling.NEAREST)).sum(axis=1)
        score = float(np.square(np.diff(rows.astype(np.float64))).sum())
        if score > best_score:
            best, best_score = float(angle), score
    return best


def _otsu(a) -> int:
    import numpy as np

    hist = np.bincount(a.ravel(), minlength=256).astype(np.float64)
    w = np.cumsum(hist)
    mu = np.cumsum(hist * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w - mu * w[-1]) ** 2 / (w * (w[-1] - w))
    if np.isnan(between).all():  # one grey level (a blank page): nothing to separate
        return 128
    return int(np.nanargmax(between))
