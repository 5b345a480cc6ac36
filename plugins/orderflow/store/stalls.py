"""Stall repository (the operations watch): orders that sit in a stage past its limit,
outbox actions that stopped delivering, and the auto-resolution of their exceptions once
they move again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def stalled_orders(
    conn: psycopg.Connection,
    stages: Sequence[str],
    hours: Sequence[float],
    owner_roles: Sequence[str],
    plus_transit: Sequence[bool],
    min_hours: int,
) -> list[tuple]:
    """Orders in one of ``stages`` longer than that stage's limit (``hours``, plus the
    slowest transit of their shipments where ``plus_transit``): (order_id, status,
    status_changed_at, owner_role, limit_hours, services, tracking, hours_in)."""
    return conn.execute(
        """
        WITH lim AS (
            SELECT * FROM unnest(%s::text[], %s::float8[], %s::text[], %s::bool[])
                AS l(status, hours, owner_role, plus_transit)
        ), cand AS (
            SELECT o.order_id, o.status, o.status_changed_at, l.owner_role,
                   l.hours + CASE WHEN l.plus_transit
                                  THEN 24 * coalesce(max(cs.transit_days), 0) ELSE 0 END
                       AS limit_hours,
                   string_agg(DISTINCT s.carrier_id || ' ' || s.service_code, ', ')
                       AS services,
                   max(s.tracking_number) AS tracking
              FROM orderflow."order" o
              JOIN lim l ON l.status = o.status
              LEFT JOIN orderflow.shipment s
                     ON s.order_id = o.order_id AND s.status <> 'cancelled'
              LEFT JOIN orderflow.carrier_service cs
                     ON cs.carrier_id = s.carrier_id AND cs.service_code = s.service_code
             WHERE o.status = ANY(%s)
               AND o.status_changed_at < now() - make_interval(hours => %s)
             GROUP BY o.order_id, o.status, o.status_changed_at, l.owner_role, l.hours,
                      l.plus_transit
        )
        SELECT order_id, status, status_changed_at, owner_role, limit_hours, services,
               tracking, extract(epoch FROM now() - status_changed_at) / 3600 AS hours_in
          FROM cand
         WHERE status_changed_at < now() - make_interval(secs => limit_hours * 3600)
        """,
        (
            list(stages),
            list(hours),
            list(owner_roles),
            list(plus_transit),
            list(stages),
            min_hours,
        ),
    ).fetchall()


def resolve_moved_on(conn: psycopg.Connection, resolver: str) -> int:
    """Resolve the open ``stalled`` exceptions of orders no longer in the stage they stalled
    in; returns how many."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception e
           SET status = 'resolved', resolution = 'auto_resolved', resolved_by = %s,
               resolved_at = now(),
               resolution_note = 'the order moved on to ' || o.status
          FROM orderflow."order" o
         WHERE e.order_id = o.order_id AND e.status = 'open' AND e.category = 'stalled'
           AND o.status IS DISTINCT FROM e.stage
        """,
        (resolver,),
    ).rowcount


def stalled_outbox(conn: psycopg.Connection, minutes: int) -> list[tuple]:
    """Per action with rows waiting longer than ``minutes`` and none sent in the last
    ``minutes``: (action, rows waiting, oldest, last error)."""
    return conn.execute(
        """
        SELECT w.action, w.waiting, w.oldest, w.last_error
          FROM (SELECT action, count(*) AS waiting, min(created_at) AS oldest,
                       (array_agg(last_error ORDER BY next_attempt_at DESC)
                            FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
                  FROM orderflow.outbox
                 WHERE status IN ('pending', 'sending', 'failed')
                   AND created_at < now() - make_interval(mins => %s)
                 GROUP BY action) w
         WHERE NOT EXISTS (
            SELECT 1 FROM orderflow.outbox s
             WHERE s.action = w.action AND s.status = 'sent'
               AND s.sent_at > now() - make_interval(mins => %s))
        """,
        (minutes, minutes),
    ).fetchall()


def resolve_outbox_recovered(
    conn: psycopg.Connection, resolver: str, stalled: Sequence[str]
) -> int:
    """Resolve the open outbox-stall exceptions of actions not in ``stalled``; returns how
    many."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception
           SET status = 'resolved', resolution = 'auto_resolved', resolved_by = %s,
               resolved_at = now(), resolution_note = 'rows are being sent again'
         WHERE status = 'open' AND order_id IS NULL AND category = 'integration_failure'
           AND entity_type = 'outbox' AND NOT (entity_id = ANY(%s))
        """,
        (resolver, list(stalled)),
    ).rowcount
