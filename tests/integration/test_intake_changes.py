"""Customer changes through the real intake (drop folder → ``ingest`` → store): an X12 850
cancel or replace, an 860 change or cancel, a portal cancel item — each for a known PO stores
one pending ``order_change`` and never a second order; the same change delivered twice is
stored once; a change for a PO we do not have is quarantined with
``intake.change_for_unknown_po``."""

from __future__ import annotations

import json
import secrets

import pytest

from orderflow.channels import portal as portal_channel
from orderflow.domain.changes import OrderChange
from orderflow.intake import core, drops
from orderflow.intake.portal import _ingest_item

pytestmark = [pytest.mark.db]


def _set(n: int, body: list[str], set_id: str = "850") -> str:
    segs = [f"ST*{set_id}*{n:04d}", *body]
    segs.append(f"SE*{len(segs) + 1}*{n:04d}")
    return "~\n".join(segs) + "~\n"


def _po850(n: int, po: str, purpose: str = "00", lines: int = 2) -> str:
    body = [f"BEG*{purpose}*SA*{po}**20261128"]
    body += [f"PO1*{i}*{i + 1}*EA*1.50*PE*BP*PART{i}" for i in range(1, lines + 1)]
    if lines:
        body.append(f"CTT*{lines}")
    return _set(n, body)


def _po860(n: int, po: str, purpose: str = "04", seq: str = "1", pocs=None) -> str:
    body = [f"BCH*{purpose}*SA*{po}**{seq}*20261128", "MSG*please change"]
    body += pocs if pocs is not None else ["POC*1*QD*1**EA", "POC*2*PC****2.10"]
    body.append(f"CTT*{len(pocs) if pocs is not None else 2}")
    return _set(n, body, "860")


def _file(ctrl: int, sets: list[str], gs01: str = "PO") -> str:
    return (
        "ISA*00*          *00*          *ZZ*BUYER          *ZZ*SELLER         *261128*0930*U*"
        f"00401*{ctrl:09d}*0*P*>~\n"
        f"GS*{gs01}*BUYER*SELLER*20261128*0930*{ctrl}*X*004010~\n"
        + "".join(sets)
        + f"GE*{len(sets)}*{ctrl}~\nIEA*1*{ctrl:09d}~\n"
    )


class Partner:
    def __init__(self, store, tmp_path):
        self.store = store
        self.id = f"P{secrets.token_hex(4)}"  # a fresh partner: nothing of other tests
        self.root = tmp_path / "edi"
        self.n = 0

    def send(self, text: str):
        self.n += 1
        folder = self.root / self.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{self.n:03d}.x12").write_text(text)
        drops.ingest_folder(self.store, self.root, "edi")
        return self.store.execute(
            "SELECT message_id, outcome, error, details FROM orderflow.channel_message "
            "WHERE partner_id = %s ORDER BY message_id DESC LIMIT 1",
            (self.id,),
        ).fetchone()

    def orders(self) -> list[str]:
        rows = self.store.execute(
            'SELECT po_number FROM orderflow."order" WHERE partner_id = %s ORDER BY 1', (self.id,)
        ).fetchall()
        return [r[0] for r in rows]

    def changes(self) -> list[tuple]:
        return self.store.execute(
            "SELECT c.kind, c.source, c.status, c.reference, c.payload, c.message_id "
            'FROM orderflow.order_change c JOIN orderflow."order" o USING (order_id) '
            "WHERE o.partner_id = %s ORDER BY c.change_id",
            (self.id,),
        ).fetchall()

    def acks(self) -> list[str]:
        rows = self.store.execute(
            "SELECT payload->>'body' FROM orderflow.outbox WHERE action = 'edi_997' "
            "AND payload->>'partner_id' = %s ORDER BY outbox_id",
            (self.id,),
        ).fetchall()
        return [r[0] for r in rows]


@pytest.fixture
def partner(store, tmp_path):
    p = Partner(store, tmp_path)
    _mid, outcome, _, _ = p.send(_file(1, [_po850(1, "PO-1")]))
    assert outcome == "orders_created" and p.orders() == ["PO-1"]
    return p


