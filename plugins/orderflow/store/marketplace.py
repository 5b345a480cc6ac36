"""``orderflow.marketplace_order``: per marketplace order, the time limits the marketplace set
and when it received each of our callbacks (its clock, from its answers)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

#: callback kind → (receipt column, lateness column)
_CALLBACK_COLUMNS = {
    "acknowledgement": ("acknowledged_at", "ack_late"),
    "shipment": ("shipment_confirmed_at", "ship_late"),
    "cancellation": ("cancel_answered_at", "cancel_late"),
}


def record_order_terms(
    conn: psycopg.Connection,
    *,
    marketplace_id: str,
    marketplace_order_id: str,
    order_id: str,
    ordered_at: datetime,
    acknowledge_by: datetime,
    ship_by: datetime,
) -> None:
    """The order's limits as the marketplace stated them (a re-read changes nothing)."""
    conn.execute(
        """
        INSERT INTO orderflow.marketplace_order
            (marketplace_id, marketplace_order_id, order_id, ordered_at, acknowledge_by, ship_by)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (marketplace_id, marketplace_order_id) DO UPDATE
            SET order_id = coalesce(marketplace_order.order_id, EXCLUDED.order_id),
                ordered_at = EXCLUDED.ordered_at, acknowledge_by = EXCLUDED.acknowledge_by,
                ship_by = EXCLUDED.ship_by, updated_at = now()
        """,
        (marketplace_id, marketplace_order_id, order_id, ordered_at, acknowledge_by, ship_by),
    )


def record_cancel_request(
    conn: psycopg.Connection,
    *,
    marketplace_id: str,
    marketplace_order_id: str,
    requested_at: datetime,
    respond_by: datetime | None,
) -> None:
    """A buyer's cancellation request of an order we know (none: nothing to record)."""
    conn.execute(
        """
        UPDATE orderflow.marketplace_order
           SET cancel_requested_at = coalesce(cancel_requested_at, %s),
               cancel_respond_by = coalesce(cancel_respond_by, %s), updated_at = now()
         WHERE marketplace_id = %s AND marketplace_order_id = %s
        """,
        (requested_at, respond_by, marketplace_id, marketplace_order_id),
    )


def record_callback(
    conn: psycopg.Connection,
    *,
    marketplace_id: str,
    marketplace_order_id: str,
    kind: str,
    received_at: datetime | str | None,
    late: bool | None,
    cancel_answer: str | None = None,
) -> int:
    """The marketplace's receipt of a callback (the first one counts: a second shipment of
    the same order confirms nothing new about the limit)."""
    at_col, late_col = _CALLBACK_COLUMNS[kind]
    extra = ", cancel_answer = coalesce(cancel_answer, %s)" if kind == "cancellation" else ""
    params: list[Any] = [received_at, late]
    if kind == "cancellation":
        params.append(cancel_answer)
    return conn.execute(
        f"""
        UPDATE orderflow.marketplace_order
           SET {at_col} = coalesce({at_col}, %s), {late_col} = coalesce({late_col}, %s){extra},
               updated_at = now()
         WHERE marketplace_id = %s AND marketplace_order_id = %s
        """,
        (*params, marketplace_id, marketplace_order_id),
    ).rowcount


def summary(conn: psycopg.Connection) -> dict[str, int]:
    """Counts for the status page: orders, callbacks received on time / late, and callbacks
    not received yet whose limit has passed."""
    row = conn.execute(
        """
        SELECT count(*),
               count(*) FILTER (WHERE acknowledged_at IS NOT NULL AND NOT ack_late),
               count(*) FILTER (WHERE ack_late),
               count(*) FILTER (WHERE acknowledged_at IS NULL AND acknowledge_by < now()),
               count(*) FILTER (WHERE shipment_confirmed_at IS NOT NULL AND NOT ship_late),
               count(*) FILTER (WHERE ship_late),
               count(*) FILTER (WHERE cancel_requested_at IS NOT NULL),
               count(*) FILTER (WHERE cancel_late)
          FROM orderflow.marketplace_order
        """
    ).fetchone()
    keys = (
        "orders",
        "acknowledged_on_time",
        "acknowledged_late",
        "unacknowledged_past_limit",
        "shipments_confirmed_on_time",
        "shipments_confirmed_late",
        "cancellation_requests",
        "cancellations_answered_late",
    )
    return dict(zip(keys, row, strict=True))
