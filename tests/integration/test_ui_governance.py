"""#18 rule governance and integration-health pages against the real store, through the app's
routes (FastAPI's test client; Airflow's login replaced by a fixed user): a what-if's page
shows exactly the orders that flip, each linked to its order; promote and roll back are for
the rule_approver only (403 otherwise, the refusal audited by governance); the health numbers
match rows inserted with known outcomes; a dead letter is replayed only by the integration
role (or operations_manager), audited either way."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from ui_seed import WINDOW, candidate_yaml, flipping, seed_integrations, seed_whatif

from orderflow.store import db
from orderflow.ui import integration_pages, rule_pages
from orderflow.ui.app import User, create_app, current_user

pytestmark = [pytest.mark.db]

ROLES = {
    "rita.rules": ["rule_approver"],
    "olga": ["operations_manager"],  # everything on the desk, but not rule changes
    "ian.int": ["integration"],
    "pat.pricing": ["pricing"],
}


@pytest.fixture(autouse=True)
def roles(tmp_path, monkeypatch):
    path = tmp_path / "roles.yaml"
    path.write_text(json.dumps({"users": ROLES}))
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))


def user(name: str) -> User:
    from orderflow import access

    return User(name=name, airflow_role="User", roles=access.roles_of(name))


@pytest.fixture(scope="module")
def conn(store_url):
    c = db.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def app(store_url):
    return create_app()


def client(app, name: str) -> TestClient:
    app.dependency_overrides[current_user] = lambda: user(name)
    return TestClient(app, follow_redirects=False, headers={"accept": "text/html"})


def _attr(html: str, table: str, attr: str) -> list[str]:
    """``attr`` of every row of the table with id ``table``."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'<tr [^>]*{attr}="([^"]*)"', body)


@pytest.fixture(scope="module")
def seeded(conn):
    return seed_whatif(conn)


def _whatif(conn, who="tess", version="2026.12.9") -> int:
    return rule_pages.launch_whatif(
        conn,
        user(who),
        candidate_yaml=candidate_yaml(version),
        window_from=WINDOW[0].isoformat(),
        window_to=WINDOW[1].strftime("%Y-%m-%dT%H:%M"),  # as a datetime-local input sends it
    )


# ---------------------------------------------------------------------------- what-if
def test_whatif_page_shows_exactly_the_flipping_orders(conn, seeded, app):
    expected = flipping(seeded)
    assert len(expected) == 3
    run_id = _whatif(conn)
    data = rule_pages.whatif_page(conn, run_id)
    assert {r["order_id"] for r in data["rows"]} == expected
    assert data["run"]["orders"] == len(seeded)
    for r in data["rows"]:
        cells = {c["field"]: c for c in r["cells"]}
        assert (cells["status"]["current"], cells["status"]["candidate"]) == ("ON_HOLD", "READY")
        assert cells["holds"]["current"] == "pricing_mismatch" and cells["holds"]["changed"]
        assert cells["dcs"]["candidate"] == "DC-EAST"
        assert cells["carriers"]["candidate"] == "UPSN/GND"
        assert not cells["amount"]["changed"]  # charged the contract price either way

    page = client(app, "tess").get(f"/rules/whatif/{run_id}")
    assert page.status_code == 200
    html = page.text
    assert set(_attr(html, "diffs", "data-order")) == expected
    for oid in expected:
        assert f'href="/orderflow/orders/{oid}"' in html
    totals = dict(
        re.findall(r'data-total="([^"]+)"><td>[^<]*</td><td data-side="current">([^<]*)', html)
    )
    assert totals["Orders replayed"] == str(len(seeded))
    # an approver is offered Promote, anyone else is not
    assert "rule_approver only" in html and 'class="inline promote"' not in html
    assert 'class="inline promote"' in client(app, "rita.rules").get(f"/rules/whatif/{run_id}").text


def test_rules_page_lists_versions_runs_and_stored_candidates(conn, seeded, app):
    run_id = _whatif(conn)
    html = client(app, "tess").get("/rules").text
    assert str(run_id) in _attr(html, "runs", "data-run")
    assert set(_attr(html, "versions", "data-rule-set")) == {
        "validation",
        "pricing",
        "credit",
        "substitution",
        "sourcing",
        "carrier",
    }
    # the shipped file versions can be replayed by reference
    assert re.search(r'<option value="pricing@2026\.11\.1#[0-9a-f]{12}">', html)


def test_whatif_form_refuses_paths_and_bad_windows(app, conn):
    c = client(app, "tess")
    r = c.post("/rules/whatif", data={"candidate": "/etc/pricing.yaml"})
    assert r.status_code == 422 and "not read from the browser" in r.text
    r = c.post(
        "/rules/whatif",
        data={
            "candidate_yaml": candidate_yaml("2026.12.8"),
            "window_from": "2026-10-06T00:00",
            "window_to": "2026-10-05T00:00",
        },
    )
    assert r.status_code == 422 and "ends before it starts" in r.text
    r = c.post("/rules/whatif", data={})
    assert r.status_code == 422


def test_whatif_form_launches_from_a_stored_version(app, conn, seeded):
    from orderflow import rules

    ref = f"pricing@2026.11.1#{rules.load().pricing.sha256[:12]}"
    r = client(app, "tess").post(
        "/rules/whatif",
        data={
            "candidate": ref,
            "window_from": WINDOW[0].isoformat(),
            "window_to": WINDOW[1].isoformat(),
        },
    )
    assert r.status_code == 303
    run_id = int(r.headers["location"].rsplit("/", 1)[1])
    page = client(app, "tess").get(f"/rules/whatif/{run_id}").text
    assert 'id="no-diffs"' in page  # the version in force against itself


def _audit(conn, action: str) -> list[tuple]:
    return conn.execute(
        "SELECT actor, object_id, reason FROM orderflow.audit_log WHERE action = %s "
        "ORDER BY audit_id",
        (action,),
    ).fetchall()


def _activations(conn) -> int:
    return conn.execute("SELECT count(*) FROM orderflow.rule_set_activation").fetchone()[0]


@pytest.mark.parametrize("who", ["olga", "pat.pricing"])
def test_promote_and_rollback_by_a_non_approver_are_403_and_audited(conn, seeded, app, who):
    run_id = _whatif(conn)
    before = _activations(conn)
    c = client(app, who)
    r = c.post(f"/rules/whatif/{run_id}/promote", data={"rule_set": "pricing", "reason": "go"})
    assert r.status_code == 403 and "rule_approver" in r.text
    r = c.post("/rules/pricing/rollback", data={"reason": "undo"})
    assert r.status_code == 403 and "rule_approver" in r.text
    assert _activations(conn) == before
    assert (who, "pricing", "go") in _audit(conn, "rule_promote_refused")
    assert (who, "pricing", "undo") in _audit(conn, "rule_rollback_refused")


def test_promote_then_roll_back_by_an_approver(conn, seeded, app):
    from orderflow import rules

    shipped = rules.load().pricing
    run_id = _whatif(conn, version="2026.12.7")
    c = client(app, "rita.rules")
    r = c.post(
        f"/rules/whatif/{run_id}/promote", data={"rule_set": "pricing", "reason": "3 % agreed"}
    )
    assert r.status_code == 303 and "/orderflow/rules?promoted=" in r.headers["location"]
    assert rules.load(conn=conn).pricing.version == "2026.12.7"
    html = c.get(r.headers["location"].removeprefix("/orderflow")).text
    assert 'id="flash"' in html
    assert _attr(html, "versions", "data-source")[1] == "promoted"  # pricing is the 2nd set
    assert "promote" in _attr(html, "promotions", "data-action")
    # promoting it again: refused for an approver as a conflict, not a permission
    r = c.post(f"/rules/whatif/{run_id}/promote", data={"rule_set": "pricing", "reason": "x"})
    assert r.status_code == 409 and "already in force" in r.text

    r = c.post("/rules/pricing/rollback", data={"reason": "customers complained"})
    assert r.status_code == 303
    assert rules.load(conn=conn).pricing == shipped
    assert ("rita.rules", "pricing", "3 % agreed") in _audit(conn, "rule_promote")
    assert ("rita.rules", "pricing", "customers complained") in _audit(conn, "rule_rollback")
    html = c.get("/rules").text
    assert _attr(html, "promotions", "data-action")[:2] == ["rollback", "promote"]
    assert "rule_rollback" in _attr(html, "audit", "data-audit-action")


# ---------------------------------------------------------------------------- health
@pytest.fixture(scope="module")
def outbox_rows(conn):
    return seed_integrations(conn)


def _endpoint(data, partner, action):
    (e,) = [e for e in data["endpoints"] if (e["partner"], e["action"]) == (partner, action)]
    return e


def test_health_numbers_match_the_rows(conn, outbox_rows, app):
    want = outbox_rows["a"]
    data = integration_pages.health(conn, days=7)
    e = _endpoint(data, outbox_rows["partner_a"], "edi_855")
    assert e["receiver"] == "orderflow_edi"
    for k in ("queued", "sent", "attempts", "failed_attempts", "dead_letters"):
        assert e[k] == want[k], k
    assert e["failure_rate"] == pytest.approx(12 / 15)
    assert e["retrying"] == 1 and e["dead"] == 1
    assert e["last_success"] is not None
    # time to sent: 10 s, 20 s, 180 s
    assert float(e["p50_seconds"]) == pytest.approx(20)
    assert float(e["attempts_per_sent"]) == pytest.approx(5 / 3)
    assert "timeout" in e["last_error"] or "400" in e["last_error"]
    wms = _endpoint(data, outbox_rows["wms_receiver"], "wms_release")
    assert (wms["followup_dead"], wms["dead_letters"], wms["failure_rate"]) == (1, 1, 0)

    (acks,) = [a for a in data["acks"] if a["partner_id"] == outbox_rows["partner_a"]]
    assert (acks["documents"], acks["accepted"], acks["rejected"], acks["overdue"]) == (
        3,
        want["accepted"],
        want["rejected"],
        want["overdue"],
    )
    (b,) = [a for a in data["acks"] if a["partner_id"] == outbox_rows["partner_b"]]
    assert (b["accepted"], b["rejected"], b["overdue"]) == (1, 0, 0)
    assert [d["idempotency_key"] for d in data["overdue"]] == [outbox_rows["keys"]["ok2"]]
    dead = {d["idempotency_key"]: d["kind"] for d in data["dead"]}
    assert dead == {outbox_rows["keys"]["dead"]: "resend", outbox_rows["wms"]: "followup"}

    html = client(app, "pat.pricing").get("/integrations").text
    rows = dict(
        zip(
            _attr(html, "endpoints", "data-partner"),
            _attr(html, "endpoints", "data-failure-rate"),
            strict=True,
        )
    )
    assert rows[outbox_rows["partner_a"]] == "0.8000"
    assert outbox_rows["keys"]["dead"] in _attr(html, "dead", "data-key")
    assert "integration role only" in html  # pat may look, not replay
    assert _attr(html, "overdue", "data-key") == [outbox_rows["keys"]["ok2"]]
    j = client(app, "pat.pricing").get("/api/integrations").json()
    assert j["totals"]["overdue"] == 1


def _status(conn, key):
    return conn.execute(
        "SELECT status, followup_status FROM orderflow.outbox WHERE idempotency_key = %s", (key,)
    ).fetchone()


def test_replay_needs_the_integration_role_and_is_audited(conn, outbox_rows, app):
    dead, wms = outbox_rows["keys"]["dead"], outbox_rows["wms"]
    r = client(app, "pat.pricing").post(
        "/integrations/replay", data={"key": dead, "kind": "resend", "reason": "try"}
    )
    assert r.status_code == 403
    r = client(app, "pat.pricing").post(
        "/integrations/replay", data={"key": wms, "kind": "followup", "reason": "try"}
    )
    assert r.status_code == 403
    assert _status(conn, dead) == ("dead", None)
    assert _status(conn, wms) == ("sent", "dead")
    refused = conn.execute(
        "SELECT actor, object_id FROM orderflow.audit_log WHERE action = 'outbox_replay_refused'"
    ).fetchall()
    assert ("pat.pricing", wms) in refused
    assert [a for a, _ in refused].count("pat.pricing") == 2

    c = client(app, "ian.int")
    assert c.post("/integrations/replay", data={"key": dead, "kind": "resend"}).status_code == 422
    r = c.post(
        "/integrations/replay", data={"key": dead, "kind": "resend", "reason": "gateway fixed"}
    )
    assert r.status_code == 303 and "replayed=" in r.headers["location"]
    assert _status(conn, dead)[0] == "pending"
    r = c.post(
        "/integrations/replay", data={"key": wms, "kind": "followup", "reason": "release fixed"}
    )
    assert r.status_code == 303
    assert _status(conn, wms) == ("sent", "pending")
    audited = conn.execute(
        "SELECT actor, action, object_id, reason FROM orderflow.audit_log "
        "WHERE object_type = 'outbox' AND actor = 'ian.int' ORDER BY audit_id"
    ).fetchall()
    assert [(a[2], a[3]) for a in audited] == [(dead, "gateway fixed"), (wms, "release fixed")]
    # replayed already: a conflict, and the page has nothing left to replay
    r = c.post("/integrations/replay", data={"key": dead, "kind": "resend", "reason": "again"})
    assert r.status_code == 409
    replayed = conn.execute(
        "SELECT count(*) FROM orderflow.dead_letter WHERE source_ref = ANY(%s) "
        "AND replayed_by = 'ian.int'",
        ([dead, wms],),
    ).fetchone()[0]
    assert replayed == 2
    html = c.get("/integrations").text
    assert 'id="no-dead"' in html
