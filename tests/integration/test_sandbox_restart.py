"""The sandbox does not forget (#12, part 6): a sandbox process killed with SIGKILL and
started again on the same folders continues — every record, the clock, idempotency
answers, feed positions, delivered files — and only ``POST /admin/reset`` forgets."""

import smtplib
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from test_sandbox import _edi_partner, _x12_855
from tests_support import START, start_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _feed(c: httpx.Client, path: str) -> list[dict]:
    items, cursor = [], 0
    while True:
        page = c.get(path, params={"cursor": cursor, "limit": 1000}).json()
        items += page["items"]
        if page["next_cursor"] == cursor:
            return items
        cursor = page["next_cursor"]


def _files(drop: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(drop)): p.read_bytes()
        for sub in ("edi", "csv", "mailbox")
        for p in (drop / sub).rglob("*")
        if p.is_file()
    }


def _release_body(pos: dict, order_id: str, quantity: float = 1.0) -> dict:
    return {
        "order_id": order_id,
        "dc_id": pos["dc_id"],
        "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": quantity}],
    }


def _mail(sb, n: int) -> None:
    msg = EmailMessage()
    msg["From"] = "orders@orderflow.local"
    msg["To"] = f"buyer{n}@example.com"
    msg["Subject"] = f"Order ORD-R{n} confirmed"
    msg["Message-ID"] = f"<ORD-R{n}.confirmation@orderflow.local>"
    msg["X-OrderFlow-Key"] = f"ORD-R{n}:confirmation:v1"
    msg.set_content(f"Thank you for your order ORD-R{n}.\n")
    with smtplib.SMTP("127.0.0.1", sb.smtp_port, timeout=10) as smtp:
        smtp.send_message(msg)


def _everything(c: httpx.Client) -> dict:
    """What the sandbox holds, over its API (the clock apart)."""
    state = c.get("/admin/state").json()
    for volatile in ("clock", "resumed"):
        state.pop(volatile)
    return {
        "state": state,
        "milestones": _feed(c, "/wms/milestones"),
        "tracking": _feed(c, "/carrier/tracking"),
        "inventory": c.get("/wms/inventory").json()["items"],
        "mail": c.get("/mail/messages").json()["items"],
        "edi": c.get("/edi/outbound").json()["items"],
        "acks": c.get("/edi/acknowledgments").json()["items"],
        "webhooks": c.get("/portal/webhooks").json()["items"],
        "exposure": c.get("/erp/customers/C00001/exposure").json(),
    }


def _clock(c: httpx.Client) -> tuple:
    body = c.get("/admin/clock").json()
    from datetime import datetime

    return datetime.fromisoformat(body["now"]), body["speed"]


