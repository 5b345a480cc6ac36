"""Master-data sync from the sandbox ERP/WMS into the store: full, incremental, idempotent."""

import json

import pytest

from orderflow import masterdata
from orderflow.integrations.systems import ErpHook, WmsHook

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)


def _hooks():
    return {"erp": ErpHook(), "wms": WmsHook()}


def test_full_then_incremental_sync(store, sandbox, day_dir):
    world = json.loads((day_dir / "world.json").read_text())
    results = {r.entity: r for r in masterdata.sync(store, _hooks(), full=True)}
    for entity, table in [
        ("customers", "customer"),
        ("items", "item"),
        ("ship_tos", "ship_to"),
        ("contracts", "price_contract"),
        ("partners", "trading_partner"),
    ]:
        n = store.execute(f"SELECT count(*) FROM orderflow.{table}").fetchone()[0]
        assert n == len(world[entity]) == results[entity].rows, entity
    xrefs = {(x["customer_id"], x["customer_part_number"]) for x in world["xrefs"]}
    assert results["xrefs"].rows == len(xrefs)
    assert results["xrefs"].duplicates == len(world["xrefs"]) - len(xrefs)
    inv = store.execute(
        "SELECT count(*), sum(on_hand) FROM orderflow.inventory_position"
    ).fetchone()
    assert inv[0] == len(world["inventory"])

    # nothing changed upstream: an incremental run re-reads only the overlap window before
    # each cursor and changes nothing
    again = {r.entity: r for r in masterdata.sync(store, _hooks())}
    assert all(r.changed == 0 for r in again.values()), again
    assert again["customers"].rows < len(world["customers"]) / 10

    # an upstream fix is picked up incrementally
    cust = world["customers"][3]["customer_id"]
    sandbox.client.put("/admin/clock", json={"advance_minutes": 5})
    sandbox.client.patch(
        f"/admin/master/customers/{cust}", json={"name": "Renamed Supply"}
    ).raise_for_status()
    third = {r.entity: r for r in masterdata.sync(store, _hooks(), entities=["customers"])}
    assert (third["customers"].rows, third["customers"].changed) == (1, 1)
    assert (
        store.execute(
            "SELECT name FROM orderflow.customer WHERE customer_id = %s", (cust,)
        ).fetchone()[0]
        == "Renamed Supply"
    )


def test_a_change_stamped_at_the_cursor_is_not_skipped(store, sandbox):
    """Sources stamp coarsely: two changes in one tick share a time. The sync that read the
    first left its cursor on that time; the second must still arrive on the next sync."""
    masterdata.sync(store, _hooks(), full=True)
    sandbox.client.put("/admin/clock", json={"advance_minutes": 30, "speed": 1e-9})
    inv = sandbox.client.get("/wms/inventory").json()["items"]
    first, second = [p for p in inv if p["on_hand"] - p["reserved"] >= 5][:2]
    for pos in (first, second):
        sandbox.client.post(
            "/wms/reservations",
            json={
                "item_id": pos["item_id"],
                "dc_id": pos["dc_id"],
                "quantity": 1,
                "reference": "cursor-tick",
            },
        ).raise_for_status()
        masterdata.sync(store, _hooks(), entities=["inventory"])
    ours = dict(
        store.execute(
            "SELECT item_id || '@' || dc_id, wms_reserved FROM orderflow.inventory_position"
        ).fetchall()
    )
    for pos in (first, second):
        assert float(ours[f"{pos['item_id']}@{pos['dc_id']}"]) == pos["reserved"] + 1
