"""The OrderFlow operations UI: a FastAPI app the Airflow api-server mounts at ``/orderflow``
(``orderflow_plugin.py``), linked from Airflow's navigation.

- ``/orderflow/`` — KPI dashboard: headline numbers, trends, exception mix, cycle-time
  distribution, channel comparison (server-side SVG; the numbers come from
  ``orderflow.kpi_snapshot`` and ``orderflow.order_fact``, the same tables the KPI DAG writes).
- ``/orderflow/desk`` — one work item per order (or per entity without one) with its open
  exceptions inside; filter (category, role, SLA state, claimed), sort, paginate
  (``page``, ``size``); claim / assign / release (audited); resolve one exception with the
  actions that fit its category, or many work items at once (``POST /desk/bulk``).
- ``/orderflow/search?q=`` — customer-service lookup by PO, customer, order id, tracking
  or invoice number.
- ``/orderflow/kpis/{kpi}/orders`` (and ``.csv``) — the orders behind a KPI value, hits and
  misses apart (``start``, ``end``, ``dimension``, ``outcome``); every card and bar links here.
- ``/orderflow/orders/{order_id}`` — one order's whole trace, linked to the task runs, with
  the customer-facing status and promised date, on one (business) clock.
- ``/orderflow/rules`` — rule governance: versions in force, promotion log, what-if runs, a
  form to launch a what-if (stored version or pasted YAML, over a window);
  ``/orderflow/rules/whatif/{run_id}`` — its totals and per-order differences; Promote /
  Roll back (POST with a reason) for the ``rule_approver`` role only (``rule_pages``).
- ``/orderflow/api/check`` — the order check (POST a draft order, JSON answer; sales,
  customer_service and operations_manager roles): ``orderflow.ordercheck``.
- ``/orderflow/api/events/{source}`` — the WMS's and carrier's webhooks (``wms``,
  ``carrier``) and the portal's and marketplace's new-order notices (``portal``,
  ``marketplace``): signed with the ``fulfilment_push`` secret, not Airflow's login
  (``orderflow.pushed``).
- ``/orderflow/integrations`` — integration health per partner and endpoint, partners' 997s,
  overdue acknowledgements, and dead letters replayed by the ``integration`` role
  (``integration_pages``).

Who is asking is Airflow's own login (its JWT); what they may resolve is the OrderFlow role
mapping (``orderflow.access``): anyone logged in may look, only the exception's owner (or
escalation) role may act — others get 403.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

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
    env.filters["secs"] = _secs
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


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


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
                from orderflow.store import desk

                stalled = desk.stalled_outbox_actions(conn)
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
        claimed: str | None = None,
        page: int = 1,
        size: int = 25,
    ) -> HTMLResponse:
        conn = _conn()
        try:
            data = pages.desk(
                conn,
                category=category or None,
                role=role or None,
                sla=sla or None,
                sort=sort,
                claimed=claimed or None,
                page=page,
                page_size=size,
                user=user.name,
            )
            assignees = pages.assignable(
                conn, sorted({r for i in data["items"] for r in i["owner_roles"]})
            )
        finally:
            conn.close()
        filters = {
            "category": category or "",
            "role": role or "",
            "sla": sla or "",
            "sort": sort,
            "claimed": claimed or "",
            "size": data["page_size"],
        }
        return _page(
            "desk.html",
            user,
            **data,
            filters=filters,
            query=lambda **kw: _query({**filters, **kw}),
            assignees=assignees,
            page_sizes=pages.PAGE_SIZES,
            causes=pages.causes(),
        )

    @app.post("/desk/{exception_id}/resolve")
    def resolve(
        exception_id: int,
        user: CurrentUser,
        action: Annotated[str, Form()],
        reason: Annotated[str, Form()] = "",
        cause: Annotated[str, Form()] = "",
    ):
        conn = _conn()
        try:
            outcome = pages.resolve(conn, exception_id, action, reason, user, cause or None)
        finally:
            conn.close()
        return RedirectResponse(
            f"{PREFIX}/orders/{quote(outcome['order_id'], safe='')}?resolved={exception_id}"
            if outcome.get("order_id")
            else f"{PREFIX}/desk",
            status_code=303,
        )

    @app.post("/desk/bulk")
    def bulk(
        request: Request,
        user: CurrentUser,
        action: Annotated[str, Form()],
        item: Annotated[list[str] | None, Form()] = None,
        reason: Annotated[str, Form()] = "",
        category: Annotated[str, Form()] = "",
        role: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "",
    ):
        """One action on the chosen work items (``action=claim`` / ``unclaim`` claims or
        releases them; any resolve action resolves each exception as the single form)."""
        conn = _conn()
        try:
            if action in ("claim", "unclaim"):
                pages.claim(
                    conn,
                    item or [],
                    user,
                    assignee=user.name if action == "claim" else None,
                    reason=reason or None,
                )
                return RedirectResponse(_back(back), status_code=303)
            out = pages.bulk_resolve(
                conn,
                item or [],
                action,
                reason,
                user,
                category=category or None,
                role=role or None,
            )
        finally:
            conn.close()
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(jsonable_encoder(out))
        return _page("bulk.html", user, **out, back=_back(back))

    @app.post("/desk/claim")
    def claim(
        user: CurrentUser,
        item: Annotated[str, Form()],
        assignee: Annotated[str, Form()] = "",
        release: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "",
    ):
        """Claim a work item (no ``assignee``), assign it (``assignee``) or release it."""
        conn = _conn()
        try:
            pages.claim(conn, [item], user, assignee=None if release else (assignee or user.name))
        finally:
            conn.close()
        return RedirectResponse(_back(back), status_code=303)

    @app.get("/search", response_class=HTMLResponse)
    def search(user: CurrentUser, q: str = "") -> HTMLResponse:
        conn = _conn()
        try:
            rows = pages.search(conn, q)
        finally:
            conn.close()
        return _page("search.html", user, q=q, rows=rows, limit=pages.SEARCH_LIMIT)

    def _drill(name: str, start, end, dimension: str, outcome: str, lo, hi, limit: int) -> dict:
        s, e = pages.drill_window(start, end)
        conn = _conn()
        try:
            return pages.drill(
                conn,
                name,
                s,
                e,
                dimension=dimension,
                outcome=outcome,
                limit=limit,
                minutes=None if lo is None else (lo, hi),
            )
        finally:
            conn.close()

    @app.get("/kpis/{name}/orders", response_class=HTMLResponse)
    def drill(
        name: str,
        user: CurrentUser,
        start: str | None = None,
        end: str | None = None,
        dimension: str = "all",
        outcome: str = "all",
        min_minutes: float | None = None,
        max_minutes: float | None = None,
    ) -> HTMLResponse:
        data = _drill(name, start, end, dimension, outcome, min_minutes, max_minutes, 1000)
        args = {
            "start": data["start"].date().isoformat(),
            "end": data["end"].date().isoformat(),
            "dimension": dimension,
            "outcome": outcome,
            "min_minutes": min_minutes,
            "max_minutes": max_minutes,
        }
        return _page(
            "drill.html",
            user,
            **data,
            query=lambda **kw: _query({**args, **kw}),
        )

    @app.get("/kpis/{name}/orders.csv")
    def drill_csv(
        name: str,
        user: CurrentUser,
        start: str | None = None,
        end: str | None = None,
        dimension: str = "all",
        outcome: str = "all",
        min_minutes: float | None = None,
        max_minutes: float | None = None,
    ) -> Response:
        data = _drill(name, start, end, dimension, outcome, min_minutes, max_minutes, 100_000)
        filename = f"{name}_{data['start']:%Y%m%d}_{data['end']:%Y%m%d}_{outcome}.csv"
        return Response(
            pages.drill_csv(data),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
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
        return _page("order.html", user, **data, resolved=resolved)

    from orderflow.ordercheck import api as order_check

    order_check.register(app, current_user)  # POST /api/check

    from orderflow.pushed import api as pushed_events

    pushed_events.register(app)  # POST /api/events/{source}: signed webhooks, no login

    # ------------------------------------------------------------------ rule governance
    from orderflow.ui import integration_pages, rule_pages

    @app.get("/rules", response_class=HTMLResponse)
    def rules_overview(
        user: CurrentUser, promoted: int | None = None, rolled_back: str | None = None
    ) -> HTMLResponse:
        conn = _conn()
        try:
            data = rule_pages.overview(conn)
        finally:
            conn.close()
        flash = None
        if promoted is not None:
            flash = f"Promoted (activation {promoted}): in force from now."
        elif rolled_back:
            flash = f"{rolled_back} rolled back: the version the promotion replaced is in force."
        return _page("rules.html", user, **data, approver=rule_pages.is_approver(user), flash=flash)

    @app.post("/rules/whatif")
    def rules_whatif(
        user: CurrentUser,
        candidate: Annotated[str, Form()] = "",
        candidate_yaml: Annotated[str, Form()] = "",
        window_from: Annotated[str, Form()] = "",
        window_to: Annotated[str, Form()] = "",
    ):
        conn = _conn()
        try:
            run_id = rule_pages.launch_whatif(
                conn,
                user,
                candidate=candidate,
                candidate_yaml=candidate_yaml,
                window_from=window_from,
                window_to=window_to,
            )
        finally:
            conn.close()
        return RedirectResponse(f"{PREFIX}/rules/whatif/{run_id}", status_code=303)

    @app.get("/rules/whatif/{run_id}", response_class=HTMLResponse)
    def rules_whatif_report(run_id: int, user: CurrentUser) -> HTMLResponse:
        conn = _conn()
        try:
            data = rule_pages.whatif_page(conn, run_id)
        finally:
            conn.close()
        return _page("whatif.html", user, **data, approver=rule_pages.is_approver(user))

    @app.post("/rules/whatif/{run_id}/promote")
    def rules_promote(
        run_id: int,
        user: CurrentUser,
        reason: Annotated[str, Form()] = "",
        rule_set: Annotated[str, Form()] = "",
    ):
        conn = _conn()
        try:
            done = rule_pages.promote(conn, user, run_id, rule_set, reason)
        finally:
            conn.close()
        return RedirectResponse(
            f"{PREFIX}/rules?promoted={done['to']['activation_id']}", status_code=303
        )

    @app.post("/rules/{rule_set}/rollback")
    def rules_rollback(rule_set: str, user: CurrentUser, reason: Annotated[str, Form()] = ""):
        conn = _conn()
        try:
            rule_pages.rollback(conn, user, rule_set, reason)
        finally:
            conn.close()
        return RedirectResponse(
            f"{PREFIX}/rules?{_query({'rolled_back': rule_set})}", status_code=303
        )

    # ------------------------------------------------------------------ integrations
    @app.get("/integrations", response_class=HTMLResponse)
    def integrations(user: CurrentUser, days: int = 7, replayed: str | None = None) -> HTMLResponse:
        conn = _conn()
        try:
            data = integration_pages.health(conn, days=days)
        finally:
            conn.close()
        return _page(
            "integrations.html",
            user,
            **data,
            replayer=integration_pages.may_replay(user),
            flash=f"{replayed}: queued again (audited)." if replayed else None,
        )

    @app.get("/api/integrations")
    def integrations_json(user: CurrentUser, days: int = 7) -> JSONResponse:
        conn = _conn()
        try:
            data = integration_pages.health(conn, days=days)
        finally:
            conn.close()
        return JSONResponse(jsonable_encoder(data))

    @app.post("/integrations/replay")
    def integrations_replay(
        user: CurrentUser,
        key: Annotated[str, Form()],
        kind: Annotated[str, Form()] = "resend",
        reason: Annotated[str, Form()] = "",
    ):
        conn = _conn()
        try:
            integration_pages.replay(conn, user, key, kind, reason)
        finally:
            conn.close()
        return RedirectResponse(
            f"{PREFIX}/integrations?{_query({'replayed': key})}", status_code=303
        )

    return app


def _query(params: dict[str, Any]) -> str:
    """A query string of the non-empty ``params``."""
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _back(url: str) -> str:
    """Where to go after a form: a page of ours, never another site."""
    return (
        url
        if url.startswith(f"{PREFIX}/") and "//" not in url and "\\" not in url
        else f"{PREFIX}/desk"
    )


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


app = create_app()
