"""The operational store on a real PostgreSQL: migrations, append-only audit, idempotent bulk
upserts, optimistic lifecycle writes."""

import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from orderflow.domain.lifecycle import OrderStatus, transition
from orderflow.store import bulk, db, events, heartbeats, migrations

pytestmark = pytest.mark.db


def test_migrations_run_up_from_empty_down_and_up_again(fresh_database):
    assert migrations.current(fresh_database) is None
    migrations.upgrade(fresh_database)
    assert migrations.current(fresh_database) == migrations.head()
    with psycopg.connect(fresh_database.replace("+psycopg", "")) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'orderflow'"
            )
        }
    for expected in (
        "channel_message",
        "order",
        "order_line",
        "order_event",
        "order_exception",
        "reservation",
        "inventory_position",
        "outbox",
        "dead_letter",
        "customer",
        "ship_to",
        "item",
        "customer_item_xref",
        "price_contract",
        "credit_account",
        "rule_set_version",
        "kpi_snapshot",
        "audit_log",
        "alembic_version",
    ):
        assert expected in tables
    migrations.downgrade(fresh_database, "base")
    assert migrations.current(fresh_database) is None
    migrations.upgrade(fresh_database)
    assert migrations.current(fresh_database) == migrations.head()


def _make_order(conn, order_id="O-1", status="RECEIVED"):
    conn.execute(
        'INSERT INTO orderflow."order" (order_id, channel, po_number, status, canonical) '
        "VALUES (%s, 'portal', %s, %s, %s)",
        (order_id, f"PO-{order_id}", status, Jsonb({"po_number": f"PO-{order_id}"})),
    )


@pytest.fixture
def order_with_event(store):
    # unique per use: the store's database outlives the connection, and id() of a new
    # connection can repeat a closed one's (a duplicate order in CI, 50e6157)
    order_id = "O-append-" + uuid.uuid4().hex[:12]
    with db.transaction(store):
        _make_order(store, order_id)
        events.append(
            store,
            [
                transition(
                    order_id,
                    "RECEIVED",
                    "VALIDATED",
                    actor_type="system",
                    actor_id="test",
                    reason_codes=("ok",),
                )
            ],
        )
    return order_id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE orderflow.order_event SET actor_id = 'mallory' WHERE order_id = %s",
        "DELETE FROM orderflow.order_event WHERE order_id = %s",
    ],
)
def test_order_events_are_append_only(store, order_with_event, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        store.execute(statement, (order_with_event,))
    count = store.execute(
        "SELECT count(*) FROM orderflow.order_event WHERE order_id = %s", (order_with_event,)
    ).fetchone()[0]
    assert count == 1


def test_the_statuses_an_event_may_name_are_the_lifecycles(store, order_with_event):
    """``order_event``'s status CHECK (migration 0026, once two foreign keys) accepts every
    status of ``order_status`` and of the domain, and refuses any other."""
    listed = {r[0] for r in store.execute("SELECT status FROM orderflow.order_status")}
    assert listed == {s.value for s in OrderStatus}
    check = store.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'order_event_status_check'"
    ).fetchone()[0]
    assert {s for s in listed if f"'{s}'" in check} == listed
    insert = (
        "INSERT INTO orderflow.order_event (order_id, from_status, to_status, actor_type, "
        "actor_id) VALUES (%s, %s, %s, 'system', 'test')"
    )
    for s in OrderStatus:  # every status of the lifecycle, both ways, inside a rollback
        with pytest.raises(_Rollback), db.transaction(store):
            store.execute(insert, (order_with_event, s.value, s.value))
            raise _Rollback
    for bad in [("RECEIVED", "SHIPPD"), ("SHIPPD", "RECEIVED"), ("RECEIVED", "received")]:
        with pytest.raises(psycopg.errors.CheckViolation, match="order_event_status_check"):
            store.execute(insert, (order_with_event, *bad))
    # no event row left behind by either loop
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_event WHERE order_id = %s", (order_with_event,)
        ).fetchone()[0]
        == 1
    )


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("table", ["order_event", "audit_log"])
def test_audit_tables_refuse_truncate(store, order_with_event, table):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        store.execute(f"TRUNCATE orderflow.{table}")


