"""Every KPI, defined once: the relation it is computed from, the time that places a row in a
period, the population it counts and the value it takes — so the snapshot, the dashboard
and the drill-down to the orders behind a number all use the same definition.

A KPI's population is every row that reached the point the KPI judges, never only the rows
that came out well: the first-pass release rate is over every order that reached a processing
decision (released, held or rejected: ``order_fact.decided_at``), the touchless rate over
every order that reached its outcome (invoiced, rejected or cancelled: ``closed_at``), the
perfect order rate over every delivery with an outcome (delivered, or a carrier exception:
``delivery_outcome_at``). Cycle times are over the orders that reached the milestone they
time; per-order averages over every order received; exception, freight, invoice and
integration KPIs over every row of their table in the period; the marketplace's callback KPIs
over every callback whose outcome is known (received, or its limit passed). SLA attainment is over every
exception whose SLA outcome is known — resolved (in time or late), or still open past its
``sla_due_at`` — placed at the time it became known, not over the resolved ones only (an
exception nobody resolves would otherwise never count against it).

Per-order KPIs read ``orderflow.order_fact`` (one row per order, refreshed by the KPI DAG);
exception, freight and integration KPIs read their own tables. Snapshots go to
``orderflow.kpi_snapshot`` per hour and per day, for ``all`` and per dimension value
(``channel=edi``, ``category=short_stock`` …).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderflow.store import kpis as repo

if TYPE_CHECKING:
    import psycopg


def _minutes(a: str, b: str) -> str:
    return f"extract(epoch FROM {b} - {a}) / 60"


def _pct(q: float, expr: str) -> str:
    return f"percentile_cont({q}) WITHIN GROUP (ORDER BY {expr})"


@dataclass(frozen=True)
class Kpi:
    name: str
    title: str
    unit: str  # ratio | minutes | count | usd | touches
    source: str  # relation (a table, view or subquery) with the columns below
    anchor: str  # the time that places a row in a period
    population: str  # which rows count (the denominator)
    value: str  # aggregate over the population
    numerator: str | None = None  # for rates: which rows of the population count as hits
    dims: tuple[str, ...] = ("channel",)  # columns of ``source`` to break down by
    order_id: str = "order_id"  # how a row names its order (drill-down)
    lower_is_better: bool = False

    def rate(self) -> bool:
        return self.numerator is not None


FACT = "orderflow.order_fact"
EXCEPTIONS = "orderflow.order_exception"
SHIPMENTS = "orderflow.shipment"
OUTBOX = (
    "(SELECT o.*, coalesce(o.payload->>'partner_id', o.target_conn_id) AS partner, "
    "o.action AS endpoint, (o.attempts > 1 OR o.status = 'dead') AS failed "
    "FROM orderflow.outbox o)"
)
#: Exceptions whose SLA outcome is known: resolved (in time or late) or past due while open.
#: ``sla_judged_at`` is when it became known — resolution if in time, else the due time.
EXCEPTION_SLA = (
    "(SELECT e.*, (e.resolved_at IS NOT NULL AND e.resolved_at <= e.sla_due_at) AS within_sla, "
    "CASE WHEN e.resolved_at IS NOT NULL AND e.resolved_at <= e.sla_due_at THEN e.resolved_at "
    "ELSE e.sla_due_at END AS sla_judged_at "
    "FROM orderflow.order_exception e)"
)
INVOICES = (
    "(SELECT i.*, EXISTS (SELECT 1 FROM orderflow.order_exception e "
    "WHERE e.order_id = i.order_id AND e.category = 'quantity_mismatch' "
    "AND e.details->>'shipment_id' = i.shipment_id) AS disputed, o.channel "
    'FROM orderflow.invoice i JOIN orderflow."order" o USING (order_id))'
)

#: The marketplace's callbacks whose limit applies: one row per marketplace order and kind
#: (acknowledgement, shipment — not for an order cancelled or rejected —, the answer to a
#: cancellation request), with its limit and the marketplace's receipt time and verdict.
#: ``judged_at``: when the outcome became known — received in time: its receipt; otherwise
#: its limit (a callback never sent counts against the limit once it has passed).
MARKETPLACE_CALLBACKS = (
    "(SELECT m.order_id, m.marketplace_id AS marketplace, c.kind, c.due_at, c.received_at, "
    "(c.received_at IS NOT NULL AND NOT coalesce(c.late, false)) AS on_time, "
    "CASE WHEN c.received_at IS NOT NULL AND NOT coalesce(c.late, false) THEN c.received_at "
    "ELSE c.due_at END AS judged_at, 'marketplace'::text AS channel "
    "FROM orderflow.marketplace_order m "
    'LEFT JOIN orderflow."order" o USING (order_id) '
    "CROSS JOIN LATERAL (VALUES "
    "('acknowledgement', m.acknowledge_by, m.acknowledged_at, m.ack_late), "
    "('shipment', m.ship_by, m.shipment_confirmed_at, m.ship_late), "
    "('cancellation', m.cancel_respond_by, m.cancel_answered_at, m.cancel_late)"
    ") AS c(kind, due_at, received_at, late) "
    "WHERE c.due_at IS NOT NULL AND NOT (c.kind = 'shipment' AND c.received_at IS NULL "
    "AND o.status IN ('CANCELLED', 'REJECTED')))"
)

KPIS: tuple[Kpi, ...] = (
    *(
        Kpi(
            f"cycle_{to}_p{int(q * 100)}",
            f"Received → {to}, p{int(q * 100)}",
            "minutes",
            FACT,
            f"{to}_at",
            f"{to}_at IS NOT NULL",
            _pct(q, _minutes("received_at", f"{to}_at")),
            lower_is_better=True,
        )
        for to in ("released", "shipped", "invoiced")
        for q in (0.5, 0.9)
    ),
    # Rates count every order that reached the point they judge, hits and misses alike:
    # a population of the hits only (e.g. released orders) always reads 100 %.
    Kpi(
        "first_pass_release_rate",
        "First-pass release rate (of the orders decided: released with no human touch)",
        "ratio",
        FACT,
        "decided_at",  # first processing decision: released, held or rejected
        "decided_at IS NOT NULL",
        "avg(first_pass::int)",
        numerator="first_pass",
    ),
    Kpi(
        "touchless_rate",
        "Touchless rate (of the orders closed — invoiced, rejected, cancelled — never "
        "touched by a person)",
        "ratio",
        FACT,
        "closed_at",
        "closed_at IS NOT NULL",
        "avg((human_touches = 0)::int)",
        numerator="human_touches = 0",
    ),
    Kpi(
        "release_to_pick_p50",
        "Release → pick, p50",
        "minutes",
        FACT,
        "picked_at",
        "picked_at IS NOT NULL AND wms_released_at IS NOT NULL",
        _pct(0.5, _minutes("wms_released_at", "picked_at")),
        lower_is_better=True,
    ),
    Kpi(
        "perfect_order_rate",
        "Perfect order rate (of the deliveries with an outcome — delivered or a carrier "
        "exception: on time, complete, undamaged, documents and invoice right)",
        "ratio",
        FACT,
        "delivery_outcome_at",
        "delivery_outcome_at IS NOT NULL",
        "avg(perfect::int)",
        numerator="perfect",
    ),
    Kpi(
        "manual_touches_per_order",
        "Manual touches per order",
        "touches",
        FACT,
        "received_at",
        "true",
        "avg(human_touches)",
        lower_is_better=True,
    ),
    Kpi(
        "exception_volume",
        "Exceptions opened",
        "count",
        EXCEPTIONS,
        "opened_at",
        "true",
        "count(*)",
        dims=("category",),
        lower_is_better=True,
    ),
    Kpi(
        "exception_time_to_resolve_p50",
        "Exception time to resolve, p50",
        "minutes",
        EXCEPTIONS,
        "resolved_at",
        "resolved_at IS NOT NULL",
        _pct(0.5, _minutes("opened_at", "resolved_at")),
        dims=("category",),
        lower_is_better=True,
    ),
    Kpi(
        "sla_attainment",
        "SLA attainment (of the exceptions whose SLA outcome is known — resolved, or past due "
        "while open: resolved within their SLA)",
        "ratio",
        EXCEPTION_SLA,
        "sla_judged_at",  # resolved in time: when resolved; otherwise when the SLA ran out
        "sla_judged_at <= now()",
        "avg(within_sla::int)",
        numerator="within_sla",
        dims=("category", "owner_role"),
    ),
    Kpi(
        "stalled_orders",
        "Orders stalled in a stage past its limit",
        "count",
        EXCEPTIONS,
        "opened_at",
        "category = 'stalled'",
        "count(*)",
        dims=("stage",),
        lower_is_better=True,
    ),
    Kpi(
        "expedited_freight_cost",
        "Expedited freight cost",
        "usd",
        SHIPMENTS,
        "created_at",
        "expedite_cost > 0",
        "sum(expedite_cost)",
        dims=("expedite_cause",),
        lower_is_better=True,
    ),
    Kpi(
        "invoice_dispute_rate",
        "Invoices with a quantity dispute",
        "ratio",
        INVOICES,
        "created_at",
        "true",
        "avg(disputed::int)",
        numerator="disputed",
        dims=("channel",),
        lower_is_better=True,
    ),
    Kpi(
        "integration_failure_rate",
        "Integration calls that failed at least once",
        "ratio",
        OUTBOX,
        "created_at",
        "true",
        "avg(failed::int)",
        numerator="failed",
        dims=("partner", "endpoint"),
        lower_is_better=True,
    ),
    # The marketplace channel's own: its callbacks within the limits it sets.
    Kpi(
        "marketplace_callback_on_time_rate",
        "Marketplace callbacks within the marketplace's limit (of the callbacks whose outcome "
        "is known — received, or past the limit: received by the marketplace in time)",
        "ratio",
        MARKETPLACE_CALLBACKS,
        "judged_at",
        "(received_at IS NOT NULL OR due_at <= now())",
        "avg(on_time::int)",
        numerator="on_time",
        dims=("kind", "marketplace"),
    ),
    Kpi(
        "marketplace_callbacks_late",
        "Marketplace callbacks late or missing past the marketplace's limit",
        "count",
        MARKETPLACE_CALLBACKS,
        "judged_at",
        "NOT on_time AND (received_at IS NOT NULL OR due_at <= now())",
        "count(*)",
        dims=("kind", "marketplace"),
        lower_is_better=True,
    ),
)
BY_NAME = {k.name: k for k in KPIS}


def refresh_facts(conn: psycopg.Connection) -> None:
    """Recompute ``order_fact`` (readers keep the previous rows while it runs)."""
    repo.refresh_facts(conn)


def compute(
    conn: psycopg.Connection, kpi: Kpi, grain: str, since: datetime
) -> list[tuple[datetime, str, Any, Any, Any]]:
    """(period_start, dimension, value, numerator, denominator) per period since ``since``."""
    return repo.aggregate(conn, kpi, grain, since)


def publish(
    conn: psycopg.Connection, *, now: datetime, hours: int = 48, days: int = 35
) -> dict[str, int]:
    """Recompute the snapshots of the recent periods (hourly for ``hours``, daily for
    ``days``) for every KPI; older periods are kept as they were. Returns rows per grain."""
    from orderflow.store import db

    out = {}
    with db.transaction(conn):
        for grain, since in (
            ("hour", now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)),
            ("day", now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)),
        ):
            repo.delete_snapshots(conn, grain, since)
            rows = [
                (k.name, grain, period, dim, value, numerator, denominator)
                for k in KPIS
                for period, dim, value, numerator, denominator in compute(conn, k, grain, since)
            ]
            repo.insert_snapshots(conn, rows)
            out[grain] = len(rows)
    return out


def drill(
    conn: psycopg.Connection,
    kpi: Kpi,
    start: datetime,
    end: datetime,
    *,
    dimension: str = "all",
    hits: bool | None = None,
    limit: int = 500,
) -> list[str]:
    """The orders behind a KPI value: rows of its population in [start, end) (of one
    dimension value), only the hits (``True``) or misses (``False``) of a rate."""
    return repo.drill(conn, kpi, start, end, dimension=dimension, hits=hits, limit=limit)
