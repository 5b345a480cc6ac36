"""Reads of recent work are found by index, not by reading every row ever written.

The store only grows (after a year: ~1.5 million orders, ten million order events). A
statement that asks for a day, a customer's last hours or the rows waiting for a person must
have an index that finds them, or its cost follows the history instead of the work. The
tables here are small, so the planner would scan them anyway; with sequential scans priced
out (``enable_seqscan = off``) a plan that still reads a history table from end to end
means that no index can serve the statement. Measured on a synthetic year in
docs/performance.md ("A year of history")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from orderflow import kpis
from orderflow.domain.lifecycle import OrderStatus
from orderflow.store import ai, outbox_report, processing
from orderflow.store import kpis as kpis_repo
from orderflow.store import status as status_repo

pytestmark = [pytest.mark.db]

HISTORY = {
    "order",
    "order_event",
    "order_line",
    "shipment",
    "shipment_line",
    "outbox",
    "fulfilment_event",
    "channel_message",
    "order_fact",
    "order_exception",
    "invoice",
    "kpi_snapshot",
    "ai_decision",
    "audit_log",
}
DAY = datetime(2026, 3, 10, tzinfo=UTC)


def _full_reads(conn, sql: str, params) -> list[str]:
    """The history tables the plan reads whole: a sequential scan, or an index scan with no
    condition over an index of every row (a partial index holds only the rows it is for)."""
    partial = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indpred IS NOT NULL"
        ).fetchall()
    }
    with conn.transaction():
        # Joins by lookup only: on these small tables a merge join walks a whole primary key
        # because it costs nothing here; what is asked is whether every read can be bounded.
        for knob in ("enable_seqscan", "enable_mergejoin", "enable_hashjoin"):
            conn.execute(f"SET LOCAL {knob} = off")
        (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    found: list[str] = []

    def walk(node: dict) -> None:
        table = node.get("Relation Name")
        if node["Node Type"] == "Bitmap Index Scan":
            table = "index " + node["Index Name"]
            if not node.get("Index Cond") and node["Index Name"] not in partial:
                found.append(f"Bitmap Index Scan on {table} without a condition")
        elif table in HISTORY:
            kind = node["Node Type"]
            bounded = (
                node.get("Index Cond")
                or node.get("Index Name") in partial
                or kind == "Bitmap Heap Scan"  # its bitmap index scans are checked below
            )
            if kind == "Seq Scan" or (kind.startswith("Index") and not bounded):
                found.append(f"{kind} on {table}")
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return found


STATEMENTS = {
    "status: the day's counts": (
        status_repo._DAY_COUNTS,
        {"start": DAY, "end": DAY + timedelta(days=1), "statuses": [str(s) for s in OrderStatus]},
    ),
    "status: stamps ahead of the clock": (status_repo._STAMPED_AFTER, {"after": DAY}),
    "status: quarantined fulfilment events": (status_repo._QUARANTINED_EVENTS, None),
    "outbox rows waiting for a person": (
        f"SELECT count(*) FROM orderflow.outbox WHERE {outbox_report.OUTBOX_ATTENTION}",
        None,
    ),
    "validation: a customer's orders of the last hours": (
        f'SELECT {processing.PRIOR_COLUMNS} FROM orderflow."order" WHERE {processing.PRIOR_WHERE}',
        {"cids": ["C1", "C2"], "ids": ["O9"], "pos": ["PO-1"], "earliest": DAY, "hours": 72},
    ),
    "planning: the delay-risk features' store-wide part": (
        ai._DELAY_STATS,
        {"ids": ["O9"], "tdays": 7, "ldays": 90},
    ),
    "KPI snapshots: the recomputed periods dropped": (
        "DELETE FROM orderflow.kpi_snapshot WHERE grain = 'day' AND period_start >= %(since)s",
        {"since": DAY},
    ),
    **{
        f"KPI {k.name} by {dim}": (
            kpis_repo.aggregate_sql(k, dim).replace("%s", "'day'", 1).replace("%s", "%(since)s"),
            {"since": DAY},
        )
        for k in kpis.KPIS
        # the marketplace's callbacks are read whole (few rows: one a marketplace order)
        if k.source != kpis.MARKETPLACE_CALLBACKS
        for dim in ("all", *k.dims)
    },
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_a_read_of_recent_work_does_not_read_the_history(store, name):
    sql, params = STATEMENTS[name]
    assert _full_reads(store, sql, params) == []


def test_the_duplicate_search_reads_a_customers_last_hours_not_all_its_orders(store):
    """Every index the search reads is bounded by the PO numbers or the time window: a
    condition on the customer alone would read every order the customer ever placed. (The
    customers here have a year of orders, analysed, as a live store's would be.)"""
    store.execute(
        'INSERT INTO orderflow."order" (order_id, channel, customer_id, po_number, received_at, '
        "canonical) SELECT 'H' || g, 'edi', 'C' || (g %% 2 + 1), 'PO-H' || g, "
        "%s - g * interval '4 hours', '{}' FROM generate_series(1, 4000) g",
        (DAY,),
    )
    store.execute('ANALYZE orderflow."order"')
    sql, params = STATEMENTS["validation: a customer's orders of the last hours"]
    with store.transaction():
        store.execute("SET LOCAL enable_seqscan = off")
        (plan,) = store.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
    conds: list[str] = []

    def walk(node: dict) -> None:
        if node["Node Type"] in ("Index Scan", "Bitmap Index Scan", "Index Only Scan"):
            conds.append(node.get("Index Cond", ""))
        for child in node.get("Plans", ()):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    assert conds and all("received_at" in c or "po_number" in c for c in conds), conds


def test_the_check_sees_a_statement_that_reads_the_history(store):
    """The check itself can fail: a day's window on a column no index covers is a full read."""
    sql = "SELECT count(*) FROM orderflow.shipment WHERE packed_at >= %(start)s"
    assert _full_reads(store, sql, {"start": DAY}) == ["Seq Scan on shipment"]
