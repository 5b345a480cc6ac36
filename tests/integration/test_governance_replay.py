"""#18 Governance: outbound dead letters are replayed from the ``outbox_replay`` DAG and
``orderflow outbox replay`` — and a window of orders is reprocessed (dry run first) from
``order_reprocess_window`` and ``orderflow reprocess`` — only by users holding the role;
refusals change nothing but an audited row, and a dry run writes nothing at all.

One function each behind every entry point: ``outbox.replay_dead_letters`` (role: the owner
or escalation role of ``integration_failure`` in the routing rules) and
``reprocess_window.run``, which takes each order through ``decisions.reprocess`` (a release
overrides the hold's exceptions: their owner or escalation role). DAGs run with
``dag.test()``, triggered by the user ``dag_test``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from orderflow import processing, reprocess_window, rules
from orderflow.cli import main
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.integrations import outbox
from orderflow.processing import RunContext
from orderflow.store import db, intake
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db]

CTX = RunContext(dag_id="test_governance_replay", run_id="manual__window", task_id="stage")
ROLES = {
    "ian.integration": ["integration"],
    "olga": ["operations_manager"],
    "carol.credit": ["credit"],
    "sam.stock": ["inventory"],
}


@pytest.fixture
def roles(tmp_path, monkeypatch):
    def write(extra: dict[str, list[str]] | None = None) -> None:
        path = tmp_path / f"roles-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(json.dumps({"users": {**ROLES, **(extra or {})}}))
        monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))

    write()
    return write


def _checksums(conn) -> dict[str, tuple[int, str]]:
    """Row count and content checksum of every table of the orderflow schema."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'orderflow' ORDER BY 1"
        )
    ]
    out = {}
    for t in tables:
        out[t] = conn.execute(
            f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
            f'FROM orderflow."{t}" x'
        ).fetchone()
    return out


def _audit(conn, *, object_type: str, action_like: str = "%"):
    return conn.execute(
        "SELECT actor, action, actor_role, object_id, after, reason FROM orderflow.audit_log "
        "WHERE object_type = %s AND action LIKE %s ORDER BY audit_id",
        (object_type, action_like),
    ).fetchall()


# ------------------------------------------------------------------ outbound dead letters


def _dead(conn, tag: str, action: str = "erp_invoice") -> tuple[int, str]:
    key = f"{action}:{tag}:{uuid.uuid4().hex[:6]}"
    with db.transaction(conn):
        outbox_store.enqueue(
            conn,
            idempotency_key=key,
            action=action,
            target_conn_id="erp_default",
            payload={"invoice_id": f"INV-{tag}"},
        )
        (oid,) = conn.execute(
            "SELECT outbox_id FROM orderflow.outbox WHERE idempotency_key = %s", (key,)
        ).fetchone()
    outbox._failed(conn, oid, key, action, {}, "ERP answered 400", 1, True)
    return oid, key


def _row(conn, key):
    return conn.execute(
        "SELECT o.status, d.replayed_at IS NOT NULL, d.replayed_by FROM orderflow.outbox o "
        "JOIN orderflow.dead_letter d ON d.source = 'outbox' AND d.source_ref = o.idempotency_key "
        "WHERE o.idempotency_key = %s",
        (key,),
    ).fetchone()


def test_replay_without_the_integration_role_is_refused_and_audited(store, roles):
    oid, key = _dead(store, "R1")
    for user in ("sam.stock", "carol.credit", "somebody.new"):
        with pytest.raises(outbox.ReplayRefused, match=f"{user} may not replay") as refused:
            outbox.replay_dead_letters(store, actor=user, reason="ERP fixed", outbox_ids=[oid])
        assert "the integration role" in str(refused.value)
    assert _row(store, key) == ("dead", False, None)  # nothing changed
    audit = _audit(store, object_type="outbox", action_like="outbox_replay%")
    assert [(a[0], a[1]) for a in audit] == [
        ("sam.stock", "outbox_replay_refused"),
        ("carol.credit", "outbox_replay_refused"),
        ("somebody.new", "outbox_replay_refused"),
    ]
    assert audit[0][3] == f"ids={oid}" and "integration role" in audit[0][4]["refused"]
    assert audit[0][5] == "ERP fixed"


