"""The master-data quality gate against the sandbox (HTTP) and the real store.

One module-scoped sandbox serves a small generated day whose ``world.json`` labels every
injected master-data defect. A full sync through the gate must catch each defect kind with its
named expectation, open exceptions for exactly the labelled entities, flag exactly their rows,
and an upstream fix (sandbox admin PATCH) must be auto-resolved by the next incremental sync.
Tests run in file order and share the store state the first sync creates.
"""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from orderflow import masterdata
from orderflow.dq import gate as dq_gate
from orderflow.dq import suites
from orderflow.integrations.systems import ErpHook, WmsHook
from orderflow.store import db

pytestmark = [pytest.mark.sandbox, pytest.mark.db, pytest.mark.slow]

RUN1 = "dq-gate-test-full"

#: Every defect kind the generator injects → the named expectation that must catch it.
KIND_RULE = {
    "missing_postal_code": "ship_to_postal_code_present",
    "missing_address": "ship_to_address_present",
    "nonpositive_weight": "item_weight_positive",
    "invalid_uom": "item_uom_valid",
    "duplicate_customer_part_number": "xref_part_number_unique",
    "orphan_xref": "xref_item_exists",
    "contract_overlap": "contract_no_overlap",
    "contract_dates_inverted": "contract_dates_ordered",
    "nonpositive_price": "contract_price_positive",
}
#: world.json's entity labels → (sync entity, exception entity_type / store table).
LABEL = {
    "ship_to": ("ship_tos", "ship_to"),
    "item": ("items", "item"),
    "xref": ("xrefs", "customer_item_xref"),
    "contract": ("contracts", "price_contract"),
}
OPEN_MDQ = (
    "SELECT entity_type, entity_id FROM orderflow.order_exception WHERE status = 'open' "
    "AND category = 'master_data_quality' AND order_id IS NULL"
)


def entity_id(defect: dict) -> str:
    """world.json spells an xref ``customer:part``; exceptions use the store key ``a|b``."""
    return defect["id"].replace(":", "|", 1) if defect["entity"] == "xref" else defect["id"]


def hooks():
    return {"erp": ErpHook(), "wms": WmsHook()}


