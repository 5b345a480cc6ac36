"""Exception desk repository: the open exceptions as the desk sees them
(``orderflow.exception_desk``), their SLA timers, the desk's actions on ``order_exception``
and who works each desk item (claims, kept in the audit log)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

#: How work items (one per order, or per entity for exceptions without one) are ordered.
SORTS = {
    "sla": "sla_due_at, item_key",
    "age": "opened_at, item_key",
    "category": "categories[1], sla_due_at, item_key",
    "severity": "severity_rank, sla_due_at, item_key",
    "size": "n DESC, sla_due_at, item_key",
}
SEVERITIES = "ARRAY['critical','high','medium','low']"
#: The columns an SLA timer stamps once.
SLA_STAMPS = ("notified_at", "escalated_at")


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def item_key_sql(alias: str = "") -> str:
    """The desk item an exception belongs to: its order, else the entity it is about."""
    p = f"{alias}." if alias else ""
    return (
        f"coalesce({p}order_id, {p}entity_type || ':' || {p}entity_id, "
        f"'exception:' || {p}exception_id)"
    )


def filters(category: str | None, role: str | None, sla: str | None) -> tuple[list[str], list[Any]]:
    """The desk's WHERE conditions (category, owner or escalation role, SLA state)."""
    where, params = ["true"], []
    if category:
        where.append("category = %s")
        params.append(category)
    if role:
        where.append("(owner_role = %s OR escalation_role = %s)")
        params += [role, role]
    if sla:
        where.append("sla_state = %s")
        params.append(sla)
    return where, params


# --------------------------------------------------------------------------- SLA timers
def sla_timers_due(conn: psycopg.Connection) -> list[tuple]:
    """Open exceptions whose owner was not yet told they near (or passed) their SLA, or that
    breached it and were not escalated, most urgent first."""
    return conn.execute(
        """
        SELECT d.exception_id, d.order_id, d.category, d.owner_role, d.escalation_role,
               d.reason, d.sla_due_at, d.sla_state, d.notified_at, d.escalated_at,
               d.po_number, d.customer_id, d.entity_type, d.entity_id
          FROM orderflow.exception_desk d
         WHERE (d.sla_state IN ('nearing', 'breached') AND d.notified_at IS NULL)
            OR (d.sla_state = 'breached' AND d.escalated_at IS NULL)
         ORDER BY d.sla_due_at
        """
    ).fetchall()


def stamp_sla(conn: psycopg.Connection, exception_id: int, column: str) -> None:
    """Record that a timer fired (``notified_at`` or ``escalated_at`` = now)."""
    if column not in SLA_STAMPS:
        raise ValueError(f"not an SLA timer column: {column!r}")
    conn.execute(
        f"UPDATE orderflow.order_exception SET {column} = now() WHERE exception_id = %s",
        (exception_id,),
    )


# --------------------------------------------------------------------------- retries
def lock_transient_holds(conn: psycopg.Connection, limit: int) -> list[tuple]:
    """Open exceptions of a transient category on held, unclaimed orders, oldest first, with
    how often the order was retried automatically for that category; exceptions and orders
    locked (skipping the locked ones). (exception_id, order_id, stage, status, retries)."""
    return conn.execute(
        """
        SELECT e.exception_id, e.order_id, e.stage, o.status,
               (SELECT count(*) FROM orderflow.order_exception p
                 WHERE p.order_id = e.order_id AND p.category = e.category
                   AND p.resolution = 'auto_resolved') AS retries
          FROM orderflow.order_exception e
          JOIN orderflow.exception_category c USING (category)
          JOIN orderflow."order" o USING (order_id)
         WHERE e.status = 'open' AND c.transient AND o.status = 'ON_HOLD'
           AND o.claimed_by_run IS NULL
         ORDER BY e.opened_at
         LIMIT %s
           FOR UPDATE OF e, o SKIP LOCKED
        """,
        (limit,),
    ).fetchall()


def count_other_open(conn: psycopg.Connection, order_id: str, exception_id: int) -> int:
    """Open exceptions of the order other than ``exception_id``."""
    return conn.execute(
        "SELECT count(*) FROM orderflow.order_exception WHERE order_id = %s "
        "AND status = 'open' AND exception_id <> %s",
        (order_id, exception_id),
    ).fetchone()[0]


def other_open_categories(conn: psycopg.Connection, order_id: str, exception_id: int) -> list[str]:
    """The categories of the order's open exceptions other than ``exception_id``."""
    return [
        c
        for (c,) in conn.execute(
            "SELECT category FROM orderflow.order_exception WHERE order_id = %s "
            "AND status = 'open' AND exception_id <> %s",
            (order_id, exception_id),
        )
    ]