@pytest.mark.parametrize(
    ("make", "kind", "source"),
    [
        (lambda c: _file(c, [_po850(1, "PO-1", "01", lines=0)]), "cancel", "x12_850_cancel"),
        (lambda c: _file(c, [_po850(1, "PO-1", "05", lines=3)]), "replace", "x12_850_replace"),
        (lambda c: _file(c, [_po860(1, "PO-1")], "PC"), "change", "x12_860"),
        (lambda c: _file(c, [_po860(1, "PO-1", "01", pocs=[])], "PC"), "cancel", "x12_860"),
    ],
)
def test_a_change_for_a_known_po_is_stored_once_and_never_a_second_order(
    partner, make, kind, source
):
    mid, outcome, error, details = partner.send(make(2))

    assert (outcome, error) == ("change_received", None)
    assert partner.orders() == ["PO-1"]  # no second order
    (row,) = partner.changes()
    assert row[:3] == (kind, source, "pending") and row[5] == mid
    change = OrderChange.model_validate(row[4])
    assert change.kind == kind and change.po_number == "PO-1" and change.reference == row[3]
    if kind == "replace":
        assert len(change.replacement.lines) == 3
    if source == "x12_860" and kind == "change":
        assert [lc.kind for lc in change.lines] == ["quantity", "price"]
    assert list(details["changes"].values()) == [[change_id_of(partner)]]
    assert "AK5*A" in partner.acks()[-1]  # the syntax was accepted: AK5 A

    # the same change again, in a new interchange (new ISA13): stored once
    _, outcome2, _, details2 = partner.send(make(3))
    assert outcome2 == "duplicate" and len(partner.changes()) == 1
    assert details2["repeated_changes"] == {change.reference: mid}
    assert partner.orders() == ["PO-1"]


def change_id_of(p: Partner) -> int:
    return p.store.execute(
        'SELECT max(change_id) FROM orderflow.order_change c JOIN orderflow."order" o '
        "USING (order_id) WHERE o.partner_id = %s",
        (p.id,),
    ).fetchone()[0]


@pytest.mark.parametrize(
    "text",
    [
        _file(2, [_po850(1, "PO-404", "01", lines=0)]),
        _file(2, [_po850(1, "PO-404", "05")]),
        _file(2, [_po860(1, "PO-404")], "PC"),
    ],
)
def test_a_change_for_an_unknown_po_is_quarantined_as_such(partner, text):
    _, outcome, error, _ = partner.send(text)

    assert outcome == "quarantined"
    (e,) = error
    assert e["code"] == "intake.change_for_unknown_po"
    assert "PO-404" in e["message"] and "replay" in e["action"]
    assert partner.orders() == ["PO-1"] and partner.changes() == []
    assert "AK5*A" in partner.acks()[-1]  # the 997 acknowledges syntax, which was fine


def test_the_same_change_number_with_other_content_is_not_stored_silently(partner):
    partner.send(_file(2, [_po860(1, "PO-1", seq="7")], "PC"))
    _, outcome, error, _ = partner.send(
        _file(3, [_po860(1, "PO-1", seq="7", pocs=["POC*1*DI"])], "PC")
    )
    assert outcome == "quarantined" and error[0]["code"] == "intake.change_reference_reused"
    assert len(partner.changes()) == 1


def test_an_order_and_its_cancellation_in_one_file(store, tmp_path):
    p = Partner(store, tmp_path)
    _, outcome, _, details = p.send(
        _file(1, [_po850(1, "PO-9"), _po850(2, "PO-9", "01", lines=0), _po850(3, "PO-10")])
    )
    assert outcome == "orders_created" and p.orders() == ["PO-10", "PO-9"]
    assert [c[:2] for c in p.changes()] == [("cancel", "x12_850_cancel")]
    assert len(details["changes"]) == 1