def test_event_append_moves_the_order_and_refuses_stale_state(store):
    with db.transaction(store):
        _make_order(store, "O-stale")
    t = transition("O-stale", "RECEIVED", "VALIDATED", actor_type="system", actor_id="t")
    with db.transaction(store):
        events.append(store, [t])
    assert store.execute(
        'SELECT status, version FROM orderflow."order" WHERE order_id = %s', ("O-stale",)
    ).fetchone() == ("VALIDATED", 2)
    # A second writer deciding from the old state must fail, and leave no event behind.
    with pytest.raises(events.StaleOrderState), db.transaction(store):
        events.append(store, [t])
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_event WHERE order_id = 'O-stale'"
        ).fetchone()[0]
        == 1
    )


def test_bulk_upsert_is_idempotent_and_applies_changes(store):
    cols = ("item_id", "description", "uom", "weight_kg")
    rows = [(f"IT-{i:05d}", f"Item {i}", "EA", 1.5) for i in range(5000)]
    with db.transaction(store):
        staged, changed = bulk.upsert(
            store, "item", cols, rows, key=("item_id",), touch="synced_at"
        )
    assert (staged, changed) == (5000, 5000)
    with db.transaction(store):
        staged, changed = bulk.upsert(
            store, "item", cols, rows, key=("item_id",), touch="synced_at"
        )
    assert (staged, changed) == (5000, 0)  # the same load again changes nothing
    rows[7] = ("IT-00007", "Item 7 (renamed)", "CS", 2.0)
    with db.transaction(store):
        _, changed = bulk.upsert(store, "item", cols, rows, key=("item_id",), touch="synced_at")
    assert changed == 1
    assert store.execute(
        "SELECT description, uom FROM orderflow.item WHERE item_id = 'IT-00007'"
    ).fetchone() == ("Item 7 (renamed)", "CS")


def test_bulk_upsert_refuses_to_run_outside_a_transaction(store):
    with pytest.raises(RuntimeError, match=r"inside store\.db\.transaction"):
        bulk.upsert(
            store, "item", ("item_id", "description", "uom"), [("X", "x", "EA")], key=("item_id",)
        )


def test_failed_transaction_rolls_back_everything(store):
    with pytest.raises(psycopg.errors.CheckViolation), db.transaction(store):
        bulk.copy_rows(
            store, "inventory_position", ("item_id", "dc_id", "on_hand"), [("RB-1", "DC1", 10)]
        )
        store.execute(
            "UPDATE orderflow.inventory_position SET allocated = -1 WHERE item_id = 'RB-1'"
        )
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.inventory_position WHERE item_id = 'RB-1'"
        ).fetchone()[0]
        == 0
    )


def test_outbox_idempotency_key_is_unique(store):
    insert = (
        "INSERT INTO orderflow.outbox (idempotency_key, action, target_conn_id, payload) "
        "VALUES (%s, 'wms_release', 'wms_default', '{}') ON CONFLICT (idempotency_key) DO NOTHING"
    )
    assert store.execute(insert, ("O-1:wms_release:v1",)).rowcount == 1
    assert store.execute(insert, ("O-1:wms_release:v1",)).rowcount == 0


def test_heartbeat_is_one_row_per_run(store):
    with db.transaction(store):
        assert heartbeats.record(store, dag_id="d", run_id="r1", logical_date=None, host="h") == 1
    with db.transaction(store):
        assert heartbeats.record(store, dag_id="d", run_id="r1", logical_date=None, host="h") == 2
    assert (
        store.execute("SELECT count(*) FROM orderflow.heartbeat WHERE dag_id = 'd'").fetchone()[0]
        == 1
    )
