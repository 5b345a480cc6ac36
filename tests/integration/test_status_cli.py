"""``orderflow status``: how the business day stands, against a real store (#18).

One synthetic day (2026-03-10) with orders on every channel, a backorder release, a
re-release, shipments of an old and a current release, exceptions, outbox rows and
quarantined inputs; the counts are checked per channel, across a timezone's day boundary,
against ``order_fact`` (what the KPIs and the dashboard read) and through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from orderflow import kpis, status
from orderflow.cli import main
from orderflow.store import db
from orderflow.store import outbox as outbox_store

pytestmark = [pytest.mark.db]

DAY = date(2026, 3, 10)
BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 on that day


def t(day: int, hhmm: str) -> datetime:
    return datetime(2026, 3, day, int(hhmm[:2]), int(hhmm[3:]), tzinfo=UTC)


def _order(conn, oid, channel, received, *, parent=None, release_version=1):
    conn.execute(
        'INSERT INTO orderflow."order" (order_id, channel, po_number, received_at, canonical, '
        "parent_order_id, release_version) VALUES (%s, %s, %s, %s, '{}', %s, %s)",
        (oid, channel, f"PO-{oid}", received, parent, release_version),
    )


def _events(conn, oid, *moves):
    for to_status, at in moves:
        conn.execute(
            "INSERT INTO orderflow.order_event (order_id, occurred_at, to_status, actor_type, "
            "actor_id) VALUES (%s, %s, %s, 'system', 'test')",
            (oid, at, to_status),
        )


def _shipment(conn, sid, oid, version, picked=None, shipped=None):
    conn.execute(
        "INSERT INTO orderflow.shipment (shipment_id, order_id, dc_id, release_version, "
        "carrier_id, service_code, mode, weight_kg, freight_rate, ship_date, promise_met, "
        "picked_at, shipped_at) VALUES (%s, %s, 'DC-EAST', %s, 'UPSN', 'GND', 'parcel', 1, 1, "
        "'2026-03-10', true, %s, %s)",
        (sid, oid, version, picked, shipped),
    )


def _exception(conn, oid, category, due):
    conn.execute(
        "INSERT INTO orderflow.order_exception (order_id, category, owner_role, reason, "
        "opened_at, sla_due_at) VALUES (%s, %s, 'customer_service', 'test', %s, %s)",
        (oid, category, t(10, "09:02"), due),
    )


def _message(conn, n, channel, *, replayed=False):
    conn.execute(
        "INSERT INTO orderflow.channel_message (channel, partner_id, content_sha256, raw, "
        "ingest_key, outcome, error, details) VALUES (%s, 'P-ST', %s, 'x', %s, 'quarantined', "
        "%s, %s)",
        (
            channel,
            f"sha{n}",
            f"st-{n}",
            Jsonb([{"code": "bad", "message": "bad"}]),
            Jsonb({"replayed_as": 99} if replayed else {}),
        ),
    )


@pytest.fixture(scope="module")
def day(store_url):
    conn = db.connect()
    with db.transaction(conn):
        # csv: received, held, released, picked, shipped and invoiced on the day
        _order(conn, "A", "csv", t(10, "09:00"))
        _events(
            conn,
            "A",
            ("VALIDATED", t(10, "09:01")),
            ("ON_HOLD", t(10, "09:02")),
            ("ON_HOLD", t(10, "09:30")),  # held twice: one held order
            ("RELEASED", t(10, "10:00")),
            ("PICKED", t(10, "12:05")),
            ("SHIPPED", t(10, "15:05")),
            ("INVOICED", t(10, "16:00")),
        )
        _shipment(conn, "A-1", "A", 1, picked=t(10, "12:00"), shipped=t(10, "15:00"))
        # csv: a backorder release of A: released on the day, never "received" by itself
        _order(conn, "A-B1", "csv", t(10, "09:00"), parent="A")
        _events(conn, "A-B1", ("RELEASED", t(10, "14:00")))
        # csv: received two days before, first released the day before, changed and released
        # again on the day (not a release of the day); its current release is picked on the
        # day, its old release's shipment shipped on the day does not count
        _order(conn, "F", "csv", t(8, "10:00"), release_version=2)
        _events(conn, "F", ("RELEASED", t(9, "10:00")), ("RELEASED", t(10, "10:00")))
        _shipment(conn, "F-1", "F", 1, picked=t(10, "08:00"), shipped=t(10, "09:00"))
        _shipment(conn, "F-2", "F", 2, picked=t(10, "18:00"))
        # edi: received 23:30 UTC the day before (00:30 on the day in Berlin), released on the
        # day; one of its two shipments picked: the order is not picked yet
        _order(conn, "B", "edi", t(9, "23:30"))
        _events(conn, "B", ("RELEASED", t(10, "08:00")))
        _shipment(conn, "B-1", "B", 1, picked=t(10, "13:00"))
        _shipment(conn, "B-2", "B", 1)
        # portal: received and cancelled late on the day in UTC (the next day in Berlin)
        _order(conn, "C", "portal", t(10, "23:30"))
        _events(conn, "C", ("CANCELLED", t(10, "23:40")))
        # email: received, held, rejected
        _order(conn, "D", "email", t(10, "11:00"))
        _events(conn, "D", ("ON_HOLD", t(10, "11:05")), ("REJECTED", t(10, "12:00")))
        # the next day: nothing of it counts
        _order(conn, "G", "csv", t(11, "09:00"))
        _events(conn, "G", ("RELEASED", t(11, "10:00")))

        _exception(conn, "A", "credit_hold", t(10, "10:00"))  # long breached
        _exception(conn, "D", "short_stock", datetime(2999, 1, 1, tzinfo=UTC))
        _exception(conn, "B", "short_stock", datetime(2999, 1, 1, tzinfo=UTC))

        for key, state, follow in (
            ("st:dead", "dead", None),
            ("st:unknown", "unknown", None),
            ("st:followup", "sent", "dead"),
            ("st:pending", "pending", None),
        ):
            outbox_store.enqueue(
                conn,
                idempotency_key=key,
                action="edi_997",
                target_conn_id="edi_default",
                payload={"partner_id": "P-ST"},
            )
            conn.execute(
                "UPDATE orderflow.outbox SET status = %s, followup_status = %s "
                "WHERE idempotency_key = %s",
                (state, follow, key),
            )
        _message(conn, 1, "csv")
        _message(conn, 2, "csv")
        _message(conn, 3, "csv", replayed=True)
        _message(conn, 4, "edi")
        conn.execute(
            "INSERT INTO orderflow.fulfilment_event (source, event_key, kind, occurred_at, "
            "payload, status, error) VALUES ('wms', 'st-1', 'picked', now(), '{}', "
            "'quarantined', 'unknown release')"
        )
    conn.close()
    return DAY


ZERO = dict.fromkeys(status.MEASURES, 0)


def test_the_days_orders_per_channel(store, day):
    s = status.day_status(store, day, tz=UTC)
    assert (s.start, s.end) == (t(10, "00:00"), t(11, "00:00"))
    assert s.by_channel == {
        "csv": {
            **ZERO,
            "received": 1,
            "held": 1,
            "released": 2,
            "picked": 2,
            "shipped": 1,
            "invoiced": 1,
        },
        "edi": {**ZERO, "released": 1},
        "portal": {**ZERO, "received": 1, "cancelled": 1},
        "email": {**ZERO, "received": 1, "held": 1, "rejected": 1},
        "marketplace": ZERO,  # every channel is listed, a quiet one with zeros
    }
    assert s.totals == {
        "received": 3,
        "held": 2,
        "released": 3,
        "picked": 2,
        "shipped": 1,
        "invoiced": 1,
        "cancelled": 1,
        "rejected": 1,
    }
    assert s.open_exceptions == {"short_stock": 2, "credit_hold": 1}
    assert s.sla == {"breached": 1, "ok": 2}
    assert s.outbox_attention == {"dead": 1, "unknown": 1, "followup_dead": 1}
    assert s.quarantine == {"messages": {"csv": 2, "edi": 1}, "fulfilment_events": 1}


def test_the_business_day_is_the_timezones(store, day):
    s = status.day_status(store, day, tz=BERLIN)
    assert (s.start, s.end) == (t(9, "23:00"), t(10, "23:00"))
    assert s.by_channel["edi"]["received"] == 1  # 00:30 in Berlin
    assert s.by_channel["portal"] == ZERO  # 00:30 the next day in Berlin
    nxt = status.day_status(store, date(2026, 3, 11), tz=BERLIN)
    assert nxt.by_channel["portal"]["received"] == nxt.by_channel["portal"]["cancelled"] == 1


def test_the_numbers_are_the_dashboards(store, day):
    """The day's milestones are order_fact's (the KPIs' and the dashboard's relation, once the
    KPI DAG refreshed it), and the open exceptions are the dashboard's desk counts."""
    from orderflow.intake import replay
    from orderflow.ui import pages

    kpis.refresh_facts(store)
    start, end = t(10, "00:00"), t(11, "00:00")
    fact = {
        ch: dict(
            zip(("received", "released", "picked", "shipped", "invoiced"), counts, strict=True)
        )
        for ch, *counts in store.execute(
            """
            SELECT f.channel,
                   count(*) FILTER (WHERE o.parent_order_id IS NULL
                                      AND f.received_at >= %(s)s AND f.received_at < %(e)s),
                   count(*) FILTER (WHERE f.released_at >= %(s)s AND f.released_at < %(e)s),
                   count(*) FILTER (WHERE f.picked_at >= %(s)s AND f.picked_at < %(e)s),
                   count(*) FILTER (WHERE f.shipped_at >= %(s)s AND f.shipped_at < %(e)s),
                   count(*) FILTER (WHERE f.invoiced_at >= %(s)s AND f.invoiced_at < %(e)s)
              FROM orderflow.order_fact f JOIN orderflow."order" o USING (order_id)
             GROUP BY 1
            """,
            {"s": start, "e": end},
        )
    }
    s = status.day_status(store, day, tz=UTC)
    for ch, counts in fact.items():
        assert {k: s.by_channel[ch][k] for k in counts} == counts, ch
    assert pages.dashboard(store)["desk_counts"] == s.sla
    assert sum(s.quarantine["messages"].values()) == len(replay.quarantined(store))


