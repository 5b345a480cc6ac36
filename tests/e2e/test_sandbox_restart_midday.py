"""Acceptance of #12 part 6, with OrderFlow's own code on the other side: a day is landed and
processed (releases, 855s, e-mails and webhooks go out through the outbox), the sandbox is
killed with SIGKILL mid-day and started again on the same folders and ports, and the day
carries on (the fulfilment_events DAG with dag.test()). Sandbox state and clock continue,
every outbox row OrderFlow sent is known to the sandbox by its key, nothing was picked
twice, and OrderFlow's feed continuity check never sees a rewind."""

import shutil
from datetime import datetime

import pytest
from tests_support import start_sandbox

from orderflow.store import db

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.long,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]

#: outbox action → the sandbox receiver whose Idempotency-Keys it must find
RECEIVERS = {
    "wms_release": "release",
    "erp_invoice": "invoice",
    "edi_855": "outbound",
    "edi_856": "outbound",
    "edi_810": "outbound",
    "edi_997": "outbound",
    "edi_ta1": "outbound",
    "webhook": "webhook",
    "carrier_tender": "shipment",
    "marketplace_ack": "marketplace",
    "marketplace_shipment": "marketplace",
    "marketplace_cancel": "marketplace",
    "crm_approval_request": "crm_approval",
}


def _run(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag(dag_id).test()
    assert run.state == DagRunState.SUCCESS, dag_id


def _sent(conn) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT action, idempotency_key FROM orderflow.outbox WHERE status = 'sent'"
    ).fetchall()
    out: dict[str, set[str]] = {}
    for action, key in rows:
        out.setdefault(action, set()).add(key)
    return out


def _known(sb) -> dict[str, set[str]]:
    c = sb.client
    keys = {
        system: set(c.get(f"/admin/idempotency/{system}").json()["keys"])
        for system in set(RECEIVERS.values())
    }
    keys["mail"] = {m["key"] for m in c.get("/mail/messages").json()["items"]}
    return keys


def _missing(sent: dict[str, set[str]], known: dict[str, set[str]]) -> dict[str, set[str]]:
    missing = {}
    for action, keys in sent.items():
        receiver = RECEIVERS.get(action, "mail" if action.startswith("email") else None)
        assert receiver is not None, f"unexpected outbox action {action}"
        if lost := keys - known[receiver]:
            missing[action] = lost
    return missing


def _feed(sb, path: str) -> list[dict]:
    items, cursor = [], 0
    while True:
        page = sb.client.get(path, params={"cursor": cursor, "limit": 1000}).json()
        items += page["items"]
        if page["next_cursor"] == cursor:
            return items
        cursor = page["next_cursor"]


def test_sandbox_killed_mid_day_forgets_nothing_orderflow_sent(
    store_url, day_dir, airflow_db, day_snapshot, tmp_path
):
    import os

    # The day landed and processed (releases, 855s, e-mails and webhooks sent): the store is
    # the snapshot's copy, the sandbox starts on a copy of its folder.
    drop = tmp_path / "drop"
    shutil.copytree(day_snapshot.drop, drop)
    sb = start_sandbox(day_dir, drop)
    conn = db.connect()
    try:
        os.environ.update(sb.connection_env())
        # Mid-day: a few hours of picking and shipping, followed by OrderFlow.
        sb.client.put("/admin/clock", json={"advance_minutes": 6 * 60}).raise_for_status()
        _run("fulfilment_events")
        sent = _sent(conn)
        assert len(sent.get("wms_release", ())) > 50
        assert not _missing(sent, _known(sb))
        before = sb.client.get("/admin/state").json()
        milestones, tracking = _feed(sb, "/wms/milestones"), _feed(sb, "/carrier/tracking")
        clock = datetime.fromisoformat(sb.client.get("/admin/clock").json()["now"])
        port, smtp_port = int(sb.rsplit(":", 1)[1]), sb.smtp_port
        sb.kill()

        # Same folders, same ports (the Connections do not change), as `make run` again.
        sb = start_sandbox(day_dir, drop, port=port, smtp_port=smtp_port)
        after = sb.client.get("/admin/state").json()
        assert after["resumed"] is True
        for k in ("releases", "milestones", "tracking_events", "outbound_edi", "mail",
                  "portal_webhooks", "invoices", "deliveries", "edi_997"):  # fmt: skip
            assert after[k] == before[k], k
        assert datetime.fromisoformat(sb.client.get("/admin/clock").json()["now"]) >= clock
        assert not _missing(sent, _known(sb))  # nothing OrderFlow sent was forgotten

        # The day carries on: OrderFlow's reruns send nothing twice, the feeds continue.
        _run("order_processing")
        for _ in range(3):
            sb.client.put("/admin/clock", json={"advance_minutes": 24 * 60}).raise_for_status()
            _run("fulfilment_events")
        assert _feed(sb, "/wms/milestones")[: len(milestones)] == milestones
        assert _feed(sb, "/carrier/tracking")[: len(tracking)] == tracking
        rewound = conn.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE details->>'kind' = 'feed_rewound'"
        ).fetchone()[0]
        assert rewound == 0
        sent = _sent(conn)
        assert not _missing(sent, _known(sb))
        state = sb.client.get("/admin/state").json()
        assert state["releases"] == len(sent["wms_release"])  # each release picked once
        assert state["invoices"] > before["invoices"]  # the day went on after the restart
    finally:
        sb.stop()
        conn.close()