def test_sigkill_mid_day_then_restart_continues_everything(day_dir, tmp_path):
    drop = tmp_path / "drop"
    sb = start_sandbox(day_dir, drop)  # the clock nearly stopped: exact comparisons
    c = sb.client
    try:
        stocked = [p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 10]
        answers = {}
        for n, pos in enumerate(stocked[:12]):
            r = c.post(
                "/wms/releases",
                json=_release_body(pos, f"ORD-K{n}"),
                headers={"Idempotency-Key": f"rel:K{n}"},
            )
            assert r.status_code == 201
            answers[f"rel:K{n}"] = (_release_body(pos, f"ORD-K{n}"), r.json())
        held = c.post(
            "/wms/reservations",
            json={
                **{k: stocked[12][k] for k in ("item_id", "dc_id")},
                "quantity": 2,
                "reference": "R",
            },
        ).json()
        inv = c.post(
            "/erp/invoices",
            json={
                "order_id": "ORD-K0",
                "customer_id": "C00001",
                "lines": [{"line_no": 1, "item_id": "X", "quantity": 2, "unit_price": 10}],
            },
            headers={"Idempotency-Key": "inv:K0"},
        )
        assert inv.status_code == 201
        partner = _edi_partner(day_dir)
        edi = c.post(
            "/edi/outbound",
            content=_x12_855(partner, 5101),
            headers={
                "X-Partner-Id": partner["partner_id"],
                "X-Document-Type": "855",
                "Idempotency-Key": "855:5101",
                "Content-Type": "application/edi-x12",
            },
        )
        assert edi.status_code == 201
        hook = c.post(
            "/portal/webhooks",
            json={"event": "order_shipped", "customer_id": "C00001", "order_id": "ORD-K1"},
            headers={"Idempotency-Key": "wh:K1"},
        )
        assert hook.status_code == 201
        _mail(sb, 1)
        _mail(sb, 2)
        # Half a day on: files delivered, the 997 due, milestones and tracking materialised.
        c.put("/admin/clock", json={"advance_minutes": 600}).raise_for_status()
        before = _everything(c)
        assert len(before["milestones"]) >= 36  # released, picked, packed at least
        assert before["tracking"] and before["mail"] and before["acks"][0]["delivered"]
        assert (
            0 < before["state"]["deliveries"]["delivered"] < before["state"]["deliveries"]["total"]
        )
        files = _files(drop)
        clock_before, _ = _clock(c)
    finally:
        sb.kill()  # SIGKILL: no shutdown code runs

    # Started again on the same folders, with another --start and --speed: the stored state
    # wins (they apply to a fresh state only).
    sb = start_sandbox(day_dir, drop, speed=0.5, start=START - timedelta(days=3))
    c = sb.client
    try:
        now, speed = _clock(c)
        assert speed == 0.000001
        assert clock_before <= now <= clock_before + timedelta(seconds=1)
        assert c.get("/admin/state").json()["resumed"] is True
        after = _everything(c)
        assert after == before
        assert _files(drop) == files  # nothing redelivered, nothing lost
        assert not list(drop.rglob(".*.part"))

        # Same key: the first answer, no second pick.
        for key, (body, first) in answers.items():
            r = c.post("/wms/releases", json=body, headers={"Idempotency-Key": key})
            assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
            assert r.json() == first
        assert (
            c.post(
                "/erp/invoices",
                json={
                    "order_id": "ORD-K0",
                    "customer_id": "C00001",
                    "lines": [{"line_no": 1, "item_id": "X", "quantity": 2, "unit_price": 10}],
                },
                headers={"Idempotency-Key": "inv:K0"},
            ).json()
            == inv.json()
        )
        assert c.get("/admin/state").json()["releases"] == 12

        # A new release gets a fresh id; its events continue the feed after the old ones.
        new = c.post(
            "/wms/releases",
            json=_release_body(stocked[13], "ORD-NEW"),
            headers={"Idempotency-Key": "rel:NEW"},
        ).json()
        assert new["release_id"] not in {a["release_id"] for _, a in answers.values()}
        assert new["release_id"] == "REL0000013"
        # the held reservation is still held: releasing it works exactly once
        r = c.post(
            "/wms/releases",
            json={
                "order_id": "ORD-RES",
                "dc_id": held["dc_id"],
                "lines": [
                    {
                        "line_no": 1,
                        "item_id": held["item_id"],
                        "quantity": 2,
                        "reservation_id": held["reservation_id"],
                    }
                ],
            },
            headers={"Idempotency-Key": "rel:RES"},
        )
        assert r.status_code == 201
        c.put("/admin/clock", json={"advance_minutes": 300}).raise_for_status()
        milestones = _feed(c, "/wms/milestones")
        assert milestones[: len(before["milestones"])] == before["milestones"]
        assert [m["seq"] for m in milestones] == list(range(1, len(milestones) + 1))
        assert {m["release_id"] for m in milestones[len(before["milestones"]) :]} >= {
            new["release_id"]
        }
        tracking = _feed(c, "/carrier/tracking")
        assert tracking[: len(before["tracking"])] == before["tracking"]

        # The rest of the day is delivered, each file once.
        c.put("/admin/clock", json={"advance_minutes": 3 * 24 * 60}).raise_for_status()
        state = c.get("/admin/state").json()
        assert state["deliveries"]["delivered"] == state["deliveries"]["total"]
        now_files = _files(drop)
        assert {k: now_files[k] for k in files} == files
        _mail(sb, 3)
        assert [m["seq"] for m in c.get("/mail/messages").json()["items"]] == [1, 2, 3]
    finally:
        sb.stop()

    # A clean stop (SIGTERM) keeps it too.
    sb = start_sandbox(day_dir, drop)
    try:
        assert sb.client.get("/admin/state").json()["releases"] == 14
    finally:
        sb.stop()


def test_the_clock_continues_at_its_speed_and_never_goes_back(day_dir, tmp_path):
    drop = tmp_path / "drop"
    sb = start_sandbox(day_dir, drop, speed=60.0)  # a working day in 12 minutes
    try:
        sb.client.put("/admin/clock", json={"advance_minutes": 90}).raise_for_status()
        seen, _ = _clock(sb.client)
    finally:
        sb.kill()
    sb = start_sandbox(day_dir, drop, speed=1.0, start=START)
    try:
        import time

        resumed, speed = _clock(sb.client)
        time.sleep(2)
        later, _ = _clock(sb.client)
    finally:
        sb.stop()
    assert speed == 60.0
    # Not behind anything it showed; ahead by at most one lease (1 s real × 60) plus the
    # seconds it ran after that read and before the kill, and not by the downtime.
    assert seen <= resumed <= seen + timedelta(minutes=3)
    assert timedelta(seconds=100) <= later - resumed <= timedelta(seconds=200)  # 60× of ~2 s


