"""Business-day counts repository (``orderflow status`` and the dashboard): orders per
channel that reached each milestone in a window, and the quarantined inputs waiting for a
person."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

#: Quarantined channel messages not replayed yet (``orderflow intake quarantined``).
MESSAGES_QUARANTINED = "outcome = 'quarantined' AND NOT details ? 'replayed_as'"

_DAY_COUNTS = """
WITH cand AS (  -- the orders that can count: received, moved, picked or shipped in the day
    SELECT order_id FROM orderflow."order"  -- every status: order_status_idx finds the day
     WHERE status = ANY(%(statuses)s) AND received_at >= %(start)s AND received_at < %(end)s
    UNION
    SELECT order_id FROM orderflow.order_event
     WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
    UNION
    SELECT order_id FROM orderflow.shipment WHERE picked_at >= %(start)s AND picked_at < %(end)s
    UNION
    SELECT order_id FROM orderflow.shipment WHERE shipped_at >= %(start)s AND shipped_at < %(end)s
)
SELECT o.channel,
       count(*) FILTER (WHERE o.parent_order_id IS NULL
                          AND o.received_at >= %(start)s AND o.received_at < %(end)s),
       count(*) FILTER (WHERE ev.held),
       count(*) FILTER (WHERE ev.released_at >= %(start)s AND ev.released_at < %(end)s),
       count(*) FILTER (WHERE ship.picked_at >= %(start)s AND ship.picked_at < %(end)s),
       count(*) FILTER (WHERE ship.shipped_at >= %(start)s AND ship.shipped_at < %(end)s),
       count(*) FILTER (WHERE ev.invoiced_at >= %(start)s AND ev.invoiced_at < %(end)s),
       count(*) FILTER (WHERE ev.cancelled_at >= %(start)s AND ev.cancelled_at < %(end)s),
       count(*) FILTER (WHERE ev.rejected_at >= %(start)s AND ev.rejected_at < %(end)s)
  FROM orderflow."order" o  -- by order_pkey (a join would be planned for the UNION's estimate)
 CROSS JOIN LATERAL (  -- per order, through order_event_order_idx
    SELECT min(e.occurred_at) FILTER (WHERE e.to_status = 'RELEASED')  AS released_at,
           min(e.occurred_at) FILTER (WHERE e.to_status = 'INVOICED')  AS invoiced_at,
           min(e.occurred_at) FILTER (WHERE e.to_status = 'CANCELLED') AS cancelled_at,
           min(e.occurred_at) FILTER (WHERE e.to_status = 'REJECTED')  AS rejected_at,
           bool_or(e.to_status = 'ON_HOLD' AND e.occurred_at >= %(start)s
                   AND e.occurred_at < %(end)s)                        AS held
      FROM orderflow.order_event e WHERE e.order_id = o.order_id
 ) ev
 CROSS JOIN LATERAL (  -- as order_fact: the last shipment of the current release decides
    SELECT CASE WHEN bool_and(s.picked_at IS NOT NULL) THEN max(s.picked_at) END   AS picked_at,
           CASE WHEN bool_and(s.shipped_at IS NOT NULL) THEN max(s.shipped_at) END AS shipped_at
      FROM orderflow.shipment s
     WHERE s.order_id = o.order_id AND s.release_version = o.release_version
 ) ship
 WHERE o.order_id = ANY(ARRAY(SELECT order_id FROM cand))
 GROUP BY o.channel
"""

_STAMPED_AFTER = """
SELECT count(*), min(at)
  FROM (SELECT picked_at FROM orderflow.shipment WHERE picked_at > %(after)s
        UNION ALL
        SELECT shipped_at FROM orderflow.shipment WHERE shipped_at > %(after)s) AS m(at)
"""

_QUARANTINED_EVENTS = "SELECT count(*) FROM orderflow.fulfilment_event WHERE status = 'quarantined'"


def day_counts(conn: psycopg.Connection, start: datetime, end: datetime) -> list[tuple]:
    """(channel, received, held, released, picked, shipped, invoiced, cancelled, rejected)
    per channel with any order that reached a milestone in [start, end)."""
    from orderflow.domain.lifecycle import OrderStatus

    statuses = [str(s) for s in OrderStatus]
    return conn.execute(_DAY_COUNTS, {"start": start, "end": end, "statuses": statuses}).fetchall()


def stamped_after(conn: psycopg.Connection, after: datetime) -> tuple[int, datetime | None]:
    """Shipments' picked / shipped times later than ``after``: how many, and the earliest."""
    return conn.execute(_STAMPED_AFTER, {"after": after}).fetchone()


def quarantined_messages(conn: psycopg.Connection) -> dict[str, int]:
    """Quarantined channel messages not replayed yet, per channel."""
    return dict(
        conn.execute(
            "SELECT channel, count(*) FROM orderflow.channel_message "
            f"WHERE {MESSAGES_QUARANTINED} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )


def quarantined_events(conn: psycopg.Connection) -> int:
    """Quarantined fulfilment events."""
    return conn.execute(_QUARANTINED_EVENTS).fetchone()[0]


def messages_by_outcome(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(channel, outcome, messages) of every channel message ever received."""
    return conn.execute(
        "SELECT channel, outcome, count(*) FROM orderflow.channel_message GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def quarantined_fulfilment_events(conn: psycopg.Connection, limit: int) -> list[tuple]:
    """(event_id, source, kind, order_id, error) of the first ``limit`` quarantined
    fulfilment events."""
    return conn.execute(
        "SELECT event_id, source, kind, order_id, error FROM orderflow.fulfilment_event "
        "WHERE status = 'quarantined' ORDER BY event_id LIMIT %s",
        (limit,),
    ).fetchall()