def test_the_integration_role_or_operations_manager_may_replay(store, roles):
    oid1, key1 = _dead(store, "R2")
    oid2, key2 = _dead(store, "R3", action="wms_release")
    # a dry run lists, writes nothing, needs no role
    before = _checksums(store)
    dry = outbox.replay_dead_letters(
        store, actor="somebody.new", reason="", outbox_ids=[oid1, oid2], dry_run=True
    )
    assert [r["idempotency_key"] for r in dry["selected"]] == [key1, key2]
    assert dry["replayed"] == [] and _checksums(store) == before

    out = outbox.replay_dead_letters(
        store, actor="ian.integration", reason="ERP fixed", outbox_ids=[oid1]
    )
    assert out["replayed"] == [key1]
    assert _row(store, key1) == ("pending", True, "ian.integration")
    assert _row(store, key2)[0] == "dead"
    # by action (and window): the operations manager
    since = datetime.now(UTC) - timedelta(hours=1)
    out = outbox.replay_dead_letters(
        store, actor="olga", reason="WMS back", action="wms_release", since=since
    )
    assert out["replayed"] == [key2]
    audit = _audit(store, object_type="outbox", action_like="outbox_replay")
    assert [(a[0], a[1], a[2], a[3]) for a in audit] == [
        ("ian.integration", "outbox_replay", "integration", key1),
        ("olga", "outbox_replay", "operations_manager", key2),
    ]
    assert audit[0][4] == {"status": "pending"} and audit[0][5] == "ERP fixed"
    # nothing left to replay: an empty selection is no error, replays nothing
    again = outbox.replay_dead_letters(store, actor="olga", reason="x", outbox_ids=[oid1])
    assert again["replayed"] == [] and again["selected"] == []


def test_an_unknown_email_is_replayed_only_by_its_id(store, roles):
    """An interrupted e-mail may have arrived: never swept up by an action or a window."""
    oid, key = _dead(store, "R6", action="email")
    store.execute("UPDATE orderflow.outbox SET status = 'unknown' WHERE outbox_id = %s", (oid,))
    by_action = outbox.replay_dead_letters(store, actor="olga", reason="x", action="email")
    assert by_action["selected"] == [] and _row(store, key)[0] == "unknown"
    by_id = outbox.replay_dead_letters(store, actor="olga", reason="checked", outbox_ids=[oid])
    assert by_id["replayed"] == [key] and _row(store, key)[0] == "pending"


def test_the_cli_replays_with_the_same_role_check(store, roles):
    oid, key = _dead(store, "R4")
    runner = CliRunner()
    refused = runner.invoke(
        main, ["outbox", "replay", str(oid), "--reason", "fixed", "--actor", "sam.stock"]
    )
    assert refused.exit_code != 0 and "sam.stock may not replay" in refused.output
    assert _row(store, key)[0] == "dead"
    assert _audit(store, object_type="outbox", action_like="outbox_replay_refused")[-1][0] == (
        "sam.stock"
    )
    dry = runner.invoke(
        main, ["outbox", "replay", str(oid), "--reason", "x", "--dry-run", "--actor", "x"]
    )
    assert dry.exit_code == 0 and "would replay" in dry.output
    assert _row(store, key)[0] == "dead"
    done = runner.invoke(
        main, ["outbox", "replay", str(oid), "--reason", "fixed", "--actor", "ian.integration"]
    )
    assert done.exit_code == 0, done.output
    assert "1 replayed" in done.output and _row(store, key)[0] == "pending"
    assert _audit(store, object_type="outbox", action_like="outbox_replay")[-1][:3] == (
        "ian.integration",
        "outbox_replay",
        "integration",
    )


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    return DagBag(str(DAGS_DIR)).get_dag(dag_id)


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_outbox_replay_dag_refuses_then_replays_for_the_role(store, roles, airflow_db):
    oid, key = _dead(store, "R5")
    dag = _dag("outbox_replay")
    conf = {"outbox_ids": str(oid), "reason": "ERP fixed"}
    roles({"dag_test": ["inventory"]})
    run = dag.test(run_conf=conf)
    assert run.state == "failed" and _states(run)["replay_dead_letters"] == "failed"
    assert _row(store, key)[0] == "dead"
    assert _audit(store, object_type="outbox", action_like="outbox_replay_refused")[-1][0] == (
        "dag_test"
    )
    roles({"dag_test": ["integration"]})
    run = dag.test(run_conf=conf, mark_success_pattern=r"^send_replayed$")
    assert _states(run)["replay_dead_letters"] == "success", _states(run)
    assert _row(store, key) == ("pending", True, "dag_test")
    assert _audit(store, object_type="outbox", action_like="outbox_replay")[-1][:3] == (
        "dag_test",
        "outbox_replay",
        "integration",
    )


# ------------------------------------------------------------------ a window of orders


