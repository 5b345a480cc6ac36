"""Mailbox intake of a generated day's e-mails, matched against master data synced into the
store: one outcome per e-mail; hard-to-read POs are created ON_HOLD with a
low-confidence-extraction exception, never silently guessed."""

import json
import shutil
from datetime import timedelta

import pytest
from tests_support import START

from orderflow import masterdata
from orderflow.intake import mailbox
from orderflow.integrations.systems import ErpHook, WmsHook

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture
def synced(store, sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    masterdata.sync(store, {"erp": ErpHook(), "wms": WmsHook()}, full=True)
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})
    return sandbox.drop / "mailbox" / "new"


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs Debian's tesseract-ocr")
def test_mailbox_day_lands_and_low_confidence_orders_are_held(store, synced, day_dir):
    subs = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    emails = [s for s in subs if s["channel"] == "email"]
    n_files = len(list(synced.glob("*.eml")))
    assert n_files == len({s["artefact"] for s in emails}) > 0

    stats = mailbox.ingest_mailbox(store, synced)
    assert stats.files == n_files and sum(stats.outcomes.values()) == n_files
    assert stats.outcomes.get("pending", 0) == 0

    def by_mail(sub):
        """Outcome of the e-mail carrying ``sub`` and (status, hold category) of its orders."""
        mid, outcome = store.execute(
            "SELECT message_id, outcome FROM orderflow.channel_message WHERE source_ref = %s",
            (sub["artefact"].split("/")[-1],),
        ).fetchone()
        orders = store.execute(
            """SELECT o.status, e.category FROM orderflow."order" o
               LEFT JOIN orderflow.order_exception e USING (order_id)
               WHERE o.source_message_id = %s""",
            (mid,),
        ).fetchall()
        return outcome, orders

    hard = [s for s in emails if "low_confidence_extraction" in s["defects"]]
    held = 0
    for s in hard:
        # a hard-to-read PO is held for a person (whatever the OCR made of its PO number) or
        # quarantined as unreadable — never silently created as if it were read
        outcome, orders = by_mail(s)
        if outcome == "quarantined":
            continue
        assert outcome in ("orders_created", "duplicate"), (s["artefact"], outcome)
        if outcome == "orders_created":
            assert all(
                st == "ON_HOLD" and cat == "low_confidence_extraction" for st, cat in orders
            ), (s["artefact"], orders)
            held += 1
    assert held >= len(hard) // 2
    clean = [s for s in emails if not s["defects"] and not s.get("duplicate_of")]
    created = {
        r[0]: r[1]
        for r in store.execute(
            "SELECT po_number, status FROM orderflow.\"order\" WHERE channel = 'email'"
        ).fetchall()
    }
    readable = [s for s in clean if created.get(s["po_number"]) == "RECEIVED"]
    assert len(readable) >= 0.95 * len(clean)
    # the extractor's version is on the order, and the events record the hold
    prov = store.execute(
        "SELECT canonical->'provenance'->>'extraction_model' FROM orderflow.\"order\" "
        "WHERE channel = 'email' LIMIT 1"
    ).fetchone()[0]
    assert prov.startswith("po-extract@")


def test_before_the_first_master_data_sync_e_mails_wait(store, synced, tmp_path):
    """Extraction matches against the store's master data: before the first full sync (the
    backlog of a first `make run` arrives at once) the e-mails stay in the folder rather than
    every PO being held as unreadable, and the next run after the sync reads them."""
    from orderflow.masterdata import FULL_REFRESH_CURSOR
    from orderflow.store import cursors, db

    inbox = tmp_path / "new"
    inbox.mkdir()
    for src in sorted(synced.parent.rglob("*.eml"))[:3]:  # waiting or archived: any will do
        shutil.copyfile(src, inbox / src.name)
    n_files = len(list(inbox.glob("*.eml")))
    assert n_files == 3
    saved = cursors.get(store, FULL_REFRESH_CURSOR)
    with db.transaction(store):
        store.execute(
            "DELETE FROM orderflow.sync_cursor WHERE cursor_name = %s", (FULL_REFRESH_CURSOR,)
        )
    try:
        stats = mailbox.ingest_mailbox(store, inbox)
        assert (stats.files, stats.waiting_for_master_data) == (0, n_files)
        assert stats.summary()["waiting_for_master_data"] == n_files
        assert len(list(inbox.glob("*.eml"))) == n_files
    finally:
        with db.transaction(store):
            cursors.put(store, FULL_REFRESH_CURSOR, saved or "2026-01-01T00:00:00Z")
    stats = mailbox.ingest_mailbox(store, inbox)
    assert stats.files == n_files and stats.waiting_for_master_data == 0
    assert list(inbox.glob("*.eml")) == []
