"""Reprocess a window of orders: a dry run first, then the real run, order by order.

A window is a range of ``received_at`` with optional filters (channel, customer, status, the
category of an open hold). :func:`run` applies one action (``decisions.ACTIONS``: revalidate,
reallocate, release, cancel) to every order of the window through the single-order function
:func:`orderflow.decisions.reprocess` — the same checks, role rules and audit as the
``order_reprocess`` DAG, the CLI and the UI: releasing a held order overrides its exceptions
and stays restricted to their owner or escalation roles, whatever the entry point.

- **dry run** (the default): each order goes through ``decisions.reprocess`` inside a
  transaction that is always rolled back, so the report says exactly what would happen
  (from → to, the exceptions it would close, or why it would be refused) and nothing is
  written — no order, exception, event or audit row (sequences may skip ids).
- **real run**: each order in its own transaction; a refusal (e.g. a release by a user
  without the hold's role) is audited by ``decisions.reprocess`` and the run goes on with the
  next order. One more audit row (``reprocess_window``) records the window, the action, who,
  why and the counts.

Entry points: the ``order_reprocess_window`` DAG, ``orderflow reprocess --from --to …`` and
(for the UI) :func:`run` with ``dry_run=True`` then ``False``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orderflow import decisions
from orderflow.store import db
from orderflow.store import decisions as audit_repo
from orderflow.store import orders as order_repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.processing import RunContext

#: at most this many orders per window (a bigger window: narrow it, or run it again)
MAX_ORDERS = 1000

#: how each action resolves the order's open exceptions (what the dry run reports)
_RESOLUTION = {
    "revalidate": "fixed",
    "reallocate": "fixed",
    "release": "overridden",
    "cancel": "rejected",
}


@dataclass(frozen=True)
class Window:
    """Orders received in [since, until), optionally of one channel, customer, status, or
    with an open exception of one category (``hold_category``)."""

    since: datetime
    until: datetime
    channel: str | None = None
    customer_id: str | None = None
    status: str | None = None
    hold_category: str | None = None
    limit: int = MAX_ORDERS

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["since"], d["until"] = self.since.isoformat(), self.until.isoformat()
        return {k: v for k, v in d.items() if v is not None}


class _Rollback(Exception):
    """Raised to roll back a dry run's transaction."""


def select(conn: psycopg.Connection, window: Window) -> list[dict[str, Any]]:
    """The window's orders (oldest first) with their status and open exceptions. Read only."""
    if window.until <= window.since:
        raise decisions.DecisionRefused("the window is empty: 'to' must be after 'from'")
    return order_repo.in_window(
        conn,
        since=window.since,
        until=window.until,
        channel=window.channel or None,
        customer=window.customer_id or None,
        status=window.status or None,
        hold=window.hold_category or None,
        limit=window.limit,
    )


def _dry(conn, order, action, *, actor, reason, ctx) -> dict[str, Any]:
    """``decisions.reprocess`` on one order in a transaction that is always rolled back."""
    row = {
        "order_id": order["order_id"],
        "status": order["status"],
        "open_exceptions": list(order["open_exceptions"]),
    }
    result: dict[str, Any] | None = None
    refused: str | None = None
    try:
        with conn.transaction():
            try:
                result = decisions.reprocess(
                    conn, order["order_id"], action, actor=actor, reason=reason, ctx=ctx
                )
            except decisions.DecisionRefused as exc:
                refused = str(exc)
            raise _Rollback
    except _Rollback:
        pass
    if refused is not None or result is None:
        return {**row, "outcome": "refused", "to": order["status"], "why": refused}
    return {**row, "outcome": "would_apply", "to": result["to"], "resolves": _resolves(row, action)}


def _apply(conn, order, action, *, actor, reason, ctx) -> dict[str, Any]:
    row = {
        "order_id": order["order_id"],
        "status": order["status"],
        "open_exceptions": list(order["open_exceptions"]),
    }
    try:
        result = decisions.reprocess(
            conn, order["order_id"], action, actor=actor, reason=reason, ctx=ctx
        )
    except decisions.DecisionRefused as exc:
        return {**row, "outcome": "refused", "to": order["status"], "why": str(exc)}
    return {**row, "outcome": "applied", "to": result["to"], "resolves": _resolves(row, action)}


def _resolves(row: dict[str, Any], action: str) -> dict[str, str]:
    """The open exceptions the action closes, and how (a release closes them only on hold)."""
    if action == "release" and row["status"] != "ON_HOLD":
        return {}
    return {c: _RESOLUTION[action] for c in row["open_exceptions"]}


def run(
    conn: psycopg.Connection,
    window: Window,
    action: str,
    *,
    actor: str,
    reason: str | None,
    ctx: RunContext,
    dry_run: bool = True,
) -> dict[str, Any]:
    """Apply ``action`` to every order of ``window`` (``dry_run``: only say what would
    happen, writing nothing). Orders applied for real are claimed for ``ctx.run_id`` (as
    ``decisions.reprocess`` does), ready for the stages of that run; a caller with no stages
    to run (the CLI) gives them back with ``store.processing.unclaim``.

    Returns ``{"dry_run", "action", "window", "orders": [{order_id, status,
    open_exceptions, outcome (would_apply | applied | refused), to, resolves | why}],
    "counts": {outcome: n}, "order_ids": [applied, still to be processed]}``.
    """
    if action not in decisions.ACTIONS:
        raise decisions.DecisionRefused(
            f"unknown action {action!r}; one of {', '.join(decisions.ACTIONS)}"
        )
    if not (reason or "").strip():
        raise decisions.DecisionRefused("say why (the reason goes into the audit trail)")
    orders = select(conn, window)
    step = _dry if dry_run else _apply
    rows = [step(conn, o, action, actor=actor, reason=reason, ctx=ctx) for o in orders]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    out = {
        "dry_run": dry_run,
        "action": action,
        "window": window.describe(),
        "orders": rows,
        "counts": counts,
        "order_ids": [
            r["order_id"]
            for r in rows
            if r["outcome"] == "applied" and r["to"] not in ("CANCELLED", "REJECTED")
        ],
        "truncated": len(orders) >= window.limit,
    }
    if not dry_run:
        with db.transaction(conn):
            audit_repo.audit(
                conn,
                actor=actor,
                actor_role=decisions._roles_text(actor),
                action="reprocess_window",
                object_type="reprocess_window",
                object_id=ctx.run_id or "unknown",
                before={"window": window.describe(), "action": action},
                after={"counts": counts, "orders": len(rows)},
                reason=reason,
            )
    return out


def render(result: dict[str, Any]) -> str:
    """The run's report as text (CLI, task log)."""
    head = (
        f"{'DRY RUN — nothing written' if result['dry_run'] else 'APPLIED'}: "
        f"{result['action']} on {len(result['orders'])} order(s) "
        f"{', '.join(f'{k}={v}' for k, v in sorted(result['counts'].items())) or ''}"
    )
    lines = [head]
    if result.get("truncated"):
        lines.append(f"  (window capped at {len(result['orders'])} orders: narrow it)")
    for r in result["orders"]:
        held = f" [{', '.join(r['open_exceptions'])}]" if r["open_exceptions"] else ""
        if r["outcome"] == "refused":
            lines.append(f"  {r['order_id']:<24} {r['status']}{held}: refused — {r['why']}")
        else:
            closes = ", ".join(f"{c} {how}" for c, how in r.get("resolves", {}).items())
            lines.append(
                f"  {r['order_id']:<24} {r['status']}{held} → {r['to']}"
                + (f" (closes {closes})" if closes else "")
            )
    return "\n".join(lines)