def resolve_auto_retried(
    conn: psycopg.Connection, exception_id: int, actor: str, note: str
) -> None:
    """Resolve an exception ``auto_resolved`` by an automatic retry (counted)."""
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', "
        "resolution = 'auto_resolved', resolved_by = %s, resolved_at = now(), "
        "retry_count = retry_count + 1, resolution_note = %s WHERE exception_id = %s",
        (actor, note, exception_id),
    )


# --------------------------------------------------------------------------- desk actions
def lock_exception(conn: psycopg.Connection, exception_id: int) -> tuple | None:
    """(order_id, category, status, owner_role, stage) of an exception, locked; None when it
    does not exist."""
    return conn.execute(
        "SELECT order_id, category, status, owner_role, stage FROM orderflow.order_exception "
        "WHERE exception_id = %s FOR UPDATE",
        (exception_id,),
    ).fetchone()


def resolve_retried(conn: psycopg.Connection, exception_id: int, actor: str, note: str) -> None:
    """Resolve an exception ``fixed`` by a retry a person asked for (counted)."""
    conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = 'fixed', "
        "resolved_by = %s, resolved_at = now(), retry_count = retry_count + 1, "
        "resolution_note = %s WHERE exception_id = %s",
        (actor, note, exception_id),
    )


def exception_for_resolve(conn: psycopg.Connection, exception_id: int) -> tuple | None:
    """(order_id, owner_role, escalation_role, status, category, order status) of an
    exception; None when it does not exist."""
    return conn.execute(
        "SELECT e.order_id, e.owner_role, e.escalation_role, e.status, e.category, o.status "
        'FROM orderflow.order_exception e LEFT JOIN orderflow."order" o USING (order_id) '
        "WHERE e.exception_id = %s",
        (exception_id,),
    ).fetchone()


