"""EDI and CSV drop-folder intake of a generated sandbox day: files delivered by the sandbox,
every file gets exactly one outcome, reruns change nothing, hostile files are quarantined."""

import json
import os
from datetime import timedelta

import pytest
from tests_support import START

from orderflow.intake import drops
from orderflow.store import db, intake

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture(scope="module")
def delivered(sandbox, day_dir):
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})
    return sandbox.drop


@pytest.fixture
def partners(store, day_dir):
    """What the master-data sync provides: trading partner → customer."""
    world = json.loads((day_dir / "world.json").read_text())
    with db.transaction(store):
        for p in world["partners"]:
            store.execute(
                "INSERT INTO orderflow.trading_partner (partner_id, customer_id) VALUES (%s, %s) "
                "ON CONFLICT (partner_id) DO NOTHING",
                (p["partner_id"], p["customer_id"]),
            )


def _subs(day_dir, channel):
    rows = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    return [r for r in rows if r["channel"] == channel]


def test_edi_day_lands_with_one_outcome_per_file(store, delivered, day_dir, partners):
    root = delivered / "edi" / "inbound"
    n_files = sum(1 for p in root.rglob("*") if p.is_file() and ".archive" not in p.parts)
    before = store.execute(
        "SELECT count(*) FROM orderflow.channel_message WHERE channel='edi'"
    ).fetchone()[0]
    stats = drops.ingest_folder(store, root, "edi")
    assert stats.files == n_files > 0
    assert sum(stats.outcomes.values()) == n_files
    after = store.execute(
        "SELECT count(*) FROM orderflow.channel_message WHERE channel='edi'"
    ).fetchone()[0]
    assert after - before == n_files

    subs = _subs(day_dir, "edi")
    malformed = {s["artefact"] for s in subs if "malformed_edi" in s["defects"]}
    clean = [s for s in subs if "malformed_edi" not in s["defects"]]
    # every PO in a well-formed file became an order (or was recognised as a duplicate)
    created = store.execute(
        "SELECT count(*) FROM orderflow.\"order\" WHERE channel = 'edi'"
    ).fetchone()[0]
    dup_pos = sum(1 for s in clean if s.get("duplicate_of"))
    assert created >= len(clean) - dup_pos
    quarantined = store.execute(
        "SELECT count(*) FROM orderflow.channel_message WHERE channel='edi' AND outcome='quarantined'"
    ).fetchone()[0]
    assert quarantined >= len(malformed) > 0
    # EDI orders know their customer through the trading partner
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.\"order\" WHERE channel = 'edi' AND customer_id IS NULL"
        ).fetchone()[0]
        == 0
    )
    # 997s (and TA1s) are queued once per group, keyed
    acks = store.execute(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM orderflow.outbox "
        "WHERE action IN ('edi_997', 'edi_ta1')"
    ).fetchone()
    assert acks[0] == acks[1] > 0
    # files were archived; a rerun finds nothing and changes nothing
    assert drops.ingest_folder(store, root, "edi").files == 0


def test_rerun_over_the_same_files_adds_nothing(store, delivered, partners, tmp_path):
    src = next((delivered / "edi" / "inbound" / ".archive" / "orders_created").rglob("*.x12"))
    partner = src.parent.name
    drop = tmp_path / "edi"
    (drop / partner).mkdir(parents=True)
    copy = drop / partner / src.name
    copy.write_bytes(src.read_bytes())
    counts = intake.reconcile(store, "edi")
    stats = drops.ingest_folder(store, drop, "edi")
    assert stats.seen_before == 1
    assert stats.orders == 0
    assert intake.reconcile(store, "edi") == counts  # the same message, not a new one
    # the same interchange re-sent under another name is a duplicate, pointing at the original
    (drop / partner / ("resend-" + src.name)).write_bytes(src.read_bytes())
    stats = drops.ingest_folder(store, drop, "edi")
    assert stats.outcomes == {"duplicate": 1}


