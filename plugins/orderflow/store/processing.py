"""The store side of order processing: claims, set-based loads of a partition and of the
master data it touches, and the writes of each stage (events, exceptions, line decisions,
reservations, shipments, outbox) — always in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from orderflow.domain.reference import (
    Contract,
    Customer,
    Hold,
    Item,
    LineView,
    OrderView,
    PriorOrder,
    ReferenceData,
    ShipTo,
)

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RoutingRules

#: Statuses an order is processed from (a claim takes orders in any of them).
PROCESSABLE = ("RECEIVED", "VALIDATED", "CREDIT_OK", "ALLOCATED", "READY")
CLAIM_LEASE_MINUTES = 30


# ---------------------------------------------------------------------------- claims


def claim(conn: psycopg.Connection, run_id: str, limit: int) -> list[tuple[str, str | None]]:
    """Claim up to ``limit`` processable orders for ``run_id``: unclaimed ones, ones this run
    already holds (a rerun gets the same orders back) and ones whose claim lease expired (a
    run that died). ``SKIP LOCKED`` keeps two overlapping runs from taking the same order.
    Returns (order_id, customer_id) for every order the run holds."""
    rows = conn.execute(
        """
        WITH todo AS (
            SELECT order_id FROM orderflow."order"
             WHERE status = ANY(%(statuses)s)
               AND (claimed_by_run IS NULL OR claimed_by_run = %(run)s
                    OR claimed_at < now() - make_interval(mins => %(lease)s))
             -- the run's own orders first: a retried claim gets exactly them back
             ORDER BY (claimed_by_run IS NOT DISTINCT FROM %(run)s) DESC, received_at, order_id
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED
        )
        UPDATE orderflow."order" o
           SET claimed_by_run = %(run)s, claimed_at = now()
          FROM todo WHERE o.order_id = todo.order_id
        RETURNING o.order_id, o.customer_id
        """,
        {
            "statuses": list(PROCESSABLE),
            "run": run_id,
            "lease": CLAIM_LEASE_MINUTES,
            "limit": limit,
        },
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def unclaim(conn: psycopg.Connection, run_id: str) -> int:
    """Give back every order ``run_id`` holds (at the end of the run)."""
    cur = conn.execute(
        'UPDATE orderflow."order" SET claimed_by_run = NULL, claimed_at = NULL '
        "WHERE claimed_by_run = %s",
        (run_id,),
    )
    return cur.rowcount


#: orders a partition carries at least before the batch is cut further: a partition is one
#: process carrying its orders through every stage (``OrderStageOperator.carry_through``);
#: a stage decides a few hundred to a few thousand orders a CPU second, a task instance
#: costs about a second of start-up and scheduling, and partitions beyond the cores that run
#: them only contend (a 4,700-order backlog on 2 cores: 13.6 s in 2 partitions, 19.3 s in 4)
MIN_PARTITION_ORDERS = 2500


def partitions(
    claimed: Sequence[tuple[str, str | None]],
    max_partitions: int,
    min_orders: int = MIN_PARTITION_ORDERS,
) -> list[list[str]]:
    """Bounded partitions, one customer never split across two (credit exposure and
    duplicate checks stay within one task): greedy bin-packing, largest customer first.
    At most ``max_partitions``, and no more than one per ``min_orders`` claimed orders."""
    if not claimed:
        return []
    by_customer: dict[str, list[str]] = defaultdict(list)
    for order_id, customer_id in claimed:
        by_customer[customer_id or f"?{order_id}"].append(order_id)
    groups = sorted(by_customer.values(), key=len, reverse=True)
    wanted = -(-len(claimed) // max(1, min_orders))  # ceil
    n = max(1, min(max_partitions, len(groups), wanted))
    bins: list[list[str]] = [[] for _ in range(n)]
    for group in groups:
        min(bins, key=len).extend(group)
    return [sorted(b) for b in bins if b]


# ---------------------------------------------------------------------------- loads


def load_orders(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    statuses: Iterable[str],
    run_id: str | None = None,
) -> list[OrderView]:
    """The partition's orders that are (still) in one of ``statuses`` (and claimed by
    ``run_id`` when given) — a rerun skips orders an earlier attempt already moved."""
    params: dict[str, Any] = {"ids": list(order_ids), "statuses": list(statuses), "run": run_id}
    heads = conn.execute(
        """
        SELECT order_id, status, channel, partner_id, customer_id, ship_to_id, po_number,
               (canonical->>'po_date')::date, received_at, requested_ship_date,
               (canonical->>'requested_delivery_date')::date, currency,
               coalesce(canonical->'ship_to', '{}'::jsonb), canonical->>'payment_terms', approvals
          FROM orderflow."order"
         WHERE order_id = ANY(%(ids)s) AND status = ANY(%(statuses)s)
           AND (%(run)s::text IS NULL OR claimed_by_run = %(run)s)
         ORDER BY order_id
        """,
        params,
    ).fetchall()
    lines = _lines(conn, [h[0] for h in heads])
    return [
        OrderView(
            order_id=h[0],
            status=h[1],
            channel=h[2],
            partner_id=h[3],
            customer_id=h[4],
            ship_to_id=h[5],
            po_number=h[6],
            po_date=h[7],
            received_at=h[8],
            requested_ship_date=h[9],
            requested_delivery_date=h[10],
            currency=h[11],
            ship_to_address=h[12],
            payment_terms=h[13],
            approvals=frozenset(h[14] or ()),
            lines=tuple(lines.get(h[0], ())),
        )
        for h in heads
    ]


#: the columns of an order line as :func:`line_of_row` takes them (after ``order_id``)
LINE_COLUMNS = """line_no, quantity, uom, unit_price, item_id, customer_part_number,
               coalesce(canonical->'product_ids', '[]'::jsonb), contract_id, contract_price,
               canonical->>'description'"""


def line_of_row(r: Sequence[Any]) -> LineView:
    """A :class:`LineView` from a row of :data:`LINE_COLUMNS`."""
    return LineView(
        line_no=r[0],
        quantity=r[1],
        uom=r[2],
        unit_price=r[3],
        item_id=r[4],
        customer_part_number=r[5],
        product_ids=tuple((p["qualifier"], p["value"]) for p in r[6]),
        contract_id=r[7],
        contract_price=r[8],
        description=r[9],
    )


def _lines(conn: psycopg.Connection, order_ids: list[str]) -> dict[str, list[LineView]]:
    out: dict[str, list[LineView]] = defaultdict(list)
    if not order_ids:
        return out
    for r in conn.execute(
        f"SELECT order_id, {LINE_COLUMNS} FROM orderflow.order_line "
        "WHERE order_id = ANY(%s) ORDER BY order_id, line_no",
        (order_ids,),
    ).fetchall():
        out[r[0]].append(line_of_row(r[1:]))
    return out


# The columns each load reads, shared with the order check's one-statement read of the same
# rows (``orderflow.store.ordercheck``): a row of them is what the domain class takes.
CUSTOMER_COLUMNS = (
    "customer_id, name, tier, payment_terms, active, ship_complete, accepts_substitutes"
)
SHIP_TO_COLUMNS = (
    "ship_to_id, customer_id, name, address_line1, city, region, postal_code, country, zone"
)
XREF_COLUMNS = "customer_id, customer_part_number, item_id"
ITEM_COLUMNS = """item_id, uom, list_price, unit_cost, weight_kg, hazmat, discontinued,
               substitute_item_ids, upc, vendor_part"""
CONTRACT_COLUMNS = """contract_id, customer_id, item_id, unit_price, uom, effective_from,
               expires_on, tolerance_pct"""
DQ_FAILURES = (
    "SELECT entity_type, entity_id, reason FROM orderflow.order_exception "
    "WHERE status = 'open' AND category = 'master_data_quality' AND order_id IS NULL"
)
PRIOR_COLUMNS = "order_id, customer_id, po_number, ship_to_id, received_at, channel"
#: live orders a duplicate search compares with (named parameters: cids, ids, pos, earliest,
#: hours)
PRIOR_WHERE = """customer_id = ANY(%(cids)s) AND NOT order_id = ANY(%(ids)s)
           AND status NOT IN ('CANCELLED', 'REJECTED')
           AND (po_number = ANY(%(pos)s)
                OR received_at >= %(earliest)s - make_interval(hours => %(hours)s))"""
CREDIT_COLUMNS = "customer_id, credit_limit, open_ar, on_hold, hold_reason"
#: a customer's open-order value: at the price we will charge (contract price where
#: validation set one), over ``order o JOIN order_line l``
OPEN_ORDER_VALUE = "sum(l.quantity * coalesce(l.contract_price, l.unit_price, 0))"
CARRIER_COLUMNS = """carrier_id, service_code, mode, transit_days, max_weight_kg, hazmat_allowed,
               coalesce(base_rate, 0), coalesce(per_kg, 0)"""


def _customers(conn, ids: Iterable[str]) -> dict[str, Customer]:
    return {
        r[0]: Customer(*r)
        for r in conn.execute(
            f"SELECT {CUSTOMER_COLUMNS} FROM orderflow.customer WHERE customer_id = ANY(%s)",
            (list(ids),),
        ).fetchall()
    }


def item_of_row(r: Sequence[Any]) -> Item:
    """An :class:`Item` from a row of :data:`ITEM_COLUMNS`."""
    return Item(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7] or ()), r[8], r[9])


def items(
    conn: psycopg.Connection, ids: Iterable[str] = (), upcs=(), vendor_parts=()
) -> dict[str, Item]:
    """Items by id, UPC or vendor part, plus every substitute they name."""
    found: dict[str, Item] = {}
    query = f"""
        SELECT {ITEM_COLUMNS}
          FROM orderflow.item
         WHERE item_id = ANY(%s) OR upc = ANY(%s) OR vendor_part = ANY(%s)
    """
    args = (list(ids), list(upcs), list(vendor_parts))
    for _ in range(2):  # second pass: substitutes of what the first found
        for r in conn.execute(query, args).fetchall():
            found[r[0]] = item_of_row(r)
        subs = {s for i in found.values() for s in i.substitutes} - found.keys()
        if not subs:
            break
        args = (list(subs), [], [])
    return found


def reference_keys(
    orders: Sequence[OrderView],
) -> tuple[list[str], list[str], list[str], list[str], list[str], list[str]]:
    """What :func:`load_reference` looks up for ``orders``: customer ids, ship-to ids,
    customer part numbers, item ids, UPCs and vendor parts (each sorted)."""
    from orderflow.domain.validation import CUSTOMER_PART, EAN, OUR_ITEM, UPC, VENDOR_PART

    cids = {o.customer_id for o in orders if o.customer_id}
    cpns, ids, upcs, vps = set(), set(), set(), set()
    for o in orders:
        for ln in o.lines:
            if ln.customer_part_number:
                cpns.add(ln.customer_part_number)
            if ln.item_id:
                ids.add(ln.item_id)
            for q, v in ln.product_ids:
                if q in CUSTOMER_PART:
                    cpns.add(v)
                elif q in OUR_ITEM or q in VENDOR_PART:
                    ids.add(v)
                    vps.update({v, v.upper()})
                elif q in UPC:
                    upcs.add(v)
                elif q in EAN:
                    upcs.update({v, v[1:]})
    ship_to_ids = [o.ship_to_id for o in orders if o.ship_to_id]
    return sorted(cids), ship_to_ids, sorted(cpns), sorted(ids), sorted(upcs), sorted(vps)


def load_reference(
    conn: psycopg.Connection, orders: Sequence[OrderView], duplicate_window_hours: int
) -> ReferenceData:
    """Everything validation needs for ``orders``, in a handful of set-based queries."""
    cids, ship_to_ids, cpns, ids, upcs, vps = reference_keys(orders)
    ref = ReferenceData(customers=_customers(conn, cids))
    ref.ship_tos = {
        r[0]: ShipTo(*r)
        for r in conn.execute(
            f"SELECT {SHIP_TO_COLUMNS} FROM orderflow.ship_to WHERE ship_to_id = ANY(%s)",
            (ship_to_ids,),
        ).fetchall()
    }
    ref.xref = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            f"SELECT {XREF_COLUMNS} FROM orderflow.customer_item_xref "
            "WHERE customer_id = ANY(%s) AND customer_part_number = ANY(%s)",
            (cids, cpns),
        ).fetchall()
    }
    ref.items = items(conn, set(ids) | set(ref.xref.values()), upcs, vps)
    for r in conn.execute(
        f"SELECT {CONTRACT_COLUMNS} FROM orderflow.price_contract "
        "WHERE customer_id = ANY(%s) AND item_id = ANY(%s)",
        (list(cids), list(ref.items)),
    ).fetchall():
        ref.contracts.setdefault((r[1], r[2]), []).append(Contract(*r))
    ref.dq_failures = {(r[0], r[1]): r[2] for r in conn.execute(DQ_FAILURES).fetchall()}
    ref.prior_orders = _prior_orders(conn, orders, cids, duplicate_window_hours)
    return ref


def _prior_orders(conn, orders, cids, hours: int) -> list[PriorOrder]:
    if not orders:
        return []
    ids = [o.order_id for o in orders]
    earliest = min(o.received_at for o in orders)
    heads = conn.execute(
        f'SELECT {PRIOR_COLUMNS} FROM orderflow."order" WHERE {PRIOR_WHERE}',
        {
            "cids": list(cids),
            "ids": ids,
            "pos": [o.po_number for o in orders],
            "earliest": earliest,
            "hours": hours,
        },
    ).fetchall()
    lines = _lines(conn, [h[0] for h in heads])
    return [prior_order_of(h, lines.get(h[0], ())) for h in heads]


def prior_order_of(h: Sequence[Any], lines: Iterable[LineView]) -> PriorOrder:
    """A :class:`PriorOrder` from a row of :data:`PRIOR_COLUMNS` and its lines."""
    from orderflow.domain.validation import signature

    view = OrderView(
        order_id=h[0],
        status="",
        channel="",
        customer_id=h[1],
        ship_to_id=h[3],
        po_number=h[2],
        po_date=None,
        received_at=h[4],
        requested_ship_date=None,
        requested_delivery_date=None,
        currency="USD",
        lines=tuple(lines),
    )
    return PriorOrder(h[0], h[1], h[2], h[3], h[4], signature(view), h[5], view.lines)


# ---------------------------------------------------------------------------- writes


def open_holds(
    conn: psycopg.Connection,
    holds: Sequence[tuple[str, Hold]],
    *,
    stage: str,
    routing: RoutingRules,
    rule_set_version: str,
) -> int:
    """Open one exception per (order, line, category), routed by the routing rules (owner
    role, SLA, escalation, severity). An exception already open is left as it is."""
    rows = []
    for order_id, h in holds:
        route = routing.route(h.category)
        rows.append(
            (
                order_id,
                h.line_no,
                h.category,
                route.severity,
                route.owner_role,
                h.reason,
                Jsonb(h.details),
                rule_set_version,
                route.sla_minutes,
                route.escalation_role,
                stage,
            )
        )
    if not rows:
        return 0
    # One statement, rows in the given order (exception ids ascend as the holds were given).
    conn.execute(
        """
        INSERT INTO orderflow.order_exception (order_id, line_no, category, severity,
            owner_role, reason, details, rule_set_version, sla_due_at, escalation_role, stage)
        SELECT order_id, line_no, category, severity, owner_role, reason, details,
               rule_set_version, now() + make_interval(mins => sla), escalation_role, stage
          FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[], %s::text[],
                      %s::jsonb[], %s::text[], %s::int[], %s::text[], %s::text[])
               WITH ORDINALITY AS t(order_id, line_no, category, severity, owner_role, reason,
                    details, rule_set_version, sla, escalation_role, stage, n)
         ORDER BY n
        ON CONFLICT DO NOTHING
        """,
        [list(c) for c in zip(*rows, strict=True)],
    )
    return len(rows)


def save_validated_lines(conn: psycopg.Connection, orders: Sequence[OrderView]) -> None:
    rows = [
        (
            ln.item_id,
            ln.contract_id,
            ln.contract_price,
            ln.price_source,
            ln.price_document_id,
            o.order_id,
            ln.line_no,
        )
        for o in orders
        for ln in o.lines
    ]
    if not rows:
        return
    if _repeated_keys(rows, 5, 6):
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE orderflow.order_line SET item_id = %s, contract_id = %s, "
                "contract_price = %s, price_source = %s, price_document_id = %s "
                "WHERE order_id = %s AND line_no = %s",
                rows,
            )
        return
    conn.execute(
        """
        UPDATE orderflow.order_line l
           SET item_id = t.item_id, contract_id = t.contract_id,
               contract_price = t.contract_price, price_source = t.price_source,
               price_document_id = t.price_document_id
          FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::text[], %s::text[],
                      %s::text[], %s::int[])
               AS t(item_id, contract_id, contract_price, price_source, price_document_id,
                    order_id, line_no)
         WHERE l.order_id = t.order_id AND l.line_no = t.line_no
        """,
        _columns(rows, numeric=(2,)),
    )


def _columns(rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> list[list[Any]]:
    """``rows`` as one list per column, for ``unnest``; in the ``numeric`` columns an int
    becomes the equal Decimal (an array holds one type: ``0`` next to ``Decimal('1.5')``)."""
    cols = [list(c) for c in zip(*rows, strict=True)]
    for i in numeric:
        cols[i] = [
            Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in cols[i]
        ]
    return cols


def _repeated_keys(rows: Sequence[Sequence[Any]], *key: int) -> bool:
    """Whether two of ``rows`` share the key at positions ``key`` (an UPDATE … FROM applies
    one of them only, so such a batch is written row by row, the last one winning)."""
    return len({tuple(r[i] for i in key) for r in rows}) < len(rows)


def credit_accounts(conn: psycopg.Connection, customer_ids: Iterable[str]) -> dict[str, Any]:
    from orderflow.domain.credit import CreditAccount

    return {
        r[0]: CreditAccount(*r)
        for r in conn.execute(
            f"SELECT {CREDIT_COLUMNS} FROM orderflow.credit_account WHERE customer_id = ANY(%s)",
            (list(customer_ids),),
        ).fetchall()
    }


def lock_customers(conn: psycopg.Connection, customer_ids: Iterable[str]) -> None:
    """Serialise credit decisions per customer across parallel tasks and runs (transaction
    advisory locks, taken in a fixed order so two tasks never deadlock)."""
    ids = sorted(set(customer_ids))
    if ids:
        # one statement; unnest yields the array in its (sorted) order, so the locks are
        # taken in that order as before
        conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtext('credit:' || cid))) "
            "FROM unnest(%s::text[]) AS cid",
            (ids,),
        )


def partition_totals(
    conn: psycopg.Connection, order_ids: Sequence[str], status: str, run_id: str | None
) -> dict[str, Decimal]:
    """Per customer (``""`` for an order without one), the value of the partition's orders
    still in ``status`` (claimed by ``run_id`` when given), at the price we will charge —
    ``OrderView.amount()`` summed, in one statement, without loading the orders. Customers
    come in the order of their first order id, as a loop over the loaded orders meets them."""
    return {
        r[0]: r[1]
        for r in conn.execute(
            f"""
            SELECT coalesce(o.customer_id, ''), coalesce({OPEN_ORDER_VALUE}, 0)
              FROM orderflow."order" o LEFT JOIN orderflow.order_line l USING (order_id)
             WHERE o.order_id = ANY(%(ids)s) AND o.status = %(status)s
               AND (%(run)s::text IS NULL OR o.claimed_by_run = %(run)s)
             GROUP BY 1
             ORDER BY min(o.order_id)
            """,
            {"ids": list(order_ids), "status": status, "run": run_id},
        ).fetchall()
    }


def line_amounts(
    conn: psycopg.Connection, order_ids: Sequence[str], status: str, run_id: str | None
) -> dict[str, tuple[str, list[Decimal]]]:
    """Per order of the partition still in ``status`` (claimed by ``run_id`` when given), in
    order id order: its customer (``""`` for none) and each line's value at the price we
    will charge, in line order — what ``OrderView.lines`` gives as ``quantity × (contract
    price, else typed price, else 0)``, without loading the orders."""
    out: dict[str, tuple[str, list[Decimal]]] = {}
    for order_id, customer_id, amount in conn.execute(
        """
        SELECT o.order_id, coalesce(o.customer_id, ''),
               l.quantity * coalesce(l.contract_price, l.unit_price, 0)
          FROM orderflow."order" o LEFT JOIN orderflow.order_line l USING (order_id)
         WHERE o.order_id = ANY(%(ids)s) AND o.status = %(status)s
           AND (%(run)s::text IS NULL OR o.claimed_by_run = %(run)s)
         ORDER BY o.order_id, l.line_no
        """,
        {"ids": list(order_ids), "status": status, "run": run_id},
    ).fetchall():
        lines = out.setdefault(order_id, (customer_id, []))[1]
        if amount is not None:
            lines.append(amount)
    return out


def open_order_value(
    conn: psycopg.Connection, customer_ids: Iterable[str], statuses: Sequence[str]
) -> dict[str, Decimal]:
    """Per customer, the value of orders already accepted and not yet invoiced, at the
    price we will charge (contract price where validation set one)."""
    return {
        r[0]: r[1]
        for r in conn.execute(
            f"""
            SELECT o.customer_id, {OPEN_ORDER_VALUE}
              FROM orderflow."order" o JOIN orderflow.order_line l USING (order_id)
             WHERE o.customer_id = ANY(%s) AND o.status = ANY(%s)
             GROUP BY o.customer_id
            """,
            (list(customer_ids), list(statuses)),
        ).fetchall()
    }


def lock_inventory(
    conn: psycopg.Connection, item_ids: Iterable[str]
) -> dict[tuple[str, str], Decimal]:
    """Lock the inventory rows of ``item_ids`` (in key order: no deadlocks between parallel
    partitions) and return what is available (never below zero: a WMS count under our open
    reservations is a shortfall, not stock). Held until the caller's transaction ends."""
    return {
        (r[0], r[1]): r[2]
        for r in conn.execute(_AVAILABLE + " FOR UPDATE", (sorted(set(item_ids)),)).fetchall()
    }


