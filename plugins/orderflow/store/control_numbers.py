"""Outbound X12 control numbers (ISA13 / GS06 / ST02) per trading partner.

One PostgreSQL sequence per partner (migration 0013; its name is
``orderflow.x12_control_sequence(partner, kind)``, registered in ``control_number``).
``nextval`` takes no lock another transaction waits for, so parallel partitions queueing
documents for the same partners — in any order — never serialise or deadlock on their
numbers. Concurrent senders never get the same number; a number taken by a transaction that
rolls back is not reused and leaves a gap, which X12 allows (the numbers must be unique,
not consecutive). After 999999999 (ISA13 is nine digits) the sequence starts again at 1.

Every trading partner gets its sequence when it is inserted; a partner not on file (e.g. a
997 to a drop folder's partner) gets one on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

ISA_MAX = 999_999_999  # ISA13 is nine digits


def next_number(conn: psycopg.Connection, partner_id: str, kind: str = "isa") -> int:
    row = conn.execute(
        "SELECT nextval(to_regclass(orderflow.x12_control_sequence(%s, %s)))",
        (partner_id, kind),
    ).fetchone()
    if row[0] is None:  # no sequence yet: a partner not on file
        row = conn.execute(
            "SELECT nextval(orderflow.ensure_x12_control_sequence(%s, %s))", (partner_id, kind)
        ).fetchone()
    return row[0]


def next_numbers(conn: psycopg.Connection, partner_id: str, n: int, kind: str = "isa") -> list[int]:
    """:func:`next_number` ``n`` times, in one statement (in the order taken)."""
    if n <= 0:
        return []
    rows = conn.execute(
        "SELECT nextval(to_regclass(orderflow.x12_control_sequence(%s, %s))) "
        "FROM generate_series(1, %s) AS g ORDER BY g",
        (partner_id, kind, n),
    ).fetchall()
    if rows[0][0] is None:  # no sequence yet: the first one creates it
        return [next_number(conn, partner_id, kind) for _ in range(n)]
    return [r[0] for r in rows]


def restart(conn: psycopg.Connection, partner_id: str, number: int, kind: str = "isa") -> None:
    """Make ``number`` the partner's next control number (e.g. a partner asks to continue
    from the numbers of its previous provider)."""
    if not 1 <= number <= ISA_MAX:
        raise ValueError(f"control number {number} is not 1…{ISA_MAX}")
    conn.execute(
        "SELECT setval(orderflow.ensure_x12_control_sequence(%s, %s), %s, false)",
        (partner_id, kind, number),
    )
