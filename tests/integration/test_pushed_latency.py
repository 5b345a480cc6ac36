"""Shipped → customer notified, as the soak and the bench report it: from a shipment's first
*shipped* milestone arriving to its first customer notice (e-mail, portal webhook or
marketplace confirmation) sent; shipments without a sent notice are not measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from orderflow.pushed.latency import shipped_to_notified
from orderflow.store import db

pytestmark = [pytest.mark.db]

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _shipped(conn, sid: str, arrived: datetime, key_suffix: str = "") -> None:
    conn.execute(
        "INSERT INTO orderflow.fulfilment_event (source, event_key, kind, order_id, release_id, "
        "shipment_id, occurred_at, payload, received_at, status) VALUES ('wms', %s, 'shipped', "
        "%s, %s, %s, %s, %s, %s, 'applied')",
        (f"REL-{sid}{key_suffix}:shipped", f"ORD-{sid}", f"REL-{sid}", sid, T0, Jsonb({}), arrived),
    )


def _notice(conn, key: str, action: str, sent: datetime | None) -> None:
    conn.execute(
        "INSERT INTO orderflow.outbox (idempotency_key, action, target_conn_id, payload, status, "
        "sent_at) VALUES (%s, %s, 'x', %s, %s, %s)",
        (key, action, Jsonb({}), "sent" if sent else "pending", sent),
    )


def test_shipped_to_notified_measures_arrival_to_first_notice_sent(store):
    with db.transaction(store):
        _shipped(store, "O-A:DC-EAST:r1", T0)
        _notice(store, "email:shipment_shipped:O-A:DC-EAST:r1", "email", T0 + timedelta(seconds=12))
        _notice(
            store, "webhook:shipment_shipped:O-A:DC-EAST:r1", "webhook", T0 + timedelta(seconds=20)
        )
        _shipped(store, "O-B:DC-WEST:r2", T0)
        _shipped(
            store, "O-B:DC-WEST:r2", T0 + timedelta(seconds=5), key_suffix="-again"
        )  # later copy
        _notice(
            store,
            "marketplace:shipment:O-B:DC-WEST:r2",
            "marketplace_shipment",
            T0 + timedelta(seconds=30),
        )
        _shipped(store, "O-C:DC-EAST:r1", T0)  # its notice not sent yet: not measured
        _notice(store, "email:shipment_shipped:O-C:DC-EAST:r1", "email", None)
        _notice(store, "email:shipment_delayed:O-C:DC-EAST:r1", "email", T0 + timedelta(seconds=1))
    out = shipped_to_notified(store)
    assert out["shipped_to_notified_measured"] == 2
    assert out["shipped_to_notified_p50_s"] is not None
    assert out["shipped_to_notified_max_s"] == 30.0
    assert shipped_to_notified(store, since=T0 + timedelta(hours=1)) == {
        "shipped_to_notified_p50_s": None,
        "shipped_to_notified_p95_s": None,
        "shipped_to_notified_max_s": None,
        "shipped_to_notified_measured": 0,
    }
    from orderflow.store.fulfilment import shipped_to_notified_seconds

    assert sorted(shipped_to_notified_seconds(store)) == [12.0, 30.0]