def test_a_change_in_a_rejected_group_is_not_stored(store, tmp_path):
    p = Partner(store, tmp_path)
    p.send(_file(1, [_po850(1, "PO-1")]))
    bad = _file(2, [_po860(1, "PO-1")], "PC").replace("GE*1*2", "GE*5*2")  # count wrong
    _, outcome, _, _ = p.send(bad)
    assert outcome == "quarantined" and p.changes() == []


# ------------------------------------------------------------------ portal
def _portal(store, item: dict):
    return _ingest_item(store, item, "portal", None)


def _portal_order(store, customer: str, po: str):
    item = {
        "client_request_id": f"req-{secrets.token_hex(4)}",
        "order": {
            "customer_id": customer,
            "po_number": po,
            "lines": [{"line_no": 1, "customer_part_number": "A1", "quantity": 2, "uom": "EA"}],
        },
    }
    out = _portal(store, item)
    assert out.outcome == "orders_created"
    return out


def test_portal_cancel_and_change_items(store):
    customer = f"C{secrets.token_hex(4)}"
    _portal_order(store, customer, "WEB-1")
    cancel = {
        "type": "cancel",
        "client_request_id": f"cx-{secrets.token_hex(4)}",
        "customer_id": customer,
        "po_number": "WEB-1",
        "reason": "ordered twice",
    }
    out = _portal(store, cancel)
    assert out.outcome == "change_received"
    again = _portal(store, cancel)  # the feed re-delivers the item
    assert again.seen_before
    change = {
        "type": "change",
        "client_request_id": f"ch-{secrets.token_hex(4)}",
        "customer_id": customer,
        "po_number": "WEB-1",
        "lines": [
            {"line_no": 1, "action": "quantity", "quantity": 5},
            {
                "line_no": 2,
                "action": "add",
                "quantity": 1,
                "uom": "ea",
                "customer_part_number": "B2",
                "unit_price": "3.5",
            },
        ],
    }
    assert _portal(store, change).outcome == "change_received"
    rows = store.execute(
        "SELECT c.kind, c.source, c.reference, c.payload FROM orderflow.order_change c "
        'JOIN orderflow."order" o USING (order_id) WHERE o.customer_id = %s '
        "ORDER BY change_id",
        (customer,),
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("cancel", "portal", cancel["client_request_id"]),
        ("change", "portal", change["client_request_id"]),
    ]
    assert rows[0][3]["reason"] == "ordered twice"
    assert [(x["kind"], x["uom"]) for x in rows[1][3]["lines"]] == [
        ("quantity", None),
        ("add", "EA"),
    ]
    n_orders = store.execute(
        'SELECT count(*) FROM orderflow."order" WHERE customer_id = %s', (customer,)
    ).fetchone()[0]
    assert n_orders == 1


def test_portal_cancel_for_an_unknown_po_is_quarantined(store):
    item = {
        "type": "cancel",
        "client_request_id": f"cx-{secrets.token_hex(4)}",
        "customer_id": f"C{secrets.token_hex(4)}",
        "po_number": "WEB-404",
    }
    out = _portal(store, item)
    assert out.outcome == "quarantined"
    assert [e.code for e in out.errors] == ["intake.change_for_unknown_po"]


def test_portal_change_item_errors_name_the_field(store):
    item = {
        "type": "change",
        "client_request_id": "x",
        "customer_id": "C",
        "po_number": "P",
        "lines": [{"line_no": 1, "action": "explode"}],
    }
    change, errors = portal_channel.parse_change(portal_channel.item_bytes(item))
    assert change is None and errors[0].code == "portal.invalid"
    assert "lines[0].action" in errors[0].where
    out = _portal(store, {**item, "client_request_id": f"x-{secrets.token_hex(4)}"})
    assert out.outcome == "quarantined" and out.errors[0].code == "portal.invalid"


def test_core_sources():
    c = OrderChange(kind="cancel", po_number="P", channel="portal", reference="r")
    assert core.change_source(c) == "portal"
    assert json.loads(c.model_dump_json())["kind"] == "cancel"
