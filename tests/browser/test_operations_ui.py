"""The operations UI in a real browser: headless Chromium (Debian's, through Playwright) logs
in to a real Airflow api-server carrying our plugin, reads the KPI dashboard of a processed
generated day and checks its numbers against the KPI tables, resolves an exception from the
desk as the owner role (another role gets 403) and sees the order release after the next
processing run. A screenshot of each page is kept under ``test-artifacts/``."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests_support import free_port, land_day

from orderflow.store import db

pytestmark = [
    pytest.mark.browser,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.long,
]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
USERS = {"admin": "admin", "pricing.pat": "op", "inventory.sam": "op"}
ROLES = {
    "admin": ["operations_manager"],
    "pricing.pat": ["pricing"],
    "inventory.sam": ["inventory"],
}

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def _run(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag(dag_id).test()
    assert run.state == DagRunState.SUCCESS
    return run


@pytest.fixture(scope="module")
def day(store_url, sandbox, airflow_db):
    """A generated day landed, processed and published as KPIs."""
    from datetime import UTC, datetime

    from orderflow import kpis

    os.environ.update(sandbox.connection_env())
    conn = db.connect()
    land_day(conn, sandbox)
    _run("order_processing")
    kpis.refresh_facts(conn)
    kpis.publish(conn, now=datetime.now(UTC))
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def api_server(day, tmp_path_factory):
    """``airflow api-server`` with our plugin, three users and the OrderFlow role mapping."""
    tmp = tmp_path_factory.mktemp("api")
    passwords = {u: secrets.token_urlsafe(10) for u in USERS}
    (tmp / "passwords.json").write_text(json.dumps(passwords))
    (tmp / "roles.yaml").write_text(json.dumps({"users": ROLES}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "ORDERFLOW_ROLES_FILE": str(tmp / "roles.yaml"),
    }
    log = (tmp / "api-server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(1)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail("api-server did not start: " + (tmp / "api-server.log").read_text()[-3000:])
    os.environ["ORDERFLOW_ROLES_FILE"] = env["ORDERFLOW_ROLES_FILE"]
    yield base, passwords
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.environ.pop("ORDERFLOW_ROLES_FILE", None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


def login(browser, api_server, user: str):
    base, passwords = api_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/orderflow/", wait_until="networkidle")
    assert "/auth/login" in page.url  # not logged in: Airflow's own login page
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(passwords[user])
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/orderflow/**", timeout=30_000)
    return page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_dashboard_shows_the_kpi_tables(day, api_server, browser):
    page = login(browser, api_server, "inventory.sam")
    shot(page, "dashboard")
    assert page.locator("[data-user]").get_attribute("data-user") == "inventory.sam"
    latest = {
        kpi: float(value)
        for kpi, value in day.execute(
            "SELECT DISTINCT ON (kpi) kpi, value FROM orderflow.kpi_snapshot "
            "WHERE grain = 'day' AND dimension = 'all' ORDER BY kpi, period_start DESC"
        )
    }
    cards = page.locator(".card[data-kpi]")
    assert cards.count() >= 8
    shown = {}
    for i in range(cards.count()):
        c = cards.nth(i)
        value = c.get_attribute("data-value")
        if value:
            shown[c.get_attribute("data-kpi")] = float(value)
    assert shown and all(shown[k] == pytest.approx(latest[k]) for k in shown)
    # the day has holds: they count against the first-pass release rate
    assert 0 < shown["first_pass_release_rate"] < 1
    # four charts, each with marks carrying numbers
    assert page.locator("svg[data-chart]").count() == 4
    mix = {
        g.get_attribute("data-label"): float(g.get_attribute("data-value"))
        for g in page.locator("svg.bars").first.locator("g[data-label]").all()
    }
    opened = dict(
        day.execute(
            "SELECT category, count(*) FROM orderflow.order_exception GROUP BY 1"
        ).fetchall()
    )
    assert mix == {k: float(v) for k, v in opened.items()}
    hist = sum(
        float(g.get_attribute("data-value"))
        for g in page.locator("svg.histogram g[data-label]").all()
    )
    released = day.execute(
        "SELECT count(*) FROM orderflow.order_fact WHERE released_at IS NOT NULL"
    ).fetchone()[0]
    assert hist == released


def _pricing_exception(conn) -> tuple[int, str]:
    """A price-mismatch exception on an order held for nothing else."""
    return conn.execute(
        """
        SELECT e.exception_id, e.order_id FROM orderflow.order_exception e
         WHERE e.category = 'pricing_mismatch' AND e.status = 'open'
           AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception x
                            WHERE x.order_id = e.order_id AND x.status = 'open'
                              AND x.exception_id <> e.exception_id)
         ORDER BY e.exception_id LIMIT 1
        """
    ).fetchone()


def test_another_role_gets_403(day, api_server, browser):
    base, _ = api_server
    eid, _ = _pricing_exception(day)
    page = login(browser, api_server, "inventory.sam")
    answer = page.request.post(
        f"{base}/orderflow/desk/{eid}/resolve",
        form={"action": "approve", "reason": "not mine"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert "pricing" in answer.text()
    status = day.execute(
        "SELECT status FROM orderflow.order_exception WHERE exception_id = %s", (eid,)
    ).fetchone()[0]
    assert status == "open"


def test_owner_resolves_from_the_desk_and_the_order_releases(day, api_server, browser):
    base, _ = api_server
    eid, order_id = _pricing_exception(day)
    page = login(browser, api_server, "pricing.pat")
    page.goto(f"{base}/orderflow/desk?category=pricing_mismatch&sort=sla")
    shot(page, "desk")
    rows = page.locator("#desk tbody tr")
    assert rows.count() >= 1
    assert {r.get_attribute("data-category") for r in rows.all()} == {"pricing_mismatch"}
    row = page.locator(f'#desk tr[data-exception="{eid}"]')
    row.locator("select[name=action]").select_option("approve")
    row.locator("input[name=reason]").fill("customer's price agreed by phone")
    row.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/orderflow/orders/{order_id}**")
    assert page.locator(".flash").is_visible()
    assert page.locator("[data-status]").get_attribute("data-status") == "VALIDATED"
    resolved = page.locator(f'#exceptions tr[data-exception="{eid}"]').inner_text()
    assert "overridden" in resolved and "pricing.pat" in resolved

    _run("order_processing")
    page.reload()
    assert page.locator("[data-status]").get_attribute("data-status") == "RELEASED"
    # the trace links each system step to the task run that made it
    links = page.locator("#events a[href^='/dags/order_processing/runs/']")
    assert links.count() >= 4
    assert page.locator("#documents").inner_text().count("wms_release") >= 1
    shot(page, "order")
    audit = day.execute(
        "SELECT actor, action, reason FROM orderflow.audit_log WHERE object_type = "
        "'order_exception' AND object_id = %s",
        (str(eid),),
    ).fetchall()
    assert audit == [
        ("pricing.pat", "approve_pricing_mismatch", "customer's price agreed by phone")
    ]
