"""#12 part 4: releasing a held order through ``order_reprocess`` overrides its exceptions,
so it needs the same owner/escalation role as the exception desk and the Required Actions
of ``order_approval`` — checked in ``decisions.reprocess`` itself, so every entry point
(the DAG, the CLI, the UI) gets it. A refusal changes nothing but one audited row.

Holds are made by the real stages on the real store: a credit limit the order exceeds
(``check_credit``) and a ship-to on the sandbox's restricted-party list (``plan`` with the
sandbox screening service). The DAG is run with ``dag.test()``, whose runs are triggered by
the user ``dag_test``.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from orderflow import decisions, processing, rules
from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
from orderflow.processing import RunContext
from orderflow.store import db, intake

pytestmark = [pytest.mark.db]

CTX = RunContext(dag_id="test_reprocess_access", run_id="manual__access", task_id="stage")
ROLES = {
    "carol.credit": ["credit"],
    "sam.stock": ["inventory"],
    "cora.compliance": ["compliance"],
    "otto.officer": ["compliance_officer"],  # the escalation role of compliance_review
    "olga": ["operations_manager"],
}


@pytest.fixture(scope="module")
def book():
    return rules.load()


@pytest.fixture
def roles(tmp_path, monkeypatch):
    """The role mapping of this test (``dag_test`` is the user ``dag.test()`` triggers as)."""

    def write(extra: dict[str, list[str]] | None = None) -> None:
        path = tmp_path / "roles.yaml"
        path.write_text(json.dumps({"users": {**ROLES, **(extra or {})}}))
        monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))

    write()
    return write


def _seed(conn, tag: str, *, limit: str, ship_to: tuple[str, str] | None = None):
    cid, item = f"C-ACC-{tag}", f"ITM-ACC-{tag}"
    name, country = ship_to or (f"{cid} Albany", "US")
    conn.execute(
        "INSERT INTO orderflow.distribution_center (dc_id, name, region, timezone, zones, "
        "postal_code, country) VALUES ('DC-EAST', 'East DC', 'NJ', 'America/New_York', "
        "'{Z1,Z2,Z3}', '08817', 'US') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO orderflow.carrier_service (carrier_id, service_code, mode, transit_days, "
        "max_weight_kg, hazmat_allowed, active, base_rate, per_kg) "
        "VALUES ('UPSN', 'GND', 'parcel', 3, 68, false, true, 9.50, 0.85) ON CONFLICT DO NOTHING"
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
        "VALUES (%s, %s, %s, '1 Main St', 'Albany', 'NY', '12207', %s, 'Z3', true)",
        (f"{cid}-ST1", cid, name, country),
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
    order = Order(
        order_id=f"O-ACC-{tag}",
        po_number=f"PO-ACC-{tag}",
        customer_id=cid,
        ship_to=Address(
            name=name,
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country=country,
        ),
        lines=[OrderLine(line_no=1, item_id=item, quantity=Decimal(20), uom="EA", unit_price="10")],
        provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}"),
    )
    (order_id,) = intake.insert_orders(conn, [order], message_id=None, actor_id="test.intake")
    return order_id


@pytest.fixture
def credit_held(store, book):
    """An order of 200.00 against a credit limit of 50: held credit_limit by check_credit."""
    tag = uuid.uuid4().hex[:6].upper()
    with db.transaction(store):
        order_id = _seed(store, tag, limit="50")
    assert processing.validate(store, [order_id], CTX, book).passed == 1
    held = processing.check_credit(store, [order_id], CTX, book, credit_service=None)
    assert held.held == {"credit_limit": 1}, held
    return order_id


@pytest.fixture(scope="module")
def screening(sandbox, day_dir):
    """The sandbox's screening service and a party on its restricted list."""
    import os

    from orderflow.integrations.systems import ScreeningHook

    os.environ.update(sandbox.connection_env())
    world = json.loads((day_dir / "world.json").read_text())
    party = world["restricted_parties"][0]
    return ScreeningHook("screening_default").check, (party["name"], party["country"])


@pytest.fixture
def compliance_held(store, book, screening):
    """An order shipping to a restricted party: held compliance_review by plan."""
    check, party = screening
    tag = uuid.uuid4().hex[:6].upper()
    with db.transaction(store):
        order_id = _seed(store, tag, limit="1000000", ship_to=party)
    assert processing.validate(store, [order_id], CTX, book).passed == 1
    assert processing.check_credit(store, [order_id], CTX, book, credit_service=None).passed == 1
    assert processing.allocate(store, [order_id], CTX, book).passed == 1
    held = processing.plan(store, [order_id], CTX, book, tax_service=None, screening_service=check)
    assert held.held == {"compliance_review": 1}, held
    return order_id


def _state(conn, order_id):
    status, approvals, claimed = conn.execute(
        'SELECT status, approvals, claimed_by_run FROM orderflow."order" WHERE order_id = %s',
        (order_id,),
    ).fetchone()
    open_ = conn.execute(
        "SELECT array_agg(category ORDER BY category) FROM orderflow.order_exception "
        "WHERE order_id = %s AND status = 'open'",
        (order_id,),
    ).fetchone()[0]
    return {"status": status, "approvals": approvals, "claimed": claimed, "open": open_ or []}


def _audit(conn, order_id):
    return conn.execute(
        "SELECT actor, action, actor_role, after, reason FROM orderflow.audit_log "
        "WHERE object_type = 'order' AND object_id = %s ORDER BY audit_id",
        (order_id,),
    ).fetchall()