def _customer(conn, tag: str, *, limit: str) -> tuple[str, str]:
    cid, item = f"C-WIN-{tag}", f"ITM-WIN-{tag}"
    conn.execute(
        "INSERT INTO orderflow.distribution_center (dc_id, name, region, timezone, zones, "
        "postal_code, country) VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', "
        "'{Z1,Z2,Z3}', '08817', 'US') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
        "ship_complete, accepts_substitutes, dq_passed) "
        "VALUES (%s, %s, 'standard', 'NET30', true, false, false, true)",
        (cid, f"Customer {cid}"),
    )
    conn.execute(
        "INSERT INTO orderflow.ship_to (ship_to_id, customer_id, name, address_line1, city, "
        "region, postal_code, country, zone, dq_passed) "
        "VALUES (%s, %s, 'Dock', '1 Main St', 'Albany', 'NY', '12207', 'US', 'Z3', true)",
        (f"{cid}-ST1", cid),
    )
    conn.execute(
        "INSERT INTO orderflow.credit_account (customer_id, credit_limit, open_ar, on_hold) "
        "VALUES (%s, %s, 0, false)",
        (cid, Decimal(limit)),
    )
    conn.execute(
        "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
        "list_price, unit_cost, dq_passed) VALUES (%s, 'Widget', 'EA', 1, 1.0, 12, 6, true)",
        (item,),
    )
    conn.execute(
        "INSERT INTO orderflow.inventory_position (item_id, dc_id, on_hand) "
        "VALUES (%s, 'DC-EAST', 500)",
        (item,),
    )
    conn.execute(
        "INSERT INTO orderflow.price_contract (contract_id, customer_id, item_id, unit_price, "
        "uom, effective_from, expires_on, tolerance_pct) "
        "VALUES (%s, %s, %s, 10.00, 'EA', '2025-01-01', NULL, 1.0)",
        (f"K-{cid}", cid, item),
    )
    return cid, item


def _order(cid: str, item: str, n: int) -> Order:
    return Order(
        order_id=f"O-{cid[2:]}-{n}",
        po_number=f"PO-{cid[2:]}-{n}",
        customer_id=cid,
        ship_to=Address(
            name="Dock",
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country="US",
        ),
        lines=[OrderLine(line_no=1, item_id=item, quantity=Decimal(20), uom="EA", unit_price="10")],
        provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}"),
    )


@pytest.fixture
def held(store):
    """Three orders of a customer of its own, each held credit_limit (200.00 against a limit
    of 50); returns (the window of that customer's held orders, the order ids)."""
    book = rules.load()
    tag = uuid.uuid4().hex[:6].upper()
    with db.transaction(store):
        cid, item = _customer(store, tag, limit="50")
        ids = intake.insert_orders(
            store, [_order(cid, item, n) for n in range(3)], message_id=None, actor_id="test"
        )
    ids = sorted(ids)
    assert processing.validate(store, ids, CTX, book).passed == 3
    assert processing.check_credit(store, ids, CTX, book, credit_service=None).held == {
        "credit_limit": 3
    }
    now = datetime.now(UTC).replace(microsecond=0)
    window = reprocess_window.Window(
        since=now - timedelta(hours=1),
        until=now + timedelta(hours=1),
        customer_id=cid,
        status="ON_HOLD",
        hold_category="credit_limit",
    )
    return window, ids


def _status(conn, ids):
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)', (ids,)
        ).fetchall()
    )


def test_a_dry_run_lists_what_would_happen_and_writes_nothing(store, roles, held):
    window, ids = held
    before = _checksums(store)
    out = reprocess_window.run(
        store, window, "release", actor="carol.credit", reason="paid by wire", ctx=CTX
    )
    assert out["dry_run"] is True and out["counts"] == {"would_apply": 3}
    assert [(r["order_id"], r["status"], r["to"]) for r in out["orders"]] == [
        (i, "ON_HOLD", "CREDIT_OK") for i in ids
    ]
    assert out["orders"][0]["resolves"] == {"credit_limit": "overridden"}
    # without the role: the dry run says it would be refused, and why — still writing nothing
    refused = reprocess_window.run(
        store, window, "release", actor="sam.stock", reason="paid by wire", ctx=CTX
    )
    assert refused["counts"] == {"refused": 3}
    assert "needs the credit role" in refused["orders"][0]["why"]
    cancel = reprocess_window.run(store, window, "cancel", actor="sam.stock", reason="x", ctx=CTX)
    assert {r["to"] for r in cancel["orders"]} == {"CANCELLED"}
    assert "DRY RUN" in reprocess_window.render(cancel)
    assert _checksums(store) == before


