"""What each page of the operations UI shows (queries) and the one thing it does (resolve an
exception). Rendering is in ``templates/``; charts in ``charts.py``."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from orderflow import kpis
from orderflow.domain.approvals import APPROVABLE
from orderflow.store import ai as ai_repo
from orderflow.store import desk as desk_repo
from orderflow.store import kpis as kpi_repo
from orderflow.store import orders as order_repo
from orderflow.ui import charts

if TYPE_CHECKING:
    import psycopg

    from orderflow.ui.app import User

HEADLINE = (
    "first_pass_release_rate",
    "touchless_rate",
    "perfect_order_rate",
    "cycle_released_p50",
    "cycle_shipped_p50",
    "release_to_pick_p50",
    "manual_touches_per_order",
    "invoice_dispute_rate",
    "integration_failure_rate",
    "expedited_freight_cost",
)
TRENDS = ("first_pass_release_rate", "touchless_rate", "perfect_order_rate")
PREFIX = "/orderflow"  # where the Airflow api-server mounts the app (``app.PREFIX``)
RAW_PREVIEW = 20_000  # bytes of the inbound message shown
CYCLE_BUCKETS = (
    ("< 5 min", 0, 5),
    ("5–15 min", 5, 15),
    ("15–60 min", 15, 60),
    ("1–4 h", 60, 240),
    ("4–24 h", 240, 1440),
    ("> 1 day", 1440, None),
)


def display(kpi: kpis.Kpi, value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    if kpi.unit == "ratio":
        return f"{v * 100:.1f}%"
    if kpi.unit == "minutes":
        return f"{v:.0f} min" if v < 180 else f"{v / 60:.1f} h"
    if kpi.unit == "usd":
        return f"${v:,.2f}"
    if kpi.unit == "touches":
        return f"{v:.2f}"
    return f"{v:,.0f}"


# --------------------------------------------------------------------------- dashboard
def dashboard(conn: psycopg.Connection, *, days: int = 14) -> dict[str, Any]:
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days
    )
    snaps = kpi_repo.daily_snapshots(conn, since)
    window = {"start": since.date().isoformat(), "end": _next_day(datetime.now(UTC).date())}

    def orders_of(name: str, **args: Any) -> str:
        return drill_url(name, **{**window, **args})

    by = defaultdict(list)
    for s in snaps:
        by[(s["kpi"], s["dimension"])].append(s)
    cards = []
    for name in HEADLINE:
        k = kpis.BY_NAME[name]
        series = by.get((name, "all"), [])
        last = series[-1] if series else None
        cards.append(
            {
                "kpi": name,
                "title": k.title,
                "value": None if last is None else float(last["value"]),
                "display": display(k, last and last["value"]),
                "day": last["period_start"].date().isoformat() if last else None,
                "numerator": last and last["numerator"],
                "denominator": last and last["denominator"],
                "rate": k.rate(),
                "href": drill_url(name, **_day_window(last)) if last else orders_of(name),
                "hits_href": drill_url(name, **_day_window(last), outcome="hits")
                if last and k.rate()
                else None,
                "misses_href": drill_url(name, **_day_window(last), outcome="misses")
                if last and k.rate()
                else None,
            }
        )
    trend_names = {kpis.BY_NAME[n].title.split(" (")[0]: n for n in TRENDS}
    trend = charts.lines(
        "Daily trend",
        {
            kpis.BY_NAME[n].title.split(" (")[0]: [
                (s["period_start"].date().isoformat(), float(s["value"]) * 100)
                for s in by.get((n, "all"), [])
            ]
            for n in TRENDS
        },
        unit="%",
        href=lambda series, x: drill_url(
            trend_names[series], start=x, end=_next_day(datetime.fromisoformat(x).date())
        ),
    )
    mix: dict[str, float] = defaultdict(float)
    for (name, dim), series in by.items():
        if name == "exception_volume" and dim.startswith("category="):
            mix[dim.split("=", 1)[1]] += sum(float(s["value"]) for s in series)
    exception_mix = charts.bars(
        f"Exceptions opened by category, last {days} days",
        sorted(mix.items(), key=lambda kv: -kv[1]),
        href=lambda c: orders_of("exception_volume", dimension=f"category={c}"),
    )
    per_channel = []
    for (name, dim), series in by.items():
        if name == "first_pass_release_rate" and dim.startswith("channel="):
            num = sum(s["numerator"] or 0 for s in series)
            den = sum(s["denominator"] or 0 for s in series)
            if den:
                per_channel.append((dim.split("=", 1)[1], round(100 * float(num) / float(den), 1)))
    channels = charts.bars(
        f"First-pass release rate by channel, last {days} days",
        sorted(per_channel),
        unit="%",
        href=lambda c: orders_of("first_pass_release_rate", dimension=f"channel={c}"),
    )
    minutes = [float(m) for m in kpi_repo.release_minutes(conn, since)]
    buckets = [
        (label, sum(1 for m in minutes if m >= lo and (hi is None or m < hi)))
        for label, lo, hi in CYCLE_BUCKETS
    ]
    limits = {label: (lo, hi) for label, lo, hi in CYCLE_BUCKETS}
    cycle = charts.histogram(
        "Received → released (orders)",
        buckets,
        href=lambda label: orders_of(
            "cycle_released_p50", min_minutes=limits[label][0], max_minutes=limits[label][1]
        ),
    )
    from orderflow import rules, status

    desk_counts = status.desk_counts(conn)  # the numbers `orderflow status` prints
    # SLA attainment per exception category: the latest day each category has
    sla = []
    for (name, dim), series in sorted(by.items()):
        if name == "sla_attainment" and dim.startswith("category=") and series:
            last = series[-1]
            sla.append(
                {
                    "category": dim.split("=", 1)[1],
                    "value": float(last["value"]),
                    "numerator": last["numerator"],
                    "denominator": last["denominator"],
                    "day": last["period_start"].date().isoformat(),
                    "href": drill_url("sla_attainment", **_day_window(last), dimension=dim),
                }
            )
    as_of = max((s["computed_at"] for s in snaps), default=None)
    return {
        "cards": cards,
        "trend_chart": trend,
        "mix_chart": exception_mix,
        "channel_chart": channels,
        "cycle_chart": cycle,
        "desk_counts": desk_counts,
        "sla_attainment": sla,
        "stage_owners": rules.load().stage_owners(),
        "model_agreement": ai_repo.agreement(conn),
        "as_of": as_of.isoformat() if as_of else None,
        "days": days,
    }


def _next_day(d) -> str:
    return (d + timedelta(days=1)).isoformat()


def _day_window(snapshot: dict[str, Any]) -> dict[str, str]:
    """The day a daily snapshot covers, as drill-down arguments."""
    d = snapshot["period_start"].date()
    return {"start": d.isoformat(), "end": _next_day(d)}


def drill_url(name: str, **args: Any) -> str:
    """The page of the orders behind a KPI value (``/kpis/<name>/orders``)."""
    from urllib.parse import quote, urlencode

    query = urlencode({k: v for k, v in args.items() if v is not None and v != "all"})
    return f"{PREFIX}/kpis/{quote(name)}/orders" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- desk
PAGE_SIZES = (10, 25, 50, 100)


#: the model whose recommendation a person confirms or corrects when resolving on the desk
CAUSE_MODEL = "exception_cause"


def recommendation(d: dict[str, Any]) -> dict[str, Any]:
    """One model output as a person reads it: what it says, how sure (a percentage), the
    evidence (its top features with their values), what it was allowed to do, and whether
    a person followed it."""
    evidence = []
    for e in d.get("evidence") or []:
        if isinstance(e, dict):
            name = e.get("feature") or e.get("name") or ""
            value = e.get("value")
            evidence.append(f"{name} = {value}" if value is not None else str(name))
        else:
            evidence.append(str(e))
    reviewed = d.get("reviewed_by")
    return {
        **d,
        "confidence_pct": round(100 * float(d["score"])),
        "evidence_text": evidence,
        "review": None
        if not reviewed
        else ("followed" if d.get("followed") else f"corrected to {d.get('label')}"),
        "confirmable": d["model_name"] == CAUSE_MODEL and not reviewed,
    }


def desk(
    conn: psycopg.Connection,
    *,
    category: str | None = None,
    role: str | None = None,
    sla: str | None = None,
    sort: str = "sla",
    claimed: str | None = None,
    page: int = 1,
    page_size: int = 25,
    user: str | None = None,
) -> dict[str, Any]:
    """One work item per order (or per entity, for exceptions without an order) with the open
    exceptions that match the filters inside; a page of them, most urgent first.

    ``claimed``: ``mine`` (claimed by or assigned to ``user``), ``unclaimed``, ``claimed``."""
    from orderflow import desk as clock

    page_size = max(1, min(int(page_size), max(PAGE_SIZES)))
    page = max(1, int(page))
    where, params = desk_repo.filters(category, role, sla)
    items = desk_repo.work_items(
        conn,
        where=where,
        params=params,
        claim_object=clock.CLAIM_OBJECT,
        claimed=claimed,
        user=user,
        sort=sort,
        page_size=page_size,
        offset=(page - 1) * page_size,
    )
    total_items = items[0]["total_items"] if items else 0
    if not items and page > 1:
        # past the last page (the desk emptied meanwhile): the count of the whole selection
        total_items = desk_repo.count_items(conn, where, params)
    keys = [i["item_key"] for i in items]
    inside = desk_repo.item_exceptions(conn, where, params, keys)
    recommended = ai_repo.for_exceptions(conn, [r["exception_id"] for r in inside])
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in inside:
        r["actions"] = [(a, ACTION_LABELS[a]) for a in actions_for(r["category"], r)]
        r["recommendations"] = [recommendation(d) for d in recommended.get(r["exception_id"], [])]
        by_item[r["item_key"]].append(r)
    others = desk_repo.open_per_item(conn, keys)
    sla_rank = {"breached": 0, "nearing": 1, "ok": 2}
    for i in items:
        i["exceptions"] = by_item[i["item_key"]]
        i["other_open"] = others.get(i["item_key"], 0) - len(i["exceptions"])
        i["sla_state"] = min(
            (x["sla_state"] for x in i["exceptions"]), key=sla_rank.get, default="ok"
        )
        i["age"] = max((x["age"] for x in i["exceptions"]), default=None)
        i["owner_roles"] = sorted({x["owner_role"] for x in i["exceptions"]})
        # the actions that fit every exception of the item (what one choice can do to it)
        common = None
        for x in i["exceptions"]:
            acts = {a for a, _ in x["actions"]}
            common = acts if common is None else common & acts
        i["actions"] = [(a, ACTION_LABELS[a]) for a in ACTIONS if a in (common or ())]
        i["categories"] = sorted(i["categories"])
    facets = desk_repo.facets(conn)
    pages = max(1, -(-total_items // page_size))
    return {
        "items": items,
        "rows": inside,
        "categories": sorted(facets[0] or []),
        "roles": sorted(facets[1] or []),
        "total": facets[2],
        "total_work_items": facets[3],
        "total_items": total_items,
        "page_no": page,
        "page_size": page_size,
        "pages": pages,
        "page_links": page_window(page, pages),
        "bulk_actions": [(a, ACTION_LABELS[a]) for a in ACTIONS],
    }


def page_window(page: int, pages: int, width: int = 2) -> list[int | None]:
    """Page numbers to link: the first, the last and ``width`` either side of ``page``
    (``None`` marks a gap)."""
    shown = sorted({1, pages, *range(max(1, page - width), min(pages, page + width) + 1)})
    out: list[int | None] = []
    for n in shown:
        if out and n - (out[-1] or 0) > 1:
            out.append(None)
        out.append(n)
    return out


ACTIONS = ("approve", "revalidate", "reallocate", "retry", "resend", "close", "keep", "reject")
ACTION_LABELS = {
    "approve": "Approve",
    "revalidate": "Fixed: revalidate",
    "reallocate": "Stock arranged: reallocate",
    "retry": "Retry the failed step",
    "resend": "Resend (new control number)",
    "close": "Done: close",
    "keep": "Keep on hold (note)",
    "reject": "Reject order",
}
#: Statuses an order may be rejected (or revalidated) from: not yet released to the WMS.
PRE_RELEASE = ("RECEIVED", "ON_HOLD", "VALIDATED", "CREDIT_OK", "ALLOCATED", "READY")
#: What the desk offers per category. Approve only where a person may override the hold
#: (``domain.approvals``); data problems are fixed at their source and revalidated; short
#: stock is reallocated; failed integrations retried; follow-ups that hold no order closed.
_DATA_FIX = ("revalidate", "keep", "reject")
CATEGORY_ACTIONS: dict[str, tuple[str, ...]] = {
    **{c: ("approve", "revalidate", "keep", "reject") for c in APPROVABLE},
    "substitution_needed": ("approve", "reallocate", "keep", "reject"),
    "quantity_mismatch": ("approve", "keep"),  # shipped: bill what the WMS reported
    "unknown_item": _DATA_FIX,
    "unknown_customer": _DATA_FIX,
    "ship_to_incomplete": _DATA_FIX,
    "uom_invalid": _DATA_FIX,
    "master_data_quality": _DATA_FIX,
    "short_stock": ("reallocate", "keep", "reject"),
    "no_carrier_service": ("retry", "keep", "reject"),
    "integration_failure": ("retry", "close", "keep", "reject"),
    "stalled": ("keep",),  # resolves itself when the order moves on
    "delivery_exception": ("close", "keep"),
    "change_too_late": ("close", "keep"),
    # a document a partner rejected or never acknowledged: the order itself is not held
    "edi_rejected": ("resend", "keep"),
    "edi_ack_overdue": ("resend", "keep"),
}


def actions_for(category: str, row: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The actions that fit an exception: its category's, narrowed by where its order
    stands when ``row`` (a desk row) says (nothing rejects a shipped order, nothing retries
    an order that is not held, an exception without an order is fixed at its source)."""
    acts = CATEGORY_ACTIONS.get(category, _DATA_FIX)
    if row is None:
        return acts
    status = row.get("order_status")
    if not row.get("order_id"):
        return tuple(a for a in acts if a in ("resend", "keep"))
    if status not in PRE_RELEASE:
        acts = tuple(a for a in acts if a not in ("reject", "revalidate", "reallocate"))
    if status != "ON_HOLD":
        acts = tuple(a for a in acts if a != "retry")
    if category == "integration_failure" and status == "ON_HOLD":
        acts = tuple(a for a in acts if a != "close")
    if category == "integration_failure" and status != "ON_HOLD":
        acts = tuple(a for a in acts if a != "reject")
    return acts


