"""A poison e-mail between good ones (issue #13 acceptance, the mailbox channel): one ingest
run creates the good e-mailed POs, quarantines each poison message with its specific error,
and the next run moves on. Real intake (``intake.mailbox.ingest_mailbox``), real store,
master data synced from the sandbox, the generator's e-mailed PO documents."""

from __future__ import annotations

import json
import os
import zlib
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from tests_support import START

from orderflow import masterdata
from orderflow.intake import mailbox
from orderflow.integrations.systems import ErpHook, WmsHook

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture
def synced(store, sandbox, monkeypatch):
    """Master data in the store (what extraction matches against)."""
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    masterdata.sync(store, {"erp": ErpHook(), "wms": WmsHook()}, full=True)
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})


@pytest.fixture(scope="module")
def clean_emails(day_dir) -> list[dict]:
    """Generated e-mails holding one clean text-layer PO each (ground truth attached)."""
    subs = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    rows = [
        s
        for s in subs
        if s["channel"] == "email" and not s["defects"] and not s.get("duplicate_of")
    ]
    per_file: dict[str, list[dict]] = {}
    for s in rows:
        per_file.setdefault(s["artefact"], []).append(s)
    single = [v[0] for k, v in sorted(per_file.items()) if len(v) == 1]
    assert len(single) >= 4, "the generated day has too few clean e-mailed POs"
    return single[:4]


def _pdf_bomb() -> bytes:
    """A 1 MB PDF whose one content stream inflates to 1 GiB (behind a filter chain)."""
    z = zlib.compressobj(9)
    flate = b"".join(z.compress(b"\x00" * 2**20) for _ in range(1024)) + z.flush()
    stream = flate.hex().encode() + b">"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter [/ASCIIHexDecode /FlateDecode] >>\nstream\n" % len(stream)
        + stream
        + b"\nendstream",
    ]
    out = b"%PDF-1.4\n"
    for i, body in enumerate(objects, start=1):
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    return out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


def _bomb_mail(like: bytes) -> bytes:
    """From the same customer as a good e-mail, a 'PO' whose PDF is a decompression bomb."""
    good = BytesParser(policy=policy.default).parsebytes(like)
    msg = EmailMessage()
    msg["From"] = good["From"]
    msg["To"] = good["To"]
    msg["Subject"] = "PO 99887766 - urgent"
    msg.set_content("Please see the attached purchase order.")
    msg.add_attachment(_pdf_bomb(), maintype="application", subtype="pdf", filename="PO.pdf")
    return msg.as_bytes()


def _long_subject_mail(like: bytes) -> bytes:
    """#13 D3 as reported: a good e-mail whose Subject is 600,000 characters of encoded
    words (3.3 GB to decode before the fix) — its PO attachment is never read."""
    eol = b"\r\n" if b"\r\n" in like[:1000] else b"\n"
    head, body = like.split(eol * 2, 1)
    subject = " ".join(["=?utf-8?q?a?="] * (600_000 // 14))
    lines = [ln for ln in head.split(eol) if not ln.lower().startswith(b"subject:")]
    assert len(lines) == head.count(eol)  # exactly one Subject line was dropped
    return eol.join([*lines, b"Subject: " + subject.encode()]) + eol * 2 + body


def _drop(folder: Path, name: str, data: bytes, mtime: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    os.utime(folder / name, (mtime, mtime))


def _message(store, name: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """(outcome, error codes, [(po_number, status)] of its orders) of one dropped e-mail."""
    mid, outcome, error = store.execute(
        "SELECT message_id, outcome, error FROM orderflow.channel_message "
        "WHERE channel = 'email' AND source_ref = %s",
        (name,),
    ).fetchone()
    orders = store.execute(
        'SELECT po_number, status FROM orderflow."order" WHERE source_message_id = %s '
        "ORDER BY po_number",
        (mid,),
    ).fetchall()
    return outcome, [e["code"] for e in error or []], [tuple(o) for o in orders]


def test_mailbox_poison_between_good_emails(store, synced, day_dir, clean_emails, tmp_path):
    box = tmp_path / "mailbox"
    raws = [(day_dir / s["artefact"]).read_bytes() for s in clean_emails]
    _drop(box, "a_good.eml", raws[0], 1_000)
    _drop(box, "b_pdf_bomb.eml", _bomb_mail(raws[0]), 2_000)
    _drop(box, "c_good.eml", raws[1], 3_000)
    _drop(box, "d_long_subject.eml", _long_subject_mail(raws[3]), 4_000)
    _drop(box, "e_good.eml", raws[2], 5_000)

    stats = mailbox.ingest_mailbox(store, box)

    assert stats.files == 5
    assert stats.outcomes == {"orders_created": 3, "quarantined": 2}
    for name, truth in (
        ("a_good.eml", clean_emails[0]),
        ("c_good.eml", clean_emails[1]),
        ("e_good.eml", clean_emails[2]),
    ):
        outcome, codes, orders = _message(store, name)
        assert outcome == "orders_created", (name, codes)
        assert orders == [(truth["po_number"], "RECEIVED")], (name, codes)
    # each poison message is quarantined with its own specific error, nothing else
    assert _message(store, "b_pdf_bomb.eml") == ("quarantined", ["pdf.bomb"], [])
    assert _message(store, "d_long_subject.eml") == ("quarantined", ["email.header_too_long"], [])
    (bomb_error,) = store.execute(
        "SELECT error->0 FROM orderflow.channel_message WHERE source_ref = 'b_pdf_bomb.eml'"
    ).fetchone()
    assert "decompression bomb" in bomb_error["message"] and bomb_error["action"]
    assert "PO.pdf" in bomb_error["where"]
    # the 4th PO was only inside the refused message: not created from it
    assert store.execute(
        'SELECT count(*) FROM orderflow."order" WHERE po_number = %s',
        (clean_emails[3]["po_number"],),
    ).fetchone() == (0,)
    # the poison files wait in the quarantine archive, not in the mailbox
    assert sorted(p.name for p in box.iterdir() if not p.name.startswith(".")) == []
    assert {p.name for p in (box / ".archive" / "quarantined").rglob("*.eml")} == {
        "b_pdf_bomb.eml",
        "d_long_subject.eml",
    }

    # the next run moves on: nothing left from the last one, a new good e-mail goes through
    _drop(box, "f_good.eml", raws[3], 6_000)
    again = mailbox.ingest_mailbox(store, box)
    assert again.files == 1 and again.outcomes == {"orders_created": 1}
    assert _message(store, "f_good.eml")[0] == "orders_created"
    assert _message(store, "f_good.eml")[2] == [(clean_emails[3]["po_number"], "RECEIVED")]
