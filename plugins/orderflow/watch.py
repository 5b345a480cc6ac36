"""Watching our own flow for what no single task notices: orders that stopped moving, and an
outbox that stopped delivering.

- **Stalled orders.** An order that stays in RELEASED, PICKED or SHIPPED longer than the
  fulfilment rules' ``stage_limits`` allow (SHIPPED adds the carrier service's transit days)
  opens a ``stalled`` exception, routed to the stage's owner role; it resolves itself when
  the order moves on. The ``stalled_orders`` KPI counts them.
- **A stalled outbox.** Rows of an action that have waited longer than
  :data:`OUTBOX_STALL_MINUTES` while none of that action was sent in as long open an
  ``integration_failure`` exception on the entity ``outbox/<action>`` with the last error;
  it resolves itself once rows of that action go out again (or none wait).
- **Unacknowledged documents.** A document sent to a trading partner without a 997 past the
  partner's window (``trading_partner.ack_window_hours``, default 24 h) opens
  ``edi_ack_overdue`` on its order for the EDI team; it resolves itself when the 997 comes
  or the document is resent (``orderflow.edi_acks``).

All are idempotent: run them as often as you like (the ``exception_desk`` DAG, every 5 min).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.store import db, exceptions, stalls

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

RESOLVER = "orderflow.watch"
OUTBOX_STALL_MINUTES = 15


@dataclass
class WatchResult:
    stalled_opened: int = 0
    stalled_open: int = 0
    stalled_resolved: int = 0
    outbox_stalled: list[str] = field(default_factory=list)
    outbox_recovered: int = 0
    acks_overdue: int = 0
    acks_overdue_opened: int = 0
    acks_overdue_resolved: int = 0

    def as_xcom(self) -> dict[str, Any]:
        return dict(vars(self))


def run(conn: psycopg.Connection, book: RuleBook) -> WatchResult:
    out = WatchResult()
    stalled_orders(conn, book, out)
    stalled_outbox(conn, out)
    overdue_acks(conn, out)
    return out


def overdue_acks(conn: psycopg.Connection, out: WatchResult) -> None:
    from orderflow import edi_acks

    found = edi_acks.overdue(conn)
    out.acks_overdue = found.documents
    out.acks_overdue_opened = found.opened
    out.acks_overdue_resolved = found.resolved


def stalled_orders(conn: psycopg.Connection, book: RuleBook, out: WatchResult) -> None:
    limits = book.fulfilment.stage_limits
    if not limits:
        return
    stages = list(limits)
    with db.transaction(conn):
        rows = stalls.stalled_orders(
            conn,
            stages,
            [limits[s].hours for s in stages],
            [limits[s].owner_role for s in stages],
            [limits[s].plus_transit_days for s in stages],
            int(min(limits[s].hours for s in stages)),
        )
        for oid, status, since, owner, limit_h, services, tracking, hours_in in rows:
            opened = exceptions.open_routed(
                conn,
                category="stalled",
                order_id=oid,
                owner_role=owner,
                stage=status,
                reason=_stalled_reason(status, hours_in, limit_h, services, tracking),
                details={
                    "stage": status,
                    "since": since.isoformat(),
                    "limit_hours": float(limit_h),
                    "carrier_services": services,
                },
            )
            out.stalled_opened += opened is not None
        out.stalled_open = len(rows)
        # An order that moved on (or whose stage no longer has a limit) is not stalled.
        out.stalled_resolved = stalls.resolve_moved_on(conn, RESOLVER)
    if rows:
        log.warning("%d orders stalled (%d new)", len(rows), out.stalled_opened)


def _stalled_reason(status, hours_in, limit_h, services, tracking) -> str:
    what = {
        "RELEASED": "the warehouse has not reported a pick; check the release in the WMS",
        "PICKED": "the warehouse has not reported the shipment; check packing and the dock",
        "SHIPPED": "the carrier has not reported delivery; check tracking with the carrier"
        + (f" ({tracking})" if tracking else ""),
    }.get(status, "nothing has moved it on")
    via = f" via {services}" if services and status == "SHIPPED" else ""
    return (
        f"Order has been {status}{via} for {float(hours_in):.0f} h, past its limit of "
        f"{float(limit_h):.0f} h: {what}."
    )


def stalled_outbox(conn: psycopg.Connection, out: WatchResult) -> None:
    with db.transaction(conn):
        waiting = stalls.stalled_outbox(conn, OUTBOX_STALL_MINUTES)
        stalled = {action for action, *_ in waiting}
        for action, n, oldest, last_error in waiting:
            reason = (
                f"{n:,} {action} rows wait (the oldest since {oldest:%Y-%m-%d %H:%M} UTC) and "
                f"none was sent in the last {OUTBOX_STALL_MINUTES} minutes. "
                + (
                    f"Last error: {last_error[:300]}. "
                    if last_error
                    else "No send has been tried. "
                )
                + "Check the receiver and its Connection, and that the DAG that sends it runs "
                "(`orderflow outbox status`)."
            )
            exceptions.open_routed(
                conn,
                category="integration_failure",
                reason=reason,
                entity=("outbox", action),
                details={"kind": "outbox_stalled", "waiting": n, "last_error": last_error},
            )
        out.outbox_stalled = sorted(stalled)
        recovered = stalls.resolve_outbox_recovered(conn, RESOLVER, sorted(stalled))
        out.outbox_recovered = recovered
    if stalled:
        log.error("outbox stalled for %s", ", ".join(sorted(stalled)))
