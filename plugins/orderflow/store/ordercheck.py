"""The order check's reads (issue #20): everything the stages load for one order, in ONE
statement (one round trip, one snapshot, prepared once per connection).

The batch loads a partition with a dozen set-based queries (``orderflow.store.processing``,
``orderflow.store.crm``); for one order at 200 requests/s each of those statements costs the
api-server ≈ 0.14 ms of CPU in psycopg alone (send, wait, receive, adapt) and PostgreSQL a
round trip. Here the same rows — same columns (the loads' own column lists), same
conditions — are read by one ``SELECT`` whose CTEs chain what the batch chains in Python (the
cross-referenced items, their substitutes, the contracts of the items found, the lines of the
orders a duplicate search compares with), returned as JSON and turned into the same domain
objects by the loads' own row builders.

One statement is one snapshot: no ``BEGIN … COMMIT`` is needed for a consistent read, and
nothing is written or locked. ``tests/integration/test_order_check.py`` compares the check's
answers with the batch's decisions over a generated day: a drift between these reads and the
loads shows there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orderflow.domain.reference import Contract, Customer, OrderView, ReferenceData, ShipTo
from orderflow.store import processing as repo

if TYPE_CHECKING:
    import psycopg

    from orderflow.domain.crm_pricing import CrmDocuments

#: the rule types whose ``load_context`` this statement reads (the core's CRM documents)
CONTEXTS = ("crm_pricing",)


@dataclass
class CheckInputs:
    """What the stages read for one order: validation's reference data and rule contexts,
    credit accounts and open-order exposure, stock of the items found and their substitutes,
    the database's date and the active carrier services."""

    ref: ReferenceData
    contexts: dict[str, Any]
    accounts: dict[str, Any]
    exposure: dict[str, Decimal]
    #: (item, DC) → available, for every item in ``ref.items`` and every substitute they name
    available: dict[tuple[str, str], Decimal]
    today: date
    carriers: list[Any] = field(default_factory=list)

    def stock(self, item_ids) -> dict[tuple[str, str], Decimal]:
        """What ``inventory_snapshot(conn, item_ids)`` returns (same keys, same order)."""
        wanted = set(item_ids)
        return {k: v for k, v in self.available.items() if k[0] in wanted}


