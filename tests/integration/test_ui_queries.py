"""The operations UI's queries against the real store, without a browser (fast): the desk
grouped by order with pagination, per-category actions, claims, bulk resolve (role-checked
and audited per exception, all or nothing on authorisation), the customer-service lookup,
the KPI drill-down's CSV (formula-safe), the order page's EDI segments, promised date and
business clock."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi import HTTPException

from orderflow.store import db
from orderflow.ui import pages
from orderflow.ui.app import User

pytestmark = [pytest.mark.db]

ROLES = {
    "cs.casey": ["customer_service"],
    "pricing.pat": ["pricing"],
    "inventory.sam": ["inventory"],
    "boss": ["operations_manager"],
}


def user(name: str) -> User:
    from orderflow import access

    return User(name=name, airflow_role="User", roles=access.roles_of(name))


@pytest.fixture(autouse=True)
def roles(tmp_path, monkeypatch):
    path = tmp_path / "roles.yaml"
    path.write_text(json.dumps({"users": ROLES}))
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))


@pytest.fixture(scope="module")
def conn(store_url):
    c = db.connect()
    yield c
    c.close()


def _order(conn, order_id: str, *, status: str = "ON_HOLD", po: str | None = None, cust="C-UI"):
    conn.execute(
        'INSERT INTO orderflow."order" (order_id, channel, customer_id, po_number, status, '
        "canonical) VALUES (%s, 'edi', %s, %s, %s, '{}')",
        (order_id, cust, po or f"PO-{order_id}", status),
    )


def _exc(conn, order_id, category, owner, *, line=None, minutes=240, esc=None, entity=None):
    return conn.execute(
        "INSERT INTO orderflow.order_exception (order_id, line_no, entity_type, entity_id, "
        "category, owner_role, escalation_role, reason, sla_due_at, stage) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(mins => %s), 'validate') "
        "RETURNING exception_id",
        (
            order_id,
            line,
            *(entity or (None, None)),
            category,
            owner,
            esc,
            f"{category} on {order_id or entity}",
            minutes,
        ),
    ).fetchone()[0]


@pytest.fixture(scope="module")
def seeded(conn):
    """An e-mailed PO with 20 unknown items (one work item), 30 single-exception pricing
    orders, a short-stock order, a shipped order with a quantity mismatch and an
    exception on a feed (no order)."""
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name) VALUES ('C-UI', 'Acme Hardware'), "
            "('C-OTHER', 'Bolt & Nut Supply')"
        )
        _order(conn, "UI-BIG", po="PO-EMAIL-20")
        for line in range(1, 21):
            _exc(conn, "UI-BIG", "unknown_item", "customer_service", line=line, minutes=60)
        for n in range(30):
            _order(conn, f"UI-P{n:02d}", cust="C-OTHER")
            _exc(conn, f"UI-P{n:02d}", "pricing_mismatch", "pricing", minutes=300 + n)
        _order(conn, "UI-STOCK")
        _exc(conn, "UI-STOCK", "short_stock", "inventory", minutes=500)
        _order(conn, "UI-SHIPPED", status="SHIPPED")
        _exc(conn, "UI-SHIPPED", "quantity_mismatch", "billing", minutes=600)
        _exc(conn, None, "integration_failure", "integration", entity=("feed", "wms"))
    return conn


def test_one_work_item_per_order_with_its_exceptions_inside(seeded):
    data = pages.desk(seeded, page_size=10)
    first = data["items"][0]
    assert first["item_key"] == "UI-BIG"  # its SLA is the earliest
    assert len(first["exceptions"]) == 20
    assert {x["category"] for x in first["exceptions"]} == {"unknown_item"}
    assert data["total"] == 20 + 30 + 1 + 1 + 1
    assert data["total_items"] == 1 + 30 + 1 + 1 + 1
    keys = [i["item_key"] for i in data["items"]]
    assert "feed:wms" in [i["item_key"] for i in pages.desk(seeded, page_size=100)["items"]]
    assert len(keys) == len(set(keys)) == 10


def test_pagination_covers_every_item_once(seeded):
    seen, page = [], 1
    while True:
        data = pages.desk(seeded, page=page, page_size=7)
        assert data["pages"] == 5  # 34 items
        seen += [i["item_key"] for i in data["items"]]
        if page == data["pages"]:
            break
        page += 1
    assert len(seen) == len(set(seen)) == 34
    assert pages.desk(seeded, page=99, page_size=7)["items"] == []
    assert pages.desk(seeded, category="pricing_mismatch", page_size=25)["pages"] == 2


def test_page_window():
    assert pages.page_window(1, 1) == [1]
    assert pages.page_window(1, 10) == [1, 2, 3, None, 10]
    assert pages.page_window(6, 12) == [1, None, 4, 5, 6, 7, 8, None, 12]


def test_actions_fit_the_category(seeded):
    items = {i["item_key"]: i for i in pages.desk(seeded, page_size=100)["items"]}
    acts = {k: [a for a, _ in i["exceptions"][0]["actions"]] for k, i in items.items()}
    assert "approve" not in acts["UI-BIG"]  # an unknown item is fixed, never approved
    assert acts["UI-BIG"] == ["revalidate", "keep", "reject"]
    assert acts["UI-P00"][0] == "approve"
    assert acts["UI-STOCK"] == ["reallocate", "keep", "reject"]
    assert acts["UI-SHIPPED"] == ["approve", "keep"]  # shipped: never rejected
    assert acts["feed:wms"] == ["keep"]  # no order: fixed at its source
    assert pages.actions_for(
        "integration_failure", {"order_id": "X", "order_status": "ON_HOLD"}
    ) == (
        "retry",
        "keep",
        "reject",
    )
    assert pages.actions_for(
        "integration_failure", {"order_id": "X", "order_status": "RELEASED"}
    ) == ("close", "keep")


def test_resolve_refuses_an_action_that_does_not_fit(seeded):
    eid = seeded.execute(
        "SELECT min(exception_id) FROM orderflow.order_exception WHERE order_id = 'UI-BIG'"
    ).fetchone()[0]
    with pytest.raises(HTTPException) as e:
        pages.resolve(seeded, eid, "approve", "looks fine", user("cs.casey"))
    assert e.value.status_code == 409


def test_claim_assign_release(seeded):
    with pytest.raises(HTTPException) as e:
        pages.claim(seeded, ["UI-P01"], user("inventory.sam"), assignee="inventory.sam")
    assert e.value.status_code == 403
    with pytest.raises(HTTPException) as e:  # only to someone who may work it
        pages.claim(seeded, ["UI-P01"], user("boss"), assignee="inventory.sam")
    assert e.value.status_code == 403
    pages.claim(seeded, ["UI-P01"], user("pricing.pat"), assignee="pricing.pat")
    mine = pages.desk(seeded, claimed="mine", user="pricing.pat")["items"]
    assert [i["item_key"] for i in mine] == ["UI-P01"]
    assert mine[0]["assignee"] == "pricing.pat"
    pages.claim(seeded, ["UI-P01"], user("boss"), assignee=None)
    assert pages.desk(seeded, claimed="mine", user="pricing.pat")["items"] == []
    audit = seeded.execute(
        "SELECT actor, action FROM orderflow.audit_log WHERE object_type = 'desk_item' "
        "AND object_id = 'UI-P01' ORDER BY audit_id"
    ).fetchall()
    assert audit == [("pricing.pat", "claim"), ("boss", "unclaim")]


def test_bulk_resolve_is_all_or_nothing_on_roles(seeded):
    items = ["UI-P02", "UI-P03", "UI-STOCK"]
    with pytest.raises(HTTPException) as e:
        pages.bulk_resolve(seeded, items, "keep", "checking", user("pricing.pat"))
    assert e.value.status_code == 403 and "short_stock" in e.value.detail
    assert (
        seeded.execute(
            "SELECT count(*) FROM orderflow.audit_log WHERE action = 'keep_on_hold'"
        ).fetchone()[0]
        == 0
    )
    with pytest.raises(HTTPException) as e:
        pages.bulk_resolve(seeded, ["UI-P02"], "approve", "ok", user("inventory.sam"))
    assert e.value.status_code == 403


def test_bulk_resolve_one_by_one_and_audited(seeded):
    items = [f"UI-P{n:02d}" for n in range(10, 15)]
    out = pages.bulk_resolve(seeded, items, "approve", "price agreed", user("pricing.pat"))
    assert out["done"] == 5 and out["refused"] == 0
    rows = seeded.execute(
        "SELECT e.order_id, e.resolution, e.resolved_by, o.status FROM orderflow.order_exception e "
        'JOIN orderflow."order" o USING (order_id) WHERE e.order_id = ANY(%s) ORDER BY 1',
        (items,),
    ).fetchall()
    assert {r[1:3] for r in rows} == {("overridden", "pricing.pat")}
    assert "ON_HOLD" not in {r[3] for r in rows}  # nothing else held them: they resume
    audited = seeded.execute(
        "SELECT count(*) FROM orderflow.audit_log WHERE actor = 'pricing.pat' "
        "AND action = 'approve_pricing_mismatch' AND reason = 'price agreed'"
    ).fetchone()[0]
    assert audited == 5
    # the 20 unknown items of one PO: one revalidate resolves them all with the order
    out = pages.bulk_resolve(seeded, ["UI-BIG"], "revalidate", "items mapped", user("cs.casey"))
    assert out["done"] == 20
    assert (
        seeded.execute(
            "SELECT status FROM orderflow.\"order\" WHERE order_id = 'UI-BIG'"
        ).fetchone()[0]
        == "RECEIVED"
    )


def test_search(seeded):
    by = {r["order_id"]: r for r in pages.search(seeded, "PO-EMAIL-20")}
    assert list(by) == ["UI-BIG"] and by["UI-BIG"]["exact"]
    assert {r["order_id"] for r in pages.search(seeded, "bolt & nut")} >= {"UI-P00", "UI-P29"}
    assert pages.search(seeded, "ui-stock")[0]["order_id"] == "UI-STOCK"
    assert pages.search(seeded, "%") == []  # a wildcard is a character, not a pattern
    assert pages.search(seeded, "   ") == []


def test_csv_cells_are_formula_safe():
    for bad in ('=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert pages.csv_cell(bad) == "'" + bad
    assert pages.csv_cell("PO-1") == "PO-1"
    assert pages.csv_cell(None) == ""
    when = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert pages.csv_cell(when) == when.isoformat()


def test_drill_csv_escapes_what_the_customer_typed(seeded):
    seeded.execute(
        "UPDATE orderflow.\"order\" SET po_number = '=cmd|'' /C calc''!A0' WHERE order_id = 'UI-P20'"
    )
    data = {
        "kpi": pages.kpis.BY_NAME["first_pass_release_rate"],
        "start": datetime(2026, 12, 1, tzinfo=UTC),
        "end": datetime(2026, 12, 2, tzinfo=UTC),
        "dimension": "all",
        "rows": [
            {
                "order_id": "UI-P20",
                "po_number": "=cmd|' /C calc'!A0",
                "customer_id": "-C1",
                "outcome": "miss",
                "channel": "edi",
                "status": "ON_HOLD",
            },
        ],
    }
    rows = list(csv.reader(io.StringIO(pages.drill_csv(data))))
    assert rows[0][:6] == ["kpi", "period_start", "period_end", "dimension", "outcome", "order_id"]
    assert rows[1][6] == "'=cmd|' /C calc'!A0" and rows[1][7] == "'-C1"


def test_drill_marks_hits_and_misses(seeded):
    from orderflow import kpis

    kpis.refresh_facts(seeded)
    now = datetime.now(UTC)
    data = pages.drill(
        seeded,
        "exception_volume",
        now - timedelta(days=1),
        now + timedelta(days=1),
        dimension="category=pricing_mismatch",
    )
    assert {r["order_id"] for r in data["rows"]} == {f"UI-P{n:02d}" for n in range(30)}
    with pytest.raises(HTTPException):
        pages.drill(seeded, "no_such_kpi", now, now + timedelta(days=1))


def test_edi_segments_one_a_line():
    isa = (
        "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261205*1000*U*00401"
        "*000000001*0*P*>~"
    )
    assert len(isa) == 106 and isa[105] == "~"
    text = (
        isa + "GS*PO*S*R*20261205*1000*1*X*004010~ST*850*0001~BEG*00*SA*PO-1**20261205~SE*3*0001~"
    )
    segs = pages.edi_segments(text)
    assert segs[0] == isa and segs[1].startswith("GS*") and segs[-1] == "SE*3*0001~"
    assert len(segs) == 5
    assert pages.edi_segments("\ufeff" + text)[0] == isa  # a byte-order mark is not a segment
    assert pages.edi_segments("line one\nline two") == ["line one", "line two"]


def test_promised_date_counts_weekdays():
    fri = date(2026, 12, 4)
    ships = [
        {"status": "planned", "ship_date": fri, "transit_days": 3},
        {"status": "cancelled", "ship_date": fri, "transit_days": 10},
    ]
    assert pages.promised_date(ships) == date(2026, 12, 9)  # Fri + 3 weekdays = Wed
    assert pages.promised_date([]) is None


def test_pages_render(seeded):
    """Every template renders with what its query gives (the browser tests drive them)."""
    from orderflow.ui import app

    u = user("boss")
    filters = {"category": "", "role": "", "sla": "", "sort": "sla", "claimed": "", "size": 10}
    data = pages.desk(seeded, page_size=10)
    html = app._page(
        "desk.html",
        u,
        **data,
        filters=filters,
        query=lambda **kw: app._query({**filters, **kw}),
        assignees=["boss"],
        page_sizes=pages.PAGE_SIZES,
    ).body.decode()
    assert html.count('class="item ') == 10
    html = app._page("search.html", u, q="PO", rows=pages.search(seeded, "PO"), limit=100)
    assert b'data-order="UI-BIG"' in html.body
    now = datetime.now(UTC)
    d = pages.drill(seeded, "exception_volume", now - timedelta(days=1), now + timedelta(days=1))
    html = app._page("drill.html", u, **d, query=lambda **kw: app._query(kw))
    assert b'data-order="UI-STOCK"' in html.body
    trace = pages.order_trace(seeded, "UI-STOCK")
    html = app._page("order.html", u, **trace, resolved=None)
    assert b"data-customer-status" in html.body
    out = pages.bulk_resolve(seeded, ["UI-STOCK"], "keep", "waiting for stock", user("boss"))
    html = app._page("bulk.html", u, **out, back="/orderflow/desk")
    assert b'data-outcome="done"' in html.body
    html = app._page("dashboard.html", u, **pages.dashboard(seeded))
    assert html.body.count(b'class="card-link"') == len(pages.HEADLINE)
    # the routing rules' stage owners, one row per stage
    for stage in ("intake", "allocation", "fulfilment", "shipment", "invoicing"):
        assert f'data-stage="{stage}"'.encode() in html.body
