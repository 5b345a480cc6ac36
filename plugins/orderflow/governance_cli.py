"""``orderflow rules …``: rule-set versions, what-if replays, promotion and rollback
(``orderflow.governance``). Registered in ``orderflow.cli`` with ``main.add_command(rules)``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import click


def _connect():
    from orderflow.cli import use_store
    from orderflow.store import db

    use_store()
    return db.connect()


def _when(value: str) -> datetime:
    """ISO date or date-time; a date is midnight UTC, a time without zone is UTC."""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO date or date-time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _actor_option(f):
    return click.option(
        "--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER"
    )(f)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


@click.group()
def rules() -> None:
    """Rule-set versions: what is in force, what-if replays, promote and roll back."""


@rules.command("versions")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rules_versions(as_json: bool) -> None:
    """The version in force per rule set (file or promoted) and its promotions/rollbacks."""
    from orderflow import governance

    conn = _connect()
    try:
        found = governance.versions(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(_dumps(found))
        return
    for v in found:
        click.echo(
            f"{v['rule_set']:<13} {v['version']:<12} #{v['sha256'][:12]}  {v['source']}"
            + (f" (files: {v['file_version']})" if v["source"] != "file" else "")
        )
        for a in v["activations"]:
            click.echo(
                f"    {a['activated_at']:%Y-%m-%d %H:%M} {a['action']:<8} {a['version']} "
                f"#{a['content_sha256'][:12]} (was {a['previous_version']}) by {a['actor']}: "
                f"{a['reason']}"
            )


@rules.command("whatif")
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    required=True,
    help="A candidate YAML file (in a directory named after its rule set, or with a "
    "'rule_set:' key), or a stored version like pricing@2026.12.1. Repeatable (one per set).",
)
@click.option("--from", "window_from", required=True, help="Orders received from (ISO, UTC).")
@click.option("--to", "window_to", required=True, help="… until before (ISO, UTC).")
@click.option("--show", default=50, show_default=True, help="Per-order differences to print.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_actor_option
def rules_whatif(candidates, window_from, window_to, show, as_json, actor) -> None:
    """Replay candidate versions against the orders received in a window, with no side
    effects: per-order differences and totals, kept as a what-if run."""
    from orderflow import governance

    conn = _connect()
    try:
        found = [governance.candidate(conn, c) for c in candidates]
        result = governance.whatif(
            conn,
            [c for c, _ in found],
            _when(window_from),
            _when(window_to),
            requested_by=actor,
            sources=[s for _, s in found],
        )
    except governance.GovernanceRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    if as_json:
        click.echo(_dumps({**result.summary(), "diffs": result.diffs[:show]}))
        return
    t = result.totals
    cur, cand = t["current"], t["candidate"]
    click.echo(
        f"what-if run {result.run_id}: "
        + ", ".join(f"{c['rule_set']}@{c['version']}" for c in result.candidates)
        + f" over {cur['orders']} orders, {len(result.diffs)} differ"
    )
    click.echo(
        f"  first-pass rate {cur['first_pass_rate']} -> {cand['first_pass_rate']} "
        f"({t['first_pass_rate_change']:+})"
        if cur["orders"]
        else "  no orders in the window"
    )
    click.echo(
        f"  freight cost    {cur['freight_cost']} -> {cand['freight_cost']} "
        f"({t['freight_cost_change']})"
    )
    for d in result.diffs[:show]:
        a, b = d["current"], d["candidate"]
        parts = []
        for f in d["changed"]:
            parts.append(f"{f} {a[f]} -> {b[f]}")
        click.echo(f"  {d['order_id']}: " + "; ".join(parts))
    if len(result.diffs) > show:
        click.echo(f"  … and {len(result.diffs) - show} more (--show N, or --json)")


@rules.command("promote")
@click.option("--candidate", default=None, help="A candidate YAML file or a stored version.")
@click.option(
    "--whatif-run", type=int, default=None, help="Promote exactly what this what-if replayed."
)
@click.option("--rule-set", default=None, help="Which candidate of a multi-set what-if run.")
@click.option("--reason", required=True, help="Why (audited).")
@_actor_option
def rules_promote(candidate, whatif_run, rule_set, reason, actor) -> None:
    """Make a candidate the version in force from now (rule_approver role; audited)."""
    from orderflow import governance

    if not candidate and whatif_run is None:
        raise click.UsageError("give --candidate or --whatif-run")
    conn = _connect()
    try:
        if candidate:
            version, _ = governance.candidate(conn, candidate)
        else:
            version = governance.candidate_of_run(conn, whatif_run, rule_set)
        done = governance.promote(
            conn, version, actor=actor, reason=reason, whatif_run_id=whatif_run
        )
    except governance.GovernanceRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    click.echo(
        f"{done['rule_set']}: {done['from']['version']} #{done['from']['sha256'][:12]} -> "
        f"{done['to']['version']} #{done['to']['sha256'][:12]} (activation "
        f"{done['to']['activation_id']})"
    )


@rules.command("rollback")
@click.argument("rule_set")
@click.option("--reason", required=True, help="Why (audited).")
@_actor_option
def rules_rollback(rule_set, reason, actor) -> None:
    """Bring back the version the latest promotion of RULE_SET replaced (rule_approver)."""
    from orderflow import governance

    conn = _connect()
    try:
        done = governance.rollback(conn, rule_set, actor=actor, reason=reason)
    except governance.GovernanceRefused as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        conn.close()
    click.echo(
        f"{done['rule_set']}: {done['from']['version']} #{done['from']['sha256'][:12]} -> "
        f"{done['to']['version']} #{done['to']['sha256'][:12]} (rolled back activation "
        f"{done['to']['undoes']})"
    )
