"""KPI repository: ``order_fact`` (refresh, cycle times), the KPI aggregates over a KPI's
relation, the drill-down to its orders and ``kpi_snapshot``.

A KPI is given as its SQL parts (``orderflow.kpis.Kpi``: relation, anchor time, population,
value, numerator, dimensions); this module only runs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg


class KpiSql(Protocol):
    """The SQL parts of a KPI (``orderflow.kpis.Kpi``)."""

    name: str
    source: str
    anchor: str
    population: str
    value: str
    numerator: str | None
    dims: tuple[str, ...]
    order_id: str


def refresh_facts(conn: psycopg.Connection) -> None:
    """Recompute ``order_fact`` (readers keep the previous rows while it runs)."""
    conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY orderflow.order_fact")


def aggregate_sql(kpi: KpiSql, dim: str) -> str:
    """The statement of :func:`aggregate` for one dimension (``all`` or a column of the
    KPI's source); parameters: the grain, then ``since``."""
    num = f"count(*) FILTER (WHERE {kpi.numerator})" if kpi.numerator else "NULL::bigint"
    label = "'all'" if dim == "all" else f"'{dim}=' || coalesce({dim}::text, 'none')"
    return f"""
            SELECT date_trunc(%s, {kpi.anchor}) AS period, {label} AS dimension,
                   {kpi.value} AS value, {num} AS numerator, count(*) AS denominator
              FROM {kpi.source} src
             WHERE {kpi.anchor} >= %s AND ({kpi.population})
             GROUP BY 1, 2
            """


def aggregate(
    conn: psycopg.Connection, kpi: KpiSql, grain: str, since: datetime
) -> list[tuple[datetime, str, Any, Any, Any]]:
    """(period_start, dimension, value, numerator, denominator) per ``grain`` period since
    ``since``, for ``all`` and per value of each dimension."""
    assert grain in ("hour", "day")
    rows = []
    for dim in ("all", *kpi.dims):
        rows += conn.execute(aggregate_sql(kpi, dim), (grain, since)).fetchall()
    return rows


def delete_snapshots(conn: psycopg.Connection, grain: str, since: datetime) -> None:
    """Drop the ``grain`` snapshots of the periods from ``since`` on (to be recomputed)."""
    conn.execute(
        "DELETE FROM orderflow.kpi_snapshot WHERE grain = %s AND period_start >= %s",
        (grain, since),
    )


def insert_snapshots(conn: psycopg.Connection, rows: Sequence[tuple]) -> None:
    """Insert snapshot rows (kpi, grain, period_start, dimension, value, numerator,
    denominator)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.kpi_snapshot (kpi, grain, period_start, dimension, "
            "value, numerator, denominator) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def drill(
    conn: psycopg.Connection,
    kpi: KpiSql,
    start: datetime,
    end: datetime,
    *,
    dimension: str = "all",
    hits: bool | None = None,
    limit: int = 500,
) -> list[str]:
    """The orders behind a KPI value: rows of its population in [start, end) (of one
    dimension value), only the hits (``True``) or misses (``False``) of a rate."""
    where = [f"{kpi.anchor} >= %s", f"{kpi.anchor} < %s", f"({kpi.population})"]
    params: list[Any] = [start, end]
    if dimension != "all":
        col, _, val = dimension.partition("=")
        if col not in kpi.dims:
            raise ValueError(f"{kpi.name} has no dimension {col!r}")
        where.append(f"coalesce({col}::text, 'none') = %s")
        params.append(val)
    if hits is not None and kpi.numerator:
        where.append(f"({kpi.numerator})" if hits else f"NOT ({kpi.numerator})")
    rows = conn.execute(
        f"SELECT DISTINCT {kpi.order_id} FROM {kpi.source} src WHERE {' AND '.join(where)} "
        f"AND {kpi.order_id} IS NOT NULL ORDER BY 1 LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [r[0] for r in rows]


def daily_snapshots(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Every daily snapshot from ``since`` on, oldest first."""
    cur = conn.execute(
        "SELECT kpi, period_start, dimension, value, numerator, denominator, computed_at "
        "FROM orderflow.kpi_snapshot WHERE grain = 'day' AND period_start >= %s "
        "ORDER BY period_start",
        (since,),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def release_minutes(conn: psycopg.Connection, since: datetime) -> list[Any]:
    """Received → released minutes of every order released since ``since``."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT extract(epoch FROM released_at - received_at) / 60 FROM orderflow.order_fact "
            "WHERE released_at >= %s",
            (since,),
        )
    ]


def released_within(
    conn: psycopg.Connection, order_ids: list[str], lo: float, hi: float | None
) -> list[str]:
    """Those of ``order_ids`` whose received → released minutes fall in [lo, hi)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT order_id FROM orderflow.order_fact WHERE order_id = ANY(%s) "
            "AND extract(epoch FROM released_at - received_at) / 60 >= %s "
            "AND (%s::float8 IS NULL OR extract(epoch FROM released_at - received_at) / 60 < %s)",
            (order_ids, lo, hi, hi),
        )
    ]
