"""The operations UI in a real browser: headless Chromium (Debian's, through Playwright) logs
in to a real Airflow api-server carrying our plugin, reads the KPI dashboard of a processed
generated day and checks its numbers against the KPI tables, resolves an exception from the
desk as the owner role (another role gets 403) and sees the order release after the next
processing run. A screenshot of each page is kept under ``test-artifacts/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, CHROMIUM, login, shot

from orderflow.store import db

pytestmark = [
    pytest.mark.browser,
    pytest.mark.airflow_db,
    pytest.mark.db,
    pytest.mark.sandbox,
    pytest.mark.long,
    pytest.mark.day_snapshot("processed"),  # the day landed, then one order_processing run
]

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
    kpis.refresh_facts(conn)
    kpis.publish(conn, now=datetime.now(UTC))
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def api_server(day, api_server):
    """The api-server of ``conftest.py``, started once the day is landed."""
    return api_server


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


# ---------------------------------------------------------------------------- #18
def _items_on(page) -> list[str]:
    return [s.get_attribute("data-item") for s in page.locator("#desk section.item").all()]


def test_desk_groups_by_order_and_paginates(day, api_server, browser):
    from orderflow.domain.approvals import APPROVABLE, POST_RELEASE

    base, _ = api_server
    page = login(browser, api_server, "admin")
    page.goto(f"{base}/orderflow/desk?size=10")
    shot(page, "desk_grouped")
    open_items, open_exceptions = day.execute(
        "SELECT count(DISTINCT coalesce(order_id, entity_type || ':' || entity_id)), count(*) "
        "FROM orderflow.exception_desk"
    ).fetchone()
    assert open_items > 10  # the generated day has more than a page
    first = _items_on(page)
    assert len(first) == 10
    pager = page.locator("#pager")
    assert int(pager.get_attribute("data-pages")) == -(-open_items // 10)
    # each work item carries every open exception of its order
    for section in page.locator("#desk section.item").all():
        key = section.get_attribute("data-item")
        rows = section.locator("tbody tr")
        assert rows.count() == int(section.get_attribute("data-count"))
        if not key.startswith(("feed:", "outbox:", "outbound_document:")):
            n = day.execute(
                "SELECT count(*) FROM orderflow.exception_desk WHERE order_id = %s", (key,)
            ).fetchone()[0]
            assert rows.count() == n
        # approve is offered only where a person may override the hold
        for r in rows.all():
            actions = (r.get_attribute("data-actions") or "").split()
            if r.get_attribute("data-category") not in (*APPROVABLE, *POST_RELEASE):
                assert "approve" not in actions
            # no action is pre-selected
            if actions:
                assert r.locator("select[name=action]").input_value() == ""
    page.locator("#pager a[rel=next]").click()
    page.wait_for_url("**page=2**")
    second = _items_on(page)
    assert second and not set(first) & set(second)
    assert page.locator("#pager b[aria-current=page]").inner_text() == "2"
    # an order with several exceptions is one item, however many it has
    multi = day.execute(
        "SELECT order_id, count(*) FROM orderflow.exception_desk WHERE order_id IS NOT NULL "
        "GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    if multi:
        page.goto(f"{base}/orderflow/desk?size=100&sort=size")
        section = page.locator(f'#desk section[data-item="{multi[0]}"]')
        assert section.locator("tbody tr").count() == multi[1]
    assert open_exceptions >= open_items


def _single_pricing_orders(conn, n: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            """
            SELECT e.order_id FROM orderflow.exception_desk e
             WHERE e.category = 'pricing_mismatch'
               AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception x
                                WHERE x.order_id = e.order_id AND x.status = 'open'
                                  AND x.category <> 'pricing_mismatch')
             GROUP BY e.order_id ORDER BY min(e.sla_due_at), e.order_id LIMIT %s
            """,
            (n,),
        )
    ]


def test_claim_a_work_item(day, api_server, browser):
    base, _ = api_server
    (order_id,) = _single_pricing_orders(day, 1)
    page = login(browser, api_server, "pricing.pat")
    page.goto(f"{base}/orderflow/desk?category=pricing_mismatch&size=100")
    section = page.locator(f'#desk section[data-item="{order_id}"]')
    with page.expect_navigation():
        section.locator("button.claim-btn").click()
    section = page.locator(f'#desk section[data-item="{order_id}"]')
    assert section.get_attribute("data-assignee") == "pricing.pat"
    page.goto(f"{base}/orderflow/desk?claimed=mine")
    assert _items_on(page) == [order_id]
    shot(page, "desk_claimed")


def test_bulk_resolve_other_role_gets_403(day, api_server, browser):
    from urllib.parse import urlencode

    base, _ = api_server
    orders = _single_pricing_orders(day, 3)
    page = login(browser, api_server, "inventory.sam")
    answer = page.request.post(
        f"{base}/orderflow/desk/bulk",
        data=urlencode(
            [("item", o) for o in orders] + [("action", "approve"), ("reason", "not mine")]
        ),
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert "pricing" in answer.text() and "nothing was resolved" in answer.text()
    still = day.execute(
        "SELECT count(*) FROM orderflow.order_exception WHERE order_id = ANY(%s) "
        "AND category = 'pricing_mismatch' AND status = 'open'",
        (orders,),
    ).fetchone()[0]
    assert still == len(orders)


def test_bulk_resolve_from_the_desk(day, api_server, browser):
    base, _ = api_server
    orders = _single_pricing_orders(day, 3)
    assert len(orders) == 3
    eids = [
        r[0]
        for r in day.execute(
            "SELECT exception_id FROM orderflow.order_exception WHERE order_id = ANY(%s) "
            "AND status = 'open' ORDER BY 1",
            (orders,),
        )
    ]
    page = login(browser, api_server, "pricing.pat")
    page.goto(f"{base}/orderflow/desk?category=pricing_mismatch&size=100")
    for o in orders:
        page.locator(f'#desk section[data-item="{o}"] input[name=item][type=checkbox]').check()
    bulk = page.locator("#bulk")
    bulk.locator("select[name=action]").select_option("approve")
    bulk.locator("input[name=reason]").fill("prices agreed with the buyer")
    shot(page, "desk_bulk_selected")
    bulk.locator("#bulk-submit").click()
    page.wait_for_url(f"{base}/orderflow/desk/bulk")
    shot(page, "desk_bulk_result")
    summary = page.locator("#bulk-summary")
    assert int(summary.get_attribute("data-done")) == len(eids)
    assert int(summary.get_attribute("data-refused")) == 0
    resolved = day.execute(
        "SELECT exception_id, resolution, resolved_by FROM orderflow.order_exception "
        "WHERE exception_id = ANY(%s) ORDER BY 1",
        (eids,),
    ).fetchall()
    assert resolved == [(e, "overridden", "pricing.pat") for e in eids]
    audit = day.execute(
        "SELECT object_id, actor, action, reason FROM orderflow.audit_log "
        "WHERE object_type = 'order_exception' AND object_id = ANY(%s) ORDER BY 1",
        ([str(e) for e in eids],),
    ).fetchall()
    assert sorted(audit) == sorted(
        (str(e), "pricing.pat", "approve_pricing_mismatch", "prices agreed with the buyer")
        for e in eids
    )
    page.locator("#back-to-desk").click()
    assert not set(orders) & set(_items_on(page))


def test_kpi_drill_down_and_csv(day, api_server, browser):
    import csv
    import io

    base, _ = api_server
    page = login(browser, api_server, "admin")
    card = page.locator('.card[data-kpi="first_pass_release_rate"]')
    numerator, denominator = (
        int(x) for x in card.locator(".n").inner_text().split(" · ")[0].split(" of ")
    )
    card.locator("a.card-link").click()
    page.wait_for_url("**/orderflow/kpis/first_pass_release_rate/orders**")
    shot(page, "drill_first_pass")
    count = page.locator("#drill-count")
    assert int(count.get_attribute("data-count")) == denominator
    assert int(count.get_attribute("data-hits")) == numerator
    assert int(count.get_attribute("data-misses")) == denominator - numerator
    page.locator("#show-misses").click()
    page.wait_for_url("**outcome=misses**")
    misses = page.locator("#drill tbody tr")
    assert misses.count() == denominator - numerator
    assert {r.get_attribute("data-outcome") for r in misses.all()} == {"miss"}
    # a hostile PO number in the export stays text
    victim = misses.first.get_attribute("data-order")
    day.execute(
        'UPDATE orderflow."order" SET po_number = \'=HYPERLINK("http://x","y")\' '
        "WHERE order_id = %s",
        (victim,),
    )
    with page.expect_download() as dl:
        page.locator("#csv").click()
    path = ARTIFACTS / "drill_first_pass_misses.csv"
    dl.value.save_as(path)
    print(f"csv: {path}")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == denominator - numerator
    assert {r["outcome"] for r in rows} == {"miss"}
    hostile = next(r for r in rows if r["order_id"] == victim)
    assert hostile["po_number"] == '\'=HYPERLINK("http://x","y")'
    # a bar of the exception mix leads to the orders behind it
    page.goto(f"{base}/orderflow/")
    bar = page.locator("svg.bars").first.locator("a.drill").first
    category = bar.locator("g").get_attribute("data-label")
    bar.click()
    page.wait_for_url("**/orderflow/kpis/exception_volume/orders**")
    shot(page, "drill_exception_mix")
    ids = {r.get_attribute("data-order") for r in page.locator("#drill tbody tr").all()}
    expected = {
        r[0]
        for r in day.execute(
            "SELECT DISTINCT order_id FROM orderflow.order_exception WHERE category = %s "
            "AND order_id IS NOT NULL",
            (category,),
        )
    }
    assert ids == expected
    # every card and bar is a link
    page.goto(f"{base}/orderflow/")
    assert page.locator(".card a.card-link").count() == page.locator(".card").count()
    assert page.locator("svg.histogram a.drill").count() == 6


def test_customer_service_lookup(day, api_server, browser):
    base, _ = api_server
    order_id, po, customer = day.execute(
        'SELECT order_id, po_number, customer_id FROM orderflow."order" '
        "WHERE channel = 'edi' AND customer_id IS NOT NULL ORDER BY order_id LIMIT 1"
    ).fetchone()
    page = login(browser, api_server, "cs.casey")
    box = page.locator("header input[name=q]")
    box.fill(po)
    box.press("Enter")
    page.wait_for_url("**/orderflow/search?q=**")
    shot(page, "lookup_po")
    assert page.locator(f'#results tr[data-order="{order_id}"]').count() == 1
    page.goto(f"{base}/orderflow/search?q={customer}")
    found = {r.get_attribute("data-order") for r in page.locator("#results tbody tr").all()}
    assert order_id in found
    page.locator(f'#results tr[data-order="{order_id}"] a').click()
    page.wait_for_url(f"**/orderflow/orders/{order_id}")
    assert page.locator("[data-customer-status]").inner_text()
    edi = page.locator("#edi")
    segments = int(edi.get_attribute("data-segments"))
    assert segments > 5
    text = edi.inner_text().strip().splitlines()
    assert text[0].startswith("ISA") and text[1].startswith("GS")
    assert len(text) == segments
    shot(page, "order_edi")
    # a tracking or invoice number finds its order too, when the day has any
    tracking = day.execute(
        "SELECT order_id, tracking_number FROM orderflow.shipment "
        "WHERE tracking_number IS NOT NULL LIMIT 1"
    ).fetchone()
    if tracking:
        page.goto(f"{base}/orderflow/search?q={tracking[1]}")
        assert page.locator(f'#results tr[data-order="{tracking[0]}"]').count() == 1


# ---------------------------------------------------------------------------- #17
def test_a_suggested_cause_is_shown_corrected_on_the_desk_and_becomes_a_label(
    day, api_server, browser
):
    """The cause model's recommendation on a held order (recorded through the one writer, as
    inference does) shows on the desk and the order page with its confidence and evidence;
    the owner resolves naming another cause, which is stored as the person's label (audited),
    taken by the next training, and counted in the dashboard's agreement KPI."""
    from orderflow import rules
    from orderflow.ai import governance
    from orderflow.domain.approvals import APPROVABLE
    from orderflow.store import ai as ai_repo

    # any held order a person may approve (other tests of this module resolve some)
    eid, order_id, category = day.execute(
        """
        SELECT e.exception_id, e.order_id, e.category FROM orderflow.exception_desk e
         WHERE e.category = ANY(%s) AND e.order_id IS NOT NULL
         ORDER BY e.exception_id DESC LIMIT 1
        """,
        (list(APPROVABLE),),
    ).fetchone()
    features = {"contract_days_expired": 12.0, "price_delta_pct": 4.5, "uom_matches": 1.0}
    evidence = [
        {"feature": "contract_days_expired", "value": 12.0, "weight": 0.41},
        {"feature": "price_delta_pct", "value": 4.5, "weight": 0.12},
    ]
    [decision_id] = governance.record(
        day,
        [
            governance.Output(
                "exception_cause", "test-1", order_id, "contract_expired", 0.87, features,
                evidence, "recommend", exception_id=eid,
            )
        ],
        rules.load(),
    )  # fmt: skip
    base, _ = api_server
    page = login(browser, api_server, "admin")  # operations_manager: every desk item
    page.goto(f"{base}/orderflow/desk?category={category}&sort=sla&size=100")
    row = page.locator(f'#desk tr[data-exception="{eid}"]')
    rec = row.locator(".ai-rec")
    assert rec.get_attribute("data-label") == "contract_expired"
    assert rec.get_attribute("data-confidence") == "87"
    assert "contract_days_expired = 12.0" in rec.locator(".evidence").inner_text()
    # the suggestion is preselected; the owner knows better: a customer-specific discount
    assert row.locator("select[name=cause]").input_value() == "contract_expired"
    shot(page, "desk_recommendation")
    row.locator("select[name=action]").select_option("approve")
    row.locator("input[name=reason]").fill("discount agreed in the customer's agreement")
    row.locator("select[name=cause]").select_option("customer_discount")
    row.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/orderflow/orders/{order_id}**")
    on_order = page.locator(f'#recommendations tr[data-decision="{decision_id}"]')
    assert on_order.get_attribute("data-confidence") == "87"
    assert "corrected to customer_discount by admin" in on_order.inner_text()
    assert "contract_days_expired = 12.0" in on_order.locator(".evidence").inner_text()
    shot(page, "order_recommendation")

    reviewed = day.execute(
        "SELECT followed, label, reviewed_by FROM orderflow.ai_decision WHERE decision_id = %s",
        (decision_id,),
    ).fetchone()
    assert reviewed == (False, "customer_discount", "admin")
    audit = day.execute(
        "SELECT actor FROM orderflow.audit_log WHERE action = 'ai_review' AND object_id = %s",
        (str(decision_id),),
    ).fetchall()
    assert audit == [("admin",)]
    # the label loop: the person's cause is what the next training learns
    labels = [r[2] for r in ai_repo.training_set(day, "exception_cause") if r[4] == order_id]
    assert labels == ["customer_discount"]
    # the live-quality KPI
    page.goto(f"{base}/orderflow/")
    kpi = page.locator('#model-agreement tr[data-model="exception_cause"]')
    assert kpi.get_attribute("data-reviewed") == "1"
    assert float(kpi.get_attribute("data-followed-rate")) == 0.0
