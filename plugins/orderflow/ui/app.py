"""The OrderFlow operations UI: a FastAPI app the Airflow api-server mounts at ``/orderflow``
(``orderflow_plugin.py``), linked from Airflow's navigation.

- ``/orderflow/`` — KPI dashboard: headline numbers, trends, exception mix, cycle-time
  distribution, channel comparison (server-side SVG; the numbers come from
  ``orderflow.kpi_snapshot`` and ``orderflow.order_fact``, the same tables the KPI DAG writes).
- ``/orderflow/desk`` — every open exception with owner, SLA due time, escalation and age;
  filter, sort by SLA, resolve (approve / reject / keep / revalidate).
- ``/orderflow/orders/{order_id}`` — one order's whole trace, linked to the task runs.

Who is asking is Airflow's own login (its JWT); what they may resolve is the OrderFlow role
mapping (``orderflow.access``): anyone logged in may look, only the exception's owner (or
escalation) role may act — others get 403.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).with_name("templates")
PREFIX = "/orderflow"


@dataclass(frozen=True)
class User:
    name: str
    airflow_role: str | None
    roles: frozenset[str]


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get("_token")


async def current_user(request: Request) -> User:
    """The Airflow user behind the request (browser cookie or bearer token), or 401."""
    from orderflow import access

    token = _token(request)
    if not token:
        raise HTTPException(401, "log in to Airflow first")
    try:
        from airflow.api_fastapi.app import get_auth_manager

        user = await get_auth_manager().get_user_from_token(token)
    except Exception as exc:  # expired, forged, or signed by another deployment
        raise HTTPException(401, "your Airflow session has expired; log in again") from exc
    name = user.get_name()
    role = getattr(user, "role", None)
    return User(name=name, airflow_role=role, roles=access.roles_of(name))


CurrentUser = Annotated[User, Depends(current_user)]


def _conn():
    from orderflow.store import db

    return db.connect()


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True
    )
    env.filters["dt"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if v else ""
    env.filters["age"] = _age
    return env


def _age(td: timedelta | None) -> str:
    if td is None:
        return ""
    minutes = int(td.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def _page(name: str, user: User, **ctx: Any) -> HTMLResponse:
    html = _env().get_template(name).render(user=user, prefix=PREFIX, **ctx)
    return HTMLResponse(html)


def create_app() -> FastAPI:
    from orderflow.ui import pages

    app = FastAPI(title="OrderFlow operations", docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPException)
    async def _errors(request: Request, exc: HTTPException):
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            # Airflow's own login route (works with any auth manager), then back here
            return RedirectResponse(f"/api/v2/auth/login?next={request.url.path}", status_code=303)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(
                f"<h1>{exc.status_code}</h1><p>{_escape(str(exc.detail))}</p>",
                status_code=exc.status_code,
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/health")
    def health() -> JSONResponse:
        """Open to monitors (no login, no business data): is the store reachable, and which
        outbox actions have stopped delivering. 503 when the store is down."""
        import time

        t0 = time.monotonic()
        try:
            conn = _conn()
            try:
                stalled = [
                    a
                    for (a,) in conn.execute(
                        "SELECT entity_id FROM orderflow.order_exception WHERE status = 'open' "
                        "AND order_id IS NULL AND entity_type = 'outbox' ORDER BY 1"
                    )
                ]
            finally:
                conn.close()
        except Exception as exc:
            return JSONResponse(
                {"store": {"status": "unhealthy", "error": type(exc).__name__}}, status_code=503
            )
        return JSONResponse(
            {
                "store": {"status": "healthy", "ms": round((time.monotonic() - t0) * 1000, 1)},
                "outbox": {"stalled_actions": stalled},
            }
        )

    @app.get("/", response_class=HTMLResponse)
    def dashboard(user: CurrentUser, days: int = 14) -> HTMLResponse:
        conn = _conn()
        try:
            data = pages.dashboard(conn, days=days)
        finally:
            conn.close()
        return _page("dashboard.html", user, **data)

    @app.get("/api/kpis")
    def kpi_json(user: CurrentUser, days: int = 14) -> dict:
        conn = _conn()
        try:
            data = pages.dashboard(conn, days=days)
        finally:
            conn.close()
        return {"cards": data["cards"], "as_of": data["as_of"]}

    @app.get("/desk", response_class=HTMLResponse)
    def desk(
        user: CurrentUser,
        category: str | None = None,
        role: str | None = None,
        sla: str | None = None,
        sort: str = "sla",
    ) -> HTMLResponse:
        conn = _conn()
        try:
            data = pages.desk(conn, category=category, role=role, sla=sla, sort=sort)
        finally:
            conn.close()
        return _page(
            "desk.html",
            user,
            **data,
            filters={"category": category, "role": role, "sla": sla, "sort": sort},
        )

    @app.post("/desk/{exception_id}/resolve")
    def resolve(
        exception_id: int,
        user: CurrentUser,
        action: Annotated[str, Form()],
        reason: Annotated[str, Form()] = "",
    ):
        conn = _conn()
        try:
            outcome = pages.resolve(conn, exception_id, action, reason, user)
        finally:
            conn.close()
        return RedirectResponse(
            f"{PREFIX}/orders/{outcome['order_id']}?resolved={exception_id}"
            if outcome.get("order_id")
            else f"{PREFIX}/desk",
            status_code=303,
        )

    @app.get("/orders/{order_id}", response_class=HTMLResponse)
    def order(order_id: str, user: CurrentUser, resolved: int | None = None) -> HTMLResponse:
        conn = _conn()
        try:
            data = pages.order_trace(conn, order_id)
        finally:
            conn.close()
        if data is None:
            raise HTTPException(404, f"no order {order_id}")
        return _page("order.html", user, **data, resolved=resolved, now=datetime.now(UTC))

    return app


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


app = create_app()
