"""The order lifecycle: statuses, the transitions allowed between them, and transition records.

Pure Python (no Airflow, no database): the glue loads orders, asks this module whether a move
is allowed, and writes the resulting :class:`Transition` as an append-only event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class OrderStatus(StrEnum):
    RECEIVED = "RECEIVED"
    ON_HOLD = "ON_HOLD"
    VALIDATED = "VALIDATED"
    CREDIT_OK = "CREDIT_OK"
    ALLOCATED = "ALLOCATED"
    READY = "READY"
    RELEASED = "RELEASED"
    PICKED = "PICKED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    INVOICED = "INVOICED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


S = OrderStatus
TERMINAL = frozenset({S.CLOSED, S.CANCELLED, S.REJECTED})

# The governed path (docs/architecture.md §3). Holds can happen before release; a resolved hold returns
# the order to the stage that raised it, so ON_HOLD may go back to any pre-release stage.
_PRE_RELEASE = (S.RECEIVED, S.VALIDATED, S.CREDIT_OK, S.ALLOCATED, S.READY)
ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.RECEIVED: frozenset({S.VALIDATED, S.ON_HOLD}),
    S.VALIDATED: frozenset({S.CREDIT_OK, S.ON_HOLD}),
    S.CREDIT_OK: frozenset({S.ALLOCATED, S.ON_HOLD}),
    S.ALLOCATED: frozenset({S.READY, S.ON_HOLD}),
    S.READY: frozenset({S.RELEASED, S.ON_HOLD}),
    S.ON_HOLD: frozenset(_PRE_RELEASE),
    S.RELEASED: frozenset({S.PICKED, S.SHIPPED}),
    S.PICKED: frozenset({S.SHIPPED}),
    S.SHIPPED: frozenset({S.DELIVERED, S.INVOICED}),
    S.DELIVERED: frozenset({S.INVOICED}),
    S.INVOICED: frozenset({S.CLOSED}),
}
# Reprocessing before release: any pre-release order may be sent back to validation
# (revalidate) and an allocated one back to allocation (reallocate); both give their
# reservations back first.
for _status in (S.VALIDATED, S.CREDIT_OK, S.ALLOCATED, S.READY):
    ALLOWED[_status] = ALLOWED[_status] | {S.RECEIVED}
for _status in (S.ALLOCATED, S.READY):
    ALLOWED[_status] = ALLOWED[_status] | {S.CREDIT_OK}
# A customer's change after release: once the WMS confirmed it withdrew the release (nothing
# of it is on the floor, its stock is back), the amended order is processed from the start
# like a new version of itself (``orderflow.changes``). A release the WMS refused to withdraw
# (picking started) never takes this way.
ALLOWED[S.RELEASED] = ALLOWED[S.RELEASED] | {S.RECEIVED}
# Any non-terminal order may be cancelled or rejected.
for _status in S:
    if _status not in TERMINAL:
        ALLOWED[_status] = ALLOWED.get(_status, frozenset()) | {S.CANCELLED, S.REJECTED}
for _status in TERMINAL:
    ALLOWED[_status] = frozenset()


class IllegalTransition(ValueError):
    """A requested status change that the lifecycle does not allow."""


ActorType = Literal["system", "user", "model"]


@dataclass(frozen=True)
class Transition:
    order_id: str
    from_status: OrderStatus
    to_status: OrderStatus
    actor_type: ActorType
    actor_id: str
    reason_codes: tuple[str, ...] = ()
    rule_set_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ALLOWED[current]


def transition(
    order_id: str,
    current: OrderStatus | str,
    target: OrderStatus | str,
    *,
    actor_type: ActorType,
    actor_id: str,
    reason_codes: tuple[str, ...] = (),
    rule_set_version: str | None = None,
    details: dict[str, Any] | None = None,
) -> Transition:
    """Decide one status change; raises :class:`IllegalTransition` with what to do instead."""
    cur, tgt = OrderStatus(current), OrderStatus(target)
    if not can_move(cur, tgt):
        allowed = ", ".join(sorted(ALLOWED[cur])) or "none (terminal)"
        raise IllegalTransition(
            f"order {order_id}: cannot move {cur} → {tgt}; allowed from {cur}: {allowed}"
        )
    return Transition(
        order_id=order_id,
        from_status=cur,
        to_status=tgt,
        actor_type=actor_type,
        actor_id=actor_id,
        reason_codes=tuple(reason_codes),
        rule_set_version=rule_set_version,
        details=dict(details or {}),
    )
