"""The e-mail PO channel under hostile input (#13 D2, D3, D9 for e-mail): decompression
bombs behind any filter chain, absurd headers, the same PO attached many times, and any
bytes at all — each ends in a specific, actionable outcome within a memory and time budget.

Memory is measured where it is spent: every resource test runs the parse in a fresh Python
process and reads the peak RSS of that process and of its children (the reader process a PDF
is opened in), so a regression shows up as a failing number, not as a killed test runner.
Time is the CPU time of both (wall-clock time on a shared 2-core machine varies 3x with load);
the wall-clock time has a looser bound that still catches a hang.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import subprocess
import sys
import zlib
from datetime import date
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import examples

from orderflow.channels.email_po import (
    MAX_HEADER_CHARS,
    Catalog,
    EmailParse,
    parse_email,
)
from orderflow.channels.pdf_text import DocumentError, Limits, OcrEngine, read_pdf

RSS_LIMIT_MB = 512
SECONDS_LIMIT = 10.0  # of CPU (parse + reader process): the machine's load does not count
WALL_LIMIT = 30.0  # a hang is caught on a loaded machine too
NO_OCR = OcrEngine(cmd="/nonexistent/tesseract")
PLUGINS = str(Path(__file__).resolve().parents[2] / "plugins")

# Run one parse in a fresh interpreter: the message from a file, the outcome, the time and
# the peak RSS (MiB) of this process and of its reaped children, as JSON on stdout.
HARNESS = r"""
import json, resource, sys, time
from orderflow.channels.email_po import Catalog, parse_email
from orderflow.channels.pdf_text import Limits, OcrEngine
raw = open(sys.argv[1], "rb").read()
limits = Limits(**json.loads(sys.argv[2]))
t0 = time.perf_counter()
res = parse_email(raw, catalog=Catalog([], [], [], []), limits=limits,
                  ocr=OcrEngine(cmd="/nonexistent/tesseract"))
seconds = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
# this process's own peak (VmHWM): ru_maxrss of RUSAGE_SELF keeps the high-water mark of the
# process that started us (Linux carries it across exec), i.e. the test runner's size
status = open("/proc/self/status").read()
self_kb = int(status.split("VmHWM:")[1].split()[0])
child_kb = kids.ru_maxrss
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({
    "codes": [e.code for e in res.errors],
    "messages": [e.message for e in res.errors],
    "actions": [e.action for e in res.errors],
    "orders": len(res.orders),
    "seconds": seconds,
    "cpu_seconds": cpu,
    "rss_mb": max(self_kb, child_kb) / 1024,
}))
"""


def measure(raw: bytes, tmp_path: Path, **limits) -> dict:
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(path), json.dumps(limits)],
        capture_output=True,
        timeout=120,
        env={"PYTHONPATH": PLUGINS, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def within_budget(result: dict, code: str) -> None:
    assert result["codes"] == [code], result
    assert result["orders"] == 0
    assert all(result["messages"]) and all(result["actions"])
    assert result["rss_mb"] < RSS_LIMIT_MB, result
    assert result["cpu_seconds"] < SECONDS_LIMIT, result
    assert result["seconds"] < WALL_LIMIT, result


def mail(attachments: list[tuple[bytes, str, str]], **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = headers.get("sender", "Buyer <buyer@x.example>")
    msg["To"] = "Order Desk <orders@distributor.example>"
    msg["Subject"] = headers.get("subject", "Purchase order")
    msg.set_content("Please see attached.")
    for data, name, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


# ---------------------------------------------------------------------------- D2: PDF bombs


def pdf_with_stream(stream: bytes, filters: bytes, eol: bytes = b"\n") -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter %s >>\nstream" % (len(stream), filters)
        + eol
        + stream
        + b"\nendstream",
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


def zeros_flate(mib: int) -> bytes:
    """``mib`` MiB of zeros as a zlib stream, built rather than compressed (compressing the
    gigabyte took seconds of CPU): each MiB ends with a full flush, which resets the
    compressor, so every MiB after the first compresses to the same bytes; then an empty
    final block and the Adler-32 of the zeros (a = 1, b = their count)."""
    z = zlib.compressobj(9)
    block = b"\x00" * 2**20
    first = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    again = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again  # (the first has the 2-byte zlib header before it)
    adler32 = ((mib * 2**20 % 65521) << 16) | 1
    return first + again * (mib - 1) + b"\x03\x00" + adler32.to_bytes(4, "big")


@pytest.fixture(scope="module")
def gigabyte_of_zeros() -> bytes:
    """1 GiB of zeros, Flate-compressed (≈ 1 MB): what the issue's bombs inflate to."""
    assert zlib.decompress(zeros_flate(3)) == b"\x00" * 3 * 2**20  # the construction is sound
    return zeros_flate(1024)


