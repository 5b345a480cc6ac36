"""Rule governance pages (#18): the rule-set versions in force, the promotion log, what-if runs
and their per-order differences, and the forms that launch a what-if, promote the candidate
it replayed and roll a promotion back.

Everything here calls ``orderflow.governance`` (the CLI and the ``rule_whatif`` DAG call the
same functions): the pages add no rule of their own. Promotion and rollback are refused by
governance itself for anyone without the ``rule_approver`` role — and that refusal is
audited there; the pages turn it into a 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from orderflow.store import audit as audit_repo
from orderflow.store import rule_sets
from orderflow.store import whatif as whatif_repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.ui.app import User

RUNS_SHOWN = 50
AUDIT_SHOWN = 50
DIFFS_SHOWN = 1000
#: the per-order fields a what-if compares, as the diff table shows them
DIFF_COLUMNS = (
    ("status", "Status"),
    ("holds", "Hold category"),
    ("amount", "Price (order value)"),
    ("dcs", "DC"),
    ("carriers", "Carrier"),
    ("freight_cost", "Freight cost"),
)


def is_approver(user: User) -> bool:
    from orderflow import access, governance

    return governance.APPROVER_ROLE in access.roles_of(user.name)


def overview(conn: psycopg.Connection) -> dict[str, Any]:
    """``/rules``: per governed rule set the version in force; every promotion and rollback
    (newest first); the latest what-if runs; the governance audit trail (refusals too); and
    the stored versions a what-if can be launched from."""
    from orderflow import governance, rules

    sets = governance.versions(conn)
    log = sorted(
        (a for s in sets for a in s["activations"]),
        key=lambda a: a["activation_id"],
        reverse=True,
    )
    runs = whatif_repo.latest_runs(conn, RUNS_SHOWN)
    for r in runs:
        r["candidate_refs"] = [
            f"{c['rule_set']}@{c['version']}#{c['sha256'][:12]}" for c in r["candidates"]
        ]
        r["promoted"] = [
            a["activation_id"] for a in log if a["whatif_run_id"] == r["whatif_run_id"]
        ]
    audit = audit_repo.rule_set_trail(conn, AUDIT_SHOWN)
    return {
        "sets": sets,
        "log": log,
        "runs": runs,
        "audit": audit,
        "candidates": candidate_refs(conn),
        "governed": rules.GOVERNED,
    }


def candidate_refs(conn: psycopg.Connection) -> list[str]:
    """Every version a what-if can replay by reference (stored in the store or on file):
    ``<set>@<version>#<12 hex>``, by rule set then version."""
    from orderflow import rules

    found: dict[tuple[str, str, str], None] = {}
    for name, version, sha in rule_sets.stored_refs(conn, rules.GOVERNED):
        found[(name, version, sha[:12])] = None
    for name in rules.GOVERNED:
        for rs in rules.file_versions(name):
            found[(name, rs.version, rs.sha256[:12])] = None
    return [f"{n}@{v}#{s}" for n, v, s in sorted(found)]


def _when(value: str, what: str) -> datetime:
    """A form's date-time (``datetime-local`` gives no zone: UTC, as the DAG reads it)."""
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(422, f"{what}: {value!r} is not a date-time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def launch_whatif(
    conn: psycopg.Connection,
    user: User,
    *,
    candidate: str = "",
    candidate_yaml: str = "",
    window_from: str = "",
    window_to: str = "",
) -> int:
    """Replay a stored version (``candidate``: ``pricing@2026.12.1[#hash]``) or pasted YAML
    over [from, to) (empty: the seven days before ``to``, which defaults to now) and keep the
    result (``governance.whatif``). Anyone logged in may: it writes only the what-if tables.
    Returns the what-if run id. A file path is not accepted from a browser."""
    from orderflow import governance

    found = []
    try:
        if candidate.strip():
            ref = candidate.strip()
            if "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")):
                raise governance.GovernanceRefused(
                    "name a stored version (<rule_set>@<version>[#hash]) or paste the YAML; "
                    "files on the server are not read from the browser"
                )
            found.append((governance.candidate_from_store(conn, ref), f"stored:{ref}"))
        if candidate_yaml.strip():
            found.append((governance.candidate_from_text(candidate_yaml), "pasted"))
        if not found:
            raise governance.GovernanceRefused(
                "choose a stored version or paste a candidate's YAML"
            )
        end = _when(window_to, "until") if window_to.strip() else datetime.now(UTC)
        start = _when(window_from, "from") if window_from.strip() else end - timedelta(days=7)
        result = governance.whatif(
            conn,
            [c for c, _ in found],
            start,
            end,
            requested_by=user.name,
            sources=[s for _, s in found],
            dag_id="orderflow_ui",
        )
    except governance.GovernanceRefused as exc:
        raise HTTPException(422, str(exc)) from exc
    return result.run_id