def inventory_snapshot(
    conn: psycopg.Connection, item_ids: Iterable[str]
) -> dict[tuple[str, str], Decimal]:
    """What :func:`lock_inventory` returns, read without locking (the order check: a
    question must never wait for, or hold up, the batch's reservations)."""
    return {
        (r[0], r[1]): r[2] for r in conn.execute(_AVAILABLE, (sorted(set(item_ids)),)).fetchall()
    }


#: Available stock per (item, DC): never below zero (a WMS count under our open reservations
#: is a shortfall, not stock).
AVAILABLE_SELECT = (
    "SELECT item_id, dc_id, greatest(available, 0) AS available FROM orderflow.inventory_position"
)
_AVAILABLE = AVAILABLE_SELECT + " WHERE item_id = ANY(%s) ORDER BY item_id, dc_id"


class Oversell(RuntimeError):
    """A reservation larger than what is available (a bug in the caller: refused)."""


def reserve(conn: psycopg.Connection, rows: Sequence[tuple], rule_set_version: str) -> None:
    """Insert reservations (order, line, item, dc, qty, substitute?) and add them to the
    positions' ``allocated``. Refuses (:class:`Oversell`) to reserve more than a position has
    available, under the positions' row locks (taken here too, in key order, if the caller
    has not)."""
    if not rows:
        return
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in rows:
        totals[(r[2], r[3])] += r[4]
    keys = sorted(totals)
    available = dict(
        ((i, d), a)
        for i, d, a in conn.execute(
            "SELECT item_id, dc_id, available FROM orderflow.inventory_position "
            "WHERE (item_id, dc_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
            "ORDER BY item_id, dc_id FOR UPDATE",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
    )
    over = [(k, q, available.get(k)) for k, q in totals.items() if q > (available.get(k) or 0)]
    if over:
        raise Oversell(
            "reserving more than available: "
            + ", ".join(f"{i}@{d} {q} > {a}" for (i, d), q, a in over[:5])
        )
    cols = _columns(rows, numeric=(4,))
    conn.execute(
        "INSERT INTO orderflow.reservation (order_id, line_no, item_id, dc_id, quantity, "
        "is_substitute, rule_set_version) "
        "SELECT order_id, line_no, item_id, dc_id, quantity, is_substitute, %s "
        "  FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::numeric[], %s::bool[]) "
        "       WITH ORDINALITY AS t(order_id, line_no, item_id, dc_id, quantity, is_substitute, n) "
        " ORDER BY n",
        [rule_set_version, *cols[:6]],
    )
    # Under the locks, ``allocated`` is its definition (every writer keeps it so, and the
    # reconciliation checks it), and the new reservations are held: the definition grows by
    # exactly their quantities. Adding them, rather than summing every reservation of the
    # positions again, keeps a partition's allocation — and the position locks it holds —
    # from growing with the reservations the store already has.
    conn.execute(
        "UPDATE orderflow.inventory_position p SET allocated = p.allocated + t.quantity "
        "  FROM unnest(%s::text[], %s::text[], %s::numeric[]) AS t(item_id, dc_id, quantity) "
        " WHERE p.item_id = t.item_id AND p.dc_id = t.dc_id",
        ([k[0] for k in keys], [k[1] for k in keys], [totals[k] for k in keys]),
    )


def cancel_reservations(conn: psycopg.Connection, order_ids: Sequence[str]) -> int:
    """Give an order's held reservations back to stock (reallocate, cancel)."""
    rows = conn.execute(
        "UPDATE orderflow.reservation SET status = 'cancelled', updated_at = now() "
        "WHERE order_id = ANY(%s) AND status = 'held' RETURNING item_id, dc_id",
        (list(order_ids),),
    ).fetchall()
    refresh_allocated(conn, sorted(set(rows)))
    return len(rows)


def consume_shipped(conn: psycopg.Connection, shipment_ids: Sequence[str]) -> int:
    """The released reservations of shipped shipments are consumed by the quantity that
    shipped, at the WMS's shipment time (nothing shipped: cancelled). Returns rows changed."""
    rows = conn.execute(
        """
        UPDATE orderflow.reservation r
           SET status = CASE WHEN coalesce(sl.quantity_shipped, 0) > 0
                             THEN 'consumed' ELSE 'cancelled' END,
               consumed_qty = CASE WHEN coalesce(sl.quantity_shipped, 0) > 0
                                   THEN sl.quantity_shipped END,
               consumed_at = CASE WHEN coalesce(sl.quantity_shipped, 0) > 0
                                  THEN coalesce(s.shipped_at, now()) END,
               updated_at = now()
          FROM orderflow.shipment s
          JOIN orderflow.shipment_line sl USING (shipment_id)
         WHERE s.shipment_id = ANY(%s)
           AND r.order_id = s.order_id AND r.dc_id = s.dc_id
           AND r.line_no = sl.line_no AND r.item_id = sl.item_id
           AND r.status = 'released'
        RETURNING r.item_id, r.dc_id
        """,
        (list(shipment_ids),),
    ).fetchall()
    refresh_allocated(conn, sorted(set(rows)))
    return len(rows)


#: What a position's ``allocated`` is: our held reservations, plus released ones the WMS had
#: not received at its snapshot's time (``as_of``; their shipped quantity once consumed).
#: What the WMS had received is in its own numbers already (``wms_reserved`` while unshipped,
#: out of ``on_hand`` once shipped). One definition, to derive the column and to reconcile it.
_DERIVED = """coalesce((SELECT sum(CASE WHEN r.status = 'consumed' THEN r.consumed_qty
                                     ELSE r.quantity END)
                       FROM orderflow.reservation r
                      WHERE r.item_id = p.item_id AND r.dc_id = p.dc_id
                        AND (r.status = 'held'
                             OR (r.status IN ('released', 'consumed')
                                 AND (r.wms_received_at IS NULL OR r.wms_received_at > p.as_of)))
                    ), 0)"""
_DERIVED_ALLOCATED = f"""
    SELECT p.item_id, p.dc_id, p.allocated, {_DERIVED} AS derived
      FROM orderflow.inventory_position p
"""


def refresh_allocated(
    conn: psycopg.Connection, positions: Sequence[tuple[str, str]] | None = None
) -> int:
    """Derive ``allocated`` of the given (item, DC) positions (all when None) from the
    reservations; returns the number of positions whose value changed."""
    if positions is not None and not positions:
        return 0
    where = ""
    params: tuple = ()
    if positions is not None:
        where = " WHERE (p.item_id, p.dc_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        params = ([p[0] for p in positions], [p[1] for p in positions])
    # Row locks in key order, as every writer of positions takes them: never a deadlock.
    conn.execute(
        f"SELECT 1 FROM orderflow.inventory_position p{where} "
        "ORDER BY p.item_id, p.dc_id FOR UPDATE",
        params,
    )
    # The definition evaluated only on the positions to refresh, whatever the statistics:
    # the positions asked about first (OFFSET 0 keeps the planner from merging it), then
    # their sums. Joined inline, the planner once summed all 20,000 positions to refresh a
    # few hundred (no statistics) and, given them, summed them all again as a filter.
    keys = "orderflow.inventory_position p"
    if positions is not None:
        keys = (
            "(SELECT DISTINCT * FROM unnest(%s::text[], %s::text[])) AS k(item_id, dc_id) "
            "JOIN orderflow.inventory_position p USING (item_id, dc_id)"
        )
    return conn.execute(
        f"""
        UPDATE orderflow.inventory_position t SET allocated = d.derived
          FROM (SELECT p.item_id, p.dc_id, p.allocated, {_DERIVED} AS derived
                  FROM {keys} OFFSET 0) d
         WHERE t.item_id = d.item_id AND t.dc_id = d.dc_id
           AND t.allocated IS DISTINCT FROM d.derived
        """,
        params,
    ).rowcount


#: An advisory lock the publication of a WMS inventory snapshot takes exclusively
#: (:func:`orderflow.store.inventory.lock_all_positions`) and the WMS's receipt of a release
#: shares (:func:`refresh_on_receipt`): a receipt reads the positions' ``as_of`` knowing that
#: no snapshot is being published meanwhile.
SNAPSHOT_LOCK = 0x4F46_534E_4150  # "OFSNAP"


def refresh_on_receipt(conn: psycopg.Connection, received: Sequence[tuple]) -> int:
    """After the WMS received releases — ``received``: (item_id, dc_id, wms_received_at) of
    the reservations just marked — derive ``allocated`` again only where that changes it:
    the positions whose WMS snapshot is as new as the receipt (it counts those units in the
    WMS's own numbers already). Usually there are none — the snapshot predates the release
    and the reservation still counts — and then no position is locked: the senders recording
    their receipts no longer queue behind every allocation that holds the same positions.
    Returns the number of positions whose value changed."""
    if not received:
        return 0
    # a snapshot published before this commits is seen below; one published after sees the
    # receipts (it waits for this transaction) and derives every position itself
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SNAPSHOT_LOCK,))
    stale = conn.execute(
        "SELECT DISTINCT p.item_id, p.dc_id "
        "  FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(item_id, dc_id, at) "
        "  JOIN orderflow.inventory_position p USING (item_id, dc_id) "
        " WHERE p.as_of >= k.at ORDER BY 1, 2",
        ([r[0] for r in received], [r[1] for r in received], [r[2] for r in received]),
    ).fetchall()
    return refresh_allocated(conn, stale) if stale else 0


