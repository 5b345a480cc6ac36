"""Reading e-mails ahead (``email_po.prepare_email``, what the mailbox intake runs on its
read-ahead threads) changes nothing about what a message yields, and reads each distinct
document once; the OCR preparation's histogram statistics are numpy's."""

from __future__ import annotations

import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import numpy as np
import pytest

from orderflow.channels import pdf_text
from orderflow.channels.email_po import Catalog, EmailParse, parse_email, prepare_email
from orderflow.channels.pdf_text import OcrEngine


@pytest.fixture(scope="module")
def catalog(po_day: Path) -> Catalog:
    w = json.loads((po_day / "world.json").read_text())
    return Catalog(w["customers"], w["ship_tos"], w["items"], w["xrefs"])


def _mail(attachments: list[tuple[bytes, str, str]]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Buyer <buyer@x.example>"
    msg["To"] = "Order Desk <orders@distributor.example>"
    msg["Subject"] = "Purchase order"
    msg.set_content("Please see attached.")
    for data, name, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def _messages(day: Path) -> list[bytes]:
    """A clean text-layer e-mail, a scan (PDF or PNG), and hostile variants of the PDF."""
    rows = [json.loads(line) for line in (day / "orders.jsonl").read_text().splitlines()]
    email = sorted(
        (r for r in rows if r["channel"] == "email" and r["artefact"]), key=lambda r: r["artefact"]
    )
    clean = next(r for r in email if not r["defects"])
    scan = next(r for r in email if "low_confidence_extraction" in r["defects"])
    raw = (day / clean["artefact"]).read_bytes()
    pdf = next(
        p.get_content()
        for p in BytesParser(policy=policy.default).parsebytes(raw).iter_attachments()
    )
    return [
        raw,
        (day / scan["artefact"]).read_bytes(),
        _mail([(pdf, "PO.pdf", "application/pdf"), (pdf, "copy.pdf", "application/pdf")]),
        _mail([(pdf[: len(pdf) // 2], "PO.pdf", "application/pdf")]),
        _mail(
            [(b"PK\x03\x04zip", "po.zip", "application/zip"), (pdf, "PO.pdf", "application/pdf")]
        ),
        _mail([(b"\x89PNG\r\n\x1a\nnot really", "scan.png", "image/png")]),
        _mail([]),
        b"not an e-mail at all",
        b"",
    ]


def _view(res: EmailParse) -> dict:
    details = json.loads(json.dumps(res.details, default=str))
    details.pop("seconds", None)
    for info in details.get("attachments", []):
        info.pop("read_seconds", None)
        info.pop("extract_seconds", None)
    return {
        "orders": [o.model_dump(mode="json") for o in res.orders],
        "errors": [e.model_dump(mode="json") for e in res.errors],
        "low_confidence": res.low_confidence,
        "attachments": res.attachments,
        "pages": res.pages,
        "details": details,
    }


@pytest.mark.parametrize("ocr", ["tesseract", "none"])
def test_a_message_read_ahead_yields_what_a_direct_parse_yields(po_day, catalog, ocr):
    engine = OcrEngine() if ocr == "tesseract" else OcrEngine(cmd="/nonexistent/tesseract")
    if ocr == "tesseract" and not engine.available:
        pytest.skip("tesseract is not installed")
    for raw in _messages(po_day):
        direct = parse_email(raw, catalog=catalog, source_ref="m.eml", sha="s", ocr=engine)
        ahead = parse_email(
            raw,
            catalog=catalog,
            source_ref="m.eml",
            sha="s",
            ocr=engine,
            prepared=prepare_email(raw, ocr=engine),
        )
        assert _view(ahead) == _view(direct), raw[:200]


def test_a_read_ahead_of_other_bytes_is_not_used(po_day, catalog):
    first, second = _messages(po_day)[:2]
    res = parse_email(
        second,
        catalog=catalog,
        ocr=OcrEngine(cmd="/nonexistent/tesseract"),
        prepared=prepare_email(first),
    )
    direct = parse_email(second, catalog=catalog, ocr=OcrEngine(cmd="/nonexistent/tesseract"))
    assert _view(res) == _view(direct)


def test_the_same_file_attached_twice_is_read_once(po_day):
    twice = _messages(po_day)[2]
    before = pdf_text.STATS["readers"]
    prepared = prepare_email(twice)
    assert pdf_text.STATS["readers"] - before == 1
    assert len(prepared.reads) == 1


@pytest.mark.parametrize("seed", range(6))
def test_histogram_statistics_are_numpys(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 5000))
    a = np.clip(rng.normal(rng.uniform(60, 230), rng.uniform(1, 40), size), 0, 255).astype(np.uint8)
    if seed == 0:
        a[:] = 200  # one grey level
    hist = np.bincount(a, minlength=256)
    f = a.astype(np.float32)
    assert pdf_text._sorted_at(hist, 0.5) == float(np.median(f))
    assert pdf_text._sorted_at(hist, 0.003) == pytest.approx(float(np.percentile(f, 0.3)))
    bg = float(np.median(f))
    brighter = f[f >= bg]
    noise = float(np.sqrt(np.mean(np.square(brighter - bg))))
    assert pdf_text._noise_of(hist) == pytest.approx(noise, rel=1e-5, abs=1e-6)