def whatif_page(conn: psycopg.Connection, run_id: int) -> dict[str, Any]:
    """``/rules/whatif/{id}``: the run (window, versions compared, totals side by side) and
    the per-order differences, each field current → candidate, the changed ones marked."""
    from orderflow import governance

    try:
        run = governance.whatif_report(conn, run_id, limit=DIFFS_SHOWN)
    except governance.GovernanceRefused as exc:
        raise HTTPException(404, str(exc)) from exc
    cur, cand = run["totals"]["current"], run["totals"]["candidate"]
    holds = sorted(set(cur.get("held", {})) | set(cand.get("held", {})))
    totals = [
        ("Orders replayed", cur["orders"], cand["orders"], None),
        (
            "Released first pass",
            cur["first_pass"],
            cand["first_pass"],
            cand["first_pass"] - cur["first_pass"],
        ),
        (
            "First-pass rate",
            _pct(cur["first_pass_rate"]),
            _pct(cand["first_pass_rate"]),
            _pct(run["totals"].get("first_pass_rate_change"), signed=True),
        ),
        (
            "Freight cost (released orders)",
            _money(cur["freight_cost"]),
            _money(cand["freight_cost"]),
            _money(run["totals"].get("freight_cost_change"), signed=True),
        ),
    ] + [
        (
            f"Held: {c}",
            cur.get("held", {}).get(c, 0),
            cand.get("held", {}).get(c, 0),
            cand.get("held", {}).get(c, 0) - cur.get("held", {}).get(c, 0),
        )
        for c in holds
    ]
    rows = []
    for d in run["diffs"]:
        cells = []
        for field, _label in DIFF_COLUMNS:
            cells.append(
                {
                    "field": field,
                    "current": _cell(d["current"].get(field)),
                    "candidate": _cell(d["candidate"].get(field)),
                    "changed": field in d["changed"],
                }
            )
        rows.append({"order_id": d["order_id"], "changed": d["changed"], "cells": cells})
    return {
        "run": run,
        "totals": totals,
        "rows": rows,
        "columns": DIFF_COLUMNS,
        "truncated": run["changed"] > len(rows),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def _pct(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{float(value) * 100:{'+' if signed else ''}.1f}%"


def _money(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{float(value):{'+' if signed else ''},.2f}"


def _refused(user: User, exc: Exception) -> HTTPException:
    """governance refused (and audited a refusal for want of the role): 403 for a user who is
    not an approver, 409 for an approver (already in force, nothing to roll back, …)."""
    return HTTPException(403 if not is_approver(user) else 409, str(exc))


def promote(
    conn: psycopg.Connection, user: User, run_id: int, rule_set: str, reason: str
) -> dict[str, Any]:
    """Promote exactly the candidate what-if ``run_id`` replayed for ``rule_set``."""
    from orderflow import governance

    try:
        version = governance.candidate_of_run(conn, run_id, rule_set or None)
    except governance.GovernanceRefused as exc:
        raise HTTPException(404, str(exc)) from exc
    try:
        return governance.promote(
            conn, version, actor=user.name, reason=reason, whatif_run_id=run_id
        )
    except governance.GovernanceRefused as exc:
        raise _refused(user, exc) from exc


def rollback(conn: psycopg.Connection, user: User, rule_set: str, reason: str) -> dict[str, Any]:
    from orderflow import governance

    try:
        return governance.rollback(conn, rule_set, actor=user.name, reason=reason)
    except governance.GovernanceRefused as exc:
        raise _refused(user, exc) from exc
