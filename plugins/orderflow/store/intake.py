"""Intake repository: raw-first channel messages, their single outcome, and the orders
they create (with the RECEIVED event), written set-wise.

Flow per inbound message (see ``orderflow.intake``): :func:`record_message` commits the raw
bytes first; the parser runs; then one transaction writes the orders and the outcome.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg

    from orderflow.domain.models import IntakeError, Order


#: what is kept of a source reference (file name, mail id, request id) in indexed columns
MAX_SOURCE_REF_CHARS = 300


def bounded_text(value: str | None, limit: int) -> str | None:
    """``value`` made storable in an indexed text column: NULs and unpaired surrogates
    replaced, and anything longer than ``limit`` cut, with a hash of the whole so that two
    different long values stay different. Used for our bookkeeping columns only."""
    from orderflow.domain.models import storable_text

    if value is None:
        return None
    clean = storable_text(value)
    if len(clean) <= limit and clean == value:
        return value
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{clean[: limit - 73]}\u2026sha256:{digest}"


def storable(obj: Any) -> Any:
    """A JSON-able structure with every string (keys included) made storable in jsonb."""
    from orderflow.domain.models import storable_text

    if isinstance(obj, str):
        return storable_text(obj)
    if isinstance(obj, dict):
        return {storable(k): storable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [storable(v) for v in obj]
    return obj


#: messages at least this large travel by COPY in chunks (see :func:`_stage_raw`)
RAW_COPY_MIN = 1 << 20
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_CHUNK = 1 << 20


def _stage_raw(cur: psycopg.Cursor, raw: bytes) -> None:
    """``raw`` into the session's one-row staging table, by COPY (binary) in 1 MiB chunks.

    A query parameter is one protocol message: libpq grows its output buffer to the whole
    message and keeps that buffer for the connection's life (a 32 MB file left 32 MB in
    every intake process, and the escaped text form of bytea twice that on the way). COPY
    data can be split anywhere, so the buffer stays at the chunk size."""
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS of_raw_stage (raw bytea NOT NULL) ON COMMIT DELETE ROWS"
    )
    cur.execute("TRUNCATE of_raw_stage")
    view = memoryview(raw)
    with cur.copy("COPY of_raw_stage (raw) FROM STDIN (FORMAT binary)") as copy:
        copy.write(_PGCOPY_HEADER + struct.pack("!hi", 1, len(raw)))
        for i in range(0, len(raw), _COPY_CHUNK):
            copy.write(view[i : i + _COPY_CHUNK])
        copy.write(struct.pack("!h", -1))


@dataclass(frozen=True)
class StoredMessage:
    message_id: int
    outcome: str
    seen_before: bool
    content_sha256: str


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def record_message(
    conn: psycopg.Connection,
    *,
    channel: str,
    partner_id: str | None,
    source_ref: str | None,
    raw: bytes,
    content_type: str | None = None,
    client_request_id: str | None = None,
    size_bytes: int | None = None,
) -> StoredMessage:
    """Store an inbound message before anything parses it.

    The same delivery seen again (same channel, partner, source and bytes — a rerun over the
    same file, a re-read feed page) returns the existing row with ``seen_before`` and a bumped
    ``delivery_count`` instead of a second message.
    """
    from orderflow.domain.models import MAX_ID_CHARS

    digest = sha256(raw)
    partner_id = bounded_text(partner_id, MAX_ID_CHARS)
    source_ref = bounded_text(source_ref, MAX_SOURCE_REF_CHARS)
    client_request_id = bounded_text(client_request_id, MAX_ID_CHARS)
    content_type = bounded_text(content_type, MAX_SOURCE_REF_CHARS)
    key = f"{channel}:{partner_id or '-'}:{source_ref or '-'}:{digest}"
    values = (channel, partner_id or "unknown", source_ref, digest)
    rest = (
        content_type,
        client_request_id,
        key,
        size_bytes if size_bytes is not None else len(raw),
    )
    upsert = """
        ON CONFLICT (ingest_key) DO UPDATE
            SET delivery_count = orderflow.channel_message.delivery_count + 1
        RETURNING message_id, outcome, xmax <> 0
    """
    columns = """
        INSERT INTO orderflow.channel_message
            (channel, partner_id, source_ref, content_sha256, raw, content_type,
             client_request_id, ingest_key, size_bytes)
    """
    if len(raw) < RAW_COPY_MIN:  # binary (%b): as text, bytea would be escaped (2x) first
        row = conn.execute(
            columns + "VALUES (%s, %s, %s, %s, %b, %s, %s, %s, %s)" + upsert,
            (*values, raw, *rest),
        ).fetchone()
        return StoredMessage(row[0], row[1], row[2], digest)
    with conn.transaction(), conn.cursor() as cur:
        _stage_raw(cur, raw)
        row = cur.execute(
            columns
            + "SELECT %s, %s, %s, %s, s.raw, %s, %s, %s, %s::bigint FROM of_raw_stage s"
            + upsert,
            (*values, *rest),
        ).fetchone()
        cur.execute("TRUNCATE of_raw_stage")
    return StoredMessage(row[0], row[1], row[2], digest)


def earlier_message_with(
    conn: psycopg.Connection,
    *,
    message_id: int,
    partner_id: str | None,
    content_sha256: str | None = None,
    interchange_control_number: str | None = None,
    client_request_id: str | None = None,
    channel: str | None = None,
) -> int | None:
    """The first earlier message this one duplicates (same bytes, same ISA13 from the same
    partner, or the same client request id), among messages that were not duplicates."""
    from orderflow.domain.models import MAX_ID_CHARS

    # the values as record_message / set_outcome stored them
    partner_id = bounded_text(partner_id, MAX_ID_CHARS)
    interchange_control_number = bounded_text(interchange_control_number, MAX_ID_CHARS)
    client_request_id = bounded_text(client_request_id, MAX_ID_CHARS)
    # One indexed lookup per key (an OR across them made PostgreSQL walk the primary key).
    clauses, params = [], []
    if content_sha256:
        clauses.append("content_sha256 = %s")
        params.append([content_sha256])
    if interchange_control_number:
        clauses.append("interchange_control_number = %s")
        params.append([interchange_control_number])
    if client_request_id:
        clauses.append("client_request_id = %s AND channel = %s")
        params.append([client_request_id, channel])
    if not clauses:
        return None
    parts, args = [], []
    for clause, values in zip(clauses, params, strict=True):
        parts.append(
            "SELECT min(message_id) AS m FROM orderflow.channel_message "
            "WHERE partner_id = %s AND message_id < %s "
            f"AND outcome IN ('orders_created', 'pending') AND {clause}"
        )
        args += [partner_id or "unknown", message_id, *values]
    row = conn.execute(f"SELECT min(m) FROM ({' UNION ALL '.join(parts)}) t", args).fetchone()
    return row[0] if row else None


def existing_orders_by_po(
    conn: psycopg.Connection, keys: Iterable[tuple[str | None, str | None, str]]
) -> dict[tuple[str | None, str | None, str], str]:
    """Orders already received for (customer_id, partner_id, po_number): a PO counts as the
    same when the customer matches, or — customer unknown — the sending partner matches."""
    keys = list(keys)
    if not keys:
        return {}
    rows = conn.execute(
        """
        SELECT k.customer_id, k.partner_id, k.po_number, o.order_id
        FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(customer_id, partner_id, po_number)
        JOIN orderflow."order" o ON o.po_number = k.po_number
         AND ((k.customer_id IS NOT NULL AND o.customer_id = k.customer_id)
              OR (k.customer_id IS NULL AND o.partner_id = k.partner_id))
        """,
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    ).fetchall()
    return {(r[0], r[1], r[2]): r[3] for r in rows}


#: the session's staging table for :func:`insert_orders` (COPY in, then one merge)
_ORDER_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS of_order_stage (
        n int NOT NULL, order_id text, channel text, partner_id text, customer_id text,
        po_number text, ship_to_id text, currency text, order_total numeric,
        requested_ship_date date, received_at timestamptz, canonical text
    ) ON COMMIT DELETE ROWS
"""
# ``canonical`` is staged as text and becomes jsonb in the merge: a jsonb value staged
# already compressed would be copied into "order" as it is, inline (PostgreSQL toasts a new
# row only when it exceeds 2 kB), and "order" keeps the document out of line (0025)