@pytest.fixture(scope="module")
def env(sandbox, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for key, value in sandbox.connection_env().items():
        mp.setenv(key, value)
    docs = tmp_path_factory.mktemp("dq-docs")
    mp.setenv("ORDERFLOW_DQ_DOCS_DIR", str(docs))
    yield SimpleNamespace(docs=docs)
    mp.undo()


@pytest.fixture(scope="module")
def conn(store_url):
    c = db.connect()
    yield c
    c.close()


def run_sync(conn, run_id, *, full=False, entities=None, **gate_kw):
    gate = dq_gate.QualityGate(conn, run_id=run_id, **gate_kw)
    results = masterdata.sync(conn, hooks(), entities=entities, full=full, run_id=run_id, gate=gate)
    summary = gate.finish()
    return SimpleNamespace(gate=gate, results={r.entity: r for r in results}, summary=summary)


@pytest.fixture(scope="module")
def first(env, conn, day_dir):
    world = json.loads((day_dir / "world.json").read_text())
    run = run_sync(conn, RUN1, full=True)
    run.world = world
    run.defects = world["master_data_defects"]
    run.labelled = {(LABEL[d["entity"]][1], entity_id(d)) for d in run.defects}
    return run


def dq_row(conn, run_id, suite, expectation):
    return conn.execute(
        "SELECT success, element_count, unexpected_count, details FROM orderflow.dq_result "
        "WHERE run_id = %s AND suite = %s AND expectation = %s",
        (run_id, suite, expectation),
    ).fetchone()


def open_exceptions(conn):
    return set(conn.execute(OPEN_MDQ).fetchall())


# ---------------------------------------------------------------------------- detection


def test_every_defect_kind_is_caught_by_its_named_expectation(first, conn):
    kinds = {d["kind"] for d in first.defects}
    assert kinds == set(KIND_RULE), "a new defect kind needs a rule (or the day lacks one)"
    caught: dict[str, int] = {}
    for d in first.defects:
        entity, _ = LABEL[d["entity"]]
        row = dq_row(conn, RUN1, suites.suite_name(entity), KIND_RULE[d["kind"]])
        assert row is not None, d
        success, _, unexpected, details = row
        assert not success and unexpected >= 1, d
        assert entity_id(d) in details["unexpected_entity_ids"], d
        caught[d["kind"]] = caught.get(d["kind"], 0) + 1
    assert caught == {k: sum(d["kind"] == k for d in first.defects) for k in kinds}


def test_only_the_named_expectations_fail_and_every_result_is_stored(first, conn):
    rows = conn.execute(
        "SELECT suite, expectation, success, element_count FROM orderflow.dq_result "
        "WHERE run_id = %s",
        (RUN1,),
    ).fetchall()
    stored = {(s, e) for s, e, _, _ in rows}
    for sd in suites.SUITES.values():
        for rule in sd.rules:
            assert (sd.name, rule.name) in stored
        assert (sd.name, dq_gate.FRESHNESS) in stored
    failed = {e for _, e, ok, _ in rows if not ok}
    assert failed == set(KIND_RULE.values())
    counts = {s: n for s, e, _, n in rows if e == dq_gate.FRESHNESS}
    assert counts["masterdata.ship_tos"] == len(first.world["ship_tos"])
    assert counts["masterdata.xrefs"] == len(first.world["xrefs"])  # duplicates included


def test_exceptions_are_opened_for_exactly_the_labelled_entities(first, conn):
    assert open_exceptions(conn) == first.labelled
    rows = conn.execute(
        "SELECT e.entity_type, e.entity_id, e.owner_role, e.reason, e.details, "
        "       extract(epoch FROM e.sla_due_at - e.opened_at) / 60, c.default_owner_role, "
        "       c.default_sla_minutes "
        "  FROM orderflow.order_exception e "
        "  JOIN orderflow.exception_category c USING (category) "
        " WHERE e.status = 'open' AND e.category = 'master_data_quality'"
    ).fetchall()
    by_id = {(r[0], r[1]): r for r in rows}
    for d in first.defects:
        _, _, owner, reason, details, sla_min, default_owner, default_sla = by_id[
            (LABEL[d["entity"]][1], entity_id(d))
        ]
        assert owner == default_owner == "master_data"
        assert round(sla_min) == default_sla
        assert KIND_RULE[d["kind"]] in reason and entity_id(d) in reason
        assert KIND_RULE[d["kind"]] in details["rules"]
    # reasons name the offending value
    for d in first.defects:
        reason = by_id[(LABEL[d["entity"]][1], entity_id(d))][3]
        if d["kind"] == "missing_postal_code":
            assert "postal_code=missing" in reason
        elif d["kind"] == "nonpositive_weight":
            assert f"weight_kg={float(d['detail'].split('=')[1])!r}" in reason
        elif d["kind"] == "orphan_xref":
            assert d["detail"].split()[1] in reason  # the ghost item id
        elif d["kind"] == "contract_overlap":
            assert d["detail"].split()[1] in reason  # the contract it overlaps


def test_dq_passed_flags_exactly_the_labelled_rows(first, conn):
    for sd in suites.SUITES.values():
        table = sd.entity_type
        has_flag = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'orderflow' "
            "AND table_name = %s AND column_name = 'dq_passed'",
            (table,),
        ).fetchone()
        if not has_flag:
            continue
        key = " || '|' || ".join(f"{k}::text" for k in sd.key)
        rows = conn.execute(f"SELECT {key}, dq_passed FROM orderflow.{table}").fetchall()
        assert all(flag is not None for _, flag in rows), table
        flagged = {(table, k) for k, flag in rows if flag is False}
        assert flagged == {x for x in first.labelled if x[0] == table}, table


def test_failure_lists_failing_expectations_ids_and_where_the_result_is(first):
    failure = first.gate.failure()
    assert isinstance(failure, dq_gate.MasterDataQualityFailed)
    msg = str(failure)
    for rule in KIND_RULE.values():
        assert rule in msg
    some = entity_id(next(d for d in first.defects if d["kind"] == "nonpositive_price"))
    assert some in msg
    assert f"run_id = '{RUN1}'" in msg and "orderflow.dq_result" in msg
    assert failure.docs and failure.docs in msg
    assert first.summary["failed_suites"] == [
        "masterdata.contracts",
        "masterdata.items",
        "masterdata.ship_tos",
        "masterdata.xrefs",
    ]


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_data_docs_are_a_static_site(first, env):
    index = env.docs / "index.html"
    assert first.summary["docs"] == index.resolve().as_uri()
    text = index.read_text()
    for sd in suites.SUITES.values():
        assert sd.name in text
    pages = list((env.docs / "validations").rglob("*.html"))
    assert any("ship_tos" in p.as_posix() and RUN1 in p.as_posix() for p in pages)

    from starlette.testclient import TestClient

    from orderflow.dq import docs

    with TestClient(docs.asgi_app()) as client:
        assert client.get("/index.html").status_code == 200
        page = pages[0].relative_to(env.docs).as_posix()
        assert client.get(f"/{page}").status_code == 200