def exception_state(conn: psycopg.Connection, exception_id: int) -> tuple | None:
    """(status, resolution) of an exception."""
    return conn.execute(
        "SELECT status, resolution FROM orderflow.order_exception WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()


def exception_exists(conn: psycopg.Connection, exception_id: int) -> bool:
    """Whether exception ``exception_id`` exists."""
    return (
        conn.execute(
            "SELECT 1 FROM orderflow.order_exception WHERE exception_id = %s", (exception_id,)
        ).fetchone()
        is not None
    )


# --------------------------------------------------------------------------- claims
def claims(
    conn: psycopg.Connection, keys: list[str], claim_object: str
) -> list[tuple[str, str, str, Any]]:
    """(item_key, assignee, actor, occurred_at) of the desk items in ``keys`` someone works:
    the latest claim row of each since its oldest open exception opened."""
    return conn.execute(
        f"""
        WITH items AS (
            SELECT {item_key_sql()} AS item_key, min(opened_at) AS first_opened
              FROM orderflow.order_exception
             WHERE status = 'open' AND {item_key_sql()} = ANY(%s)
             GROUP BY 1)
        SELECT i.item_key, c.assignee, c.actor, c.occurred_at
          FROM items i
          JOIN LATERAL (
               SELECT a.after->>'assignee' AS assignee, a.actor, a.occurred_at
                 FROM orderflow.audit_log a
                WHERE a.object_type = %s AND a.object_id = i.item_key
                  AND a.occurred_at >= i.first_opened
                ORDER BY a.audit_id DESC LIMIT 1) c ON true
         WHERE c.assignee IS NOT NULL
        """,
        (list(keys), claim_object),
    ).fetchall()


def item_roles(conn: psycopg.Connection, items: list[str]) -> list[tuple[str, str, str | None]]:
    """(item_key, owner_role, escalation_role) of every open exception of ``items``."""
    return conn.execute(
        f"SELECT {item_key_sql()}, owner_role, escalation_role "
        f"FROM orderflow.exception_desk WHERE {item_key_sql()} = ANY(%s)",
        (list(items),),
    ).fetchall()


# --------------------------------------------------------------------------- the desk page
def work_items(
    conn: psycopg.Connection,
    *,
    where: list[str],
    params: list[Any],
    claim_object: str,
    claimed: str | None,
    user: str | None,
    sort: str,
    page_size: int,
    offset: int,
) -> list[dict[str, Any]]:
    """One page of work items (exceptions matching ``where`` grouped per item) with the
    current claim of each and ``total_items`` (the whole selection) on every row.

    ``claimed``: ``mine`` (claimed by or assigned to ``user``), ``unclaimed``, ``claimed``."""
    key = item_key_sql()
    claim_where, claim_params = "true", []
    if claimed == "mine":
        claim_where, claim_params = "c.assignee = %s", [user or ""]
    elif claimed == "unclaimed":
        claim_where = "c.assignee IS NULL"
    elif claimed == "claimed":
        claim_where = "c.assignee IS NOT NULL"
    order = SORTS.get(sort, SORTS["sla"])
    return _rows(
        conn.execute(
            f"""
            WITH f AS (SELECT d.*, {key} AS item_key FROM orderflow.exception_desk d
                        WHERE {" AND ".join(where)}),
                 g AS (SELECT item_key, min(order_id) AS order_id,
                              min(entity_type) AS entity_type, min(entity_id) AS entity_id,
                              min(sla_due_at) AS sla_due_at, min(opened_at) AS opened_at,
                              min(array_position({SEVERITIES}, severity)) AS severity_rank,
                              count(*) AS n, array_agg(DISTINCT category) AS categories,
                              min(po_number) AS po_number, min(customer_id) AS customer_id,
                              min(order_status) AS order_status, min(channel) AS channel,
                              min(order_total) AS order_total
                         FROM f GROUP BY item_key),
                 first AS (SELECT {key} AS item_key, min(opened_at) AS first_opened
                             FROM orderflow.exception_desk GROUP BY 1)
            SELECT g.*, ({SEVERITIES})[g.severity_rank] AS severity, c.assignee,
                   c.claimed_by, c.claimed_at, count(*) OVER () AS total_items
              FROM g JOIN first USING (item_key)
              LEFT JOIN LATERAL (
                   SELECT a.after->>'assignee' AS assignee, a.actor AS claimed_by,
                          a.occurred_at AS claimed_at
                     FROM orderflow.audit_log a
                    WHERE a.object_type = %s AND a.object_id = g.item_key
                      AND a.occurred_at >= first.first_opened
                    ORDER BY a.audit_id DESC LIMIT 1) c ON true
             WHERE {claim_where}
             ORDER BY {order}
             LIMIT %s OFFSET %s
            """,
            (*params, claim_object, *claim_params, page_size, offset),
        )
    )


def count_items(conn: psycopg.Connection, where: list[str], params: list[Any]) -> int:
    """Work items matching ``where``."""
    key = item_key_sql()
    return conn.execute(
        f"SELECT count(DISTINCT {key}) FROM orderflow.exception_desk WHERE {' AND '.join(where)}",
        params,
    ).fetchone()[0]


def item_exceptions(
    conn: psycopg.Connection, where: list[str], params: list[Any], keys: list[str]
) -> list[dict[str, Any]]:
    """The desk rows matching ``where`` of the items ``keys``, most urgent first."""
    key = item_key_sql()
    return _rows(
        conn.execute(
            f"SELECT d.*, {key} AS item_key FROM orderflow.exception_desk d "
            f"WHERE {' AND '.join(where)} AND {key} = ANY(%s) "
            "ORDER BY sla_due_at, exception_id",
            (*params, keys),
        )
    )


def open_per_item(conn: psycopg.Connection, keys: list[str]) -> dict[str, int]:
    """Open exceptions per item of ``keys`` (whatever the filters)."""
    key = item_key_sql()
    return dict(
        conn.execute(
            f"SELECT {key}, count(*) FROM orderflow.exception_desk "
            f"WHERE {key} = ANY(%s) GROUP BY 1",
            (keys,),
        ).fetchall()
    )


def facets(conn: psycopg.Connection) -> tuple:
    """(categories, owner roles, open exceptions, work items) of the whole desk."""
    key = item_key_sql()
    return conn.execute(
        "SELECT array_agg(DISTINCT category), array_agg(DISTINCT owner_role), count(*), "
        f"count(DISTINCT {key}) FROM orderflow.exception_desk"
    ).fetchone()


def action_targets(
    conn: psycopg.Connection, where: list[str], params: list[Any], items: list[str]
) -> list[dict[str, Any]]:
    """The desk rows matching ``where`` of ``items`` (what a bulk action may apply to)."""
    return _rows(
        conn.execute(
            f"SELECT exception_id, order_id, order_status, category, owner_role, "
            f"escalation_role, {item_key_sql()} AS item_key FROM orderflow.exception_desk "
            f"WHERE {' AND '.join(where)} AND {item_key_sql()} = ANY(%s) "
            "ORDER BY item_key, exception_id",
            (*params, list(items)),
        )
    )


def sla_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Open exceptions per SLA state."""
    return dict(
        conn.execute(
            "SELECT sla_state, count(*) FROM orderflow.exception_desk GROUP BY 1"
        ).fetchall()
    )


def open_by_category(conn: psycopg.Connection) -> dict[str, int]:
    """Open exceptions per category, most first."""
    return dict(
        conn.execute(
            "SELECT category, count(*) FROM orderflow.exception_desk GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    )


def stalled_outbox_actions(conn: psycopg.Connection) -> list[str]:
    """The outbox actions with an open stall exception."""
    return [
        a
        for (a,) in conn.execute(
            "SELECT entity_id FROM orderflow.order_exception WHERE status = 'open' "
            "AND order_id IS NULL AND entity_type = 'outbox' ORDER BY 1"
        )
    ]