def allocation_mismatches(conn: psycopg.Connection) -> list[tuple]:
    """Positions whose stored ``allocated`` differs from its definition (should be none):
    (item, DC, stored, derived)."""
    return conn.execute(
        f"SELECT item_id, dc_id, allocated, derived FROM ({_DERIVED_ALLOCATED}) d "
        "WHERE allocated IS DISTINCT FROM derived ORDER BY 1, 2"
    ).fetchall()


def held_reservations(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, list[tuple]]:
    """order → [(reservation_id, line_no, item_id, dc_id, quantity, is_substitute)]."""
    return _by_first_column(
        conn.execute(
            "SELECT order_id, reservation_id, line_no, item_id, dc_id, quantity, is_substitute "
            "FROM orderflow.reservation WHERE order_id = ANY(%s) AND status = 'held' "
            "ORDER BY order_id, line_no, dc_id",
            (list(order_ids),),
        )
    )


def _by_first_column(rows: Any) -> dict[str, list[tuple]]:
    """Rows grouped by their first column (an order id), the rest of each row kept in order."""
    out: dict[str, list[tuple]] = defaultdict(list)
    for r in rows.fetchall():
        out[r[0]].append(tuple(r[1:]))
    return out


def mark_lines(conn: psycopg.Connection, rows: Sequence[tuple]) -> None:
    """(status, substitute_item_id, backordered_qty, order_id, line_no) per line."""
    if not rows:
        return
    if _repeated_keys(rows, 3, 4):
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE orderflow.order_line SET status = %s, substitute_item_id = %s, "
                "backordered_qty = %s WHERE order_id = %s AND line_no = %s",
                rows,
            )
        return
    conn.execute(
        """
        UPDATE orderflow.order_line l
           SET status = t.status, substitute_item_id = t.substitute_item_id,
               backordered_qty = t.backordered_qty
          FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::text[], %s::int[])
               AS t(status, substitute_item_id, backordered_qty, order_id, line_no)
         WHERE l.order_id = t.order_id AND l.line_no = t.line_no
        """,
        _columns(rows, numeric=(2,)),
    )