def test_an_order_placed_on_the_portal_is_in_the_feed_at_once_and_stays_there(day_dir, tmp_path):
    """What a reader has seen never moves: the placed order comes after every visible item,
    before the ones still to come, once however often it is sent, and a restart keeps it."""
    drop = tmp_path / "drop"
    sb = start_sandbox(day_dir, drop, start=START + timedelta(hours=9))
    order = {
        "client_request_id": "placed-1",
        "customer_id": "C-PLACED",
        "po_number": "PO-PLACED-1",
        "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 2, "uom": "EA"}],
    }
    try:
        before = _feed(sb.client, "/portal/orders")
        first = sb.client.post("/portal/orders", json=order)
        again = sb.client.post("/portal/orders", json=order)
        after = _feed(sb.client, "/portal/orders")
        assert sb.client.post("/portal/orders", json={**order, "lines": []}).status_code == 422
    finally:
        sb.kill()
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert after[: len(before)] == before and len(after) == len(before) + 1
    placed = after[-1]
    assert placed["client_request_id"] == "placed-1"
    assert placed["order"]["po_number"] == "PO-PLACED-1"
    assert placed["submitted_at"] == first.json()["submitted_at"]
    sb = start_sandbox(day_dir, drop)
    try:
        assert _feed(sb.client, "/portal/orders")[: len(after)] == after
        sb.client.put("/admin/clock", json={"advance_minutes": 3 * 24 * 60})
        later = _feed(sb.client, "/portal/orders")
    finally:
        sb.stop()
    assert later[: len(after)] == after and len(later) > len(after)  # the day's rest after it
    assert sum(1 for it in later if it.get("client_request_id") == "placed-1") == 1


def test_reset_forgets_on_purpose_and_stays_forgotten(day_dir, tmp_path):
    drop = tmp_path / "drop"
    sb = start_sandbox(day_dir, drop)
    c = sb.client
    try:
        pos = next(p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 10)
        first = c.post(
            "/wms/releases", json=_release_body(pos, "ORD-A"), headers={"Idempotency-Key": "a"}
        ).json()
        c.put("/admin/clock", json={"advance_minutes": 600}).raise_for_status()
        assert _feed(c, "/wms/milestones")
        reset = c.post("/admin/reset", json={})
        assert reset.status_code == 200
        assert reset.json()["clock"].startswith(START.date().isoformat() + "T12:00:00")
        assert _feed(c, "/wms/milestones") == []  # a rewound feed, on purpose
        state = c.get("/admin/state").json()
        assert (state["releases"], state["deliveries"]["delivered"]) == (0, 0)
    finally:
        sb.kill()
    sb = start_sandbox(day_dir, drop)
    c = sb.client
    try:
        assert c.get("/admin/state").json()["releases"] == 0
        again = c.post(
            "/wms/releases", json=_release_body(pos, "ORD-A"), headers={"Idempotency-Key": "a"}
        )
        assert again.status_code == 201  # the key was forgotten with everything else
        assert again.json()["release_id"] == first["release_id"] == "REL0000001"
    finally:
        sb.stop()
    # ORDERFLOW_SANDBOX_FRESH (start_sandbox(fresh=True)) forgets at start.
    sb = start_sandbox(day_dir, drop, fresh=True)
    try:
        assert sb.client.get("/admin/state").json()["releases"] == 0
    finally:
        sb.stop()


def test_reused_release_id_fault_still_works_and_its_answer_is_kept(day_dir, tmp_path):
    drop = tmp_path / "drop"
    sb = start_sandbox(day_dir, drop)
    c = sb.client
    try:
        stocked = [p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 10]
        first = c.post(
            "/wms/releases", json=_release_body(stocked[0], "O1"), headers={"Idempotency-Key": "1"}
        ).json()
        c.put(
            "/admin/faults",
            json={"seed": 7, "rules": [{"prefix": "/wms/releases", "reuse_id_rate": 1.0}]},
        ).raise_for_status()
        reused = c.post(
            "/wms/releases", json=_release_body(stocked[1], "O2"), headers={"Idempotency-Key": "2"}
        ).json()
        assert reused["release_id"] == first["release_id"]
    finally:
        sb.kill()
    sb = start_sandbox(day_dir, drop)
    c = sb.client
    try:
        again = c.post(
            "/wms/releases", json=_release_body(stocked[1], "O2"), headers={"Idempotency-Key": "2"}
        )
        assert again.status_code == 200 and again.json() == reused
        # faults are the harness's, not the WMS's state: a restart starts without them
        fresh = c.post(
            "/wms/releases", json=_release_body(stocked[2], "O3"), headers={"Idempotency-Key": "3"}
        ).json()
        assert fresh["release_id"] == "REL0000003"
    finally:
        sb.stop()


