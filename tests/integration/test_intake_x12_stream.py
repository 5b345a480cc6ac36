"""EDI intake reads files as a stream (#13 D5): orders are inserted batch by batch while the
file is read, so what a group or interchange turns out to be at its end must still decide
what is kept — and the message keeps its one outcome, its errors and its 997s."""

from __future__ import annotations

import secrets

import pytest

from orderflow.intake import core, drops

pytestmark = [pytest.mark.db]


def _po(n: int, po: str | None = None) -> str:
    segs = [
        f"ST*850*{n:04d}",
        f"BEG*00*SA*{po or f'S{n:07d}'}**20261128",
        "PO1*1*2*EA*1.50*PE*BP*PART1",
        "CTT*1",
    ]
    segs.append(f"SE*{len(segs) + 1}*{n:04d}")
    return "~\n".join(segs) + "~\n"


def _group(ctrl: int, pos: list[str], *, count: int | None = None) -> str:
    return (
        f"GS*PO*BUYER*SELLER*20261128*0930*{ctrl}*X*004010~\n"
        + "".join(pos)
        + f"GE*{len(pos) if count is None else count}*{ctrl}~\n"
    )


def _ic(ctrl: int, groups: list[str], *, iea: bool = True) -> str:
    head = (
        "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
        f"00401*{ctrl:09d}*0*P*>~\n"
    )
    return head + "".join(groups) + (f"IEA*{len(groups)}*{ctrl:09d}~\n" if iea else "")


def _ingest(store, tmp_path, text: str):
    partner = f"P{secrets.token_hex(4)}"  # fresh partner: no duplicates of other tests
    folder = tmp_path / "edi" / partner
    folder.mkdir(parents=True)
    (folder / "f.x12").write_text(text)
    stats = drops.ingest_folder(store, tmp_path / "edi", "edi")
    row = store.execute(
        "SELECT message_id, outcome, error, order_count FROM orderflow.channel_message "
        "WHERE partner_id = %s",
        (partner,),
    ).fetchone()
    pos = {
        r[0]
        for r in store.execute(
            'SELECT po_number FROM orderflow."order" WHERE partner_id = %s', (partner,)
        ).fetchall()
    }
    acks = [
        r[0]
        for r in store.execute(
            "SELECT payload->>'body' FROM orderflow.outbox WHERE payload->>'partner_id' = %s",
            (partner,),
        ).fetchall()
    ]
    return stats, row, pos, acks


def test_a_rejected_group_between_good_ones_is_rolled_back_alone(store, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "STREAM_BATCH", 2)  # several batches per group
    good1 = _group(1, [_po(n) for n in range(1, 6)])
    bad = _group(2, [_po(n) for n in range(6, 11)], count=4)  # GE01 says 4: rejected
    good2 = _group(3, [_po(n) for n in range(11, 14)])
    _stats, row, pos, acks = _ingest(store, tmp_path, _ic(1, [good1, bad, good2]))
    assert row[1] == "orders_created" and row[3] == 8
    assert pos == {f"S{n:07d}" for n in (*range(1, 6), *range(11, 14))}
    assert [e["code"] for e in row[2]] == ["x12.ge_count_mismatch"]
    assert len(acks) == 3 and sum("AK9*R*4*5*0*5" in a for a in acks) == 1


def test_a_rejected_interchange_keeps_nothing_of_it(store, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "STREAM_BATCH", 2)
    text = _ic(1, [_group(1, [_po(n) for n in range(1, 4)])]) + _ic(
        2, [_group(2, [_po(n) for n in range(4, 9)])], iea=False
    )
    _stats, row, pos, _acks = _ingest(store, tmp_path, text)
    assert row[1] == "orders_created" and pos == {f"S{n:07d}" for n in range(1, 4)}
    assert "x12.iea_missing" in [e["code"] for e in row[2]]


def test_only_a_rejected_interchange_quarantines_the_file(store, tmp_path):
    text = _ic(1, [_group(1, [_po(n) for n in range(1, 4)])], iea=False)
    _stats, row, pos, acks = _ingest(store, tmp_path, text)
    assert row[1] == "quarantined" and pos == set()
    assert [e["code"] for e in row[2]] == ["x12.iea_missing"]
    assert len(acks) == 1 and "TA1*000000001" in acks[0]


def test_the_same_po_in_another_batch_is_one_order(store, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "STREAM_BATCH", 2)
    pos_ = [_po(n) for n in range(1, 6)] + [_po(6, po="S0000001")]
    _stats, row, pos, _acks = _ingest(store, tmp_path, _ic(1, [_group(1, pos_)]))
    assert row[1] == "orders_created" and row[3] == 5 and len(pos) == 5
    assert [e["code"] for e in row[2]] == ["intake.duplicate_po_in_message"]
