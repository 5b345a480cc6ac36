"""Trading-partner repository: what an outbound X12 envelope needs of a partner."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


def envelope_ids(conn: psycopg.Connection, partner_id: str) -> tuple | None:
    """(isa_qualifier, isa_id, gs_id, x12_version) of the partner; None when unknown."""
    return conn.execute(
        "SELECT isa_qualifier, isa_id, gs_id, x12_version FROM orderflow.trading_partner "
        "WHERE partner_id = %s",
        (partner_id,),
    ).fetchone()
