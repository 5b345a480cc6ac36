"""Customer changes and cancellations (``orderflow.order_change``) and the writes applying
one makes to its order: the order and its lines amended, planned and withdrawn shipments
cancelled, open exceptions resolved. Always in the caller's transaction
(``orderflow.changes`` applies one change per transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


# ---------------------------------------------------------------------------- changes


def open_changes(conn: psycopg.Connection, limit: int) -> list[tuple[int, str]]:
    """(change_id, order_id) of up to ``limit`` changes pending or waiting for the WMS,
    oldest first."""
    return conn.execute(
        "SELECT change_id, order_id FROM orderflow.order_change "
        "WHERE status IN ('pending', 'waiting_wms') ORDER BY change_id LIMIT %s",
        (limit,),
    ).fetchall()


def lock_change(conn: psycopg.Connection, change_id: int) -> tuple | None:
    """Lock an open change (``SKIP LOCKED``): (change_id, order_id, source, reference,
    status, payload, requested_by), or None when another runner has it or it is settled."""
    return conn.execute(
        "SELECT change_id, order_id, source, reference, status, payload, requested_by "
        "FROM orderflow.order_change WHERE change_id = %s "
        "AND status IN ('pending', 'waiting_wms') FOR UPDATE SKIP LOCKED",
        (change_id,),
    ).fetchone()


def lock_order(
    conn: psycopg.Connection, order_id: str, run_id: str, lease_minutes: int
) -> tuple | None:
    """Lock the order a change is for: (order_id, status, channel, partner_id,
    release_version, canonical, claimed by another run whose lease holds)."""
    return conn.execute(
        "SELECT order_id, status, channel, partner_id, release_version, canonical, "
        "claimed_by_run IS NOT NULL AND claimed_by_run IS DISTINCT FROM %s "
        "AND claimed_at >= now() - make_interval(mins => %s) "
        'FROM orderflow."order" WHERE order_id = %s FOR UPDATE',
        (run_id, lease_minutes, order_id),
    ).fetchone()


def settle(
    conn: psycopg.Connection, change_id: int, status: str, outcome: str, final: bool
) -> None:
    """Set a change's status and outcome (``applied_at`` when ``final``)."""
    conn.execute(
        "UPDATE orderflow.order_change SET status = %s, outcome = %s, "
        "applied_at = CASE WHEN %s THEN now() END WHERE change_id = %s",
        (status, outcome, final, change_id),
    )


def insert_inside_sales_cancel(
    conn: psycopg.Connection, order_id: str, reference: str, payload: dict[str, Any], actor: str
) -> int:
    """Store an inside-sales cancel of ``order_id``; returns its change id."""
    return conn.execute(
        "INSERT INTO orderflow.order_change (order_id, kind, source, reference, payload, "
        "requested_by) VALUES (%s, 'cancel', 'inside_sales', %s, %s, %s) "
        "RETURNING change_id",
        (order_id, reference, Jsonb(payload), actor),
    ).fetchone()[0]


def order_header(conn: psycopg.Connection, order_id: str) -> tuple | None:
    """(po_number, channel, partner_id, customer_id, status) of an order, or None."""
    return conn.execute(
        'SELECT po_number, channel, partner_id, customer_id, status FROM orderflow."order" '
        "WHERE order_id = %s",
        (order_id,),
    ).fetchone()


# ---------------------------------------------------------------------------- the WMS


def release_cancels(
    conn: psycopg.Connection, action: str, order_id: str, release_version: int
) -> list[tuple]:
    """(shipment_id, status, last_error) of the outbox rows of ``action`` (release cancels)
    queued for ``order_id`` at ``release_version``."""
    return conn.execute(
        "SELECT payload->>'shipment_id', status, last_error FROM orderflow.outbox "
        "WHERE action = %s AND order_id = %s AND (payload->>'release_version')::int = %s",
        (action, order_id, release_version),
    ).fetchall()


