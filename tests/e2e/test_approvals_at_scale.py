"""Approvals at the acceptance's scale (#15): a day of 5,000 orders holds about 18 % of them
— 900 approvable exceptions. Every one must reach a person without queueing behind a run
limit: all of them at once on the OrderFlow desk (for a user holding the owner role), the most
urgent under Required Actions as far as the approval window goes (one ``order_approval`` run
each, never more runs than the DAG's ``max_active_runs``), the rest asked as places free.

The holds are seeded through the store's own functions (intake's ``insert_orders``, the
lifecycle's transition appended as an event, ``exceptions.open_routed`` with the routing rules
in force); the dispatcher is the real ``order_approvals`` DAG run by ``dag.test()`` against
the real metadata database, with the shipped window."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from orderflow.store import db

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db]

HELD = 900  # 18 % of 5,000
#: approvable categories as a day's holds mix them (several owner roles)
MIX = (
    "pricing_mismatch",
    "credit_limit",
    "expired_contract",
    "substitution_needed",
    "credit_hold",
    "minimum_not_met",
    "low_confidence_extraction",
    "compliance_review",
    "duplicate_suspect",
)


def _seed_holds(conn, n: int) -> list[str]:
    from orderflow.domain.lifecycle import transition
    from orderflow.domain.models import Address, Channel, Order, OrderLine, Provenance
    from orderflow.store import events, exceptions, intake

    tag = uuid.uuid4().hex[:6].upper()
    cid, item = f"C-SCALE-{tag}", f"ITM-SCALE-{tag}"
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO orderflow.customer (customer_id, name, tier, payment_terms, active, "
            "ship_complete, accepts_substitutes, dq_passed) "
            "VALUES (%s, %s, 'standard', 'NET30', true, false, false, true)",
            (cid, f"Customer {cid}"),
        )
        conn.execute(
            "INSERT INTO orderflow.item (item_id, description, uom, pack_size, weight_kg, "
            "list_price, unit_cost, dq_passed) VALUES (%s, 'Widget', 'EA', 1, 0.5, 10, 4, true)",
            (item,),
        )
    at = datetime(2026, 11, 27, 8, tzinfo=UTC)
    orders = [
        Order(
            order_id=f"O-SCALE-{tag}-{k:04d}",
            po_number=f"PO-SCALE-{tag}-{k:04d}",
            customer_id=cid,
            ship_to=Address(
                name=cid,
                address_lines=["1 Main St"],
                city="Albany",
                region="NY",
                postal_code="12207",
                country="US",
            ),
            lines=[
                OrderLine(line_no=1, item_id=item, quantity=Decimal(2), uom="EA", unit_price=10)
            ],
            provenance=Provenance(channel=Channel.API, partner_id=f"P-{cid}", received_at=at),
        )
        for k in range(n)
    ]
    with db.transaction(conn):
        intake.insert_orders(conn, orders, message_id=None, actor_id="test.intake")
        for k, o in enumerate(orders):
            category = MIX[k % len(MIX)]
            events.append(
                conn,
                [
                    transition(
                        o.order_id,
                        "RECEIVED",
                        "ON_HOLD",
                        actor_type="system",
                        actor_id="test.validate",
                        reason_codes=(category,),
                    )
                ],
            )
            exceptions.open_routed(
                conn, category=category, reason=f"{category} (seeded)", order_id=o.order_id
            )
    return [o.order_id for o in orders]


@pytest.fixture(scope="module")
def held(store_url, airflow_db):
    conn = db.connect()
    # Earlier modules' approval runs still "running" (no scheduler here ever ends them) would
    # take the window's places: they are over, so they go before this module fills it.
    _delete_approval_runs(_active_approval_runs())
    before = _approval_runs()
    ids = _seed_holds(conn, HELD)
    yield conn, ids
    conn.close()
    # The metadata database is the session's: the window's runs this module started would fill
    # every later module's approval window (no scheduler here ever ends them).
    _delete_approval_runs(_approval_runs() - before)


def _approval_runs() -> set[str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id for r in session.query(DagRun).filter(DagRun.dag_id == "order_approval")}


def _delete_approval_runs(run_ids: set[str]) -> None:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for run in session.query(DagRun).filter(
            DagRun.dag_id == "order_approval", DagRun.run_id.in_(run_ids)
        ):
            session.delete(run)


def _dispatch():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from orderflow.settings import DAGS_DIR

    run = DagBag(str(DAGS_DIR)).get_dag("order_approvals").test()
    assert run.state == DagRunState.SUCCESS


def _active_approval_runs() -> set[str]:
    """order_approval runs queued or running (what the window and the run limit count)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            r.run_id
            for r in session.query(DagRun).filter(
                DagRun.dag_id == "order_approval", DagRun.state.in_(["queued", "running"])
            )
        }


