"""``POST /orderflow/api/check``: the order check over HTTP, in the OrderFlow plugin app.

Authenticated as every page of the app is (Airflow's JWT: ``Authorization: Bearer <token>``
from ``POST /auth/token``, or the UI's cookie) — 401 without it; allowed to the OrderFlow roles
in :data:`CHECK_ROLES` (``include/access/roles.yaml``) — 403 for anyone else.

Requests are answered on a small connection pool (:mod:`orderflow.store.pool`) with the rule
book in force cached for :data:`BOOK_TTL_S` seconds (a promotion reaches the check within
that); external services are not called (see :mod:`orderflow.ordercheck.service`).
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations at
# registration, and they name objects local to :func:`register`.
import os
import threading
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException

from orderflow.ordercheck.models import CheckAnswer, DraftOrder

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from orderflow.rules import RuleBook

#: OrderFlow roles that may ask (the super role too): sales reps and customer service, who
#: answer "can I have this, at what price, by when?"
CHECK_ROLES = frozenset({"sales", "customer_service", "operations_manager"})
BOOK_TTL_S = 5.0
POOL_SIZE = int(os.environ.get("ORDERFLOW_CHECK_POOL_SIZE", "8"))

_lock = threading.Lock()
_pool: "ConnectionPool | None" = None
_book: "tuple[float, RuleBook] | None" = None


def pool() -> "ConnectionPool":
    global _pool
    with _lock:
        if _pool is None:
            from orderflow.store.pool import store_pool

            _pool = store_pool(max_size=POOL_SIZE)
        return _pool


def book(conn) -> "RuleBook":
    """The rule book in force (files + promotions in the store), at most BOOK_TTL_S old."""
    global _book
    from orderflow import rules

    now = time.monotonic()
    cached = _book
    if cached is None or now - cached[0] > BOOK_TTL_S:
        cached = (now, rules.load(conn=conn))
        _book = cached
    return cached[1]


def register(app, current_user) -> None:
    """Mount the check on the plugin app, behind ``current_user`` (the app's login)."""
    from typing import Annotated

    from fastapi import Depends

    from orderflow.ui.app import User

    router = APIRouter()

    @router.post("/api/check", response_model=CheckAnswer)
    def check_order(draft: DraftOrder, user: Annotated[User, Depends(current_user)]):
        """What the batch would decide for this draft order now: price per line (contract /
        list), availability, DC, split, backorder and promised date per line, credit
        headroom, and the holds it would get (category, owner role, reason). Reads only."""
        if not user.roles & CHECK_ROLES:
            raise HTTPException(
                403,
                f"{user.name} may not use the order check: it needs one of the OrderFlow roles "
                f"{', '.join(sorted(CHECK_ROLES))} (include/access/roles.yaml)",
            )
        from orderflow.ordercheck.service import check

        with pool().connection() as conn:
            return check(conn, draft, book(conn))

    app.include_router(router)