def _refuse_unless_may_resolve(user: User, exception_id: int, owner: str, escalation) -> None:
    from orderflow import access

    if not access.may_resolve(user.name, owner, escalation):
        raise HTTPException(
            403,
            f"{user.name} does not hold the {owner} role"
            + (f" (or {escalation})" if escalation else "")
            + f" needed to resolve exception {exception_id}",
        )


def resolve(
    conn: psycopg.Connection,
    exception_id: int,
    action: str,
    reason: str,
    user: User,
    cause: str | None = None,
) -> dict[str, Any]:
    """Resolve one exception as ``user``: only its owner or escalation role may (403).

    ``cause``: the person's verdict on the model's suggested cause — the same label follows
    it, another corrects it; either is the label the next training takes."""
    from orderflow import decisions
    from orderflow import desk as desk_actions
    from orderflow.domain.approvals import APPROVE, KEEP, REJECT
    from orderflow.processing import RunContext

    row = desk_repo.exception_for_resolve(conn, exception_id)
    if row is None:
        raise HTTPException(404, f"no exception {exception_id}")
    order_id, owner, escalation, status, category, order_status = row
    _refuse_unless_may_resolve(user, exception_id, owner, escalation)
    if status != "open":
        raise HTTPException(409, f"exception {exception_id} is already resolved")
    if action not in ACTIONS:
        raise HTTPException(422, f"action must be one of {', '.join(ACTIONS)}")
    if cause and cause not in causes():
        raise HTTPException(422, f"unknown cause {cause!r}: one of {', '.join(causes())}")
    fits = actions_for(category, {"order_id": order_id, "order_status": order_status})
    if action not in fits:
        raise HTTPException(
            409,
            f"{category} on an order {order_status or 'without order'} is resolved by "
            f"{' or '.join(fits) or 'its source system'}, not {action}",
        )
    ctx = RunContext(dag_id="orderflow_ui", run_id=f"ui__{user.name}", task_id="desk")
    try:
        if action == "resend":
            from orderflow import edi_acks

            try:
                out = edi_acks.resend(
                    conn, exception_id, actor=user.name, reason=reason, role=owner
                )
            except edi_acks.ResendRefused as exc:
                raise HTTPException(409, str(exc)) from exc
            if not out["applied"]:
                raise HTTPException(409, f"exception {exception_id} is already resolved")
        elif action == "retry":
            out = desk_actions.retry(conn, exception_id, actor=user.name, reason=reason, ctx=ctx)
        elif action == "close":
            out = desk_actions.close(conn, exception_id, actor=user.name, reason=reason)
        elif action in ("revalidate", "reallocate"):
            if not order_id:
                raise decisions.DecisionRefused("a master-data exception is fixed in the ERP")
            out = decisions.reprocess(
                conn, order_id, action, actor=user.name, reason=reason, ctx=ctx
            )
            # The next processing run takes it (the UI holds no claim of its own).
            order_repo.unclaim(conn, order_id, ctx.run_id)
        else:
            choice = {"approve": APPROVE, "reject": REJECT, "keep": KEEP}[action]
            out = decisions.decide(
                conn, exception_id, choice, actor=user.name, reason=reason, ctx=ctx
            )
    except (decisions.DecisionRefused, desk_actions.ActionRefused) as exc:
        raise HTTPException(409, str(exc)) from exc
    if cause:
        out["cause_review"] = _review_cause(conn, exception_id, cause, user, owner)
    return {"order_id": order_id, **out}