def ship_tos_of(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, tuple]:
    """order → (region, zone, ship-to name, country, customer name)."""
    return {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            """
            SELECT o.order_id, s.region, s.zone, s.name, s.country, c.name
              FROM orderflow."order" o
              LEFT JOIN orderflow.ship_to s ON s.ship_to_id = o.ship_to_id
              LEFT JOIN orderflow.customer c ON c.customer_id = o.customer_id
             WHERE o.order_id = ANY(%s)
            """,
            (list(order_ids),),
        ).fetchall()
    }


def carrier_services(conn: psycopg.Connection) -> list[Any]:
    from orderflow.domain.planning import CarrierService

    return [
        CarrierService(*r)
        for r in conn.execute(
            f"SELECT {CARRIER_COLUMNS} FROM orderflow.carrier_service "
            "WHERE active ORDER BY carrier_id, service_code"
        ).fetchall()
    ]


def save_shipments(conn: psycopg.Connection, rows: Sequence[dict]) -> None:
    if not rows:
        return
    from orderflow.store import bulk

    cols = list(rows[0])
    bulk.insert_values(
        conn,
        "shipment",
        cols,
        [tuple(r[c] for c in cols) for r in rows],
        "ON CONFLICT (shipment_id) DO NOTHING",
    )


def set_order_fields(conn: psycopg.Connection, column: str, values: dict[str, Any]) -> None:
    """Set one decision column (``priority``, ``tax_amount``, ``release_version``) per order."""
    assert column in {"priority", "tax_amount", "release_version"}
    if not values:
        return
    # the values travel as the types they were sent one by one as (a float priority as
    # float8, rounded to the column's scale by the same assignment cast)
    kind = {"priority": "float8", "tax_amount": "numeric", "release_version": "int"}[column]
    given = list(values.values())
    if kind == "float8":
        given = [None if v is None else float(v) for v in given]
    elif kind == "numeric":
        given = _columns([(v,) for v in given], numeric=(0,))[0]
    conn.execute(
        f'UPDATE orderflow."order" o SET {column} = t.value '
        f"FROM unnest(%s::text[], %s::{kind}[]) AS t(order_id, value) "
        "WHERE o.order_id = t.order_id",
        (list(values), given),
    )