def insert_orders(
    conn: psycopg.Connection,
    orders: Sequence[Order],
    *,
    message_id: int | None,
    actor_id: str,
    run: dict[str, Any] | None = None,
) -> list[str]:
    """Insert new orders with their lines and RECEIVED event; returns the ids inserted
    (an order id already present — a replay — is skipped, never duplicated; an id repeated
    in ``orders`` is taken once, its first occurrence).

    Set-wise, never a statement per row: the orders are COPYed into a session staging
    table and merged in one ``INSERT … SELECT … ON CONFLICT DO NOTHING``, their lines COPYed
    straight into ``order_line``, their RECEIVED events one ``INSERT … SELECT FROM unnest``.
    COPY rows are formatted by psycopg's C code; binary arrays (the path before) were built
    element by element in Python, most of this function's time. Callers isolate a refused
    batch (one savepoint, then one per order): see ``intake.core``."""
    if not orders:
        return []
    run = run or {}
    first: dict[str, Order] = {}
    for o in orders:
        first.setdefault(o.order_id, o)
    batch = list(first.values())
    with conn.cursor() as cur:
        cur.execute(_ORDER_STAGE)
        cur.execute("TRUNCATE of_order_stage")
        with cur.copy(
            "COPY of_order_stage (n, order_id, channel, partner_id, customer_id, po_number, "
            "ship_to_id, currency, order_total, requested_ship_date, received_at, canonical) "
            "FROM STDIN"
        ) as copy:
            for n, o in enumerate(batch):
                copy.write_row(
                    (
                        n,
                        o.order_id,
                        o.provenance.channel.value,
                        o.provenance.partner_id,
                        o.customer_id,
                        o.po_number,
                        o.ship_to.party_id if o.ship_to else None,
                        o.currency,
                        o.total,
                        o.requested_ship_date,
                        o.provenance.received_at,
                        o.model_dump_json(),  # the JSON model_dump(mode="json") is, in one call
                    )
                )
        cur.execute(
            """
            INSERT INTO orderflow."order" (order_id, source_message_id, channel, partner_id,
                customer_id, po_number, ship_to_id, currency, order_total,
                requested_ship_date, received_at, canonical)
            SELECT k.order_id, %s::bigint, k.channel, k.partner_id, k.customer_id, k.po_number,
                   k.ship_to_id, k.currency, k.order_total, k.requested_ship_date,
                   coalesce(k.received_at, now()), k.canonical::jsonb
              FROM of_order_stage k
             ORDER BY k.n
            ON CONFLICT (order_id) DO NOTHING
            RETURNING order_id
            """,
            (message_id,),
        )
        new = {r[0] for r in cur.fetchall()}
        cur.execute("TRUNCATE of_order_stage")
        inserted = [o for o in batch if o.order_id in new]
        if not inserted:
            return []
        with cur.copy(
            "COPY orderflow.order_line (order_id, line_no, item_id, customer_part_number, "
            "quantity, uom, unit_price, canonical) FROM STDIN"
        ) as copy:
            for o in inserted:
                order_id = o.order_id
                for ln in o.lines:
                    copy.write_row(
                        (
                            order_id,
                            ln.line_no,
                            ln.item_id,
                            ln.customer_part_number,
                            ln.quantity,
                            ln.uom,
                            ln.unit_price,
                            ln.model_dump_json(),
                        )
                    )
        cur.execute(
            """
            INSERT INTO orderflow.order_event (order_id, from_status, to_status, reason_codes,
                actor_type, actor_id, details, dag_id, run_id, task_id, map_index)
            SELECT k.order_id, NULL, 'RECEIVED', ARRAY['intake.' || k.channel], 'system', %s,
                   jsonb_build_object('message_id', %s::bigint, 'lines', k.lines), %s, %s, %s,
                   %s::int
              FROM unnest(%b::text[], %b::text[], %b::int[]) WITH ORDINALITY
                   AS k(order_id, channel, lines, n)
             ORDER BY k.n
            """,
            (
                actor_id,
                message_id,
                run.get("dag_id"),
                run.get("run_id"),
                run.get("task_id"),
                run.get("map_index"),
                [o.order_id for o in inserted],
                [o.provenance.channel.value for o in inserted],
                [len(o.lines) for o in inserted],
            ),
        )
    return [o.order_id for o in inserted]