def _release(conn, order_id, actor, reason="customer paid by wire"):
    return decisions.reprocess(conn, order_id, "release", actor=actor, reason=reason, ctx=CTX)


# ------------------------------------------------------------------ decisions.reprocess


def test_release_of_a_credit_hold_without_the_credit_role_is_refused_and_audited(
    store, roles, credit_held
):
    before = _state(store, credit_held)
    assert before == {
        "status": "ON_HOLD",
        "approvals": [],
        "claimed": None,
        "open": ["credit_limit"],
    }
    for user in ("sam.stock", "cora.compliance", "somebody.new"):
        with pytest.raises(decisions.DecisionRefused) as refused:
            _release(store, credit_held, user)
        message = str(refused.value)
        assert f"{user} may not release order {credit_held}" in message
        assert "credit_limit" in message and "the credit role" in message
    # nothing moved: still held, exception open, no approval recorded, not claimed
    assert _state(store, credit_held) == before
    audit = _audit(store, credit_held)
    assert [(a[0], a[1]) for a in audit] == [
        ("sam.stock", "reprocess_release_refused"),
        ("cora.compliance", "reprocess_release_refused"),
        ("somebody.new", "reprocess_release_refused"),
    ]
    assert all("the credit role" in a[3]["refused"] for a in audit)
    assert audit[0][4] == "customer paid by wire"
    events = store.execute(
        "SELECT count(*) FROM orderflow.order_event WHERE order_id = %s AND actor_type = 'user'",
        (credit_held,),
    ).fetchone()[0]
    assert events == 0


def test_the_credit_role_or_the_operations_manager_may_release_a_credit_hold(
    store, roles, book, credit_held
):
    out = _release(store, credit_held, "carol.credit")
    assert (out["from"], out["to"]) == ("ON_HOLD", "CREDIT_OK")
    after = _state(store, credit_held)
    assert after["status"] == "CREDIT_OK" and after["open"] == []
    assert after["approvals"] == ["credit_limit"] and after["claimed"] == CTX.run_id
    resolution = store.execute(
        "SELECT resolution, resolved_by FROM orderflow.order_exception WHERE order_id = %s",
        (credit_held,),
    ).fetchone()
    assert resolution == ("overridden", "carol.credit")
    ((actor, action, role, _, _),) = _audit(store, credit_held)
    assert (actor, action, role) == ("carol.credit", "reprocess_release", "credit")

    # another held order: the super role covers every category
    tag = uuid.uuid4().hex[:6].upper()
    with db.transaction(store):
        other = _seed(store, tag, limit="50")
    processing.validate(store, [other], CTX, book)
    processing.check_credit(store, [other], CTX, book, credit_service=None)
    assert _release(store, other, "olga")["to"] == "CREDIT_OK"


def test_a_compliance_hold_needs_compliance_or_its_escalation_role(store, roles, compliance_held):
    with pytest.raises(
        decisions.DecisionRefused, match="the compliance role or compliance_officer"
    ):
        _release(store, compliance_held, "carol.credit")
    assert _state(store, compliance_held)["open"] == ["compliance_review"]
    assert [a[1] for a in _audit(store, compliance_held)] == ["reprocess_release_refused"]
    # the escalation role may clear it: planning ignores the screening hit from now on
    out = _release(store, compliance_held, "otto.officer", reason="false positive, checked")
    assert (out["from"], out["to"]) == ("ON_HOLD", "ALLOCATED")
    assert _state(store, compliance_held)["approvals"] == ["compliance_review"]


def test_the_role_file_is_read_when_the_decision_is_made(store, roles, credit_held):
    with pytest.raises(decisions.DecisionRefused):
        _release(store, credit_held, "sam.stock")
    roles({"sam.stock": ["inventory", "credit"]})  # granted since
    assert _release(store, credit_held, "sam.stock")["to"] == "CREDIT_OK"


# ------------------------------------------------------------------ through the DAG


def _dag_run(order_id, **kwargs):
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.settings import DAGS_DIR

    dag = DagBag(str(DAGS_DIR)).get_dag("order_reprocess")
    return dag.test(
        run_conf={"order_id": order_id, "action": "release", "reason": "ship it today"},
        **kwargs,
    )


def _task_states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_order_reprocess_refuses_a_release_by_a_user_without_the_role(
    store, roles, credit_held, airflow_db
):
    roles({"dag_test": ["inventory"]})
    before = _state(store, credit_held)
    run = _dag_run(credit_held)
    assert run.state == "failed"
    assert _task_states(run)["prepare_order"] == "failed"
    assert _state(store, credit_held) == before
    assert [(a[0], a[1]) for a in _audit(store, credit_held)] == [
        ("dag_test", "reprocess_release_refused")
    ]


def test_order_reprocess_releases_for_a_user_with_the_role(store, roles, credit_held, airflow_db):
    roles({"dag_test": ["credit"]})
    # prepare_order runs for real; the stages after it are not what this test is about
    run = _dag_run(
        credit_held,
        mark_success_pattern=r"^(validate_order|check_credit|allocate_inventory|plan_shipments|"
        r"release_to_wms|send_releases)$",
    )
    assert _task_states(run)["prepare_order"] == "success", _task_states(run)
    assert _state(store, credit_held)["status"] == "CREDIT_OK"
    assert _state(store, credit_held)["approvals"] == ["credit_limit"]
    assert [(a[0], a[1], a[2]) for a in _audit(store, credit_held)] == [
        ("dag_test", "reprocess_release", "credit")
    ]