def delay_causes(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, str]:
    """Per order, the exception category that held it longest (what a late, expedited
    shipment is charged to)."""
    return dict(
        conn.execute(
            """
            SELECT DISTINCT ON (order_id) order_id, category
              FROM orderflow.order_exception
             WHERE order_id = ANY(%s)
             ORDER BY order_id, coalesce(resolved_at, now()) - opened_at DESC
            """,
            (list(order_ids),),
        ).fetchall()
    )


def today(conn: psycopg.Connection) -> date:
    return conn.execute("SELECT current_date").fetchone()[0]


# ---------------------------------------------------------------------------- backorders
#: Orders whose backordered lines may be filled: released to the warehouse (what was
#: available went out), not cancelled.
BACKORDER_STATUSES = ("RELEASED", "PICKED", "SHIPPED", "DELIVERED", "INVOICED")


def waiting_backorders(conn: psycopg.Connection, sourcing, limit: int = 5000) -> list:
    """Backordered lines of released orders, locked (``SKIP LOCKED``: an overlapping run
    takes others), as :class:`orderflow.domain.backorders.Waiting`."""
    from orderflow.domain.backorders import Waiting

    rows = conn.execute(
        """
        SELECT ol.order_id, ol.line_no, coalesce(ol.substitute_item_id, ol.item_id),
               ol.backordered_qty, coalesce(o.priority, 0), o.received_at, st.region,
               coalesce(c.ship_complete, false)
          FROM orderflow.order_line ol
          JOIN orderflow."order" o USING (order_id)
          LEFT JOIN orderflow.ship_to st ON st.ship_to_id = o.ship_to_id
          LEFT JOIN orderflow.customer c ON c.customer_id = o.customer_id
         WHERE ol.backordered_qty > 0 AND o.status = ANY(%s)
           AND coalesce(ol.substitute_item_id, ol.item_id) IS NOT NULL
         ORDER BY coalesce(o.priority, 0) DESC, o.received_at, ol.order_id, ol.line_no
         LIMIT %s
           FOR UPDATE OF ol SKIP LOCKED
        """,
        (list(BACKORDER_STATUSES), limit),
    ).fetchall()
    return [
        Waiting(
            order_id=r[0],
            line_no=r[1],
            item_id=r[2],
            quantity=r[3],
            priority=r[4],
            received_at=r[5],
            preferred_dc=sourcing.preferred_dc(r[6]),
            ship_complete=r[7],
        )
        for r in rows
    ]