def causes() -> list[str]:
    """The causes a person may name on the desk: those the routing rules in force know."""
    from orderflow import rules

    return sorted(rules.load().routing.causes)


def _review_cause(
    conn: psycopg.Connection, exception_id: int, cause: str, user: User, role: str
) -> str | None:
    """Record the resolver's verdict on the suggested cause (once; None: nothing to review)."""
    from orderflow.ai import governance

    decision = ai_repo.unreviewed_decision(conn, exception_id, CAUSE_MODEL)
    if decision is None:
        return None
    decision_id, suggested = decision
    followed = cause == suggested
    governance.review(
        conn,
        decision_id,
        actor=user.name,
        followed=followed,
        label=None if followed else cause,
        actor_role=role,
    )
    return "followed" if followed else "corrected"


def _targets(
    conn: psycopg.Connection,
    items: list[str],
    action: str,
    *,
    category: str | None = None,
    role: str | None = None,
) -> list[dict[str, Any]]:
    """The open exceptions of the chosen work items that ``action`` fits (within the desk's
    category / role filter)."""
    where, params = desk_repo.filters(category, role, None)
    rows = desk_repo.action_targets(conn, where, params, items)
    return [r for r in rows if action in actions_for(r["category"], r)]


def bulk_resolve(
    conn: psycopg.Connection,
    items: list[str],
    action: str,
    reason: str,
    user: User,
    *,
    category: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """One action on many work items: every open exception of them the action fits is
    resolved one by one exactly as :func:`resolve` does it (its own transaction, role check
    and audit row). Authorisation is all or nothing: if ``user`` may not resolve every one
    of them, nothing is done (403, naming them). An exception already resolved with its
    order (a reject or revalidate resolves the order's others) is reported, not an error."""
    from orderflow import access

    if action not in ACTIONS:
        raise HTTPException(422, f"action must be one of {', '.join(ACTIONS)}")
    if not items:
        raise HTTPException(422, "choose at least one work item")
    targets = _targets(conn, items, action, category=category, role=role)
    if not targets:
        raise HTTPException(409, f"{action} fits none of the open exceptions of those items")
    barred = [
        t
        for t in targets
        if not access.may_resolve(user.name, t["owner_role"], t["escalation_role"])
    ]
    if barred:
        raise HTTPException(
            403,
            f"{user.name} may not resolve "
            + "; ".join(
                f"exception {t['exception_id']} ({t['category']}, needs {t['owner_role']}"
                + (f" or {t['escalation_role']}" if t["escalation_role"] else "")
                + ")"
                for t in barred[:20]
            )
            + (f" and {len(barred) - 20} more" if len(barred) > 20 else "")
            + ": nothing was resolved",
        )
    results = []
    for t in targets:
        still = desk_repo.exception_state(conn, t["exception_id"])
        if still[0] != "open":
            results.append(
                {**t, "outcome": "done", "detail": f"resolved with its order ({still[1]})"}
            )
            continue
        try:
            out = resolve(conn, t["exception_id"], action, reason, user)
            results.append(
                {**t, "outcome": "done", "detail": f"order {out.get('order_status') or ''}".strip()}
            )
        except HTTPException as exc:
            results.append({**t, "outcome": f"refused {exc.status_code}", "detail": exc.detail})
    done = sum(1 for r in results if r["outcome"] == "done")
    return {
        "action": action,
        "results": results,
        "done": done,
        "refused": len(results) - done,
        "items": sorted({t["item_key"] for t in targets}),
    }


def claim(
    conn: psycopg.Connection,
    items: list[str],
    user: User,
    *,
    assignee: str | None,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Claim (``assignee`` = the user), assign or release (``None``) work items. Only a user
    who may resolve one of an item's open exceptions may claim it, and it may be assigned
    only to such a user (403 otherwise); each change audited."""
    from orderflow import access
    from orderflow import desk as clock

    if not items:
        raise HTTPException(422, "choose at least one work item")
    rows = desk_repo.item_roles(conn, items)
    roles: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for k, owner, esc in rows:
        roles[k].add((owner, esc))
    missing = [k for k in items if k not in roles]
    if missing:
        raise HTTPException(404, f"no open exceptions on {', '.join(missing)}")
    for k in items:
        for who in {user.name, *([assignee] if assignee else [])}:
            if not any(access.may_resolve(who, o, e) for o, e in roles[k]):
                needed = sorted({o for o, _ in roles[k]})
                raise HTTPException(
                    403,
                    f"{who} holds none of the roles that work {k} ({', '.join(needed)}): "
                    "nothing was claimed",
                )
    role_text = ",".join(sorted(access.roles_of(user.name))) or None
    return [
        clock.set_claim(conn, k, assignee, actor=user.name, role=role_text, reason=reason)
        for k in items
    ]


def assignable(conn: psycopg.Connection, roles: list[str]) -> list[str]:
    """Users who may work items owned by ``roles``."""
    from orderflow import access

    return access.users_with(*roles)


# --------------------------------------------------------------------------- order trace
def task_link(dag_id: str | None, run_id: str | None, task_id: str | None, map_index) -> str | None:
    """The Airflow UI page of the task run that made a step."""
    if not (dag_id and run_id and task_id) or dag_id == "orderflow_ui":
        return None
    from urllib.parse import quote

    url = f"/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}"
    return url + (f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else "")


def order_trace(conn: psycopg.Connection, order_id: str) -> dict[str, Any] | None:
    orders = order_repo.header(conn, order_id)
    if not orders:
        return None
    order = orders[0]
    message = (
        order_repo.source_message(conn, order["source_message_id"], RAW_PREVIEW)
        if order["source_message_id"]
        else []
    )
    events = order_repo.events(conn, order_id)
    for e in events:
        e["link"] = task_link(e["dag_id"], e["run_id"], e["task_id"], e["map_index"])
    for m in message:
        raw = bytes(m.pop("raw_head") or b"")
        m["preview"] = raw.decode("utf-8", errors="replace")
        m["segments"] = edi_segments(m["preview"]) if m["channel"] == "edi" else []
        m["truncated"] = (m["raw_length"] or 0) > RAW_PREVIEW
    data = {
        "order": order,
        "message": message[0] if message else None,
        "lines": order_repo.lines(conn, order_id),
        "events": events,
        "exceptions": order_repo.exceptions(conn, order_id),
        "audit": order_repo.audit_trail(conn, order_id),
        "documents": order_repo.documents(conn, order_id),
        "shipments": order_repo.shipments(conn, order_id),
        "invoices": order_repo.invoices(conn, order_id),
        "recommendations": [
            recommendation(d) for d in reversed(ai_repo.decisions_for(conn, order_id=order_id))
        ],
    }
    data["customer_status"] = customer_status(order, data["lines"])
    data["promised_date"] = promised_date(data["shipments"])
    data["as_of"] = order_repo.now(conn)
    return data


# --------------------------------------------------------------------------- order page
#: What the customer is told, by order status (no hold reasons, no internal stages).
CUSTOMER_STATUS = {
    "RECEIVED": "Received",
    "ON_HOLD": "In review",
    "VALIDATED": "Confirmed",
    "CREDIT_OK": "Confirmed",
    "ALLOCATED": "Confirmed",
    "READY": "Confirmed",
    "RELEASED": "Being prepared",
    "PICKED": "Being prepared",
    "SHIPPED": "Shipped",
    "DELIVERED": "Delivered",
    "INVOICED": "Delivered",
    "CLOSED": "Completed",
    "CANCELLED": "Cancelled",
    "REJECTED": "Not accepted",
}


def customer_status(order: dict[str, Any], lines: list[dict[str, Any]]) -> str:
    text = CUSTOMER_STATUS.get(order["status"], order["status"].title())
    if any((line.get("backordered_qty") or 0) > 0 for line in lines) and order["status"] not in (
        "CANCELLED",
        "REJECTED",
    ):
        text += " (part backordered)"
    return text


def add_business_days(start, days: int):
    d = start
    while days > 0:
        d += timedelta(days=1)
        days -= d.weekday() < 5
    return d


def promised_date(shipments: list[dict[str, Any]], requested_ship_date=None):
    """The delivery date promised: the latest of the live shipments' ship date plus their
    service's transit days (weekdays). None before planning."""
    dates = [
        add_business_days(s["ship_date"], int(s["transit_days"]))
        for s in shipments
        if s.get("status") != "cancelled"
        and s.get("ship_date")
        and s.get("transit_days") is not None
    ]
    return max(dates) if dates else None


def edi_segments(text: str | None) -> list[str]:
    """An X12 interchange as one segment a line (the segment terminator is the character
    after ISA16; other text is split on its own lines)."""
    if not text:
        return []
    body = text.lstrip("\ufeff \t\r\n")
    if body.startswith("ISA") and len(body) > 106:
        term = body[105]
        if term in "\r\n":
            return [s for s in body.splitlines() if s.strip()]
        return [seg.strip("\r\n") + term for seg in body.split(term) if seg.strip("\r\n ")]
    return text.splitlines()


# --------------------------------------------------------------------------- lookup
SEARCH_LIMIT = 100


def search(conn: psycopg.Connection, q: str, *, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
    """Orders by PO number, customer (id or name), order id, tracking number or invoice
    number (ours or the ERP's): exact matches first, then partial ones; what matched is
    named in ``matched``."""
    q = (q or "").strip()
    if not q:
        return []
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = order_repo.search(
        conn,
        q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"),
        like,
        limit,
    )
    for r in rows:
        r["customer_status"] = CUSTOMER_STATUS.get(r["status"], r["status"])
    return rows


# --------------------------------------------------------------------------- KPI drill-down
def drill_window(
    start: str | None, end: str | None, *, days: int = 14
) -> tuple[datetime, datetime]:
    """[start, end) from ISO dates (``end`` exclusive); by default the dashboard's window."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    s = _day(start) if start else today - timedelta(days=days)
    e = _day(end) if end else today + timedelta(days=1)
    if e <= s:
        raise HTTPException(422, "the period ends before it starts")
    return s, e


def _day(text: str) -> datetime:
    try:
        d = datetime.fromisoformat(text)
    except ValueError as exc:
        raise HTTPException(422, f"not a date: {text!r}") from exc
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def drill(
    conn: psycopg.Connection,
    name: str,
    start: datetime,
    end: datetime,
    *,
    dimension: str = "all",
    outcome: str = "all",
    limit: int = 1000,
    minutes: tuple[float, float | None] | None = None,
) -> dict[str, Any]:
    """The orders behind a KPI value (``kpis.drill``): hits and misses of a rate marked
    apart, each with what the desk and a customer-service agent need to recognise it.
    ``minutes``: only orders whose received → released time falls in [lo, hi) (the cycle
    histogram's buckets)."""
    kpi = kpis.BY_NAME.get(name)
    if kpi is None:
        raise HTTPException(404, f"no KPI {name}")
    if outcome not in ("all", "hits", "misses"):
        raise HTTPException(422, "outcome is all, hits or misses")
    try:
        if kpi.rate():
            hit_ids = (
                kpis.drill(conn, kpi, start, end, dimension=dimension, hits=True, limit=limit)
                if outcome != "misses"
                else []
            )
            miss_ids = (
                kpis.drill(conn, kpi, start, end, dimension=dimension, hits=False, limit=limit)
                if outcome != "hits"
                else []
            )
        else:
            hit_ids, miss_ids = [], []
            all_ids = kpis.drill(conn, kpi, start, end, dimension=dimension, limit=limit)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    mark: dict[str, str] = {}
    if kpi.rate():
        mark.update({o: "hit" for o in hit_ids})
        mark.update({o: "miss" for o in miss_ids})
    else:
        mark.update({o: "" for o in all_ids})
    if minutes is not None and mark:
        lo, hi = minutes
        keep = set(kpi_repo.released_within(conn, list(mark), lo, hi))
        mark = {o: m for o, m in mark.items() if o in keep}
    rows = order_repo.summaries(conn, list(mark))
    for r in rows:
        r["outcome"] = mark[r["order_id"]]
    return {
        "kpi": kpi,
        "start": start,
        "end": end,
        "dimension": dimension,
        "outcome": outcome,
        "rows": rows,
        "hits": sum(1 for r in rows if r["outcome"] == "hit"),
        "misses": sum(1 for r in rows if r["outcome"] == "miss"),
        "limit": limit,
        "truncated": max(len(hit_ids), len(miss_ids), len(mark)) >= limit,
    }


#: A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "kpi",
    "period_start",
    "period_end",
    "dimension",
    "outcome",
    "order_id",
    "po_number",
    "customer_id",
    "channel",
    "status",
    "received_at",
    "order_total",
    "currency",
)


def csv_cell(value: Any) -> str:
    """A value as a CSV cell a spreadsheet will not evaluate: text starting with = + - @ tab
    or CR gets a leading single quote."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def drill_csv(data: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in data["rows"]:
        row = {
            "kpi": data["kpi"].name,
            "period_start": data["start"],
            "period_end": data["end"],
            "dimension": data["dimension"],
            **r,
        }
        w.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()
