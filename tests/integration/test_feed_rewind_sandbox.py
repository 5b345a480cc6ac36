"""A WMS milestone feed rewound under our cursor, end to end over HTTP: the sandbox purges
half of what we read and numbers the rest from the start (the soak's ``rewind_feed`` fault).
Our reader notices, reads nothing and opens one exception; a resync from 0 reads the feed
again and no event is lost or stored twice."""

from __future__ import annotations

import pytest

from orderflow import fulfilment
from orderflow.domain import fulfilment as domain

pytestmark = [pytest.mark.db, pytest.mark.sandbox]


def _release(c, n: int) -> None:
    items = [p for p in c.get("/wms/inventory").json()["items"] if p["available"] >= 2]
    for i, pos in enumerate(items[:n]):
        c.post(
            "/wms/releases",
            headers={"Idempotency-Key": f"ORD-RW{i}:release:v1"},
            json={
                "order_id": f"ORD-RW{i}",
                "dc_id": pos["dc_id"],
                "lines": [{"line_no": 1, "item_id": pos["item_id"], "quantity": 1}],
            },
        ).raise_for_status()


def _stored_keys(store) -> set[str]:
    return {
        r[0]
        for r in store.execute(
            "SELECT event_key FROM orderflow.fulfilment_event WHERE source = 'wms'"
        ).fetchall()
    }


def _open_feed_exceptions(store) -> list[tuple]:
    return store.execute(
        "SELECT details->>'kind', reason FROM orderflow.order_exception "
        "WHERE status = 'open' AND entity_type = 'feed' AND entity_id = 'wms_milestones'"
    ).fetchall()


def test_a_compacted_feed_is_noticed_and_a_resync_loses_nothing(store, sandbox):
    c = sandbox.client

    def fetch(cursor: int, limit: int) -> dict:
        r = c.get("/wms/milestones", params={"cursor": cursor, "limit": limit})
        r.raise_for_status()
        return r.json()

    _release(c, 6)
    c.put("/admin/clock", json={"advance_minutes": 60})
    first = fulfilment.pull_feed(store, "wms", fetch, page_size=4)
    assert first["stored"] > 4
    read = first["cursor"]
    seen = _stored_keys(store)

    # the WMS purges half of what we read, numbers the rest from 1, then moves on
    assert c.post("/admin/feeds/wms/compact", json={"drop": read // 2}).json()["dropped"] == (
        read // 2
    )
    c.put("/admin/clock", json={"advance_minutes": 24 * 60})
    for _ in range(2):
        out = fulfilment.pull_feed(store, "wms", fetch, page_size=4)
        assert (out["rewound"], out["stored"], out["cursor"]) == (1, 0, read)
    ((kind, reason),) = _open_feed_exceptions(store)
    assert fulfilment.feed_discontinuity_opened_at(store, "wms") is not None
    assert kind in ("feed_rewound", "feed_rewritten")
    assert "orderflow fulfilment resync wms --from 0" in reason

    fulfilment.resync_feed(store, "wms", 0, actor="ops@example", reason="WMS purged its feed")
    again = fulfilment.pull_feed(store, "wms", fetch, page_size=4)
    assert _open_feed_exceptions(store) == []
    assert fulfilment.feed_discontinuity_opened_at(store, "wms") is None
    sandbox_keys = {domain.event_key("wms", e) for e in fetch(0, 1000)["items"]}
    stored = _stored_keys(store)
    assert seen <= stored  # nothing we had is gone
    assert again["stored"] == len(stored - seen) > 0  # what happened since: read once
    assert len(stored) == len(seen | sandbox_keys)


class _SoakStack:
    """What the soak's fault functions use of its stack, on the test store and sandbox."""

    def __init__(self, store_url: str, sandbox):
        self.url = store_url.replace("postgresql+psycopg://", "postgresql://")
        self.sandbox = sandbox.client

    def query(self, database: str, sql: str, params: tuple = ()) -> list:
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()

    def db_url(self, database: str) -> str:
        return self.url


def test_the_soaks_rewind_fault_and_its_operator(store, store_url, sandbox):
    """``orderflow soak``'s ``rewind_feed`` action and the operator step that answers it,
    against the real store and sandbox (a running stack is the only other place they run)."""
    from datetime import UTC, datetime

    from orderflow.dev import soak

    c = sandbox.client

    def fetch(cursor: int, limit: int) -> dict:
        return c.get("/wms/milestones", params={"cursor": cursor, "limit": limit}).json()

    _release(c, 4)
    c.put("/admin/clock", json={"advance_minutes": 60})
    fulfilment.pull_feed(store, "wms", fetch)
    st = _SoakStack(store_url, sandbox)
    action = soak.Action(at_hours=0, kind="rewind_feed", feed="wms", wait_s=5)
    detail = soak._rewind_feed(st, action)
    assert detail["source"] == "wms" and detail["feed"] == "wms_milestones"
    assert detail["dropped"] >= 1
    fault = soak.Injected("rewind_feed", "rewound", datetime.now(UTC).isoformat(), "", detail)
    assert soak._operate_rewound_feed(st, fault) is False  # nothing noticed yet
    fulfilment.pull_feed(store, "wms", fetch)  # the next read notices
    assert soak._operate_rewound_feed(st, fault) is True
    assert fault.detail["exception_after_s"] is not None and fault.detail["resynced_at"]
    assert fulfilment.pull_feed(store, "wms", fetch).get("rewound") is None
    assert fulfilment.feed_discontinuity_opened_at(store, "wms") is None
