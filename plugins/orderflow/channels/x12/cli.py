"""``orderflow x12 …``: read an EDI file by hand, see its orders or errors and our 997/TA1.

Registered in the main CLI with ``main.add_command(x12)``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import click

from . import X12Result, parse
from .writer import MAX_CONTROL_NUMBER

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_X12_ID = re.compile(r"[A-Za-z0-9 !&()+,./:=?@_-]+", re.ASCII)


def _interchange_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """ISA06 is AN 2/15 (we pad it to 15): never truncated, never a delimiter inside."""
    if value is None:
        return None
    v = value.strip()
    if not 2 <= len(v) <= 15 or _X12_ID.fullmatch(v) is None:
        raise click.BadParameter(
            f"{value!r} is not an X12 interchange id: 2 to 15 letters, digits, spaces or "
            "!&()+,./:=?@_- (ISA06, AN 2/15)"
        )
    return v


def _qualifier(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if re.fullmatch(r"[A-Z0-9]{2}", value, re.ASCII) is None:
        raise click.BadParameter(
            f"{value!r} is not an interchange id qualifier (ISA05: two letters or digits, "
            "e.g. ZZ, 01, 12)"
        )
    return value


def _acknowledged(result: X12Result) -> list[dict]:
    """What each 997 in the file acknowledges (one of our groups) and how."""
    out = []
    for i in result.interchanges:
        for g in i.groups:
            for t in g.transactions:
                a = t.acknowledgment
                if a is None:
                    continue
                out.append(
                    {
                        "interchange": i.control_number,
                        "from": f"{i.sender_qualifier}:{i.sender_id}",
                        "997": t.control_number,
                        "acknowledges_group": a.group_control_number,
                        "functional_id": a.functional_id,
                        "group_status": a.group_status,
                        "sets_included": a.included,
                        "sets_received": a.received,
                        "sets_accepted": a.accepted,
                        "sets": a.transactions,
                    }
                )
    return out


def _describe(a: dict) -> str:
    status = {"A": "accepted", "E": "accepted with errors", "P": "partly accepted"}
    status |= {"R": "rejected", "M": "rejected (authentication)", "W": "rejected (signature)"}
    sets = ", ".join(f"ST {k}: {v}" for k, v in a["sets"].items())
    return (
        f"997 {a['997']} from {a['from']} acknowledges our group {a['acknowledges_group']} "
        f"({a['functional_id']}): {status.get(a['group_status'] or '', a['group_status'])}, "
        f"{a['sets_accepted']} of {a['sets_included']} set(s) accepted"
        + (f" ({sets})" if sets else "")
    )


@click.group()
def x12() -> None:
    """X12 EDI: parse purchase orders (850) and build acknowledgments (997/TA1)."""


@x12.command("parse")
@click.argument("file", type=_FILE)
@click.option("--partner-id", help="Our id for the trading partner (default: ISA06).")
def parse_command(file: Path, partner_id: str | None) -> None:
    """Print FILE's canonical orders as JSON, with every error found.

    Exit code 0 when every transaction set was accepted (perhaps with errors noted), 1
    otherwise.
    """
    result = parse(file.read_bytes(), partner_id=partner_id, source_ref=str(file))
    out = {
        "file": str(file),
        "accepted": result.accepted,
        "orders": [o.model_dump(mode="json", exclude_none=True) for o in result.orders],
        "transactions": [
            {
                "interchange": i.control_number,
                "group": g.control_number,
                "set_id": t.set_id,
                "control_number": t.control_number,
                "po_number": t.po_number,
                "ack": t.ack_code,
                "accepted": t.accepted,
            }
            for i in result.interchanges
            for g in i.groups
            for t in g.transactions
        ],
        "acknowledgments_received": _acknowledged(result),
        "errors": [e.model_dump(mode="json") for e in result.error_list],
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    for a in out["acknowledgments_received"]:
        click.echo(_describe(a), err=True)
    for e in result.error_list:
        click.echo(f"{e.code}: {e.message} [{e.where}] {e.action or ''}".rstrip(), err=True)
    raise SystemExit(0 if result.accepted else 1)


@x12.command("ack")
@click.argument("file", type=_FILE)
@click.option(
    "--our-id",
    callback=_interchange_id,
    help="Our interchange id, 2-15 characters (default: the id the partner addressed).",
)
@click.option("--our-qualifier", default="ZZ", show_default=True, callback=_qualifier)
@click.option(
    "--control-number",
    default=1,
    show_default=True,
    type=click.IntRange(1, MAX_CONTROL_NUMBER),
    help="First ISA13/GS06 to use (1-999999999); the acknowledgments need one each.",
)
def ack_command(file: Path, our_id: str | None, our_qualifier: str, control_number: int) -> None:
    """Print the 997 for every functional group in FILE, and a TA1 when the interchange
    envelope was rejected, had errors, or asked for one (ISA14 = 1).

    Exit code 0 when there is something to send, or nothing by rule (a file of 997s: an
    acknowledgment is never acknowledged); 1 when nothing could be acknowledged (the file is
    not a readable X12 interchange). Every reason is printed on stderr.
    """
    used = 0

    def next_number() -> int:
        nonlocal used
        used += 1
        return min(control_number + used - 1, MAX_CONTROL_NUMBER)

    result = parse(
        file.read_bytes(),
        source_ref=str(file),
        received_at=datetime.now(UTC),
        our_id=our_id,
        our_qualifier=our_qualifier,
        next_control_number=next_number,
    )
    if control_number + used - 1 > MAX_CONTROL_NUMBER:
        raise click.BadParameter(
            f"this file needs {used} control numbers, but from {control_number:,} only "
            f"{MAX_CONTROL_NUMBER - control_number + 1:,} remain before the 9-digit maximum "
            f"{MAX_CONTROL_NUMBER:,} (control numbers are not wrapped here: start lower).",
            param_hint="--control-number",
        )
    acks = result.acknowledgments
    for a in acks:
        click.echo(a if a.endswith(("\n", "\r")) else a + "\n", nl=False)
    received = _acknowledged(result)
    for a in received:
        click.echo(_describe(a), err=True)
    if not acks and received:
        click.echo(
            f"{file}: nothing to send: it holds {len(received)} 997 acknowledgment(s) of our "
            "documents, and acknowledgments are not acknowledged.",
            err=True,
        )
    for e in result.error_list:
        click.echo(f"{e.code}: {e.message} [{e.where}]", err=True)
    if not acks and not received and not result.error_list:
        click.echo(f"{file}: no functional group to acknowledge.", err=True)
    raise SystemExit(0 if acks or received else 1)
