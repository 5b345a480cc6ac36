"""``POST /orderflow/api/check``: the order check over HTTP, in the OrderFlow plugin app.

Authenticated as every page of the app is (Airflow's JWT: ``Authorization: Bearer <token>``
from ``POST /auth/token``, or the UI's cookie) — 401 without it; allowed to the OrderFlow roles
in :data:`CHECK_ROLES` (``include/access/roles.yaml``) — 403 for anyone else.

Requests are answered on a small connection pool (:mod:`orderflow.store.pool`) with the rule
book in force cached for :data:`BOOK_TTL_S` seconds (a promotion reaches the check within
that); external services are not called (see :mod:`orderflow.ordercheck.service`).

What a request costs, and what is kept between requests (issue #20: 200 requests/s on two
cores shared with PostgreSQL):

- **Who is asking**: Airflow's ``get_user_from_token`` checks the JWT's signature and then asks
  the metadata database whether the token was revoked (a session, a ping and a query, run on
  the event loop). :class:`VerifiedTokens` keeps a token that passed for at most
  :data:`TOKEN_RECHECK_S` seconds and never past its own ``exp``; only a token that passed is
  kept (a forged or expired one goes to Airflow every time). A logout (revocation) therefore
  reaches the check within :data:`TOKEN_RECHECK_S` seconds. The OrderFlow roles are read on
  every request (``orderflow.access``: the file's mtime), so a role change applies at once.
- **The rule book**: cached as above; its ``rule_set_version`` tag (content hashes) is computed
  once per book, not per answer (:func:`orderflow.ordercheck.service.rule_set_version`).
- **The store**: pooled autocommit connections; a check reads everything with one prepared
  statement (:mod:`orderflow.store.ordercheck`: one round trip, its own snapshot, no
  ``BEGIN``/``COMMIT``). When a plugin's rule type adds reads, they run in a transaction
  that starts as ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` (one command).
  Credit exposure, stock and master data are read in every request's own snapshot: nothing of
  the store is cached.
- **The garbage collector**: each worker freezes its heap (Airflow, FastAPI, the plugin) out
  of the collector when the check first runs (:func:`_freeze_heap`): a full collection then
  walks what requests made, not the whole heap (0.3–0.45 s of CPU each before, and more of
  them when requests pile up).
- **The answer**: serialised once by pydantic (``model_dump_json``) and sent as is, instead of
  FastAPI validating the returned model against ``response_model`` again and encoding it
  through ``jsonable_encoder`` (the schema in the OpenAPI document is unchanged).

``ORDERFLOW_CHECK_PROFILE=<folder>``: each api-server worker profiles (cProfile) one request
at a time, sampled, and writes ``check-<pid>.prof`` there every 200 profiled requests (off by
default; for finding where a request's time goes, not for production).
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations at
# registration, and they name objects local to :func:`register`.
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from orderflow.ordercheck.models import CheckAnswer, DraftOrder

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from orderflow.rules import RuleBook

#: OrderFlow roles that may ask (the super role too): sales reps and customer service, who
#: answer "can I have this, at what price, by when?"
CHECK_ROLES = frozenset({"sales", "customer_service", "operations_manager"})
BOOK_TTL_S = 5.0
#: store connections per api-server worker, all opened up front and kept (more checks at once
#: than this wait for one, up to the pool's timeout)
POOL_SIZE = int(os.environ.get("ORDERFLOW_CHECK_POOL_SIZE", "8"))
#: how long a token that passed Airflow's checks (signature, expiry, not revoked) is taken
#: without asking again: the bound on how late a logout reaches the check
TOKEN_RECHECK_S = 5.0
#: tokens kept per worker (least recently used dropped first)
TOKEN_CACHE_SIZE = 1024
#: freeze the worker's heap out of the garbage collector when the check first runs
#: (``ORDERFLOW_CHECK_GC_FREEZE=0``: not), see :func:`_freeze_heap`
GC_FREEZE = os.environ.get("ORDERFLOW_CHECK_GC_FREEZE", "1") != "0"

_lock = threading.Lock()
_pool: "ConnectionPool | None" = None
_book: "tuple[float, RuleBook] | None" = None


def pool() -> "ConnectionPool":
    global _pool
    with _lock:
        if _pool is None:
            from orderflow.store.pool import store_pool

            _pool = store_pool(max_size=POOL_SIZE)
            # all of them opened up front, and kept: a burst never waits for a new backend
            _pool.resize(min_size=POOL_SIZE, max_size=POOL_SIZE)
            if GC_FREEZE:
                _freeze_heap()
        return _pool


def _freeze_heap() -> None:
    """Move everything alive now (Airflow, FastAPI, the plugin, the check's modules: ≈ 650,000
    objects per worker) out of the garbage collector's reach (``gc.freeze``): a full
    collection then walks only what was made since, instead of the whole heap. Measured in
    the api-server's workers: ≈ 0.3–0.45 s of CPU per full collection before (a worker
    stalled that long, each time; more of them when requests pile up and their objects
    survive into the old generation), ≈ 0.05 s after.

    The price: objects alive now that later become cyclic garbage are never freed (a heap
    built at start and kept)."""
    import gc

    import orderflow.ordercheck.service  # noqa: F401  (imported before the freeze)

    gc.collect()
    gc.freeze()


def _read_only(conn) -> None:
    """Make ``conn``'s transactions start repeatable-read and read-only in their ``BEGIN``
    (the check's connections are its own: set once per connection)."""
    from psycopg import IsolationLevel

    if conn.read_only is not True or conn.isolation_level != IsolationLevel.REPEATABLE_READ:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True


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


class VerifiedTokens:
    """Tokens Airflow's auth manager accepted, kept for ``recheck_s`` seconds and never past
    their ``exp``: (user name, Airflow role) by the token's SHA-256; at most ``size`` of them.

    ``clock`` is the time in seconds since the epoch (JWT ``exp`` is in those)."""

    def __init__(
        self,
        recheck_s: float = TOKEN_RECHECK_S,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ):
        self.recheck_s, self.size, self.clock = recheck_s, size, clock
        self._entries: OrderedDict[bytes, tuple[float, str, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> tuple[str, str | None] | None:
        key = self._key(token)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if self.clock() >= hit[0]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return hit[1], hit[2]

    def put(self, token: str, name: str, airflow_role: str | None, exp: float | None) -> None:
        """Keep ``token`` (which Airflow just accepted) until ``exp`` or ``recheck_s``."""
        until = self.clock() + self.recheck_s
        if exp is not None:
            until = min(until, float(exp))
        key = self._key(token)
        with self._lock:
            self._entries[key] = (until, name, airflow_role)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _expiry(token: str) -> float | None:
    """The ``exp`` claim of a token Airflow has just verified (not verified again here)."""
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if exp is not None else None


def cached_user(current_user, tokens: VerifiedTokens):
    """``current_user`` (the app's login: Airflow's JWT), with the tokens it accepted kept in
    ``tokens``; the OrderFlow roles are read on every request."""
    from fastapi import Request

    from orderflow import access
    from orderflow.ui.app import User, _token

    async def user(request: Request) -> User:
        token = _token(request)
        hit = tokens.get(token) if token else None
        if hit is not None:
            name, airflow_role = hit
            return User(name=name, airflow_role=airflow_role, roles=access.roles_of(name))
        found = await current_user(request)  # 401 for a missing, forged or expired token
        tokens.put(token, found.name, found.airflow_role, _expiry(token))
        return found

    return user


class _Profiler:
    """``ORDERFLOW_CHECK_PROFILE``: cProfile over one request at a time (others run as usual),
    dumped every ``every`` profiled requests."""

    def __init__(self, folder: str, every: int = 200):
        import cProfile

        self.path = os.path.join(folder, f"check-{os.getpid()}.prof")
        self.every, self.count = every, 0
        self.profile = cProfile.Profile()
        self._busy = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        if not self._busy.acquire(blocking=False):
            return fn()
        try:
            self.profile.enable()
            try:
                return fn()
            finally:
                self.profile.disable()
                self.count += 1
                if self.count % self.every == 0:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    self.profile.dump_stats(self.path)
        finally:
            self._busy.release()


def register(app, current_user) -> None:
    """Mount the check on the plugin app, behind ``current_user`` (the app's login)."""
    from typing import Annotated

    from fastapi import Depends

    from orderflow.ui.app import User

    router = APIRouter()
    login = cached_user(current_user, VerifiedTokens())
    folder = os.environ.get("ORDERFLOW_CHECK_PROFILE")
    profiler = _Profiler(folder) if folder else None

    @router.post("/api/check", response_model=CheckAnswer)
    def check_order(draft: DraftOrder, user: Annotated[User, Depends(login)]):
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

        def answer() -> bytes:
            with pool().connection() as conn:
                _read_only(conn)
                return check(conn, draft, book(conn)).model_dump_json().encode()

        body = profiler.run(answer) if profiler else answer()
        return Response(body, media_type="application/json")

    app.include_router(router)