def create_backorder_releases(
    conn: psycopg.Connection, fills: Sequence, rule_set_version: str
) -> dict[str, str]:
    """One backorder release per parent order with fills: an ALLOCATED order of its own
    (``<parent>-B<n>``) carrying the filled quantities and their reservations; the parent's
    lines keep what still waits. Returns child id → parent id. In the caller's transaction,
    under the positions' locks."""
    by_parent: dict[str, list] = defaultdict(list)
    for f in fills:
        by_parent[f.order_id].append(f)
    created: dict[str, str] = {}
    for parent, parts in sorted(by_parent.items()):
        n = conn.execute(
            'SELECT count(*) FROM orderflow."order" WHERE parent_order_id = %s', (parent,)
        ).fetchone()[0]
        child = f"{parent}-B{n + 1}"
        qty: dict[int, Decimal] = defaultdict(Decimal)
        for f in parts:
            qty[f.line_no] += f.quantity
        lines = {
            r[0]: r
            for r in conn.execute(
                "SELECT line_no, item_id, customer_part_number, uom, unit_price, canonical, "
                "contract_id, contract_price, substitute_item_id FROM orderflow.order_line "
                "WHERE order_id = %s AND line_no = ANY(%s)",
                (parent, list(qty)),
            ).fetchall()
        }
        canonical = conn.execute(
            'SELECT canonical FROM orderflow."order" WHERE order_id = %s', (parent,)
        ).fetchone()[0]
        canonical = {
            **canonical,
            "order_id": child,
            "lines": [
                {**ln, "quantity": str(qty[ln["line_no"]])}
                for ln in canonical.get("lines", [])
                if ln.get("line_no") in qty
            ],
        }
        total = sum(
            (q * (lines[no][7] or lines[no][4] or Decimal(0)) for no, q in qty.items()),
            Decimal(0),
        )
        conn.execute(
            """
            INSERT INTO orderflow."order" (order_id, source_message_id, channel, partner_id,
                customer_id, po_number, ship_to_id, currency, order_total, requested_ship_date,
                received_at, canonical, status, priority, parent_order_id, approvals)
            SELECT %s, source_message_id, channel, partner_id, customer_id, po_number,
                   ship_to_id, currency, %s, requested_ship_date, received_at, %s, 'ALLOCATED',
                   priority, order_id, approvals
              FROM orderflow."order" WHERE order_id = %s
            """,
            (child, total, Jsonb(canonical), parent),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orderflow.order_line (order_id, line_no, item_id, "
                "customer_part_number, quantity, uom, unit_price, canonical, contract_id, "
                "contract_price, substitute_item_id, status) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        child,
                        no,
                        lines[no][1],
                        lines[no][2],
                        q,
                        lines[no][3],
                        lines[no][4],
                        Jsonb({**(lines[no][5] or {}), "quantity": str(q)}),
                        lines[no][6],
                        lines[no][7],
                        lines[no][8],
                        "SUBSTITUTED" if lines[no][8] else "ALLOCATED",
                    )
                    for no, q in sorted(qty.items())
                ],
            )
            cur.executemany(
                "UPDATE orderflow.order_line SET backordered_qty = backordered_qty - %s, "
                "status = CASE WHEN backordered_qty - %s <= 0 THEN 'BACKORDER_FILLED' "
                "ELSE status END WHERE order_id = %s AND line_no = %s",
                [(q, q, parent, no) for no, q in sorted(qty.items())],
            )
            cur.execute(
                "INSERT INTO orderflow.order_event (order_id, from_status, to_status, "
                "reason_codes, rule_set_version, actor_type, actor_id, details) "
                "VALUES (%s, NULL, 'ALLOCATED', %s, %s, 'system', 'orderflow.backorders', %s)",
                (
                    child,
                    ["backorder_filled"],
                    rule_set_version,
                    Jsonb(
                        {
                            "parent_order_id": parent,
                            "lines": [
                                {
                                    "line_no": f.line_no,
                                    "item_id": f.item_id,
                                    "dc_id": f.dc_id,
                                    "quantity": str(f.quantity),
                                }
                                for f in parts
                            ],
                        }
                    ),
                ),
            )
        reserve(
            conn,
            [
                (child, f.line_no, f.item_id, f.dc_id, f.quantity, bool(lines[f.line_no][8]))
                for f in parts
            ],
            rule_set_version,
        )
        created[child] = parent
    return created