def bomb(kind: str, flate: bytes) -> bytes:
    if kind == "hex-flate":
        return pdf_with_stream(binascii.hexlify(flate) + b">", b"[/ASCIIHexDecode /FlateDecode]")
    if kind == "a85-flate":
        return pdf_with_stream(base64.a85encode(flate) + b"~>", b"[/ASCII85Decode /FlateDecode]")
    if kind == "abbreviated":
        return pdf_with_stream(base64.a85encode(flate) + b"~>", b"[/A85 /Fl]")
    if kind == "bare-cr":
        return pdf_with_stream(flate, b"/FlateDecode", eol=b"\r")
    if kind == "flate-flate":  # the 1 MB stream compressed again: a nested bomb
        return pdf_with_stream(zlib.compress(flate, 9), b"[/FlateDecode /FlateDecode]")
    assert kind == "flate"
    return pdf_with_stream(flate, b"/FlateDecode")


BOMBS = ["flate", "hex-flate", "a85-flate", "abbreviated", "bare-cr", "flate-flate"]


@pytest.mark.parametrize("kind", BOMBS)
def test_pdf_bomb_is_refused_by_the_filter_chain_check(kind, gigabyte_of_zeros):
    """D2: whatever the filter chain, the pre-check decodes it (bounded) and names the bomb
    (here with a budget of 4 MB, so that it is quick; the same refusal under the default
    budget, in a fresh process, within the memory and time budget: the test below)."""
    pdf = bomb(kind, gigabyte_of_zeros)
    assert len(pdf) < 3 * 2**20
    res = parse_email(
        mail([(pdf, "PO.pdf", "application/pdf")]),
        catalog=Catalog([], [], [], []),
        limits=Limits(max_inflated_bytes=4 * 2**20),
        ocr=NO_OCR,
    )
    assert [e.code for e in res.errors] == ["pdf.bomb"] and not res.orders
    assert "decompression bomb" in res.errors[0].message and res.errors[0].action


@pytest.mark.slow  # six fresh interpreters, each inflating 200 MB (~1 s of CPU each)
@pytest.mark.parametrize("kind", BOMBS)
def test_pdf_bomb_is_refused_within_the_memory_and_time_budget(kind, gigabyte_of_zeros, tmp_path):
    """D2 under the default limits: the bounded decode of any filter chain stays within the
    memory and CPU budget, measured in a fresh process."""
    pdf = bomb(kind, gigabyte_of_zeros)
    result = measure(mail([(pdf, "PO.pdf", "application/pdf")]), tmp_path)
    within_budget(result, "pdf.bomb")
    assert "decompression bomb" in result["messages"][0]


@pytest.mark.slow  # PDFium inflating until the reader's address-space limit: ~3 s of CPU each
@pytest.mark.parametrize("kind", ["hex-flate", "a85-flate", "bare-cr", "flate"])
def test_pdf_bomb_the_check_misses_still_stops_at_the_reader_memory_limit(
    kind, gigabyte_of_zeros, tmp_path
):
    """D2, the general mechanism: with the pre-check out of the way (as for a filter chain it
    does not know), PDFium itself runs into the reader process's address-space limit."""
    pdf = bomb(kind, gigabyte_of_zeros)
    result = measure(mail([(pdf, "PO.pdf", "application/pdf")]), tmp_path, max_inflated_bytes=2**40)
    within_budget(result, "pdf.too_large")
    assert "memory" in result["messages"][0]


def test_pdf_reader_wall_clock_limit(gigabyte_of_zeros):
    """A reader that runs past its time limit is killed: ``pdf.timeout``, in time."""
    import time

    pdf = bomb("hex-flate", gigabyte_of_zeros)
    t0 = time.perf_counter()
    with pytest.raises(DocumentError) as exc:
        read_pdf(
            pdf,
            Limits(max_inflated_bytes=2**40, reader_memory_bytes=2**34, reader_timeout_s=0.5),
            ocr=None,
        )
    assert exc.value.code == "pdf.timeout"
    assert time.perf_counter() - t0 < 5


def test_an_ordinary_pdf_is_still_read_through_the_reader_process(po_pdf):
    pages, used_ocr = read_pdf(po_pdf, Limits(), ocr=None)
    assert not used_ocr and pages and any(c.text for c in pages[0].cells)


# ---------------------------------------------------------------------------- D3: headers