# ---------------------------------------------------------------------------- over time


def test_rerun_of_the_same_run_replaces_its_results_and_changes_nothing(first, conn):
    before = conn.execute(
        "SELECT count(*) FROM orderflow.dq_result WHERE run_id = %s", (RUN1,)
    ).fetchone()[0]
    again = run_sync(conn, RUN1, full=True, build_docs=False)
    after = conn.execute(
        "SELECT count(*) FROM orderflow.dq_result WHERE run_id = %s", (RUN1,)
    ).fetchone()[0]
    assert after == before
    assert open_exceptions(conn) == first.labelled
    assert again.summary["exceptions_opened"] == 0
    assert again.summary["exceptions_resolved"] == 0
    assert all(n == 0 for n in again.summary["flag_changes"].values())


def test_upstream_fix_auto_resolves_the_exception_and_flips_the_flag(first, conn, sandbox):
    fixes = {
        "missing_postal_code": {"postal_code": "17013"},
        "nonpositive_weight": {"weight_kg": 1.25},
        "orphan_xref": {"item_id": first.world["items"][0]["item_id"]},
        "nonpositive_price": {"unit_price": 9.99},
    }
    fixed = []
    # Contract stamps run up to a month after the business date: move the clock past them so
    # the PATCH's new updated_at is after every changed-since cursor.
    sandbox.client.put("/admin/clock", json={"advance_minutes": 90 * 24 * 60}).raise_for_status()
    for kind, change in fixes.items():
        d = next(d for d in first.defects if d["kind"] == kind)
        entity, table = LABEL[d["entity"]]
        sandbox.client.patch(
            f"/admin/master/{entity}/{entity_id(d)}", json=change
        ).raise_for_status()
        fixed.append((table, entity_id(d)))

    run = run_sync(conn, "dq-gate-test-fix")  # incremental: only the patched rows change
    assert {
        e: r.changed
        for e, r in run.results.items()
        if r.changed
        and r.entity
        not in (
            "dcs",
            "partners",  # not incremental upstream: always extracted in full
            "inventory",  # live stock: 90 days of receipts moved it
        )
    } == {"ship_tos": 1, "items": 1, "xrefs": 1, "contracts": 1}
    assert run.summary["exceptions_resolved"] == len(fixed)
    assert open_exceptions(conn) == first.labelled - set(fixed)
    for table, eid in fixed:
        status, resolution, by, at = conn.execute(
            "SELECT status, resolution, resolved_by, resolved_at FROM orderflow.order_exception "
            "WHERE entity_type = %s AND entity_id = %s AND category = 'master_data_quality' "
            "ORDER BY exception_id DESC LIMIT 1",
            (table, eid),
        ).fetchone()
        assert (status, resolution, by) == ("resolved", "auto_resolved", "dq-gate") and at
        sd = next(s for s in suites.SUITES.values() if s.entity_type == table)
        key = " || '|' || ".join(f"{k}::text" for k in sd.key)
        flag = conn.execute(
            f"SELECT dq_passed FROM orderflow.{table} WHERE {key} = %s", (eid,)
        ).fetchone()[0]
        assert flag is True, (table, eid)


def test_a_record_the_store_would_reject_is_withheld_flagged_and_never_stops_the_sync(
    first, conn, sandbox
):
    labelled_customers = {x[1] for x in first.labelled if x[0] == "customer"}
    cust = next(
        c["customer_id"]
        for c in first.world["customers"]
        if c["customer_id"] not in labelled_customers
    )
    name = conn.execute(
        "SELECT name FROM orderflow.customer WHERE customer_id = %s", (cust,)
    ).fetchone()[0]
    sandbox.client.put("/admin/clock", json={"advance_minutes": 5}).raise_for_status()
    sandbox.client.patch(f"/admin/master/customers/{cust}", json={"name": None}).raise_for_status()
    run = run_sync(conn, "dq-gate-test-withhold", build_docs=False)
    assert set(run.results) == set(masterdata.ORDER)  # every entity synced
    assert run.gate.results["customers"].withheld == [cust]
    stored, flag = conn.execute(
        "SELECT name, dq_passed FROM orderflow.customer WHERE customer_id = %s", (cust,)
    ).fetchone()
    assert (stored, flag) == (name, False)
    severity, reason = conn.execute(
        "SELECT severity, reason FROM orderflow.order_exception WHERE entity_type = 'customer' "
        "AND entity_id = %s AND status = 'open'",
        (cust,),
    ).fetchone()
    assert severity == "high"
    assert "customer_name_present" in reason and "Not published" in reason

    # the sandbox clock crawls in tests: move it so the fix gets a later updated_at
    sandbox.client.put("/admin/clock", json={"advance_minutes": 5}).raise_for_status()
    sandbox.client.patch(f"/admin/master/customers/{cust}", json={"name": name}).raise_for_status()
    run = run_sync(conn, "dq-gate-test-unwithhold", build_docs=False)
    assert run.summary["exceptions_resolved"] == 1
    assert conn.execute(
        "SELECT dq_passed FROM orderflow.customer WHERE customer_id = %s", (cust,)
    ).fetchone()[0]


