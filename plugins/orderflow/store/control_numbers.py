"""Outbound X12 control numbers (ISA13 / GS06 / ST02) per trading partner.

Allocated with one atomic ``UPDATE … RETURNING`` (row lock), so concurrent senders never get
the same number; a number taken by a rolled-back send leaves a gap, which X12 allows —
reuse it does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

ISA_MAX = 999_999_999  # ISA13 is nine digits


def next_number(conn: psycopg.Connection, partner_id: str, kind: str = "isa") -> int:
    row = conn.execute(
        """
        INSERT INTO orderflow.control_number (partner_id, kind, last_value) VALUES (%s, %s, 1)
        ON CONFLICT (partner_id, kind) DO UPDATE
            SET last_value = CASE WHEN orderflow.control_number.last_value >= %s THEN 1
                                  ELSE orderflow.control_number.last_value + 1 END
        RETURNING last_value
        """,
        (partner_id, kind, ISA_MAX),
    ).fetchone()
    return row[0]