def test_a_window_release_without_the_role_is_refused_per_order_and_audited(store, roles, held):
    window, ids = held
    before = _status(store, ids)
    out = reprocess_window.run(
        store, window, "release", actor="sam.stock", reason="paid", ctx=CTX, dry_run=False
    )
    assert out["counts"] == {"refused": 3} and out["order_ids"] == []
    assert _status(store, ids) == before  # still held
    assert store.execute(
        "SELECT count(*) FROM orderflow.order_exception WHERE order_id = ANY(%s) "
        "AND status = 'open'",
        (ids,),
    ).fetchone() == (3,)
    refusals = [(a[0], a[1], a[3]) for a in _audit(store, object_type="order") if a[3] in ids]
    assert refusals == [("sam.stock", "reprocess_release_refused", i) for i in ids]
    ((actor, action, _, _, after, reason),) = _audit(store, object_type="reprocess_window")[-1:]
    assert (actor, action, reason) == ("sam.stock", "reprocess_window", "paid")
    assert after["counts"] == {"refused": 3}


def test_a_window_release_with_the_role_applies_and_audits_each_order(store, roles, held):
    window, ids = held
    out = reprocess_window.run(
        store, window, "release", actor="carol.credit", reason="paid", ctx=CTX, dry_run=False
    )
    assert out["counts"] == {"applied": 3} and out["order_ids"] == ids
    assert set(_status(store, ids).values()) == {"CREDIT_OK"}
    audit = [(a[0], a[1], a[2]) for a in _audit(store, object_type="order") if a[3] in ids]
    assert audit == [("carol.credit", "reprocess_release", "credit")] * 3
    claimed = store.execute(
        'SELECT DISTINCT claimed_by_run FROM orderflow."order" WHERE order_id = ANY(%s)', (ids,)
    ).fetchall()
    assert claimed == [(CTX.run_id,)]  # ready for the run's stages


def test_the_cli_reprocesses_a_window_dry_run_first(store, roles, held):
    window, ids = held
    args = [
        "reprocess",
        "--from",
        window.since.strftime("%Y-%m-%dT%H:%M:%S"),
        "--to",
        window.until.strftime("%Y-%m-%dT%H:%M:%S"),
        "--customer",
        window.customer_id,
        "--hold",
        "credit_limit",
        "--action",
        "cancel",
        "--reason",
        "customer withdrew",
        "--actor",
        "ivy.sales",
    ]
    before = _checksums(store)
    dry = CliRunner().invoke(main, args)
    assert dry.exit_code == 0, dry.output
    assert "DRY RUN" in dry.output and all(i in dry.output for i in ids)
    assert _checksums(store) == before
    done = CliRunner().invoke(main, [*args, "--apply"])
    assert done.exit_code == 0, done.output
    assert set(_status(store, ids).values()) == {"CANCELLED"}
    assert [a[1] for a in _audit(store, object_type="order") if a[3] in ids] == [
        "reprocess_cancel"
    ] * 3
    assert _audit(store, object_type="reprocess_window")[-1][0] == "ivy.sales"


def test_order_reprocess_window_dag_dry_run_then_refused_then_applied(
    store, roles, held, airflow_db
):
    window, ids = held
    dag = _dag("order_reprocess_window")
    conf = {
        "window_from": window.since.isoformat(),
        "window_to": window.until.isoformat(),
        "customer_id": window.customer_id,
        "hold_category": "credit_limit",
        "action": "release",
        "reason": "paid by wire",
    }
    roles({"dag_test": ["credit"]})
    before = _checksums(store)
    run = dag.test(run_conf=conf)  # dry_run: the default
    states = _states(run)
    assert states["prepare_orders"] == "success", states
    assert states["validate_order"] == "skipped" and states["send_releases"] == "skipped"
    assert _checksums(store) == before

    roles({"dag_test": ["inventory"]})
    run = dag.test(run_conf={**conf, "dry_run": False})
    assert set(_status(store, ids).values()) == {"ON_HOLD"}
    assert [a[1] for a in _audit(store, object_type="order") if a[3] in ids] == [
        "reprocess_release_refused"
    ] * 3

    roles({"dag_test": ["credit"]})
    run = dag.test(
        run_conf={**conf, "dry_run": False},
        mark_success_pattern=r"^(validate_order|check_credit|allocate_inventory|plan_shipments|"
        r"release_to_wms|send_releases)$",
    )
    assert _states(run)["prepare_orders"] == "success", _states(run)
    assert set(_status(store, ids).values()) == {"CREDIT_OK"}
    assert [a[:3] for a in _audit(store, object_type="order") if a[3] in ids][-3:] == [
        ("dag_test", "reprocess_release", "credit")
    ] * 3