def encoded_subject(chars: int) -> str:
    word = "=?utf-8?q?a?="
    return " ".join([word] * (chars // (len(word) + 1)))


def raw_mail(headers: list[tuple[str, str]], body: str = "see attached") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n" + body + "\r\n").encode()


def test_600k_character_encoded_subject(tmp_path):
    """D3 as reported: a 0.73 MB e-mail whose Subject is 600,000 characters of encoded words
    (3.3 GB before) is refused before the Subject is decoded."""
    raw = raw_mail(
        [("From", "a@b.example"), ("To", "c@d.example"), ("Subject", encoded_subject(600_000))]
    )
    assert 0.55 * 2**20 < len(raw) < 0.8 * 2**20
    result = measure(raw, tmp_path)
    within_budget(result, "email.header_too_long")
    assert "Subject" in result["messages"][0] and "600,0" in result["messages"][0]


def test_6_mb_header_in_a_mime_part(tmp_path):
    """D3: the 6 MB variant (21 GiB before), here in an attachment's Content-Disposition."""
    params = "; ".join(f"filename*{i}*=utf-8''%41%41" for i in range(250_000))
    raw = (
        "From: a@b.example\r\nTo: c@d.example\r\nSubject: PO\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\n'
        "Content-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n"
        f"Content-Type: application/pdf\r\nContent-Disposition: attachment; {params}\r\n\r\n"
        "%PDF-1.4\r\n--XX--\r\n"
    ).encode()
    assert len(raw) > 6 * 10**6
    result = measure(raw, tmp_path)
    within_budget(result, "email.header_too_long")
    assert "Content-Disposition" in result["messages"][0]
    assert "MIME part" in result["messages"][0]


def test_many_headers_over_the_total(tmp_path):
    headers = [("From", "a@b.example"), ("Subject", "PO 1234")]
    headers += [("X-Filler", "x" * 4000)] * 40  # each one fine, 160 KB together
    result = measure(raw_mail(headers), tmp_path)
    within_budget(result, "email.header_too_long")
    assert "together" in result["messages"][0]


def test_headers_at_the_limit_are_read(po_pdf):
    """The limit is not a cliff for ordinary mail: a long (but legal) Subject and References
    header pass, and the PO is read."""
    subject = "PO " + "x" * 900
    msg = BytesParser(policy=policy.default).parsebytes(
        mail([(po_pdf, "PO.pdf", "application/pdf")], subject=subject)
    )
    msg["References"] = " ".join(f"<{i}.abcdef@mail.example>" for i in range(250))
    assert len(str(msg["References"])) < MAX_HEADER_CHARS
    res = parse_email(msg.as_bytes(), catalog=Catalog([], [], [], []), ocr=NO_OCR)
    assert not [e for e in res.errors if e.code.startswith("email.")], res.errors
    assert res.orders


@pytest.mark.parametrize(
    ("header", "value"),
    [("Message-ID", "<"), ("Message-ID", "<a@"), ("From", '"'), ("To", "<@")],
)
def test_headers_the_mail_parser_crashes_on_do_not_lose_the_po(po_pdf, header, value):
    """Python's header registry raises IndexError on these values (found by the property
    test below): the header is read as received and the attached PO is still read."""
    raw = mail([(po_pdf, "PO.pdf", "application/pdf")])
    head, body = raw.split(b"\n\n", 1)
    lines = [ln for ln in head.split(b"\n") if not ln.startswith(header.encode() + b":")]
    raw = b"\n".join([*lines, f"{header}: {value}".encode()]) + b"\n\n" + body
    res = parse_email(raw, catalog=Catalog([], [], [], []), ocr=NO_OCR)
    assert not [e for e in res.errors if e.code.startswith("email.")], res.errors
    assert len(res.orders) == 1


def test_a_from_header_the_parser_refuses_still_names_the_sender(po_pdf):
    """The sender decides the customer: a From the header registry raises on (IndexError on
    the trailing ``<``) is searched for an address as received."""
    raw = mail([(po_pdf, "PO.pdf", "application/pdf")])
    raw = raw.replace(b"From: Buyer <buyer@x.example>", b"From: Bob <bob@buyer.example>, <", 1)
    assert b"From: Bob <bob@buyer.example>, <" in raw
    res = parse_email(raw, catalog=Catalog([], [], [], []), ocr=NO_OCR)
    assert res.details["sender"] == "bob@buyer.example"


# ---------------------------------------------------------------------------- D9: e-mail


def test_same_pdf_attached_30_times_is_one_order(po_pdf, catalog):
    raw = mail([(po_pdf, f"PO copy {i}.pdf", "application/pdf") for i in range(30)])
    res = parse_email(raw, catalog=catalog, sha="a" * 64, ocr=NO_OCR)
    assert len(res.orders) == 1 and res.errors == []
    assert sum("email.duplicate_attachment" in w for w in res.details["warnings"]) == 29


def test_same_po_in_two_different_files_is_one_order_and_a_visible_error(po_pdf, catalog):
    import pypdf

    # the same PO, re-saved (different bytes, same content)
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(__import__("io").BytesIO(po_pdf)))
    writer.add_metadata({"/Title": "resent"})
    buf = __import__("io").BytesIO()
    writer.write(buf)
    assert buf.getvalue() != po_pdf
    raw = mail(
        [(po_pdf, "PO.pdf", "application/pdf"), (buf.getvalue(), "PO2.pdf", "application/pdf")]
    )
    res = parse_email(raw, catalog=catalog, sha="b" * 64, ocr=NO_OCR)
    assert len(res.orders) == 1
    assert [e.code for e in res.errors] == ["po.duplicate_in_message"]
    assert "PO.pdf" in res.errors[0].message and res.errors[0].action


# ---------------------------------------------------------------------------- properties

CODE = re.compile(r"^(email|pdf|image|ocr|po)\.[a-z_]+$")


def assert_specific(res: EmailParse) -> None:
    assert isinstance(res, EmailParse)
    for e in res.errors:
        assert CODE.fullmatch(e.code), e
        assert e.message and e.action, e
    assert res.orders or res.errors  # always an outcome: orders, or why not


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes_give_a_specific_outcome(raw):
    assert_specific(parse_email(raw, catalog=Catalog([], [], [], []), ocr=NO_OCR))


HEADER_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Sender",
        "Reply-To",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "MIME-Version",
        "X-Anything",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "=?utf-8?b?w4TDpA==?=",
            "=?x-unknown?q?=FF?=",
            '"a" <b@c.d>',
            "<>",
            "(((",
            '"',
            "multipart/mixed; boundary=B",
            "application/pdf; name*0*=utf-8''%FF",
            'attachment; filename="../../etc/passwd"',
            "base64",
            "quoted-printable",
            "7bit",
            "Mon, 99 Foo 2024 99:99:99 +9999",
        ]
    ),
)
PAYLOADS = st.one_of(
    st.binary(max_size=2000),
    st.sampled_from([b"%PDF-1.4\n", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"GIF89a"]).flatmap(
        lambda head: st.binary(max_size=1000).map(lambda tail: head + tail)
    ),
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=12),
    parts=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "application/pdf",
                    "image/png",
                    "text/plain",
                    "application/zip",
                    "application/octet-stream",
                    "message/rfc822",
                    "text/html",
                ]
            ),
            st.sampled_from(["base64", "quoted-printable", "7bit", "x-bogus"]),
            HEADER_VALUES,
            PAYLOADS,
        ),
        max_size=4,
    ),
)
def test_any_mime_message_gives_a_specific_outcome(headers, parts):
    """Structured junk: real MIME framing around hostile headers, encodings and payloads."""
    lines = [f"{k}: {v}".replace("\r", " ").replace("\n", " ") for k, v in headers]
    lines.append('Content-Type: multipart/mixed; boundary="=B="')
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    for ctype, cte, name, payload in parts:
        body = base64.encodebytes(payload) if cte == "base64" else payload
        fname = name.replace("\r", " ").replace("\n", " ").replace('"', "")
        raw += (
            (
                f"--=B=\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n"
                f'Content-Disposition: attachment; filename="{fname}"\r\n\r\n'
            ).encode("utf-8", "surrogatepass")
            + body
            + b"\r\n"
        )
    raw += b"--=B=--\r\n"
    assert_specific(parse_email(raw, catalog=Catalog([], [], [], []), ocr=NO_OCR))


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    from orderflow_sandbox.generator import generate

    out = tmp_path_factory.mktemp("hostile-day")
    generate(
        out, seed=5, orders_per_day=80, customers=40, items=200, business_date=date(2026, 11, 27)
    )
    return out


@pytest.fixture(scope="module")
def catalog(day) -> Catalog:
    w = json.loads((day / "world.json").read_text())
    return Catalog(w["customers"], w["ship_tos"], w["items"], w["xrefs"])


@pytest.fixture(scope="module")
def po_pdf(day) -> bytes:
    """A clean text-layer PO PDF from a generated e-mail."""
    rows = [json.loads(line) for line in (day / "orders.jsonl").read_text().splitlines()]
    for r in sorted(rows, key=lambda r: r["artefact"] or ""):
        if r["channel"] != "email" or r["defects"]:
            continue
        msg = BytesParser(policy=policy.default).parsebytes((day / r["artefact"]).read_bytes())
        for part in msg.iter_attachments():
            data = part.get_content()
            if isinstance(data, bytes) and data.startswith(b"%PDF-"):
                return data
    pytest.fail("the generated day has no clean e-mailed PDF")
