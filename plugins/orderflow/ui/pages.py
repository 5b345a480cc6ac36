"""What each page of the operations UI shows (queries) and the one thing it does (resolve an
exception). Rendering is in ``templates/``; charts in ``charts.py``."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from orderflow import kpis
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
CYCLE_BUCKETS = (
    ("< 5 min", 0, 5),
    ("5–15 min", 5, 15),
    ("15–60 min", 15, 60),
    ("1–4 h", 60, 240),
    ("4–24 h", 240, 1440),
    ("> 1 day", 1440, None),
)


def _rows(cur) -> list[dict[str, Any]]:
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


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
    snaps = _rows(
        conn.execute(
            "SELECT kpi, period_start, dimension, value, numerator, denominator, computed_at "
            "FROM orderflow.kpi_snapshot WHERE grain = 'day' AND period_start >= %s "
            "ORDER BY period_start",
            (since,),
        )
    )
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
            }
        )
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
    )
    mix: dict[str, float] = defaultdict(float)
    for (name, dim), series in by.items():
        if name == "exception_volume" and dim.startswith("category="):
            mix[dim.split("=", 1)[1]] += sum(float(s["value"]) for s in series)
    exception_mix = charts.bars(
        f"Exceptions opened by category, last {days} days",
        sorted(mix.items(), key=lambda kv: -kv[1]),
    )
    per_channel = []
    for (name, dim), series in by.items():
        if name == "first_pass_release_rate" and dim.startswith("channel="):
            num = sum(s["numerator"] or 0 for s in series)
            den = sum(s["denominator"] or 0 for s in series)
            if den:
                per_channel.append((dim.split("=", 1)[1], round(100 * float(num) / float(den), 1)))
    channels = charts.bars(
        f"First-pass release rate by channel, last {days} days", sorted(per_channel), unit="%"
    )
    minutes = [
        float(r[0])
        for r in conn.execute(
            "SELECT extract(epoch FROM released_at - received_at) / 60 FROM orderflow.order_fact "
            "WHERE released_at >= %s",
            (since,),
        )
    ]
    buckets = [
        (label, sum(1 for m in minutes if m >= lo and (hi is None or m < hi)))
        for label, lo, hi in CYCLE_BUCKETS
    ]
    cycle = charts.histogram("Received → released (orders)", buckets)
    desk_counts = dict(
        conn.execute(
            "SELECT sla_state, count(*) FROM orderflow.exception_desk GROUP BY 1"
        ).fetchall()
    )
    as_of = max((s["computed_at"] for s in snaps), default=None)
    return {
        "cards": cards,
        "trend_chart": trend,
        "mix_chart": exception_mix,
        "channel_chart": channels,
        "cycle_chart": cycle,
        "desk_counts": desk_counts,
        "as_of": as_of.isoformat() if as_of else None,
        "days": days,
    }


# --------------------------------------------------------------------------- desk
SORTS = {
    "sla": "sla_due_at",
    "age": "opened_at",
    "category": "category, sla_due_at",
    "severity": "array_position(ARRAY['critical','high','medium','low'], severity), sla_due_at",
}


def desk(
    conn: psycopg.Connection,
    *,
    category: str | None = None,
    role: str | None = None,
    sla: str | None = None,
    sort: str = "sla",
    limit: int = 500,
) -> dict[str, Any]:
    where, params = ["true"], []
    if category:
        where.append("category = %s")
        params.append(category)
    if role:
        where.append("(owner_role = %s OR escalation_role = %s)")
        params += [role, role]
    if sla:
        where.append("sla_state = %s")
        params.append(sla)
    order = SORTS.get(sort, SORTS["sla"])
    rows = _rows(
        conn.execute(
            f"SELECT * FROM orderflow.exception_desk WHERE {' AND '.join(where)} "
            f"ORDER BY {order} LIMIT %s",
            (*params, limit),
        )
    )
    for r in rows:
        r["actions"] = [(a, ACTION_LABELS[a]) for a in actions_for(r["category"])]
    facets = conn.execute(
        "SELECT array_agg(DISTINCT category), array_agg(DISTINCT owner_role) "
        "FROM orderflow.exception_desk"
    ).fetchone()
    return {
        "rows": rows,
        "categories": sorted(facets[0] or []),
        "roles": sorted(facets[1] or []),
        "total": conn.execute("SELECT count(*) FROM orderflow.exception_desk").fetchone()[0],
    }


ACTIONS = ("approve", "reject", "keep", "revalidate", "resend")
#: what the desk offers per category where it differs from the order holds' four
CATEGORY_ACTIONS = {
    # a document a partner rejected or never acknowledged: the order itself is not held
    "edi_rejected": ("resend", "keep"),
    "edi_ack_overdue": ("resend", "keep"),
}


ACTION_LABELS = {
    "approve": "Approve",
    "revalidate": "Fixed: revalidate",
    "keep": "Keep on hold",
    "reject": "Reject order",
    "resend": "Resend (new control number)",
}


def actions_for(category: str) -> tuple[str, ...]:
    return CATEGORY_ACTIONS.get(category, ("approve", "revalidate", "keep", "reject"))


def resolve(
    conn: psycopg.Connection, exception_id: int, action: str, reason: str, user: User
) -> dict[str, Any]:
    """Resolve one exception as ``user``: only its owner or escalation role may (403)."""
    from orderflow import access, decisions
    from orderflow.domain.approvals import APPROVE, KEEP, REJECT
    from orderflow.processing import RunContext

    row = conn.execute(
        "SELECT order_id, owner_role, escalation_role, status, category "
        "FROM orderflow.order_exception WHERE exception_id = %s",
        (exception_id,),
    ).fetchone()
    if row is None:
        raise HTTPException(404, f"no exception {exception_id}")
    order_id, owner, escalation, status, category = row
    if not access.may_resolve(user.name, owner, escalation):
        raise HTTPException(
            403,
            f"{user.name} does not hold the {owner} role"
            + (f" (or {escalation})" if escalation else "")
            + f" needed to resolve exception {exception_id}",
        )
    if status != "open":
        raise HTTPException(409, f"exception {exception_id} is already resolved")
    if action not in ACTIONS:
        raise HTTPException(422, f"action must be one of {', '.join(ACTIONS)}")
    if action not in actions_for(category):
        raise HTTPException(
            409, f"{category} is resolved by {' or '.join(actions_for(category))}, not {action}"
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
        elif action == "revalidate":
            if not order_id:
                raise decisions.DecisionRefused("a master-data exception is fixed in the ERP")
            out = decisions.reprocess(
                conn, order_id, "revalidate", actor=user.name, reason=reason, ctx=ctx
            )
            # The next processing run takes it (the UI holds no claim of its own).
            conn.execute(
                'UPDATE orderflow."order" SET claimed_by_run = NULL, claimed_at = NULL '
                "WHERE order_id = %s AND claimed_by_run = %s",
                (order_id, ctx.run_id),
            )
        else:
            choice = {"approve": APPROVE, "reject": REJECT, "keep": KEEP}[action]
            out = decisions.decide(
                conn, exception_id, choice, actor=user.name, reason=reason, ctx=ctx
            )
    except decisions.DecisionRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"order_id": order_id, **out}


# --------------------------------------------------------------------------- order trace
def task_link(dag_id: str | None, run_id: str | None, task_id: str | None, map_index) -> str | None:
    """The Airflow UI page of the task run that made a step."""
    if not (dag_id and run_id and task_id) or dag_id == "orderflow_ui":
        return None
    from urllib.parse import quote

    url = f"/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}"
    return url + (f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else "")


def order_trace(conn: psycopg.Connection, order_id: str) -> dict[str, Any] | None:
    orders = _rows(
        conn.execute(
            "SELECT order_id, channel, partner_id, customer_id, po_number, ship_to_id, status, "
            "status_changed_at, order_total, tax_amount, currency, received_at, "
            "requested_ship_date, rule_set_version, manual_touches, approvals, release_version, "
            'source_message_id FROM orderflow."order" WHERE order_id = %s',
            (order_id,),
        )
    )
    if not orders:
        return None
    order = orders[0]
    message = (
        _rows(
            conn.execute(
                "SELECT message_id, channel, partner_id, source_ref, content_sha256, received_at, "
                "interchange_control_number, group_control_number, transaction_control_numbers, "
                "client_request_id, outcome, convert_from(substring(raw FROM 1 FOR 1500), 'UTF8') "
                "AS preview FROM orderflow.channel_message WHERE message_id = %s",
                (order["source_message_id"],),
            )
        )
        if order["source_message_id"]
        else []
    )
    events = _rows(
        conn.execute(
            "SELECT event_id, occurred_at, from_status, to_status, reason_codes, "
            "rule_set_version, actor_type, actor_id, details, dag_id, run_id, task_id, map_index "
            "FROM orderflow.order_event WHERE order_id = %s ORDER BY event_id",
            (order_id,),
        )
    )
    for e in events:
        e["link"] = task_link(e["dag_id"], e["run_id"], e["task_id"], e["map_index"])
    return {
        "order": order,
        "message": message[0] if message else None,
        "lines": _rows(
            conn.execute(
                "SELECT line_no, item_id, customer_part_number, quantity, uom, unit_price, "
                "contract_price, status, substitute_item_id, backordered_qty "
                "FROM orderflow.order_line WHERE order_id = %s ORDER BY line_no",
                (order_id,),
            )
        ),
        "events": events,
        "exceptions": _rows(
            conn.execute(
                "SELECT exception_id, line_no, category, severity, owner_role, reason, status, "
                "opened_at, sla_due_at, escalated_at, resolution, resolved_by, resolved_at, "
                "resolution_note, rule_set_version FROM orderflow.order_exception "
                "WHERE order_id = %s ORDER BY exception_id",
                (order_id,),
            )
        ),
        "audit": _rows(
            conn.execute(
                "SELECT a.occurred_at, a.actor, a.actor_role, a.action, a.object_type, "
                "a.object_id, a.reason FROM orderflow.audit_log a "
                "WHERE (a.object_type = 'order' AND a.object_id = %s) "
                "OR (a.object_type = 'order_exception' AND a.object_id IN "
                "(SELECT exception_id::text FROM orderflow.order_exception WHERE order_id = %s)) "
                "OR (a.object_type = 'invoice' AND a.object_id IN "
                "(SELECT invoice_id FROM orderflow.invoice WHERE order_id = %s)) "
                "ORDER BY a.audit_id",
                (order_id, order_id, order_id),
            )
        ),
        "documents": _rows(
            conn.execute(
                "SELECT o.action, o.idempotency_key, o.version, o.status, o.attempts, "
                "o.created_at, o.sent_at, o.last_error, d.ack_status, d.ack_received_at, "
                "d.interchange_control_number, d.resent_as, d.resend_of, "
                "d.ack_detail->>'explained' AS ack_explained FROM orderflow.outbox o "
                "LEFT JOIN orderflow.outbound_document d USING (idempotency_key) "
                "WHERE o.order_id = %s ORDER BY o.outbox_id",
                (order_id,),
            )
        ),
        "shipments": _rows(
            conn.execute(
                "SELECT shipment_id, dc_id, status, carrier_id, service_code, mode, weight_kg, "
                "freight_rate, ship_date, promise_met, wms_release_id, tracking_number, "
                "released_at, picked_at, packed_at, shipped_at, in_transit_at, delivered_at, "
                "delayed_at, delay_reason, delivery_exception, expedite_cost, expedite_cause, "
                "baseline_service FROM orderflow.shipment WHERE order_id = %s "
                "ORDER BY shipment_id",
                (order_id,),
            )
        ),
        "invoices": _rows(
            conn.execute(
                "SELECT invoice_id, shipment_id, version, status, subtotal, tax, freight, total, "
                "currency, erp_invoice_number, posted_at FROM orderflow.invoice "
                "WHERE order_id = %s ORDER BY invoice_id",
                (order_id,),
            )
        ),
    }
