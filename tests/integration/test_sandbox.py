"""The sandbox driven over real HTTP, as OrderFlow's hooks will drive it: a separate
`orderflow sandbox serve` process on a free port, serving a small generated day."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
from tests_support import START

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def no_faults(sandbox):
    sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()
    yield
    sandbox.client.put("/admin/faults", json={"seed": 7, "rules": []}).raise_for_status()


def _stocked(c: httpx.Client, minimum: float = 10) -> dict:
    items = c.get("/wms/inventory").json()["items"]
    return next(p for p in items if p["available"] >= minimum)


def test_openapi_lists_every_endpoint(sandbox):
    paths = set(sandbox.client.get("/openapi.json").json()["paths"])
    for p in [
        "/erp/{entity}",
        "/erp/customers/{customer_id}/exposure",
        "/erp/orders",
        "/erp/invoices",
        "/wms/inventory",
        "/wms/reservations",
        "/wms/reservations/{reservation_id}",
        "/wms/releases",
        "/wms/milestones",
        "/carrier/rates",
        "/carrier/shipments",
        "/carrier/tracking",
        "/tax/quote",
        "/credit/check",
        "/credit/check/batch",
        "/screening/check",
        "/portal/orders",
        "/edi/outbound",
        "/admin/faults",
        "/admin/clock",
        "/admin/state",
        "/admin/master/{entity}/{key}",
    ]:
        assert p in paths, p
    assert sandbox.client.get("/docs").status_code == 200


def test_master_data_extract_pages_and_changed_since(sandbox):
    c = sandbox.client
    first = c.get("/erp/customers", params={"limit": 50}).json()
    assert first["total"] >= 100
    assert len(first["items"]) == 50
    assert first["next_offset"] == 50
    cust = first["items"][0]
    before = c.get("/admin/clock").json()["now"]
    c.put("/admin/clock", json={"advance_minutes": 1})
    c.patch(
        f"/admin/master/customers/{cust['customer_id']}", json={"name": "Renamed Co"}
    ).raise_for_status()
    changed = c.get("/erp/customers", params={"changed_since": before}).json()
    assert [r["customer_id"] for r in changed["items"]] == [cust["customer_id"]]
    assert changed["items"][0]["name"] == "Renamed Co"


def test_release_requires_a_key_and_a_duplicate_key_never_picks_twice(sandbox):
    c = sandbox.client
    pos = _stocked(c)
    body = {
        "order_id": "ORD-T1",
        "dc_id": pos["dc_id"],
        "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 2}],
    }
    assert c.post("/wms/releases", json=body).status_code == 400
    first = c.post("/wms/releases", json=body, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    again = c.post("/wms/releases", json=body, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    after = next(
        p
        for p in c.get(
            "/wms/inventory", params={"item_id": pos["item_id"], "dc_id": pos["dc_id"]}
        ).json()["items"]
    )
    assert after["available"] == pytest.approx(pos["available"] - 2)  # reserved once
    other = {**body, "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 3}]}
    clash = c.post("/wms/releases", json=other, headers={"Idempotency-Key": "ORD-T1:release:v1"})
    assert clash.status_code == 422
    assert "different request body" in clash.json()["detail"]


def test_invoice_posting_is_idempotent_and_moves_ar_once(sandbox):
    c = sandbox.client
    cust = c.get("/erp/credit_accounts", params={"limit": 1}).json()["items"][0]["customer_id"]
    ar0 = c.get(f"/erp/customers/{cust}/exposure").json()["open_ar"]
    inv = {
        "order_id": "ORD-T2",
        "customer_id": cust,
        "tax": 5.0,
        "lines": [{"line_no": 1, "item_id": "X", "quantity": 10, "unit_price": 9.5}],
    }
    assert c.post("/erp/invoices", json=inv).status_code == 400
    a = c.post("/erp/invoices", json=inv, headers={"Idempotency-Key": "ORD-T2:invoice:v1"})
    b = c.post("/erp/invoices", json=inv, headers={"Idempotency-Key": "ORD-T2:invoice:v1"})
    assert a.status_code == 201
    assert b.status_code == 200
    assert a.json()["invoice_number"] == b.json()["invoice_number"]
    ar1 = c.get(f"/erp/customers/{cust}/exposure").json()["open_ar"]
    assert ar1 == pytest.approx(ar0 + 100.0)


def test_concurrent_reservations_never_oversell(sandbox):
    c = sandbox.client
    pos = _stocked(c, minimum=20)
    available = pos["available"]
    qty = max(1.0, float(int(available // 15)))
    attempts = int(available // qty) * 2 + 5

    def reserve(i):
        with httpx.Client(base_url=sandbox, timeout=10) as cl:
            return cl.post(
                "/wms/reservations",
                json={
                    "item_id": pos["item_id"],
                    "dc_id": pos["dc_id"],
                    "quantity": qty,
                    "reference": f"T3-{i}",
                },
            ).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(reserve, range(attempts)))
    assert set(codes) <= {201, 409}
    assert codes.count(201) == int(available // qty)
    final = next(
        p
        for p in c.get(
            "/wms/inventory", params={"item_id": pos["item_id"], "dc_id": pos["dc_id"]}
        ).json()["items"]
    )
    assert final["available"] >= 0
    assert final["available"] == pytest.approx(available - codes.count(201) * qty)


def test_milestones_progress_with_time_and_tracking_follows(sandbox):
    c = sandbox.client
    pos = _stocked(c)
    rel = c.post(
        "/wms/releases",
        headers={"Idempotency-Key": "ORD-T4:release:v1"},
        json={
            "order_id": "ORD-T4",
            "dc_id": pos["dc_id"],
            "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 1}],
        },
    ).json()

    def events(path):
        out, cursor = [], 0
        while True:
            page = c.get(path, params={"cursor": cursor, "limit": 500}).json()
            out += page["items"]
            if page["next_cursor"] == cursor:
                return out
            cursor = page["next_cursor"]

    mine = [e for e in events("/wms/milestones") if e["release_id"] == rel["release_id"]]
    assert [e["milestone"] for e in mine] == ["released"]
    c.put("/admin/clock", json={"advance_minutes": 3 * 24 * 60})
    mine = [
        e["milestone"] for e in events("/wms/milestones") if e["release_id"] == rel["release_id"]
    ]
    assert [m for m in mine if m != "short_picked"] == ["released", "picked", "packed", "shipped"]
    c.put("/admin/clock", json={"advance_minutes": 7 * 24 * 60})
    track = [
        e["status"] for e in events("/carrier/tracking") if e["release_id"] == rel["release_id"]
    ]
    assert track[0] == "in_transit"
    assert track[-1] in {"delivered", "exception"}


def test_portal_feed_cursor_has_no_gaps_or_repeats_and_files_are_delivered(sandbox, day_dir):
    c = sandbox.client
    deliveries = [
        json.loads(line) for line in (day_dir / "deliveries.jsonl").read_text().splitlines()
    ]
    # past the day and past its last file (a customer's change can come the next afternoon):
    # on its own, this test must not rely on an earlier one having moved the clock further
    last = max(datetime.fromisoformat(d["at"].replace("Z", "+00:00")) for d in deliveries)
    c.put("/admin/clock", json={"now": max(START + timedelta(days=1), last).isoformat()})
    seen, cursor = [], 0
    while True:
        page = c.get("/portal/orders", params={"cursor": cursor, "limit": 17}).json()
        seen += [o["client_request_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    # new orders in file order, with the customers' cancel/change items merged by arrival
    items = [
        json.loads(line)
        for line in (day_dir / "orders.jsonl").read_text().splitlines()
        if json.loads(line)["channel"] == "portal"
    ]
    changes = day_dir / "portal_changes.jsonl"
    if changes.exists():
        items += [json.loads(line) for line in changes.read_text().splitlines()]
    expected = [
        i["client_request_id"]
        for i in sorted(items, key=lambda i: datetime.fromisoformat(i["arrival_at"]))
    ]
    assert seen == expected
    assert len(seen) == len(set(seen)) > 0
    assert c.get("/admin/state").json()["deliveries"]["delivered"] == len(deliveries)
    assert len(list((sandbox.drop / "edi" / "inbound").rglob("*.x12"))) == sum(
        d["channel"] == "edi" for d in deliveries
    )
    assert len(list((sandbox.drop / "mailbox" / "new").glob("*.eml"))) == sum(
        d["channel"] == "email" for d in deliveries
    )


def test_credit_tax_screening_answer(sandbox, day_dir):
    c = sandbox.client
    acct = c.get("/erp/credit_accounts", params={"limit": 1}).json()["items"][0]
    ok = c.post("/credit/check", json={"customer_id": acct["customer_id"], "amount": 1}).json()
    huge = c.post(
        "/credit/check",
        json={"customer_id": acct["customer_id"], "amount": acct["credit_limit"] * 10},
    ).json()
    assert ok["decision"] in {"approve", "decline"}
    assert huge["decision"] in {"refer", "decline"}
    tax = c.post(
        "/tax/quote",
        json={"customer_id": "C1", "region": "CA", "lines": [{"line_no": 1, "amount": 100}]},
    ).json()
    assert tax["total_tax"] == pytest.approx(7.25)
    party = json.loads((day_dir / "world.json").read_text())["restricted_parties"][0]
    hit = c.post(
        "/screening/check", json={"name": party["name"], "country": party["country"]}
    ).json()
    assert hit["status"] == "review"
    assert hit["hits"]
    clear = c.post(
        "/screening/check", json={"name": "Plain Hardware Supply", "country": "US"}
    ).json()
    assert clear["status"] == "clear"


def _rules(c, **rule):
    c.put("/admin/faults", json={"seed": 3, "rules": [rule]}).raise_for_status()


def test_fault_error_rate_is_observable_and_deterministic(sandbox):
    c = sandbox.client

    def run():
        _rules(c, prefix="/tax", error_rate=0.5)
        return [
            c.post("/tax/quote", json={"customer_id": "C", "region": "CA", "lines": []}).status_code
            for _ in range(30)
        ]

    a, b = run(), run()
    assert a == b
    assert set(a) == {200, 503}


def test_fault_latency_timeout_and_reset(sandbox):
    c = sandbox.client
    body = {"customer_id": "C", "region": "CA", "lines": []}
    _rules(c, prefix="/tax", latency_ms=300)
    t0 = time.perf_counter()
    assert c.post("/tax/quote", json=body).status_code == 200
    assert time.perf_counter() - t0 >= 0.3
    _rules(c, prefix="/tax", timeout_rate=1.0, timeout_s=5)
    with pytest.raises(httpx.ReadTimeout):
        c.post("/tax/quote", json=body, timeout=0.5)
    _rules(c, prefix="/tax", reset_rate=1.0)
    # A reset surfaces as "server disconnected" or "connection reset by peer",
    # depending on whether the kernel saw the RST before the client read.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{sandbox}/tax/quote", json=body, timeout=5)


def test_fault_duplicates_and_out_of_order_in_feeds(sandbox):
    c = sandbox.client
    c.put("/admin/clock", json={"now": (START + timedelta(days=1)).isoformat()})
    _rules(c, prefix="/portal", duplicate_rate=1.0)
    ids = [
        o["client_request_id"]
        for o in c.get("/portal/orders", params={"limit": 10}).json()["items"]
    ]
    assert len(ids) == 20
    assert len(set(ids)) == 10
    _rules(c, prefix="/wms/milestones", out_of_order_rate=1.0)
    seqs = [e["seq"] for e in c.get("/wms/milestones", params={"limit": 50}).json()["items"]]
    assert len(seqs) > 3
    assert seqs != sorted(seqs)


# ---------------------------------------------------------------------- fulfilment stand-ins
def test_smtp_sink_keeps_mail_and_counts_duplicate_message_ids(sandbox):
    import smtplib
    from email.message import EmailMessage

    c = sandbox.client
    before = c.get("/admin/state").json()["mail"]
    msg = EmailMessage()
    msg["From"] = "orders@orderflow.local"
    msg["To"] = "buyer@example.com"
    msg["Subject"] = "Order ORD-M1 confirmed"
    msg["Message-ID"] = "<ORD-M1.confirmation@orderflow.local>"
    msg["X-OrderFlow-Key"] = "ORD-M1:confirmation:v1"
    msg.set_content("Thank you for your order ORD-M1.\n")
    other = EmailMessage()
    other["From"] = "orders@orderflow.local"
    other["To"] = "someone@example.com"
    other["Subject"] = "Order ORD-M2 shipped"
    other["Message-ID"] = "<ORD-M2.shipped@orderflow.local>"
    other.set_content("On its way.\n")
    with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=10) as smtp:
        smtp.send_message(msg)
        smtp.send_message(msg)  # a duplicate send: same Message-ID
        smtp.send_message(other)
    mine = c.get("/mail/messages", params={"to": "buyer@example.com", "subject": "ord-m1"}).json()[
        "items"
    ]
    assert len(mine) == 2
    m = mine[0]
    assert m["from"] == "orders@orderflow.local"
    assert m["to"] == ["buyer@example.com"]
    assert m["subject"] == "Order ORD-M1 confirmed"
    assert m["message_id"] == "<ORD-M1.confirmation@orderflow.local>"
    assert m["key"] == "ORD-M1:confirmation:v1"
    assert m["body"].startswith("Thank you for your order ORD-M1.")
    assert m["received_at"]
    assert c.get("/mail/messages", params={"subject": "ORD-M2"}).json()["items"][0]["key"] is None
    after = c.get("/admin/state").json()["mail"]
    assert after["messages"] == before["messages"] + 3
    assert after["duplicate_message_ids"] == before["duplicate_message_ids"] + 1


def test_portal_webhooks_are_idempotent_per_key(sandbox):
    c = sandbox.client
    before = c.get("/admin/state").json()["portal_webhooks"]
    body = {
        "event": "order_shipped",
        "customer_id": "C-WH1",
        "order_id": "ORD-WH1",
        "data": {"tracking_number": "1Z000", "lines": [{"line_no": 1, "shipped": 2}]},
    }
    assert c.post("/portal/webhooks", json=body).status_code == 400
    key = {"Idempotency-Key": "ORD-WH1:order_shipped:v1"}
    first = c.post("/portal/webhooks", json=body, headers=key)
    again = c.post("/portal/webhooks", json=body, headers=key)
    assert first.status_code == 201
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    stored = c.get("/portal/webhooks", params={"customer_id": "C-WH1"}).json()["items"]
    assert len(stored) == 1
    assert stored[0]["data"] == body["data"]
    assert stored[0]["event"] == "order_shipped"
    assert c.get("/portal/webhooks", params={"customer_id": "C-WH1", "event": "x"}).json() == {
        "items": []
    }
    assert c.get("/admin/state").json()["portal_webhooks"] == before + 1


def _edi_partner(day_dir) -> dict:
    partners = json.loads((day_dir / "world.json").read_text())["partners"]
    return next(p for p in partners if p["isa_version"] == "00401")


def _x12_855(partner: dict, control: int, *, corrupt: bool = False) -> str:
    """An outbound 855 interchange as OrderFlow writes it (our writer, our ids)."""
    from orderflow.channels.x12 import writer
    from orderflow.channels.x12.results import Delimiters

    body = [
        ["BAK", "00", "AT", f"PO{control}", "20261127"],
        ["PO1", "1", "2", "EA", "9.50", "PE", "BP", "ITEM-1"],
        ["ACK", "IA", "2", "EA"],
        ["CTT", "1", "2"],
    ]
    st = writer.transaction_set("855", "0001", body)
    if corrupt:  # SE01 no longer counts the segments
        st[-1][1] = str(int(st[-1][1]) + 1)
    gs = writer.functional_group(
        "PR",
        sender="ORDERFLOW",
        receiver=partner["gs_id"],
        control_number=control,
        now=START,
        version=partner["gs_version"],
        sets=[st],
    )
    return writer.interchange(
        [gs],
        d=Delimiters(element="*", component=">", segment="~", suffix="\n"),
        sender=("ZZ", "ORDERFLOW"),
        receiver=(partner["isa_qualifier"], partner["isa_id"].strip()),
        control_number=control,
        now=START,
        version=partner["isa_version"],
    )


def _read_997(path, partner_id: str):
    from datetime import UTC, datetime

    from orderflow.channels import x12

    return x12.parse(
        path.read_bytes(),
        partner_id=partner_id,
        source_ref=path.name,
        received_at=datetime.now(UTC),
        our_id="ORDERFLOW",
        next_control_number=lambda: 1,
    )


def test_partner_answers_our_855_with_a_997_in_the_drop_folder(sandbox, day_dir):
    c = sandbox.client
    partner = _edi_partner(day_dir)
    pid = partner["partner_id"]
    before = c.get("/admin/state").json()["edi_997"]
    headers = {"X-Partner-Id": pid, "X-Document-Type": "855"}

    def send(body: str, key: str) -> httpx.Response:
        return c.post(
            "/edi/outbound",
            content=body,
            headers={**headers, "Idempotency-Key": key, "Content-Type": "application/edi-x12"},
        )

    good, bad = _x12_855(partner, 4711), _x12_855(partner, 4712, corrupt=True)
    assert send(good, "855:4711").status_code == 201
    assert send(good, "855:4711").status_code == 200  # replayed: no second 997
    assert send(bad, "855:4712").status_code == 201
    acks = [
        a
        for a in c.get("/edi/acknowledgments", params={"partner_id": pid}).json()["items"]
        if a["acknowledges"]["group_control_number"] in ("4711", "4712")
    ]
    assert len(acks) == 2
    assert not any(a["delivered"] for a in acks)
    state = c.get("/admin/state").json()["edi_997"]
    assert state["generated"] == before["generated"] + 2
    assert state["rejected"] == before["rejected"] + 1
    inbox = sandbox.drop / "edi" / "inbound" / pid
    assert not [p for p in inbox.glob("997_*.x12") if p.name in {a["path"] for a in acks}]
    c.put("/admin/clock", json={"advance_minutes": 31}).raise_for_status()
    assert c.get("/admin/state").json()["edi_997"]["delivered"] == before["delivered"] + 2
    by_group = {
        a["acknowledges"]["group_control_number"]: sandbox.drop / a["path"]
        for a in c.get("/edi/acknowledgments", params={"partner_id": pid}).json()["items"]
        if a["acknowledges"]["group_control_number"] in ("4711", "4712")
    }
    assert all(p.parent == inbox and p.name.startswith("997_") for p in by_group.values())
    assert not list(inbox.glob(".*.part"))

    ok = _read_997(by_group["4711"], pid)
    assert ok.error_list == []
    ic = ok.interchanges[0]
    assert ic.sender_id == partner["isa_id"].strip()
    assert ic.sender_qualifier == partner["isa_qualifier"]
    assert ic.receiver_id == "ORDERFLOW"
    assert ic.version == partner["isa_version"]
    group = ic.groups[0]
    assert (group.functional_id, group.sender, group.receiver) == (
        "FA",
        partner["gs_id"],
        "ORDERFLOW",
    )
    assert group.version == partner["gs_version"]
    assert group.ack_997 is None  # 997s are not acknowledged
    ack = ok.transactions[0].acknowledgment
    assert ack is not None
    assert (ack.functional_id, ack.group_control_number) == ("PR", "4711")
    assert ack.group_status == "A"
    assert (ack.included, ack.received, ack.accepted) == (1, 1, 1)
    assert ack.transactions == {"0001": "A"}

    text = by_group["4712"].read_bytes().decode("utf-8-sig")
    assert "AK5" + partner["element_sep"] + "R" + partner["element_sep"] + "4" in text
    rejected = _read_997(by_group["4712"], pid).transactions[0].acknowledgment
    assert rejected is not None
    assert rejected.group_control_number == "4712"
    assert rejected.group_status == "R"
    assert rejected.accepted == 0
    assert rejected.transactions == {"0001": "R"}

    # delivered once: a later delivery pass leaves the files alone
    mtimes = {p: p.stat().st_mtime_ns for p in by_group.values()}
    c.put("/admin/clock", json={"advance_minutes": 60}).raise_for_status()
    assert {p: p.stat().st_mtime_ns for p in by_group.values()} == mtimes
    assert c.get("/admin/state").json()["edi_997"]["generated"] == before["generated"] + 2


def test_shipped_milestone_carries_shipped_quantities(sandbox):
    c = sandbox.client
    pos = _stocked(c)
    rel = c.post(
        "/wms/releases",
        headers={"Idempotency-Key": "ORD-T5:release:v1"},
        json={
            "order_id": "ORD-T5",
            "dc_id": pos["dc_id"],
            "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 3}],
        },
    ).json()
    c.put("/admin/clock", json={"advance_minutes": 3 * 24 * 60}).raise_for_status()
    events, cursor = [], 0
    while True:
        page = c.get("/wms/milestones", params={"cursor": cursor, "limit": 500}).json()
        events += [e for e in page["items"] if e["release_id"] == rel["release_id"]]
        if page["next_cursor"] == cursor:
            break
        cursor = page["next_cursor"]
    by = {e["milestone"]: e for e in events}
    assert all("shipped" not in ln for ln in by["picked"]["lines"])
    (line,) = by["shipped"]["lines"]
    assert line["shipped"] == line["picked"]
    after = next(
        p
        for p in c.get(
            "/wms/inventory", params={"item_id": pos["item_id"], "dc_id": pos["dc_id"]}
        ).json()["items"]
    )
    assert after["on_hand"] == pytest.approx(pos["on_hand"] - line["shipped"])


def test_rare_dock_count_errors_ship_one_unit_more(day_dir, tmp_path):
    from orderflow_sandbox.faults import SimClock
    from orderflow_sandbox.state import Distributor

    d = Distributor(day_dir, tmp_path, SimClock(START, 0.0))
    for n in range(4000):
        release = {
            "release_id": f"REL{n:07d}",
            "order_id": f"ORD-{n}",
            "dc_id": "DC1",
            "lines": [{"line_no": i, "item_id": f"I{i}", "quantity": 5.0} for i in (1, 2)],
        }
        d._plan_milestones(release, START)
    shipped = [s.event for s in d._schedule if s.event["milestone"] == "shipped"]
    over = [ln for e in shipped for ln in e["lines"] if ln["shipped"] != ln["picked"]]
    assert all(ln["shipped"] == ln["picked"] + 1 for ln in over)
    assert 4 <= len(over) <= 60  # ~0.5% of 4,000 releases, one line each
    assert all(sum(ln["shipped"] != ln["picked"] for ln in e["lines"]) <= 1 for e in shipped)