def _sql() -> str:
    r = repo
    return f"""
    WITH xref AS (
        SELECT {r.XREF_COLUMNS} FROM orderflow.customer_item_xref
         WHERE customer_id = ANY(%(cids)s) AND customer_part_number = ANY(%(cpns)s)
    ), item1 AS (
        SELECT {r.ITEM_COLUMNS} FROM orderflow.item
         WHERE item_id = ANY(%(item_ids)s::text[] || ARRAY(SELECT item_id FROM xref))
            OR upc = ANY(%(upcs)s) OR vendor_part = ANY(%(vps)s)
    ), item2 AS (  -- items()'s second pass: the substitutes the first found, not found yet
        SELECT {r.ITEM_COLUMNS} FROM orderflow.item
         WHERE item_id = ANY(ARRAY(SELECT unnest(substitute_item_ids) FROM item1))
           AND NOT item_id = ANY(ARRAY(SELECT item_id FROM item1))
    ), items AS (
        SELECT 1 AS pass, * FROM item1 UNION ALL SELECT 2, * FROM item2
    ), heads AS (
        SELECT {r.PRIOR_COLUMNS} FROM orderflow."order" WHERE {r.PRIOR_WHERE}
    )
    SELECT json_build_array(
      (SELECT coalesce(json_agg(json_build_array({r.CUSTOMER_COLUMNS})), '[]')
         FROM orderflow.customer WHERE customer_id = ANY(%(cids)s)),
      (SELECT coalesce(json_agg(json_build_array({r.SHIP_TO_COLUMNS})), '[]')
         FROM orderflow.ship_to WHERE ship_to_id = ANY(%(ship_tos)s)),
      (SELECT coalesce(json_agg(json_build_array({r.XREF_COLUMNS})), '[]') FROM xref),
      (SELECT coalesce(json_agg(json_build_array({r.ITEM_COLUMNS}) ORDER BY pass), '[]')
         FROM items),
      (SELECT coalesce(json_agg(json_build_array({r.CONTRACT_COLUMNS})), '[]')
         FROM orderflow.price_contract
        WHERE customer_id = ANY(%(cids)s) AND item_id = ANY(ARRAY(SELECT item_id FROM items))),
      (SELECT coalesce(json_agg(json_build_array(d.entity_type, d.entity_id, d.reason)), '[]') FROM ({r.DQ_FAILURES}) d),
      (SELECT coalesce(json_agg(json_build_array({r.PRIOR_COLUMNS})), '[]') FROM heads),
      (SELECT coalesce(json_agg(json_build_array(order_id, {r.LINE_COLUMNS})
                                ORDER BY order_id, line_no), '[]')
         FROM orderflow.order_line WHERE order_id = ANY(ARRAY(SELECT order_id FROM heads))),
      (SELECT coalesce(json_agg(json_build_array({_QUOTE_COLUMNS})), '[]')
         FROM orderflow.crm_quote WHERE customer_id = ANY(%(cids)s)),
      (SELECT coalesce(json_agg(json_build_array({_AGREEMENT_COLUMNS})), '[]')
         FROM orderflow.crm_price_agreement WHERE customer_id = ANY(%(cids)s)),
      (SELECT coalesce(json_agg(json_build_array({r.CREDIT_COLUMNS})), '[]')
         FROM orderflow.credit_account WHERE customer_id = ANY(%(cids)s)),
      (SELECT coalesce(json_agg(json_build_array(customer_id, value)), '[]') FROM (
         SELECT o.customer_id, {r.OPEN_ORDER_VALUE} AS value
           FROM orderflow."order" o JOIN orderflow.order_line l USING (order_id)
          WHERE o.customer_id = ANY(%(cids)s) AND o.status = ANY(%(open_statuses)s)
          GROUP BY o.customer_id) v),
      (SELECT coalesce(json_agg(json_build_array(a.item_id, a.dc_id, a.available)
                                ORDER BY a.item_id, a.dc_id), '[]')
         FROM ({r.AVAILABLE_SELECT} WHERE item_id = ANY(ARRAY(
                  SELECT item_id FROM items UNION SELECT unnest(substitute_item_ids) FROM items
              ))) a),
      current_date,
      (SELECT coalesce(json_agg(json_build_array({r.CARRIER_COLUMNS})
                                ORDER BY carrier_id, service_code), '[]')
         FROM orderflow.carrier_service WHERE active)
    )::text
    """


_QUOTE_COLUMNS = "quote_id, customer_id, item_id, quoted_price, quoted_on, expires_on, status"
_AGREEMENT_COLUMNS = "agreement_id, customer_id, item_id, unit_price, valid_from, valid_to"
#: the statement with ``$n`` placeholders, and the parameter names in their order: run by a
#: raw cursor, it is neither re-parsed per request (psycopg caches its conversion of a
#: ``%(name)s`` query only below 4 kB; this one is longer) nor re-planned (prepared)
_RAW: tuple[str, list[str]] | None = None


def _raw() -> tuple[str, list[str]]:
    names: list[str] = []

    def number(m: re.Match) -> str:
        if m[1] not in names:
            names.append(m[1])
        return f"${names.index(m[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, _sql()), names


def _num(x: Any) -> Decimal | None:
    # JSON numbers are read as Decimal (floats) or int (whole numbers): a numeric column's
    # value is the Decimal psycopg would have loaded (scale kept: PostgreSQL writes 12.50)
    return None if x is None else x if isinstance(x, Decimal) else Decimal(x)


def _day(x: str | None) -> date | None:
    return None if x is None else date.fromisoformat(x)


def _ts(x: str | None) -> datetime | None:
    return None if x is None else datetime.fromisoformat(x)


