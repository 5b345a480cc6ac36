"""Failures of our own that no single task notices, against the real store:

1. a feed rewound behind our cursor (a WMS restored or reset) and a feed whose history
   changed each open an integration exception with a clear message, read nothing, and are
   resolved by a resync (audited) after which the feed is read again once;
2. orders that stay in a stage past the rules' limits (per stage; SHIPPED per carrier
   service's transit days) open a typed ``stalled`` exception routed to the stage owner, once,
   counted by the ``stalled_orders`` KPI, and resolved when the order moves on;
3. an outbox action whose rows wait while nothing of it is sent raises an alert on the desk,
   resolved once its rows go out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_fulfilment_store import CTX, Feed, qty_lines, released_order, wms
from test_processing_store import shared_master_data  # noqa: F401 (autouse fixture)

from orderflow import fulfilment, kpis, rules, watch
from orderflow.store import cursors, db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db]


@pytest.fixture(scope="module")
def book():
    return rules.load()


def _open(store, **where) -> list[tuple]:
    cond = " AND ".join(f"{k} = %s" for k in where)
    return store.execute(
        "SELECT category, owner_role, reason, details, stage FROM orderflow.order_exception "
        f"WHERE status = 'open' AND {cond}",
        tuple(where.values()),
    ).fetchall()


def _feed_exceptions(store) -> list[tuple]:
    return _open(store, entity_type="feed", entity_id="wms_milestones")


def test_a_rewound_or_rewritten_feed_opens_an_exception_and_a_resync_reads_it_again(store, book):
    r = released_order(store, book)
    feed = Feed(store, "wms")
    feed.add(wms(r, "released", 0), wms(r, "picked", 30, qty_lines(r, 10, 10)))
    assert feed.pull(store)["stored"] == 2
    cursor = int(cursors.get(store, "wms_milestones"))
    # Nothing new: the check item is seen again and counted neither as received nor duplicate.
    quiet = feed.pull(store)
    assert (quiet["received"], quiet["stored"], quiet.get("rewound")) == (0, 0, None)

    # The WMS comes back from a restore with a shorter feed than our cursor.
    del feed.items[1:]
    for _ in range(2):  # every read says so; one exception, no cursor movement
        out = feed.pull(store)
        assert (out["rewound"], out["stored"], out["cursor"]) == (1, 0, cursor)
    (exc,) = _feed_exceptions(store)
    assert exc[:2] == ("integration_failure", "integration")
    assert f"our cursor is at {cursor:,}" in exc[2] and "ends before our cursor" in exc[2]
    assert "orderflow fulfilment resync wms --from 0" in exc[2]
    assert exc[3]["kind"] == "feed_rewound"
    assert cursors.get(store, "wms_milestones") == str(cursor)

    # Its owners confirm; resync from the start. Stored events are skipped, new ones read.
    feed.add(wms(r, "packed", 45))
    fulfilment.resync_feed(store, "wms", 0, actor="ops@example", reason="WMS restored")
    assert _feed_exceptions(store) == []
    again = feed.pull(store)
    assert (again["received"], again["stored"], again.get("rewound")) == (2, 1, None)
    audit = store.execute(
        "SELECT actor, before->>'cursor', after->>'cursor', reason FROM orderflow.audit_log "
        "WHERE action = 'feed_resync' AND object_id = 'wms_milestones'"
    ).fetchall()
    assert audit == [("ops@example", str(cursor), "0", "WMS restored")]

    # History rewritten under the cursor: the event we read last is now another one.
    feed.items[-1] = {**feed.items[-1], "milestone": "shipped", "release_id": "REL-OTHER"}
    out = feed.pull(store)
    assert out["rewound"] == 1
    (exc,) = _feed_exceptions(store)
    assert "the event there is now 'REL-OTHER:shipped'" in exc[2]
    fulfilment.apply_events(store, CTX, book)


def _age(store, order_id: str, status: str, hours: float) -> None:
    with db.transaction(store):
        store.execute(
            'UPDATE orderflow."order" SET status = %s, '
            "status_changed_at = now() - make_interval(secs => %s) WHERE order_id = %s",
            (status, hours * 3600, order_id),
        )


def test_orders_past_their_stage_limit_open_a_stalled_exception_for_the_stage_owner(store, book):
    limits = book.fulfilment.stage_limits
    released = released_order(store, book)
    shipped = released_order(store, book)
    fresh = released_order(store, book)
    transit = store.execute(
        "SELECT cs.transit_days FROM orderflow.shipment s JOIN orderflow.carrier_service cs "
        "USING (carrier_id, service_code) WHERE s.order_id = %s",
        (shipped.order_id,),
    ).fetchone()[0]
    ship_limit = limits["SHIPPED"].hours + 24 * transit
    _age(store, released.order_id, "RELEASED", limits["RELEASED"].hours + 1)
    _age(store, shipped.order_id, "SHIPPED", ship_limit - 1)  # inside its transit allowance
    _age(store, fresh.order_id, "RELEASED", limits["RELEASED"].hours - 1)

    out = watch.run(store, book)
    assert out.stalled_opened == 1
    (exc,) = _open(store, order_id=released.order_id, category="stalled")
    assert exc[1] == limits["RELEASED"].owner_role == "inventory"
    assert exc[4] == "RELEASED" and exc[3]["limit_hours"] == limits["RELEASED"].hours
    assert "has been RELEASED for 25 h" in exc[2] and "check the release in the WMS" in exc[2]
    assert _open(store, order_id=shipped.order_id, category="stalled") == []
    assert _open(store, order_id=fresh.order_id, category="stalled") == []

    _age(store, shipped.order_id, "SHIPPED", ship_limit + 1)
    again = watch.run(store, book)
    assert again.stalled_opened == 1  # the shipped one; the released one is not opened twice
    (exc,) = _open(store, order_id=shipped.order_id, category="stalled")
    assert exc[1] == "logistics" and f"past its limit of {ship_limit:.0f} h" in exc[2]
    assert (
        store.execute(
            "SELECT count(*) FROM orderflow.order_exception WHERE category = 'stalled' "
            "AND order_id = %s",
            (released.order_id,),
        ).fetchone()[0]
        == 1
    )

    # The KPI counts them, by stage.
    rows = kpis.compute(
        store, kpis.BY_NAME["stalled_orders"], "day", datetime.now(UTC) - timedelta(days=1)
    )
    by_dim = {dim: value for _, dim, value, _, _ in rows}
    assert by_dim["all"] >= 2 and by_dim["stage=RELEASED"] >= 1 and by_dim["stage=SHIPPED"] >= 1

    # The warehouse picks: the stalled exception resolves itself.
    _age(store, released.order_id, "PICKED", 0)
    assert watch.run(store, book).stalled_resolved == 1
    assert _open(store, order_id=released.order_id, category="stalled") == []


def test_an_outbox_action_that_stops_delivering_raises_an_alert_until_it_delivers(store, book):
    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key="watch:997",
            action="edi_997",
            target_conn_id="edi_default",
            payload={"partner_id": "P-W", "document_type": "997", "body": "ISA*~"},
        )
        store.execute(
            "UPDATE orderflow.outbox SET created_at = now() - interval '20 minutes', "
            "status = 'failed', attempts = 3, last_error = 'EDI gateway answered 503' "
            "WHERE idempotency_key = 'watch:997'"
        )
    out = watch.run(store, book)
    assert "edi_997" in out.outbox_stalled
    (exc,) = _open(store, entity_type="outbox", entity_id="edi_997")
    assert exc[:2] == ("integration_failure", "integration")
    assert "none was sent in the last 15 minutes" in exc[2] and "503" in exc[2]
    watch.run(store, book)
    assert len(_open(store, entity_type="outbox", entity_id="edi_997")) == 1

    store.execute(
        "UPDATE orderflow.outbox SET status = 'sent', sent_at = now() "
        "WHERE idempotency_key = 'watch:997'"
    )
    assert watch.run(store, book).outbox_recovered == 1
    assert _open(store, entity_type="outbox", entity_id="edi_997") == []


def test_the_cli_lists_what_waits_for_a_person_and_records_their_decisions(
    store, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from orderflow.cli import main

    with db.transaction(store):
        outbox_store.enqueue(
            store,
            idempotency_key="cli:997",
            action="edi_997",
            target_conn_id="edi_default",
            payload={"partner_id": "P-CLI", "document_type": "997", "body": "ISA*~"},
        )
        store.execute(
            "UPDATE orderflow.outbox SET status = 'dead', last_error = 'EDI gateway answered 400' "
            "WHERE idempotency_key = 'cli:997'"
        )
    roles = tmp_path / "roles.yaml"  # settling a side effect is the integration role's
    roles.write_text("users:\n  edi-team: [integration]\n")
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(roles))
    runner = CliRunner()
    listed = runner.invoke(main, ["outbox", "attention"])
    assert listed.exit_code == 0 and "cli:997" in listed.output and "400" in listed.output
    refused = runner.invoke(main, ["outbox", "settle", "cli:997", "--reason", "x"])
    assert refused.exit_code != 0 and "--resend or --mark-sent" in refused.output
    done = runner.invoke(
        main,
        [
            "outbox",
            "settle",
            "cli:997",
            "--resend",
            "--reason",
            "partner fixed",
            "--actor",
            "edi-team",
        ],
    )
    assert done.exit_code == 0, done.output
    assert store.execute(
        "SELECT status FROM orderflow.outbox WHERE idempotency_key = 'cli:997'"
    ).fetchone() == ("pending",)
    again = runner.invoke(
        main, ["outbox", "settle", "cli:997", "--resend", "--reason", "x", "--actor", "edi-team"]
    )
    assert again.exit_code != 0 and "no dead or unknown outbox row" in again.output
    stranger = runner.invoke(
        main, ["outbox", "settle", "cli:997", "--resend", "--reason", "x", "--actor", "someone"]
    )
    assert stranger.exit_code != 0 and "may not replay dead letters" in stranger.output
    status = runner.invoke(main, ["outbox", "status"])
    assert status.exit_code == 0 and "edi_997" in status.output

    resync = runner.invoke(
        main, ["fulfilment", "resync", "carrier", "--from", "0", "--reason", "carrier reset"]
    )
    assert resync.exit_code == 0, resync.output
    assert cursors.get(store, "carrier_tracking") == "0"
    assert store.execute(
        "SELECT count(*) FROM orderflow.audit_log WHERE action = 'feed_resync' "
        "AND object_id = 'carrier_tracking' AND reason = 'carrier reset'"
    ).fetchone() == (1,)