# ---------------------------------------------------------------------------- customers


def partner_customers(conn: psycopg.Connection, partner_ids: Iterable[str]) -> dict[str, str]:
    """The customer of each active trading partner given that names one."""
    return dict(
        conn.execute(
            "SELECT partner_id, customer_id FROM orderflow.trading_partner "
            "WHERE partner_id = ANY(%s) AND active AND customer_id IS NOT NULL",
            (list(partner_ids),),
        ).fetchall()
    )


def set_customers(conn: psycopg.Connection, customers: dict[str, str]) -> None:
    """Write back the customer found for each order (order_id → customer_id)."""
    with conn.cursor() as cur:
        cur.executemany(
            'UPDATE orderflow."order" SET customer_id = %s WHERE order_id = %s',
            [(c, oid) for oid, c in customers.items()],
        )


# ---------------------------------------------------------------------------- release


def next_releases(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, int]:
    """The release version a (re-)release of each order will carry."""
    return dict(
        conn.execute(
            'SELECT order_id, release_version + 1 FROM orderflow."order" WHERE order_id = ANY(%s)',
            (list(order_ids),),
        ).fetchall()
    )


def planned_shipments(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, list[dict]]:
    """The planned shipments of each order (shipment_id, order_id, dc_id, release_version,
    carrier_id, service_code, ship_date), by shipment id."""
    out: dict[str, list[dict]] = defaultdict(list)
    cur = conn.execute(
        "SELECT shipment_id, order_id, dc_id, release_version, carrier_id, service_code, "
        "ship_date FROM orderflow.shipment WHERE order_id = ANY(%s) AND status = 'planned' "
        "ORDER BY shipment_id",
        (list(order_ids),),
    )
    cols = [c.name for c in cur.description]
    for r in cur.fetchall():
        row = dict(zip(cols, r, strict=True))
        out[row["order_id"]].append(row)
    return out


def record_shipment_lines(conn: psycopg.Connection, order_ids: list[str]) -> None:
    """What each shipment of the next release carries, from the orders' held reservations
    (the WMS reports picked/shipped against these lines). Set-based."""
    conn.execute(
        """
        INSERT INTO orderflow.shipment_line (shipment_id, line_no, item_id, ordered_item_id,
            uom, quantity_released)
        SELECT s.shipment_id, r.line_no, r.item_id, ol.item_id, ol.uom, sum(r.quantity)
          FROM orderflow.reservation r
          JOIN orderflow."order" o ON o.order_id = r.order_id
          JOIN orderflow.shipment s ON s.order_id = r.order_id AND s.dc_id = r.dc_id
                                   AND s.release_version = o.release_version + 1
          JOIN orderflow.order_line ol ON ol.order_id = r.order_id AND ol.line_no = r.line_no
         WHERE r.order_id = ANY(%s) AND r.status = 'held'
         GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT DO NOTHING
        """,
        (order_ids,),
    )


def release_reservations(conn: psycopg.Connection, order_ids: list[str]) -> None:
    """The orders' held reservations are released."""
    conn.execute(
        "UPDATE orderflow.reservation SET status = 'released', updated_at = now() "
        "WHERE order_id = ANY(%s) AND status = 'held'",
        (order_ids,),
    )


def release_shipments(conn: psycopg.Connection, order_ids: list[str]) -> None:
    """The orders' planned shipments of the next release version are released."""
    # The shipments are found by their orders' index first, each checked against its own
    # order: joined to "order" instead, a planner that expected few planned shipments (the
    # table's statistics from before the day's plans) compared every planned shipment with
    # every order of the partition (401,602 pairs for 230 orders; quadratic in the backlog).
    conn.execute(
        """
        UPDATE orderflow.shipment s SET status = 'released', updated_at = now()
         WHERE s.order_id = ANY(%s) AND s.status = 'planned'
           AND s.release_version = (SELECT o.release_version + 1 FROM orderflow."order" o
                                     WHERE o.order_id = s.order_id)
        """,
        (order_ids,),
    )


def notice_lines(conn: psycopg.Connection, order_ids: list[str]) -> list[tuple]:
    """(order_id, line_no, item shipped, quantity, uom, status, backordered_qty) of the
    orders' lines, for release notices."""
    return conn.execute(
        "SELECT order_id, line_no, coalesce(substitute_item_id, item_id), quantity, uom, status, "
        "backordered_qty FROM orderflow.order_line WHERE order_id = ANY(%s) "
        "ORDER BY order_id, line_no",
        (order_ids,),
    ).fetchall()


def planned_ship_dates(conn: psycopg.Connection, order_ids: list[str]) -> dict[str, date]:
    """The earliest planned ship date of each order."""
    return dict(
        conn.execute(
            "SELECT order_id, min(ship_date) FROM orderflow.shipment WHERE order_id = ANY(%s) "
            "AND status = 'planned' GROUP BY order_id",
            (order_ids,),
        ).fetchall()
    )


