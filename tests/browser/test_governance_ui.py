"""Rule governance and integration health (#18) in a real browser, against a real Airflow
api-server carrying our plugin: a what-if launched from the form shows exactly the orders a
looser pricing tolerance flips; an approver promotes the candidate and rolls it back (both
audited), a user without ``rule_approver`` gets 403 (the refusal audited); the integration
page shows a partner's numbers; a dead letter is replayed by the integration role only.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import CHROMIUM, login, shot
from ui_seed import WINDOW, candidate_yaml, flipping, seed_integrations, seed_whatif

from orderflow.store import db

pytestmark = [pytest.mark.browser, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.long]

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def store(store_url):
    conn = db.connect()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def seeded(store):
    return {"orders": seed_whatif(store), "outbox": seed_integrations(store)}


@pytest.fixture(scope="module")
def api_server(seeded, api_server):
    """The api-server of ``conftest.py``, started once the store is seeded."""
    return api_server


def _latest_run(conn) -> int:
    return conn.execute("SELECT max(whatif_run_id) FROM orderflow.whatif_run").fetchone()[0]


def test_whatif_from_the_form_shows_exactly_the_flipping_orders(seeded, store, api_server, browser):
    base, _ = api_server
    page = login(browser, api_server, "cs.casey", "/orderflow/rules")
    assert page.locator("header a", has_text="Rules").count() == 1
    page.locator("#candidate-yaml").fill(candidate_yaml("2026.12.9"))
    page.locator("#window-from").fill(WINDOW[0].strftime("%Y-%m-%dT%H:%M"))
    page.locator("#window-to").fill(WINDOW[1].strftime("%Y-%m-%dT%H:%M"))
    shot(page, "rules_whatif_form")
    page.locator("#whatif-submit").click()
    page.wait_for_url(f"{base}/orderflow/rules/whatif/**", timeout=60_000)
    shot(page, "rules_whatif_diff")
    expected = flipping(seeded["orders"])
    head = page.locator("#whatif")
    assert int(head.get_attribute("data-orders")) == len(seeded["orders"])
    assert int(head.get_attribute("data-changed")) == len(expected)
    rows = page.locator("#diffs tbody tr")
    assert {r.get_attribute("data-order") for r in rows.all()} == expected
    for r in rows.all():
        assert r.locator('td[data-field="status"]').inner_text() == "ON_HOLD → READY"
        assert "pricing_mismatch" in r.locator('td[data-field="holds"]').inner_text()
        assert "UPSN/GND" in r.locator('td[data-field="carriers"]').inner_text()
    # a view-only user is not offered Promote
    assert page.locator("form.promote").count() == 0
    # each order links to its page
    first = sorted(expected)[0]
    page.locator(f'#diffs tr[data-order="{first}"] a').click()
    page.wait_for_url(f"**/orderflow/orders/{first}")


def _audit(conn, action: str) -> list[tuple]:
    return conn.execute(
        "SELECT actor, object_id, reason FROM orderflow.audit_log WHERE action = %s "
        "ORDER BY audit_id",
        (action,),
    ).fetchall()


def test_a_non_approver_gets_403_and_is_audited(store, api_server, browser):
    base, _ = api_server
    run_id = _latest_run(store)
    page = login(browser, api_server, "admin", f"/orderflow/rules/whatif/{run_id}")
    assert page.locator("form.promote").count() == 0  # operations_manager is not an approver
    answer = page.request.post(
        f"{base}/orderflow/rules/whatif/{run_id}/promote",
        form={"rule_set": "pricing", "reason": "looks good to me"},
        headers={"accept": "text/html"},
        max_redirects=0,
    )
    assert answer.status == 403 and "rule_approver" in answer.text()
    answer = page.request.post(
        f"{base}/orderflow/rules/pricing/rollback",
        form={"reason": "undo"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert ("admin", "pricing", "looks good to me") in _audit(store, "rule_promote_refused")
    assert ("admin", "pricing", "undo") in _audit(store, "rule_rollback_refused")
    assert store.execute("SELECT count(*) FROM orderflow.rule_set_activation").fetchone()[0] == 0


def test_an_approver_promotes_then_rolls_back(store, api_server, browser):
    from orderflow import rules

    shipped = rules.load().pricing
    run_id = _latest_run(store)
    page = login(browser, api_server, "rita.rules", f"/orderflow/rules/whatif/{run_id}")
    form = page.locator('#compared tr[data-rule-set="pricing"] form.promote')
    form.locator("input[name=reason]").fill("3 % tolerance agreed with sales")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "/orderflow/rules?promoted=" in page.url
    assert page.locator("#flash").is_visible()
    row = page.locator('#versions tr[data-rule-set="pricing"]')
    assert (row.get_attribute("data-version"), row.get_attribute("data-source")) == (
        "2026.12.9",
        "promoted",
    )
    assert rules.load(conn=store).pricing.version == "2026.12.9"
    shot(page, "rules_promoted")

    row.locator("input[name=reason]").fill("too many disputes")
    with page.expect_navigation():
        row.locator("form.rollback button[type=submit]").click()
    row = page.locator('#versions tr[data-rule-set="pricing"]')
    assert (row.get_attribute("data-version"), row.get_attribute("data-source")) == (
        shipped.version,
        "file",
    )
    assert rules.load(conn=store).pricing == shipped
    actions = [r.get_attribute("data-action") for r in page.locator("#promotions tbody tr").all()]
    assert actions == ["rollback", "promote"]
    shot(page, "rules_rolled_back")
    assert _audit(store, "rule_promote") == [
        ("rita.rules", "pricing", "3 % tolerance agreed with sales")
    ]
    assert _audit(store, "rule_rollback") == [("rita.rules", "pricing", "too many disputes")]


def test_integration_health_shows_the_partners_numbers(seeded, api_server, browser):
    ob = seeded["outbox"]
    page = login(browser, api_server, "pricing.pat", "/orderflow/integrations")
    shot(page, "integrations")
    row = page.locator(f'#endpoints tr[data-partner="{ob["partner_a"]}"][data-action="edi_855"]')
    assert int(row.get_attribute("data-queued")) == ob["a"]["queued"]
    assert int(row.get_attribute("data-sent")) == ob["a"]["sent"]
    assert float(row.get_attribute("data-failure-rate")) == pytest.approx(12 / 15, abs=1e-4)
    assert int(row.get_attribute("data-dead-letters")) == ob["a"]["dead_letters"]
    assert row.get_attribute("data-last-success")
    acks = page.locator(f'#acks tr[data-partner="{ob["partner_a"]}"]')
    assert int(acks.get_attribute("data-accepted")) == ob["a"]["accepted"]
    assert int(acks.get_attribute("data-rejected")) == ob["a"]["rejected"]
    assert int(acks.get_attribute("data-overdue")) == ob["a"]["overdue"]
    assert page.locator(f'#overdue tr[data-key="{ob["keys"]["ok2"]}"]').count() == 1
    assert (
        int(page.locator('#health-totals [data-total="dead_letters"]').get_attribute("data-value"))
        == 2
    )
    # pricing.pat may look, not replay
    assert page.locator("#dead form.replay").count() == 0


def test_dead_letter_replay(seeded, store, api_server, browser):
    base, _ = api_server
    key = seeded["outbox"]["keys"]["dead"]
    page = login(browser, api_server, "pricing.pat", "/orderflow/integrations")
    answer = page.request.post(
        f"{base}/orderflow/integrations/replay",
        form={"key": key, "kind": "resend", "reason": "not mine"},
        max_redirects=0,
    )
    assert answer.status == 403
    status = lambda: store.execute(  # noqa: E731
        "SELECT status FROM orderflow.outbox WHERE idempotency_key = %s", (key,)
    ).fetchone()[0]
    assert status() == "dead"
    assert ("pricing.pat",) in [(a,) for a, *_ in _audit(store, "outbox_replay_refused")]

    page = login(browser, api_server, "ian.int", "/orderflow/integrations")
    row = page.locator(f'#dead tr[data-key="{key}"]')
    row.locator("input[name=reason]").fill("gateway certificate renewed")
    shot(page, "integrations_replay")
    with page.expect_navigation():
        row.locator("button[type=submit]").click()
    assert page.locator("#flash").is_visible()
    assert page.locator(f'#dead tr[data-key="{key}"]').count() == 0
    assert status() == "pending"
    assert ("ian.int", key, "gateway certificate renewed") in [
        a for a in _audit(store, "outbox_replay")
    ]
    shot(page, "integrations_replayed")