def test_a_delivery_cut_between_record_and_rename_is_finished_at_start(day_dir, tmp_path):
    """In-process: the file recorded as delivered but still under its .part name (the
    process died between the commit and the rename) is put in place at the next start;
    one never recorded is written again by the next delivery pass."""
    from orderflow_sandbox.faults import SimClock
    from orderflow_sandbox.state import Distributor

    drop = tmp_path / "drop"
    d = Distributor(day_dir, drop, SimClock(START, 0.0))
    d.set_clock(advance_minutes=24 * 60)
    assert d.deliver_due() > 2
    recorded, unrecorded = (d._target(x) for x in d.deliveries[:2])
    # Put the first back under its .part name (recorded, not renamed) and forget the second.
    tmp = recorded.with_name("." + recorded.name + ".part")
    recorded.rename(tmp)
    unrecorded.unlink()
    d._delivered.discard(d.deliveries[1]["path"])
    d._mark("delivered", d.deliveries[1]["path"])
    d._flush()
    d.close()

    d2 = Distributor(day_dir, drop, SimClock(START, 0.0))
    assert recorded.exists() and not tmp.exists()
    assert not unrecorded.exists()
    assert d2.deliver_due() == 1 and unrecorded.exists()
    assert d2.deliver_due() == 0


def test_another_generated_day_starts_fresh_and_keeps_the_old_state_aside(day_dir, tmp_path):
    from tests_support import generate_small_day

    from orderflow_sandbox.faults import SimClock
    from orderflow_sandbox.state import Distributor

    drop = tmp_path / "drop"
    d = Distributor(day_dir, drop, SimClock(START, 0.0))
    pos = next(iter(d.inventory))
    d.release(
        "k",
        {
            "order_id": "O",
            "dc_id": pos[1],
            "lines": [{"line_no": 1, "item_id": pos[0], "quantity": 1.0}],
        },
    )
    d.close()
    assert Distributor(day_dir, drop, SimClock(START, 0.0)).releases  # same day: resumed
    other = generate_small_day(tmp_path / "other", seed=12)
    d3 = Distributor(other, drop, SimClock(START, 0.0))
    assert not d3.releases and not d3.resumed
    assert list(drop.glob("state.sqlite3.stale-*"))


def test_a_record_reads_back_as_it_was_written(day_dir, tmp_path):
    """In-process: what a record holds — text outside ASCII, quotes and control characters,
    floats that print long, integers beyond 64 bits, nesting, an idempotency answer's
    (digest, answer) pair — is what a restarted sandbox holds."""
    from orderflow_sandbox.faults import SimClock
    from orderflow_sandbox.state import Distributor

    drop = tmp_path / "drop"
    d = Distributor(day_dir, drop, SimClock(START, 0.0))
    pos = next(iter(d.inventory))
    answer, _ = d.release(
        "k-ü",
        {
            "order_id": 'Bäckerei "Zürich"\n\t☃',
            "dc_id": pos[1],
            "lines": [{"line_no": 1, "item_id": pos[0], "quantity": 0.1 + 0.2}],
        },
    )
    odd = {
        "big": 2**70,
        "neg": -(2**63),
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "nested": [[{"a": [None, True, False, ""]}]],
        "text": "\u0000\u001f\ud7ff💥",
    }
    d.master["customers"]["CUST-ODD"] = odd
    d._mark("master.customers", "CUST-ODD")
    d._flush()
    before = (d.releases, d.release_keys.answers, d.inventory[pos], d._pending)
    d.close()

    d2 = Distributor(day_dir, drop, SimClock(START, 0.0))
    assert d2.resumed
    assert d2.master["customers"]["CUST-ODD"] == odd
    assert (d2.releases, d2.release_keys.answers, d2.inventory[pos]) == before[:3]
    assert d2.releases[answer["release_id"]]["order_id"] == 'Bäckerei "Zürich"\n\t☃'
    assert {k: (v.at, v.kind, v.event) for k, v in d2._pending.items()} == {
        k: (v.at, v.kind, v.event) for k, v in before[3].items()
    }