def test_csv_day_lands(store, delivered, day_dir):
    root = delivered / "csv" / "inbound"
    subs = _subs(day_dir, "csv")
    stats = drops.ingest_folder(store, root, "csv")
    assert stats.files > 0
    assert sum(stats.outcomes.values()) == stats.files
    assert stats.orders + sum(1 for s in subs if s.get("duplicate_of")) >= len(subs)
    assert stats.lines >= sum(len(s["lines"]) for s in subs if not s.get("duplicate_of"))


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("truncated.x12", b"ISA*00*          *00*    ", "x12."),
        ("binary.x12", bytes(range(256)) * 4, "x12."),
        ("latin1.x12", "ISA*café\xff".encode("latin-1"), "x12."),
        ("orders.xlsx", b"PK\x03\x04 not really", "csv.not_csv"),
        (
            "bad\u202ename.csv",
            b"po_number,customer_id,qty,uom,item\n1,C1,1,EA,X\n",
            "file.unsafe_name",
        ),
        (
            "formula.csv",
            b'po_number,customer_id,qty,uom,item\n=HYPERLINK("x"),C1,1,EA,X\n',
            "csv.formula_value",
        ),
        ("empty.csv", b"", "csv.empty"),
    ],
)
def test_hostile_files_are_quarantined_with_a_specific_reason(store, tmp_path, name, content, code):
    channel = "edi" if name.endswith(".x12") else "csv"
    root = tmp_path / channel
    folder = root / "PARTNER1" if channel == "edi" else root
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    stats = drops.ingest_folder(store, root, channel)
    assert stats.outcomes == {"quarantined": 1}
    err = store.execute(
        "SELECT error FROM orderflow.channel_message WHERE source_ref = %s "
        "ORDER BY message_id DESC LIMIT 1",
        (name,),
    ).fetchone()[0]
    assert any(e["code"].startswith(code) for e in err), err


def test_oversized_and_symlinked_files_are_refused_unread(store, tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    (root / "huge.csv").write_bytes(b"x" * 2_000_000)
    os.symlink("/etc/passwd", root / "link.csv")
    stats = drops.ingest_folder(store, root, "csv", max_bytes=1_000_000)
    assert stats.outcomes == {"quarantined": 2}
    rows = dict(
        store.execute(
            "SELECT source_ref, size_bytes FROM orderflow.channel_message WHERE source_ref IN ('huge.csv', 'link.csv')"
        ).fetchall()
    )
    assert rows["huge.csv"] == 2_000_000
    raw = store.execute(
        "SELECT length(raw) FROM orderflow.channel_message WHERE source_ref = 'link.csv'"
    ).fetchone()[0]
    assert raw == 0  # the link was not followed


def test_acknowledgements_reach_the_gateway_once_and_read_back_as_valid_997s(
    store, delivered, sandbox, monkeypatch
):
    from orderflow.channels import x12
    from orderflow.integrations import outbox

    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    queued = store.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'edi_997'"
    ).fetchone()[0]
    assert queued > 0
    sent = outbox.send_due(store, ["edi_997", "edi_ta1"], limit=10_000)
    assert outbox.send_due(store, ["edi_997", "edi_ta1"], limit=10_000) == {}
    received = sandbox.client.get("/edi/outbound", params={"document_type": "997"}).json()["items"]
    assert (
        len(received)
        == queued
        == sent.get("sent", 0)
        - len(sandbox.client.get("/edi/outbound", params={"document_type": "TA1"}).json()["items"])
    )
    for doc in received[:50]:
        parsed = x12.parse(doc["body"].encode())
        assert parsed.errors == [] and parsed.interchanges[0].groups[0].functional_id == "FA"


def test_quarantined_file_is_replayed_after_a_fix_and_audited(store, tmp_path):
    from orderflow.intake import replay

    root = tmp_path / "csv"
    root.mkdir()
    bad = b"po_number,customer_id,qty,uom,item\nRP-1,C00001,zero,EA,IT000001\n"
    (root / "rep.csv").write_bytes(bad)
    drops.ingest_folder(store, root, "csv")
    mid = store.execute(
        "SELECT message_id FROM orderflow.channel_message WHERE source_ref = 'rep.csv'"
    ).fetchone()[0]
    assert [
        m["message_id"] for m in replay.quarantined(store, channel="csv") if m["message_id"] == mid
    ]

    # replaying unchanged bytes gives the same verdict, as a new message pointing back
    again = replay.replay(store, mid, actor="jane", reason="retry")
    assert again.outcome == "quarantined"
    with pytest.raises(replay.NotReplayable, match="already replayed"):
        replay.replay(store, mid, actor="jane")

    fixed = replay.replay(
        store,
        mid,
        actor="jane",
        reason="qty corrected with the rep",
        raw=bad.replace(b"zero", b"4"),
    )
    assert fixed.outcome == "orders_created" and len(fixed.order_ids) == 1
    assert (
        store.execute(
            "SELECT replay_of FROM orderflow.channel_message WHERE message_id = %s",
            (fixed.message_id,),
        ).fetchone()[0]
        == mid
    )
    audit = store.execute(
        "SELECT actor, action, reason FROM orderflow.audit_log WHERE object_id = %s "
        "ORDER BY audit_id",
        (str(mid),),
    ).fetchall()
    assert audit[-1] == ("jane", "replay_message", "qty corrected with the rep")
    with pytest.raises(replay.NotReplayable, match="only quarantined"):
        replay.replay(store, fixed.message_id, actor="jane")