def test_every_held_order_is_on_the_desk_for_someone_who_may_decide_it(held):
    """All 900 at once, on one desk listing, each with a user holding its owner role in the
    shipped role mapping — the desk is where the ones not (yet) asked wait."""
    from orderflow import access
    from orderflow.domain.approvals import APPROVABLE
    from orderflow.store import desk

    conn, ids = held
    rows = conn.execute(
        "SELECT order_id, category, owner_role, escalation_role "
        "FROM orderflow.order_exception WHERE status = 'open' AND order_id = ANY(%s)",
        (ids,),
    ).fetchall()
    assert len(rows) == HELD and {r[1] for r in rows} <= set(APPROVABLE)
    nobody = {(cat, role) for _, cat, role, esc in rows if not access.users_with(role, esc)}
    assert not nobody, f"no user may decide {sorted(nobody)}"
    where, params = desk.filters(None, None, None)
    where.append("order_id LIKE %s")
    params.append(ids[0].rsplit("-", 1)[0] + "-%")
    t0 = time.process_time()
    listed = desk.work_items(
        conn,
        where=where,
        params=params,
        claim_object="desk_item",
        claimed=None,
        user=None,
        sort="sla",
        page_size=HELD + 100,
        offset=0,
    )
    cpu = time.process_time() - t0
    assert {r["order_id"] for r in listed} == set(ids)
    assert listed[0]["total_items"] == HELD
    assert cpu < 5, f"the desk took {cpu:.1f} CPU s to list {HELD} held orders"


def test_required_actions_fill_the_window_and_never_exceed_the_run_limit(held):
    """Dispatch until the window is full: as many approval runs as the window holds (the
    most urgent SLAs first), not one more — so none waits behind ``max_active_runs`` — and
    every exception asked is asked once."""
    from airflow.dag_processing.dagbag import DagBag

    from orderflow.domain.approvals import APPROVABLE, POST_RELEASE
    from orderflow.settings import APPROVAL_WINDOW, DAGS_DIR

    conn, ids = held
    limit = DagBag(str(DAGS_DIR)).get_dag("order_approval").max_active_runs
    assert limit == APPROVAL_WINDOW
    before = _active_approval_runs()  # other modules' runs take places too
    expected = min(HELD, APPROVAL_WINDOW - len(before))
    assert expected > 0, f"{len(before)} earlier approval runs fill the window: nothing to test"
    for _ in range(expected // 100 + 2):  # 100 asked per dispatch run, then one that asks none
        _dispatch()
    asked = conn.execute(
        "SELECT exception_id, approval_run_id FROM orderflow.order_exception "
        "WHERE approval_run_id IS NOT NULL AND order_id = ANY(%s)",
        (ids,),
    ).fetchall()
    runs = _active_approval_runs()
    assert len(asked) == expected
    assert {run_id for _, run_id in asked} <= runs - before
    assert len(runs) <= limit, f"{len(runs)} approval runs active for a run limit of {limit}"
    most_urgent = conn.execute(
        "SELECT exception_id FROM orderflow.order_exception WHERE status = 'open' "
        "AND order_id = ANY(%s) AND category = ANY(%s) ORDER BY sla_due_at, exception_id "
        "LIMIT %s",
        (ids, [*APPROVABLE, *POST_RELEASE], expected),
    ).fetchall()
    assert sorted(e for e, _ in asked) == sorted(e for (e,) in most_urgent)