def canonical_of(conn: psycopg.Connection, order_id: str) -> dict[str, Any]:
    """The canonical JSON of an order."""
    return conn.execute(
        'SELECT canonical FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


def canonicals_of(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, dict]:
    """:func:`canonical_of` of several orders in one query, by order id."""
    return dict(
        conn.execute(
            'SELECT order_id, canonical FROM orderflow."order" WHERE order_id = ANY(%s)',
            (list(order_ids),),
        ).fetchall()
    )


def ack_lines_of(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, list[tuple]]:
    """:func:`ack_lines` of several orders in one query, by order id."""
    return _by_first_column(
        conn.execute(
            "SELECT order_id, status, substitute_item_id, backordered_qty, line_no, quantity, "
            "uom, unit_price, contract_price FROM orderflow.order_line WHERE order_id = ANY(%s) "
            "ORDER BY order_id, line_no",
            (list(order_ids),),
        )
    )


def ack_lines(conn: psycopg.Connection, order_id: str) -> list[tuple]:
    """(status, substitute_item_id, backordered_qty, line_no, quantity, uom, unit_price,
    contract_price) of an order's lines, for its 855."""
    return conn.execute(
        "SELECT status, substitute_item_id, backordered_qty, line_no, quantity, uom, "
        "unit_price, contract_price FROM orderflow.order_line WHERE order_id = %s "
        "ORDER BY line_no",
        (order_id,),
    ).fetchall()


# ---------------------------------------------------------------------------- holds


def resolve_fixed_master_data(conn: psycopg.Connection, actor: str) -> list[tuple]:
    """Auto-resolve the open master-data-quality exceptions of orders whose entity has no
    open quality exception any more; returns their (order_id,) rows. Set-based."""
    return conn.execute(
        """
        WITH fixed AS (
            SELECT e.exception_id, e.order_id
              FROM orderflow.order_exception e
             WHERE e.status = 'open' AND e.category = 'master_data_quality'
               AND e.order_id IS NOT NULL
               AND NOT EXISTS (
                   SELECT 1 FROM orderflow.order_exception m
                    WHERE m.status = 'open' AND m.category = 'master_data_quality'
                      AND m.order_id IS NULL
                      AND m.entity_type = e.details->>'entity_type'
                      AND m.entity_id = e.details->>'entity_id')
        )
        UPDATE orderflow.order_exception x
           SET status = 'resolved', resolution = 'auto_resolved', resolved_at = now(),
               resolved_by = %s,
               resolution_note = 'master data fixed upstream and passed the quality gate'
          FROM fixed WHERE x.exception_id = fixed.exception_id
        RETURNING x.order_id
        """,
        (actor,),
    ).fetchall()


def resolve_known_customers(conn: psycopg.Connection, actor: str) -> list[tuple]:
    """Auto-resolve the open ``unknown_customer`` exceptions whose customer (the order's, or
    its partner's) is on file now; returns their (order_id,) rows. Set-based."""
    return conn.execute(
        """
        WITH known AS (
            SELECT e.exception_id FROM orderflow.order_exception e
              JOIN orderflow."order" o USING (order_id)
              LEFT JOIN orderflow.trading_partner p
                     ON p.partner_id = o.partner_id AND p.active
             WHERE e.status = 'open' AND e.category = 'unknown_customer'
               AND EXISTS (SELECT 1 FROM orderflow.customer c WHERE c.active
                             AND c.customer_id = coalesce(o.customer_id, p.customer_id))
        )
        UPDATE orderflow.order_exception x
           SET status = 'resolved', resolution = 'auto_resolved', resolved_at = now(),
               resolved_by = %s, resolution_note = 'the customer is on file now'
          FROM known WHERE x.exception_id = known.exception_id
        RETURNING x.order_id
        """,
        (actor,),
    ).fetchall()


def held_without_exceptions(conn: psycopg.Connection, order_ids: list[str]) -> list[str]:
    """Of ``order_ids``, the ON_HOLD orders with no open exception left."""
    return [
        r[0]
        for r in conn.execute(
            """
            SELECT o.order_id FROM orderflow."order" o
             WHERE o.order_id = ANY(%s) AND o.status = 'ON_HOLD'
               AND NOT EXISTS (SELECT 1 FROM orderflow.order_exception e
                                WHERE e.order_id = o.order_id AND e.status = 'open')
            """,
            (order_ids,),
        ).fetchall()
    ]


def dead_letter_partition(
    conn: psycopg.Connection, source_ref: str, payload: dict[str, Any], error: str
) -> None:
    """A dead letter for a partition a stage gave up on (kept once per ``source_ref``)."""
    conn.execute(
        "INSERT INTO orderflow.dead_letter (source, source_ref, payload, error) "
        "VALUES ('processing', %s, %s, %s) ON CONFLICT (source, source_ref) DO NOTHING",
        (source_ref, Jsonb(payload), error),
    )


# ---------------------------------------------------------------------------- unwinding


def drop_planned_shipments(conn: psycopg.Connection, order_id: str) -> None:
    """Cancel the planned (never released) shipments of ``order_id``."""
    conn.execute(
        "UPDATE orderflow.shipment SET status = 'cancelled', updated_at = now() "
        "WHERE order_id = %s AND status = 'planned'",
        (order_id,),
    )


def reset_lines(conn: psycopg.Connection, order_id: str) -> None:
    """The line decisions of ``order_id`` undone: every line OPEN, no substitute, nothing
    backordered."""
    conn.execute(
        "UPDATE orderflow.order_line SET status = 'OPEN', substitute_item_id = NULL, "
        "backordered_qty = 0 WHERE order_id = %s",
        (order_id,),
    )


# ---------------------------------------------------------------------------- refused releases


def lock_order_and_parent(conn: psycopg.Connection, order_id: str) -> tuple | None:
    """Lock an order: (status, parent_order_id), or None."""
    return conn.execute(
        'SELECT status, parent_order_id FROM orderflow."order" WHERE order_id = %s FOR UPDATE',
        (order_id,),
    ).fetchone()


def cancel_refused_shipment(conn: psycopg.Connection, shipment_id: str) -> None:
    """Cancel a planned or released shipment (its release was refused)."""
    conn.execute(
        "UPDATE orderflow.shipment SET status = 'cancelled', updated_at = now() "
        "WHERE shipment_id = %s AND status IN ('planned', 'released')",
        (shipment_id,),
    )


def cancel_release_reservations(
    conn: psycopg.Connection, order_id: str, dc_id: str | None
) -> list[tuple]:
    """Cancel the held or released reservations of ``order_id`` at ``dc_id``; returns the
    (item_id, dc_id) rows touched."""
    return conn.execute(
        "UPDATE orderflow.reservation SET status = 'cancelled', updated_at = now() "
        "WHERE order_id = %s AND dc_id = %s AND status IN ('held', 'released') "
        "RETURNING item_id, dc_id",
        (order_id, dc_id),
    ).fetchall()


def other_live_shipments(conn: psycopg.Connection, order_id: str, shipment_id: str) -> int:
    """How many shipments of ``order_id`` other than ``shipment_id`` are not cancelled."""
    return conn.execute(
        "SELECT count(*) FROM orderflow.shipment WHERE order_id = %s AND shipment_id <> %s "
        "AND status <> 'cancelled'",
        (order_id, shipment_id),
    ).fetchone()[0]


def backorder_lines(
    conn: psycopg.Connection, order_id: str, lines: Sequence[tuple[int, Any]]
) -> None:
    """Add each (line_no, quantity) to the line's backordered quantity; the line waits
    BACKORDERED."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE orderflow.order_line SET backordered_qty = backordered_qty + %s, "
            "status = 'BACKORDERED' WHERE order_id = %s AND line_no = %s",
            [(q, order_id, no) for no, q in lines],
        )


def claimed_by_status(conn: psycopg.Connection, run_id: str) -> dict[str, int]:
    """How many orders ``run_id`` holds, by status."""
    return dict(
        conn.execute(
            'SELECT status, count(*) FROM orderflow."order" '
            "WHERE claimed_by_run = %s GROUP BY status",
            (run_id,),
        ).fetchall()
    )