def set_outcome(
    conn: psycopg.Connection,
    message_id: int,
    outcome: str,
    *,
    errors: Sequence[IntakeError] = (),
    duplicate_of: int | None = None,
    order_count: int | None = None,
    control: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    from orderflow.domain.models import MAX_ID_CHARS

    control = storable(control or {})
    st02s = control.get("st02s")
    conn.execute(
        """
        UPDATE orderflow.channel_message
           SET outcome = %s, error = %s, duplicate_of = %s, order_count = %s,
               processed_at = now(), details = %s,
               interchange_control_number = coalesce(%s, interchange_control_number),
               group_control_number = coalesce(%s, group_control_number),
               transaction_control_numbers = coalesce(%s, transaction_control_numbers)
         WHERE message_id = %s
        """,
        (
            outcome,
            Jsonb([e.model_dump() for e in errors]) if errors else None,
            duplicate_of,
            order_count,
            Jsonb(storable(details or {})),
            bounded_text(control.get("isa13"), MAX_ID_CHARS),
            bounded_text(control.get("gs06"), MAX_ID_CHARS),
            [bounded_text(str(x), MAX_ID_CHARS) for x in st02s] if st02s else None,
            message_id,
        ),
    )


def reconcile(conn: psycopg.Connection, channel: str | None = None) -> dict[str, int]:
    """Messages by outcome (the intake reconciliation: in = created + quarantined + duplicate)."""
    rows = conn.execute(
        "SELECT outcome, count(*) FROM orderflow.channel_message "
        "WHERE %s::text IS NULL OR channel = %s GROUP BY outcome",
        (channel, channel),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


@dataclass(frozen=True)
class StoredChange:
    """What :func:`insert_change` did: stored (``change_id``), or found the same change
    (order, source, reference) stored before (``earlier_message_id``; ``same`` is False
    when that earlier change says something else under the same reference)."""

    change_id: int | None = None
    earlier_message_id: int | None = None
    same: bool = True


def insert_change(
    conn: psycopg.Connection,
    *,
    order_id: str,
    message_id: int,
    source: str,
    change: Any,  # orderflow.domain.changes.OrderChange
) -> StoredChange:
    """One customer change to ``order_id``, pending (``orderflow.changes`` applies it). A
    change re-delivered under the same reference is stored once (UNIQUE order_id, source,
    reference)."""
    payload = storable(change.model_dump(mode="json"))
    row = conn.execute(
        """
        INSERT INTO orderflow.order_change
               (order_id, message_id, kind, source, reference, payload, requested_by)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (order_id, source, reference) DO NOTHING
        RETURNING change_id
        """,
        (
            order_id,
            message_id,
            payload["kind"],
            source,
            payload.get("reference"),
            Jsonb(payload),
            payload.get("requested_by"),
        ),
    ).fetchone()
    if row is not None:
        return StoredChange(change_id=row[0])
    prior = conn.execute(
        """
        SELECT message_id, kind, payload -> 'lines' FROM orderflow.order_change
         WHERE order_id = %s AND source = %s AND reference = %s
        """,
        (order_id, source, payload.get("reference")),
    ).fetchone()
    same = prior[1] == payload["kind"] and prior[2] == payload.get("lines", [])
    return StoredChange(earlier_message_id=prior[0], same=same)


def source_message_of(conn: psycopg.Connection, order_id: str) -> int | None:
    """The channel message an order was created from."""
    return conn.execute(
        'SELECT source_message_id FROM orderflow."order" WHERE order_id = %s', (order_id,)
    ).fetchone()[0]


# ---------------------------------------------------------------------------- replay


def message_for_replay(conn: psycopg.Connection, message_id: int) -> tuple | None:
    """(channel, partner_id, source_ref, raw, outcome, client_request_id, details) of a
    stored message, or None."""
    return conn.execute(
        "SELECT channel, partner_id, source_ref, raw, outcome, client_request_id, details "
        "FROM orderflow.channel_message WHERE message_id = %s",
        (message_id,),
    ).fetchone()


def record_replay(
    conn: psycopg.Connection,
    message_id: int,
    replay_id: int,
    replay_outcome: str,
    *,
    actor: str,
    before_outcome: str,
    corrected_bytes: bool,
    reason: str | None,
) -> None:
    """Link a message and its replay both ways, and audit the replay (``replay_message``)."""
    conn.execute(
        "UPDATE orderflow.channel_message SET replay_of = %s WHERE message_id = %s",
        (message_id, replay_id),
    )
    conn.execute(
        "UPDATE orderflow.channel_message SET details = details || %s WHERE message_id = %s",
        (Jsonb({"replayed_as": replay_id, "replay_outcome": replay_outcome}), message_id),
    )
    conn.execute(
        """INSERT INTO orderflow.audit_log (actor, action, object_type, object_id, before, after, reason)
           VALUES (%s, 'replay_message', 'channel_message', %s, %s, %s, %s)""",
        (
            actor,
            str(message_id),
            Jsonb({"outcome": before_outcome}),
            Jsonb(
                {
                    "replay_message_id": replay_id,
                    "outcome": replay_outcome,
                    "corrected_bytes": corrected_bytes,
                }
            ),
            reason,
        ),
    )


def quarantined(conn: psycopg.Connection, channel: str | None, limit: int) -> list[tuple]:
    """(message_id, channel, partner_id, source_ref, received_at, error) of quarantined
    messages not yet replayed (of ``channel``, if given), newest first."""
    return conn.execute(
        """
        SELECT message_id, channel, partner_id, source_ref, received_at, error
          FROM orderflow.channel_message
         WHERE outcome = 'quarantined' AND NOT details ? 'replayed_as'
           AND (%s::text IS NULL OR channel = %s)
         ORDER BY message_id DESC LIMIT %s
        """,
        (channel, channel, limit),
    ).fetchall()


# ---------------------------------------------------------------------------- channels


#: order ids per count: a 32 MB file is 100,000s of ids, not one array
_COUNT_CHUNK = 10_000


def count_lines(conn: psycopg.Connection, order_ids: Sequence[str]) -> int:
    """How many order lines the orders given have (asked in chunks of ids)."""
    ids = list(order_ids)
    if len(ids) > _COUNT_CHUNK:  # an id in two chunks must count once, as in one array
        ids = list(dict.fromkeys(ids))
    return sum(
        conn.execute(
            "SELECT count(*) FROM orderflow.order_line WHERE order_id = ANY(%s)",
            (ids[i : i + _COUNT_CHUNK],),
        ).fetchone()[0]
        for i in range(0, len(ids), _COUNT_CHUNK)
    )


def partner_customer(conn: psycopg.Connection, partner_id: str) -> str | None:
    """The customer of an active trading partner (None: unknown, inactive or none named)."""
    row = conn.execute(
        "SELECT customer_id FROM orderflow.trading_partner WHERE partner_id = %s AND active",
        (partner_id,),
    ).fetchone()
    return row[0] if row else None


def catalog(conn: psycopg.Connection) -> dict[str, list[dict[str, Any]]]:
    """What e-mail extraction may match against, from the master data: active customers,
    ship-tos, items (discontinued ones too: customers still order them) and customer part
    numbers."""

    def rows(sql: str) -> list[dict]:
        cur = conn.execute(sql)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    return {
        "customers": rows("SELECT customer_id, name, email FROM orderflow.customer WHERE active"),
        "ship_tos": rows(
            "SELECT ship_to_id, customer_id, name, address_line1, address_line2, city, "
            "region, postal_code, country FROM orderflow.ship_to"
        ),
        "items": rows("SELECT item_id, description, uom, vendor_part, upc FROM orderflow.item"),
        "xrefs": rows(
            "SELECT customer_id, customer_part_number, item_id FROM orderflow.customer_item_xref"
        ),
    }