def test_freshness_is_the_age_of_the_previous_extract(first, conn):
    run = run_sync(
        conn,
        "dq-gate-test-stale",
        entities=["carriers"],
        max_extract_age=timedelta(0),
        build_docs=False,
    )
    success, _, unexpected, details = dq_row(
        conn, "dq-gate-test-stale", "masterdata.carriers", dq_gate.FRESHNESS
    )
    assert (success, unexpected) == (False, 1)
    assert details["age_s"] > 0 and details["max_age_s"] == 0
    assert run.summary["stale"] == ["carriers"]
    assert "previous extract" in str(run.gate.failure())
    age = conn.execute(
        "SELECT age FROM orderflow.master_data_freshness WHERE entity = 'carriers'"
    ).fetchone()[0]
    assert timedelta(0) <= age < timedelta(minutes=5)


def test_pass_rates_per_suite_and_expectation_are_queryable_over_time(first, conn):
    rate = dict(
        conn.execute(
            "SELECT expectation, row_pass_rate FROM orderflow.dq_pass_rate_daily "
            "WHERE suite = 'masterdata.ship_tos' AND day = date_trunc('day', now())"
        ).fetchall()
    )
    assert 0 < rate["ship_to_postal_code_present"] < 1
    assert rate["ship_to_city_present"] == 1
    runs = {
        (r[0], r[1]): r[2:]
        for r in conn.execute(
            "SELECT run_id, suite, success, failed, fresh FROM orderflow.dq_suite_run "
            "WHERE run_id IN (%s, 'dq-gate-test-fix')",
            (RUN1,),
        ).fetchall()
    }
    assert runs[(RUN1, "masterdata.ship_tos")][:2] == (False, 2)
    assert runs[(RUN1, "masterdata.customers")][:2] == (True, 0)
    # the fix run validated one ship-to, and it passed
    assert runs[("dq-gate-test-fix", "masterdata.ship_tos")][:2] == (True, 0)


def test_strict_gate_stops_before_publish_and_operator_can_fail_after_it(first, conn, sandbox):
    from orderflow.operators.masterdata import sync_with_gate

    bad = next(d for d in first.defects if d["kind"] == "invalid_uom")
    sandbox.client.put("/admin/clock", json={"advance_minutes": 5}).raise_for_status()
    sandbox.client.patch(
        f"/admin/master/items/{bad['id']}", json={"description": "STRICT GATE TEST"}
    ).raise_for_status()
    description = "SELECT description FROM orderflow.item WHERE item_id = %s"
    before = conn.execute(description, (bad["id"],)).fetchone()[0]

    # strict: the typed failure is raised inside the sync, before the entity is published
    gate = dq_gate.QualityGate(conn, run_id="dq-gate-test-strict", strict=True, build_docs=False)
    with pytest.raises(dq_gate.MasterDataQualityFailed, match="item_uom_valid") as err:
        masterdata.sync(conn, hooks(), entities=["items"], run_id="dq-gate-test-strict", gate=gate)
    assert bad["id"] in str(err.value)
    assert conn.execute(description, (bad["id"],)).fetchone()[0] == before

    # the operator's opt-in failure: published and flagged first, then raised
    with pytest.raises(dq_gate.MasterDataQualityFailed, match="item_uom_valid"):
        sync_with_gate(
            conn,
            hooks(),
            run_id="dq-gate-test-fail",
            entities=["items"],
            full_refresh_every=None,
            build_docs=False,
            fail_on_quality_failure=True,
        )
    stored, flag = conn.execute(
        "SELECT description, dq_passed FROM orderflow.item WHERE item_id = %s", (bad["id"],)
    ).fetchone()
    assert (stored, flag) == ("STRICT GATE TEST", False)
