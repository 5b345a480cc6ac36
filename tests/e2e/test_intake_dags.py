"""The intake DAGs end to end (dag.test) against the sandbox and the store: every message of a
generated day's portal, EDI and CSV channels gets exactly one outcome, and rerunning every
intake DAG changes nothing."""

import json
from datetime import timedelta

import pytest
from tests_support import START

from orderflow.store import db

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.sandbox]

DAGS = ["intake_portal", "intake_edi", "intake_csv", "intake_mailbox"]


@pytest.fixture
def env(sandbox, monkeypatch):
    for key, value in {**sandbox.connection_env(), **sandbox.fs_connection_env()}.items():
        monkeypatch.setenv(key, value)
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})
    for sub in ("csv/inbound", "mailbox/new"):
        (sandbox.drop / sub).mkdir(parents=True, exist_ok=True)


def _outcomes(store):
    return dict(
        store.execute(
            "SELECT channel || ':' || outcome, count(*) FROM orderflow.channel_message "
            "WHERE channel IN ('portal', 'edi', 'csv', 'email') GROUP BY 1"
        ).fetchall()
    )


def _unarchive(root, per_partner):
    for path in list((root / ".archive").rglob("*")):
        if path.is_file():
            target = root / path.parent.name / path.name if per_partner else root / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)


def _run(dag_id):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag(dag_id)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS, dag_id
    return run


def test_intake_dags_land_every_message_once_and_reruns_change_nothing(
    airflow_db, store, sandbox, day_dir, env
):
    from orderflow import masterdata
    from orderflow.integrations.systems import ErpHook, WmsHook

    masterdata.sync(store, {"erp": ErpHook(), "wms": WmsHook()}, full=True)  # for e-mail matching
    before = _outcomes(store)
    for dag_id in DAGS:
        _run(dag_id)
    after = _outcomes(store)
    new = {k: after.get(k, 0) - before.get(k, 0) for k in after}

    subs = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    deliveries = [json.loads(x) for x in (day_dir / "deliveries.jsonl").read_text().splitlines()]
    portal = {s["client_request_id"] for s in subs if s["channel"] == "portal"}
    # the portal feed also carries customers' cancel/change items (each its own message)
    changes = day_dir / "portal_changes.jsonl"
    if changes.exists():
        portal |= {json.loads(x)["client_request_id"] for x in changes.read_text().splitlines()}
    files = {c: sum(1 for d in deliveries if d["channel"] == c) for c in ("edi", "csv", "email")}
    # messages in = created + quarantined + duplicate, per channel
    assert sum(v for k, v in new.items() if k.startswith("portal:")) == len(portal)
    assert sum(v for k, v in new.items() if k.startswith("edi:")) == files["edi"]
    assert sum(v for k, v in new.items() if k.startswith("csv:")) == files["csv"]
    assert sum(v for k, v in new.items() if k.startswith("email:")) == files["email"]
    # each channel really parsed (not just recorded): well-formed messages became orders
    for channel in ("portal", "edi", "csv", "email"):
        assert new.get(f"{channel}:orders_created", 0) > 0, channel
    email_held = store.execute(
        "SELECT count(*) FROM orderflow.\"order\" WHERE channel = 'email' AND status = 'ON_HOLD'"
    ).fetchone()[0]
    assert email_held >= sum(1 for s in subs if "low_confidence_extraction" in s["defects"]) // 2
    assert not any(k.endswith(":pending") for k in new)
    malformed = sum(1 for s in subs if "malformed_edi" in s["defects"])
    assert new.get("edi:quarantined", 0) == malformed
    # 997s went out (the EDI DAG sends them) and the gateway has each once
    sent = store.execute(
        "SELECT count(*) FROM orderflow.outbox WHERE action = 'edi_997' AND status = 'sent'"
    ).fetchone()[0]
    assert (
        sent
        == len(sandbox.client.get("/edi/outbound", params={"document_type": "997"}).json()["items"])
        > 0
    )

    orders_before = store.execute('SELECT count(*) FROM orderflow."order"').fetchone()[0]
    # Rerun every intake DAG over the same inputs: the archived files are put back in the
    # inboxes (as if a run died before archiving), the portal watermark is rewound.
    _unarchive(sandbox.drop / "edi" / "inbound", per_partner=True)
    _unarchive(sandbox.drop / "csv" / "inbound", per_partner=False)
    _unarchive(sandbox.drop / "mailbox" / "new", per_partner=False)
    with db.transaction(store):
        store.execute(
            "UPDATE orderflow.sync_cursor SET value = '0' WHERE cursor_name LIKE 'portal:%'"
        )
    for dag_id in DAGS:
        _run(dag_id)
    assert _outcomes(store) == after
    assert store.execute('SELECT count(*) FROM orderflow."order"').fetchone()[0] == orders_before
