"""``orderflow x12 …``: read an EDI file by hand, see its orders or errors and our 997/TA1.

Registered in the main CLI with ``main.add_command(x12)``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from . import parse

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


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
        "errors": [e.model_dump(mode="json") for e in result.error_list],
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    for e in result.error_list:
        click.echo(f"{e.code}: {e.message} [{e.where}] {e.action or ''}".rstrip(), err=True)
    raise SystemExit(0 if result.accepted else 1)


@x12.command("ack")
@click.argument("file", type=_FILE)
@click.option("--our-id", help="Our interchange id (default: the id the partner addressed).")
@click.option("--our-qualifier", default="ZZ", show_default=True)
@click.option("--control-number", default=1, show_default=True, help="First ISA13/GS06 to use.")
def ack_command(file: Path, our_id: str | None, our_qualifier: str, control_number: int) -> None:
    """Print the 997 for every functional group in FILE, and a TA1 when the interchange
    envelope was rejected, had errors, or asked for one (ISA14 = 1).

    Exit code 1 when nothing could be acknowledged (the file is not a readable X12
    interchange); the reason is printed on stderr.
    """
    numbers = iter(range(control_number, control_number + 1_000_000))
    result = parse(
        file.read_bytes(),
        source_ref=str(file),
        received_at=datetime.now(UTC),
        our_id=our_id,
        our_qualifier=our_qualifier,
        next_control_number=lambda: next(numbers),
    )
    acks = result.acknowledgments
    for a in acks:
        click.echo(a if a.endswith(("\n", "\r")) else a + "\n", nl=False)
    for e in result.errors:
        click.echo(f"{e.code}: {e.message}", err=True)
    raise SystemExit(0 if acks else 1)