def shipments_of_version(
    conn: psycopg.Connection, order_id: str, release_version: int
) -> list[dict[str, Any]]:
    """The shipments of an order's ``release_version``, with the outbox state of their WMS
    release (``release_state``)."""
    cur = conn.execute(
        """
        SELECT s.shipment_id, s.dc_id, s.status, s.wms_release_id, x.status AS release_state
          FROM orderflow.shipment s
          LEFT JOIN orderflow.outbox x
                 ON x.idempotency_key = 'wms_release:' || s.order_id || ':' || s.dc_id
                                        || ':r' || s.release_version
         WHERE s.order_id = %s AND s.release_version = %s
         ORDER BY s.shipment_id
        """,
        (order_id, release_version),
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def cancel_shipments(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> None:
    """Cancel the shipments given."""
    conn.execute(
        "UPDATE orderflow.shipment SET status = 'cancelled', updated_at = now() "
        "WHERE shipment_id = ANY(%s)",
        (list(shipment_ids),),
    )


def cancel_dc_reservations(
    conn: psycopg.Connection, order_id: str, dc_ids: Sequence[str]
) -> list[tuple]:
    """Cancel the released or held reservations of ``order_id`` at ``dc_ids``; returns the
    (item_id, dc_id) rows touched."""
    return conn.execute(
        "UPDATE orderflow.reservation SET status = 'cancelled', updated_at = now() "
        "WHERE order_id = %s AND dc_id = ANY(%s) AND status IN ('released', 'held') "
        "RETURNING item_id, dc_id",
        (order_id, list(dc_ids)),
    ).fetchall()


# ---------------------------------------------------------------------------- the order


def clear_backorders(conn: psycopg.Connection, order_id: str) -> None:
    """No line of ``order_id`` is backordered any more."""
    conn.execute(
        "UPDATE orderflow.order_line SET backordered_qty = 0 WHERE order_id = %s",
        (order_id,),
    )


def write_amended(
    conn: psycopg.Connection,
    order_id: str,
    canonical: dict[str, Any],
    order_total: Any,
    requested_ship_date: Any,
    currency: Any,
    ship_to_id: str | None,
    lines: Sequence[tuple],
) -> None:
    """The order and its lines as amended: the header (approvals cleared; the release
    version bumped when a planned shipment already holds the next one), then the lines
    replaced by ``lines`` — (line_no, item_id, customer_part_number, quantity, uom,
    unit_price, canonical)."""
    conn.execute(
        """
        UPDATE orderflow."order" SET canonical = %s, order_total = %s,
               requested_ship_date = %s, currency = %s,
               ship_to_id = coalesce(%s, ship_to_id), approvals = '{}', updated_at = now(),
               release_version = release_version + CASE WHEN EXISTS (
                   SELECT 1 FROM orderflow.shipment s WHERE s.order_id = %s
                      AND s.release_version = "order".release_version + 1) THEN 1 ELSE 0 END
         WHERE order_id = %s
        """,
        (
            Jsonb(canonical),
            order_total,
            requested_ship_date,
            currency,
            ship_to_id,
            order_id,
            order_id,
        ),
    )
    conn.execute("DELETE FROM orderflow.order_line WHERE order_id = %s", (order_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.order_line (order_id, line_no, item_id, customer_part_number, "
            "quantity, uom, unit_price, canonical) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(order_id, *ln[:6], Jsonb(ln[6])) for ln in lines],
        )


def resolve_open_exceptions(conn: psycopg.Connection, order_id: str, actor: str, note: str) -> int:
    """Auto-resolve every open exception of ``order_id``; returns how many."""
    return conn.execute(
        "UPDATE orderflow.order_exception SET status = 'resolved', resolution = 'auto_resolved', "
        "resolved_by = %s, resolved_at = now(), resolution_note = %s "
        "WHERE order_id = %s AND status = 'open'",
        (actor, note, order_id),
    ).rowcount