def _convert(rows: list[list[Any]], kinds: dict[int, Callable[[Any], Any]]) -> list[list[Any]]:
    for row in rows:
        for i, f in kinds.items():
            row[i] = f(row[i])
    return rows


def read(
    conn: psycopg.Connection,
    order: OrderView,
    *,
    duplicate_window_hours: int,
    open_order_statuses: Sequence[str],
) -> CheckInputs:
    """Everything the stages read for ``order``, in one statement (see the module doc).

    ``ref`` is what ``load_reference(conn, [order], duplicate_window_hours)`` returns,
    ``contexts["crm_pricing"]`` what ``crm.load_pricing_context`` does, ``accounts`` and
    ``exposure`` what ``credit_accounts`` / ``open_order_value`` return for the order's
    customer."""
    import psycopg

    from orderflow.domain.credit import CreditAccount
    from orderflow.domain.crm_pricing import CrmDocuments, PriceAgreement, Quote
    from orderflow.domain.planning import CarrierService

    global _RAW
    if _RAW is None:
        _RAW = _raw()
    sql, names = _RAW
    cids, ship_tos, cpns, ids, upcs, vps = repo.reference_keys([order])
    params = {
        "cids": cids,
        "ship_tos": ship_tos,
        "cpns": cpns,
        "item_ids": ids,
        "upcs": upcs,
        "vps": vps,
        # the duplicate search's parameters, as load_reference passes them for one order
        "ids": [order.order_id],
        "pos": [order.po_number],
        "earliest": order.received_at,
        "hours": duplicate_window_hours,
        "open_statuses": list(open_order_statuses),
    }
    with psycopg.RawCursor(conn) as cur:
        row = cur.execute(sql, [params[n] for n in names], prepare=True).fetchone()
    raw = json.loads(row[0], parse_float=Decimal)
    (
        customers,
        ship_to_rows,
        xref,
        items,
        contracts,
        dq,
        heads,
        lines,
        quotes,
        agreements,
        credit,
        exposure,
        available,
        today,
        carriers,
    ) = raw
    ref = ReferenceData(customers={r[0]: Customer(*r) for r in customers})
    ref.ship_tos = {r[0]: ShipTo(*r) for r in ship_to_rows}
    ref.xref = {(r[0], r[1]): r[2] for r in xref}
    ref.items = {r[0]: repo.item_of_row(r) for r in _convert(items, {2: _num, 3: _num, 4: _num})}
    for r in _convert(contracts, {3: _num, 5: _day, 6: _day, 7: _num}):
        ref.contracts.setdefault((r[1], r[2]), []).append(Contract(*r))
    ref.dq_failures = {(r[0], r[1]): r[2] for r in dq}
    by_order: dict[str, list] = {}
    for r in _convert(lines, {2: _num, 4: _num, 9: _num}):
        by_order.setdefault(r[0], []).append(repo.line_of_row(r[1:]))
    ref.prior_orders = [
        repo.prior_order_of(h, by_order.get(h[0], ())) for h in _convert(heads, {4: _ts})
    ]
    docs: CrmDocuments = CrmDocuments()
    for r in _convert(quotes, {3: _num, 4: _day, 5: _day}):
        docs.add(Quote(*r))
    for r in _convert(agreements, {3: _num, 4: _day, 5: _day}):
        docs.add(PriceAgreement(*r))
    return CheckInputs(
        ref=ref,
        contexts={"crm_pricing": docs},
        accounts={r[0]: CreditAccount(*r) for r in _convert(credit, {1: _num, 2: _num})},
        exposure={r[0]: _num(r[1]) for r in exposure},
        available={(r[0], r[1]): _num(r[2]) for r in available},
        today=date.fromisoformat(today),
        carriers=[CarrierService(*r) for r in _convert(carriers, {4: _num, 6: _num, 7: _num})],
    )


def read_only_snapshot(conn: psycopg.Connection) -> None:
    """Make the transaction just begun repeatable-read and read-only (the checks whose
    rule types read with queries of their own: one snapshot, nothing written)."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