def test_the_command_prints_a_table_with_a_header(store, day):
    out = CliRunner().invoke(main, ["status", "--date", "2026-03-10", "--tz", "UTC"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("OrderFlow status for 2026-03-10, business day in UTC")
    assert lines[2].split() == ["Orders", *status.MEASURES]
    assert lines[3].split() == ["edi", "0", "0", "1", "0", "0", "0", "0", "0"]
    assert lines[4].split() == ["csv", "1", "1", "2", "2", "1", "1", "0", "0"]
    assert lines[7].split() == ["marketplace", "0", "0", "0", "0", "0", "0", "0", "0"]
    assert lines[8].split() == ["total", "3", "2", "3", "2", "1", "1", "1", "1"]
    text = out.output
    assert "Open exceptions (now)            3   1 breached, 0 nearing SLA, 2 within SLA" in text
    assert "  short_stock                    2\n  credit_hold                    1\n" in text
    assert "  outbox rows                    3   1 dead, 1 unknown, 1 dead follow-ups" in text
    assert "  quarantined messages           3   csv 2, edi 1 (orderflow intake" in text
    assert "  quarantined events             1   (orderflow fulfilment quarantined)" in text
    attention = CliRunner().invoke(main, ["outbox", "attention"])
    assert len(attention.output.splitlines()) == 3  # the rows the status counts


def test_json_and_the_configured_timezone(store, day, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TIMEZONE", "Europe/Berlin")
    out = CliRunner().invoke(main, ["status", "--date", "2026-03-10", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["timezone"] == "Europe/Berlin"
    assert doc["start"] == "2026-03-09T23:00:00+00:00" and doc["day"] == "2026-03-10"
    assert doc["by_channel"]["edi"]["received"] == 1
    assert doc["totals"]["received"] == 3  # A, B, D (C is the next day in Berlin)
    assert doc["outbox_attention"]["dead"] == 1


def test_today_by_default_and_a_bad_timezone_is_refused(store, day):
    out = CliRunner().invoke(main, ["status", "--tz", "UTC"])
    assert out.exit_code == 0, out.output
    assert f"OrderFlow status for {datetime.now(UTC).date().isoformat()}" in out.output
    bad = CliRunner().invoke(main, ["status", "--tz", "Mars/Olympus"])
    assert bad.exit_code != 0 and "unknown timezone" in bad.output


def test_intake_reconcile_has_a_header(store, day):
    out = CliRunner().invoke(main, ["intake", "reconcile"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["channel", "outcome", "messages"]
    assert lines[1].split() == ["csv", "quarantined", "3"]


def test_picks_stamped_ahead_of_this_clock_are_pointed_out(store, day):
    """A WMS clock ahead of ours (the demo sandbox's runs a day in minutes) puts picks on later
    dates than the orders' other milestones: the status says how many and which date to ask."""
    now = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    none = status.day_status(store, tz=UTC, now=now)
    assert none.ahead == {"stamps": 0, "first_day": None}
    assert "Ahead of this clock" not in status.render(none)
    stamps = {
        "AHEAD": now + timedelta(days=2),  # a later date: pointed out
        "TODAY": now + timedelta(hours=3),  # ahead, but today: in today's table
        "SKEW": now + timedelta(minutes=20),  # minutes of skew are not worth a word
    }
    for name, picked in stamps.items():
        _order(store, f"Z-{name}", "edi", now)
        _shipment(store, f"S-{name}", f"Z-{name}", 1, picked=picked)
    s = status.day_status(store, tz=UTC, now=now)
    assert s.ahead == {"stamps": 1, "first_day": "2026-06-03"}
    assert s.totals["picked"] == 2  # TODAY and SKEW
    assert "orderflow status --date 2026-06-03" in status.render(s)
    assert status.day_status(store, date(2026, 6, 3), tz=UTC, now=now).totals["picked"] == 1
    # the command, on the real clock
    real = datetime.now(UTC) + timedelta(days=2)
    _order(store, "Z-REAL", "edi", datetime.now(UTC))
    _shipment(store, "S-REAL", "Z-REAL", 1, picked=real)
    doc = json.loads(CliRunner().invoke(main, ["status", "--tz", "UTC", "--json"]).output)
    assert doc["ahead"] == {"stamps": 1, "first_day": real.date().isoformat()}
