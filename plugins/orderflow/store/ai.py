"""Decision-support repository (#17): model versions, AI decisions and their reviews, labelled
examples, and what the models' features read from the store (migration 0022)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg


# ---------------------------------------------------------------------------- versions


def add_version(
    conn: psycopg.Connection,
    *,
    model_name: str,
    version: str,
    window: tuple[datetime | None, datetime | None],
    n_examples: int,
    metrics: dict[str, Any],
    library: str,
    artifact: bytes,
) -> int:
    """Store a trained version (inactive); the database checks the artifact's hash."""
    return conn.execute(
        """
        INSERT INTO orderflow.ai_model_version (model_name, version, window_from, window_to,
            n_examples, metrics, library, artifact, artifact_sha256)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING version_id
        """,
        (
            model_name,
            version,
            *window,
            n_examples,
            Jsonb(metrics),
            library,
            artifact,
            hashlib.sha256(artifact).hexdigest(),
        ),
    ).fetchone()[0]


def activate(conn: psycopg.Connection, version_id: int, note: str) -> None:
    """Make ``version_id`` its model's one active version."""
    row = conn.execute(
        "SELECT model_name FROM orderflow.ai_model_version WHERE version_id = %s", (version_id,)
    ).fetchone()
    conn.execute(
        "UPDATE orderflow.ai_model_version SET active = false WHERE model_name = %s AND active",
        (row[0],),
    )
    conn.execute(
        "UPDATE orderflow.ai_model_version SET active = true, activated_at = now(), "
        "decision_note = %s WHERE version_id = %s",
        (note, version_id),
    )


def note(conn: psycopg.Connection, version_id: int, text: str) -> None:
    conn.execute(
        "UPDATE orderflow.ai_model_version SET decision_note = %s WHERE version_id = %s",
        (text, version_id),
    )


def active_version(conn: psycopg.Connection, model_name: str) -> dict[str, Any] | None:
    """The active version of a model with its artifact (bytes and recorded hash)."""
    row = conn.execute(
        """
        SELECT version_id, version, metrics, artifact, artifact_sha256, window_from, window_to
          FROM orderflow.ai_model_version WHERE model_name = %s AND active
        """,
        (model_name,),
    ).fetchone()
    if row is None:
        return None
    keys = ("version_id", "version", "metrics", "artifact", "sha256", "window_from", "window_to")
    return dict(zip(keys, row, strict=True))


def active_meta(conn: psycopg.Connection, model_name: str) -> tuple[int, str, str] | None:
    """(version id, version, recorded SHA-256) of a model's active version, without its
    artifact: what a process that already loaded that version needs to know."""
    row = conn.execute(
        "SELECT version_id, version, artifact_sha256 FROM orderflow.ai_model_version "
        "WHERE model_name = %s AND active",
        (model_name,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def artifact(conn: psycopg.Connection, version_id: int) -> tuple[bytes, str] | None:
    """A version's artifact bytes and their recorded SHA-256."""
    row = conn.execute(
        "SELECT artifact, artifact_sha256 FROM orderflow.ai_model_version WHERE version_id = %s",
        (version_id,),
    ).fetchone()
    return None if row is None else (bytes(row[0]), row[1])


def versions(conn: psycopg.Connection, model_name: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT version_id, version, trained_at, window_from, window_to, n_examples, metrics,
               active, decision_note
          FROM orderflow.ai_model_version WHERE model_name = %s ORDER BY version_id
        """,
        (model_name,),
    ).fetchall()
    keys = ("version_id", "version", "trained_at", "window_from", "window_to", "n_examples",
            "metrics", "active", "decision_note")  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in rows]


# ---------------------------------------------------------------------------- decisions


def record_decisions(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Append decisions (``orderflow.ai.governance.record`` builds them); one already recorded
    for the same model version, subject and inputs is not recorded twice. Returns the ids."""
    ids = []
    for r in rows:
        row = conn.execute(
            """
            INSERT INTO orderflow.ai_decision (model_name, model_version, order_id,
                exception_id, line_no, input_hash, features, output_label, score, evidence,
                action, rule_set_version)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING RETURNING decision_id
            """,
            (
                r["model_name"],
                r["model_version"],
                r.get("order_id"),
                r.get("exception_id"),
                r.get("line_no"),
                r["input_hash"],
                Jsonb(r["features"]),
                r["output_label"],
                r["score"],
                Jsonb(r["evidence"]),
                r["action"],
                r.get("rule_set_version"),
            ),
        ).fetchone()
        if row:
            ids.append(row[0])
    return ids


def review(
    conn: psycopg.Connection, decision_id: int, *, followed: bool, label: str | None, actor: str
) -> bool:
    """Set a person's review of a decision, once (False: already reviewed or unknown)."""
    return bool(
        conn.execute(
            """
            UPDATE orderflow.ai_decision SET followed = %s, label = %s, reviewed_by = %s,
                   reviewed_at = now()
             WHERE decision_id = %s AND reviewed_at IS NULL
            """,
            (followed, label, actor, decision_id),
        ).rowcount
    )


def decisions_for(
    conn: psycopg.Connection, *, order_id: str | None = None, exception_id: int | None = None
) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT decision_id, decided_at, model_name, model_version, order_id, exception_id,
               line_no, output_label, score, evidence, action, followed, label, reviewed_by
          FROM orderflow.ai_decision
         WHERE (%s::text IS NULL OR order_id = %s) AND (%s::bigint IS NULL OR exception_id = %s)
         ORDER BY decision_id
        """,
        (order_id, order_id, exception_id, exception_id),
    ).fetchall()
    keys = ("decision_id", "decided_at", "model_name", "model_version", "order_id",
            "exception_id", "line_no", "output_label", "score", "evidence", "action",
            "followed", "label", "reviewed_by")  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in rows]


def annotate_exception(conn: psycopg.Connection, exception_id: int, key: str, value: Any) -> None:
    """Put a model's recommendation into an exception's details (what the desk shows)."""
    conn.execute(
        "UPDATE orderflow.order_exception SET details = details || jsonb_build_object(%s::text, %s::jsonb) "
        "WHERE exception_id = %s",
        (key, Jsonb(value), exception_id),
    )


def route_exception(conn: psycopg.Connection, exception_id: int, owner_role: str) -> None:
    """Give an open exception to the owner its recommended cause routes to."""
    conn.execute(
        "UPDATE orderflow.order_exception SET owner_role = %s "
        "WHERE exception_id = %s AND status = 'open'",
        (owner_role, exception_id),
    )


def open_exception_ids(
    conn: psycopg.Connection, order_ids: Sequence[str], categories: Iterable[str]
) -> dict[tuple[str, int, str], int]:
    """(order, line or 0, category) → the open exception's id."""
    return {
        (o, line or 0, c): e
        for e, o, line, c in conn.execute(
            """
            SELECT exception_id, order_id, line_no, category FROM orderflow.order_exception
             WHERE status = 'open' AND order_id = ANY(%s) AND category = ANY(%s)
            """,
            (list(order_ids), list(categories)),
        )
    }


# ---------------------------------------------------------------------------- training data


def add_examples(conn: psycopg.Connection, rows: Sequence[tuple]) -> int:
    """Append labelled examples: (model, source, subject, observed_at, features, label)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderflow.ai_example (model_name, source, subject, observed_at, "
            "features, label) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(m, s, subj, at, Jsonb(f), lab) for m, s, subj, at, f, lab in rows],
        )
    return len(rows)


def training_set(
    conn: psycopg.Connection, model_name: str, until: datetime | None = None
) -> list[tuple[datetime, dict[str, Any], str, str, str]]:
    """The labelled examples of a model, oldest first: (when, features, label, source,
    subject — the order, or for an imported example what it names).
    A reviewed decision is labelled by the person (their label when they corrected it, the
    model's output when they followed it); imported examples by their label."""
    return [
        tuple(r)
        for r in conn.execute(
            """
            SELECT decided_at, features, coalesce(label, output_label), 'desk',
                   coalesce(order_id, decision_id::text)
              FROM orderflow.ai_decision
             WHERE model_name = %s AND reviewed_at IS NOT NULL
               AND (label IS NOT NULL OR followed)
               AND (%s::timestamptz IS NULL OR decided_at <= %s)
            UNION ALL
            SELECT observed_at, features, label, source, subject FROM orderflow.ai_example
             WHERE model_name = %s AND (%s::timestamptz IS NULL OR observed_at <= %s)
            ORDER BY 1
            """,
            (model_name, until, until, model_name, until, until),
        )
    ]


def agreement(conn: psycopg.Connection, days: int = 30) -> dict[str, dict[str, Any]]:
    """Per model, over the last ``days``: reviewed decisions and the share people followed
    (the live-quality KPI the dashboard shows)."""
    return {
        m: {"reviewed": n, "followed_rate": None if not n else float(f) / n}
        for m, n, f in conn.execute(
            """
            SELECT model_name, count(*), count(*) FILTER (WHERE followed)
              FROM orderflow.ai_decision
             WHERE reviewed_at >= now() - make_interval(days => %s)
             GROUP BY model_name
            """,
            (days,),
        )
    }


# ---------------------------------------------------------------------------- features


def context_rows(
    conn: psycopg.Connection, customer_ids: Sequence[str], before: datetime, days: int = 365
) -> dict[str, list[tuple]]:
    """What the models' features read about these customers (``orderflow.ai.features.Context``
    is built from it): ``lines`` — their order lines of the last ``days`` before ``before``
    (order, customer, ship-to, its region, received, line, item, quantity, paid, charged),
    oldest first; ``parts`` — part numbers on file (customer, part); ``ship_tos`` — ship-tos
    on file (id, customer, line 1, city, postal code, region, on file since); ``packs`` —
    pack sizes of the items they ordered (item, pack size)."""
    from datetime import timedelta

    cids = list(customer_ids)
    lines = conn.execute(
        """
        SELECT o.order_id, o.customer_id, o.ship_to_id, s.region, o.received_at,
               l.line_no, l.item_id, l.quantity, l.unit_price, l.contract_price
          FROM orderflow."order" o
          JOIN orderflow.order_line l USING (order_id)
          LEFT JOIN orderflow.ship_to s ON s.ship_to_id = o.ship_to_id
         WHERE o.customer_id = ANY(%s) AND o.received_at < %s AND o.received_at >= %s
           AND o.status NOT IN ('RECEIVED', 'CANCELLED', 'REJECTED')
         ORDER BY o.received_at, o.order_id, l.line_no
        """,
        (cids, before, before - timedelta(days=days)),
    ).fetchall()
    parts = conn.execute(
        "SELECT customer_id, customer_part_number FROM orderflow.customer_item_xref "
        "WHERE customer_id = ANY(%s)",
        (cids,),
    ).fetchall()
    ship_tos = conn.execute(
        "SELECT ship_to_id, customer_id, address_line1, city, postal_code, region, "
        "coalesce(source_updated_at, synced_at)::date FROM orderflow.ship_to "
        "WHERE customer_id = ANY(%s)",
        (cids,),
    ).fetchall()
    packs = conn.execute(
        "SELECT DISTINCT i.item_id, i.pack_size FROM orderflow.item i "
        "JOIN orderflow.order_line l ON l.item_id = i.item_id "
        'JOIN orderflow."order" o ON o.order_id = l.order_id WHERE o.customer_id = ANY(%s)',
        (cids,),
    ).fetchall()
    return {"lines": lines, "parts": parts, "ship_tos": ship_tos, "packs": packs}


def for_exceptions(conn: psycopg.Connection, exception_ids: Sequence[int]) -> dict[int, list[dict]]:
    """The newest decision of each model about each of ``exception_ids`` (what the desk shows
    beside the exception), by exception id."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not exception_ids:
        return out
    keys = ("decision_id", "decided_at", "model_name", "model_version", "exception_id",
            "line_no", "output_label", "score", "evidence", "action", "followed", "label",
            "reviewed_by")  # fmt: skip
    for r in conn.execute(
        """
        SELECT DISTINCT ON (exception_id, model_name)
               decision_id, decided_at, model_name, model_version, exception_id, line_no,
               output_label, score, evidence, action, followed, label, reviewed_by
          FROM orderflow.ai_decision
         WHERE exception_id = ANY(%s)
         ORDER BY exception_id, model_name, decision_id DESC
        """,
        (list(exception_ids),),
    ):
        d = dict(zip(keys, r, strict=True))
        out.setdefault(d["exception_id"], []).append(d)
    return out


def unreviewed_decision(
    conn: psycopg.Connection, exception_id: int, model_name: str
) -> tuple[int, str] | None:
    """The newest decision of ``model_name`` about an exception no person has reviewed yet:
    (decision id, its output label)."""
    row = conn.execute(
        """
        SELECT decision_id, output_label FROM orderflow.ai_decision
         WHERE exception_id = %s AND model_name = %s AND reviewed_at IS NULL
         ORDER BY decision_id DESC LIMIT 1
        """,
        (exception_id, model_name),
    ).fetchone()
    return (row[0], row[1]) if row else None


# ---------------------------------------------------------------------------- substitutes


def substitute_outcomes(
    conn: psycopg.Connection, model_name: str, before: datetime, days: int = 365
) -> list[tuple]:
    """Customers' answers to offered substitutes of the last ``days`` before ``before``, oldest
    first (what ``orderflow.ai.substitutes.Context`` is built from): (when, customer, tier,
    item, substitute, family, accepted, the pair's features). From reviewed ranking decisions
    (the first-ranked candidate of ``evidence`` was offered; a person's review is the answer)
    and imported examples (subject ``offer|customer|item|substitute``)."""
    from datetime import timedelta

    since = before - timedelta(days=days)
    return [
        tuple(r)
        for r in conn.execute(
            """
            SELECT d.reviewed_at, o.customer_id, c.tier, d.evidence -> 0 ->> 'item_id',
                   d.evidence -> 0 ->> 'substitute_item_id',
                   split_part(coalesce(i.vendor_part, ''), '-', 1),
                   coalesce(d.label, d.output_label) = 'accepted', d.features
              FROM orderflow.ai_decision d
              JOIN orderflow."order" o ON o.order_id = d.order_id
              LEFT JOIN orderflow.customer c ON c.customer_id = o.customer_id
              LEFT JOIN orderflow.item i ON i.item_id = d.evidence -> 0 ->> 'item_id'
             WHERE d.model_name = %s AND d.reviewed_at IS NOT NULL
               AND (d.label IS NOT NULL OR d.followed)
               AND d.reviewed_at < %s AND d.reviewed_at >= %s
            UNION ALL
            SELECT e.observed_at, split_part(e.subject, '|', 2), c.tier,
                   split_part(e.subject, '|', 3), split_part(e.subject, '|', 4),
                   split_part(coalesce(i.vendor_part, ''), '-', 1), e.label = 'accepted',
                   e.features
              FROM orderflow.ai_example e
              LEFT JOIN orderflow.customer c ON c.customer_id = split_part(e.subject, '|', 2)
              LEFT JOIN orderflow.item i ON i.item_id = split_part(e.subject, '|', 3)
             WHERE e.model_name = %s AND e.subject LIKE '%%|%%|%%|%%'
               AND e.observed_at < %s AND e.observed_at >= %s
             ORDER BY 1
            """,
            (model_name, before, since, model_name, before, since),
        )
    ]


def item_facts(conn: psycopg.Connection, item_ids: Iterable[str]) -> list[tuple]:
    """(item, unit, pack size, list price, vendor part) of these items."""
    return conn.execute(
        "SELECT item_id, uom, pack_size, list_price, vendor_part FROM orderflow.item "
        "WHERE item_id = ANY(%s)",
        (list(item_ids),),
    ).fetchall()


def unreviewed_per_line(
    conn: psycopg.Connection, model_name: str, order_id: str, line_no: int | None = None
) -> list[int]:
    """The newest decision of ``model_name`` per line of an order that no person has reviewed
    yet (``line_no``: that line only)."""
    return [
        r[0]
        for r in conn.execute(
            """
            SELECT DISTINCT ON (line_no) decision_id FROM orderflow.ai_decision
             WHERE model_name = %s AND order_id = %s AND reviewed_at IS NULL
               AND (%s::int IS NULL OR line_no = %s)
             ORDER BY line_no, decision_id DESC
            """,
            (model_name, order_id, line_no, line_no),
        )
    ]


def delay_rows(
    conn: psycopg.Connection,
    order_ids: Sequence[str],
    *,
    lane_days: int,
    throughput_days: int,
) -> dict[str, Any]:
    """What the delay-risk features read (``orderflow.ai.delay``), at the database's ``now``:

    - ``planned``: the orders' planned shipments of their next release (order, received,
      release version, DC, carrier, service, mode, transit days, ship-to zone, weight,
      hazmat, ship date, promised date);
    - ``open``: per DC, shipments planned or in the warehouse and not shipped yet (other
      orders than these);
    - ``shipped``: per DC, shipments that left it in the last ``throughput_days``;
    - ``lanes``: per (carrier, service, zone), shipments delivered in the ``lane_days`` before
      today with a promised date, and how many of them after it;
    - ``cutoffs``: per DC, its time zone and cutoff time (master data)."""
    ids = list(order_ids)
    planned = conn.execute(
        """
        SELECT s.order_id, o.received_at, s.release_version, s.dc_id, s.carrier_id,
               s.service_code, s.mode, coalesce(cs.transit_days, 0), st.zone, s.weight_kg,
               s.hazmat, s.ship_date, s.promised_date
          FROM orderflow.shipment s
          JOIN orderflow."order" o ON o.order_id = s.order_id
                                   AND s.release_version = o.release_version + 1
          LEFT JOIN orderflow.ship_to st ON st.ship_to_id = o.ship_to_id
          LEFT JOIN orderflow.carrier_service cs
                 ON cs.carrier_id = s.carrier_id AND cs.service_code = s.service_code
         WHERE s.order_id = ANY(%s) AND s.status = 'planned' AND s.promised_date IS NOT NULL
         ORDER BY s.order_id, s.dc_id
        """,
        (ids,),
    ).fetchall()
    return {
        "planned": planned,
        **delay_stats(conn, ids, lane_days=lane_days, throughput_days=throughput_days),
    }


_DELAY_STATS = """
SELECT now(),
       (SELECT coalesce(json_agg(json_build_array(dc_id, n)), '[]')
          FROM (SELECT dc_id, count(*) AS n FROM orderflow.shipment
                 WHERE shipped_at IS NULL
                   AND status IN ('planned', 'released', 'picked', 'packed')
                   AND order_id <> ALL(%(ids)s) GROUP BY dc_id) o),
       (SELECT coalesce(json_agg(json_build_array(dc_id, n)), '[]')
          FROM (SELECT dc_id, count(*) AS n FROM orderflow.shipment
                 WHERE shipped_at < now()
                   AND shipped_at >= now() - make_interval(days => %(tdays)s)
                 GROUP BY dc_id) s),
       (SELECT coalesce(json_agg(json_build_array(carrier_id, service_code, zone, n,
                                                  late)), '[]')
          FROM (SELECT s.carrier_id, s.service_code, st.zone, count(*) AS n,
                       count(*) FILTER (WHERE s.delivered_at::date > s.promised_date)
                         AS late
                  FROM orderflow.shipment s
                  JOIN orderflow."order" o ON o.order_id = s.order_id
                  LEFT JOIN orderflow.ship_to st ON st.ship_to_id = o.ship_to_id
                 WHERE s.delivered_at IS NOT NULL AND s.promised_date IS NOT NULL
                   AND s.delivered_at < current_date  -- (shipment_delivered_idx)
                   AND s.delivered_at >= current_date - %(ldays)s
                 GROUP BY 1, 2, 3) l),
       (SELECT coalesce(json_agg(json_build_array(dc_id, timezone, cutoff_local_time)),
                        '[]')
          FROM orderflow.distribution_center)
"""


def delay_stats(
    conn: psycopg.Connection,
    exclude_order_ids: Sequence[str],
    *,
    lane_days: int,
    throughput_days: int,
) -> dict[str, Any]:
    """The store-wide part of what the delay-risk features read, in one statement, at the
    database's ``now`` (the planning stage through :func:`delay_rows`, the order check for a
    draft): ``now``; ``open`` (shipments of other orders than ``exclude_order_ids`` planned or
    in the warehouse, not shipped yet, per DC); ``shipped`` (per DC, in the last
    ``throughput_days``); ``lanes`` ((carrier, service, zone, delivered, late) over the
    ``lane_days`` before today); ``cutoffs`` ((DC, time zone, cutoff time or None))."""
    from datetime import time

    now, open_, shipped, lanes, cutoffs = conn.execute(
        _DELAY_STATS,
        {"ids": list(exclude_order_ids), "tdays": throughput_days, "ldays": lane_days},
    ).fetchone()
    return {
        "now": now,
        "open": {dc: int(n) for dc, n in open_},
        "shipped": {dc: int(n) for dc, n in shipped},
        "lanes": [(c, s, z, int(n), int(late)) for c, s, z, n, late in lanes],
        "cutoffs": [
            (dc, tz, None if t is None else time.fromisoformat(t)) for dc, tz, t in cutoffs
        ],
    }


def sequencing_rows(conn: psycopg.Connection, order_ids: Sequence[str]) -> list[tuple]:
    """What capacity-aware sequencing reads of READY orders (``orderflow.ai.sequencing``):
    (order, when it last became READY — else received, customer tier, gross margin of its
    lines at the price we charge less the items' unit cost; None where a cost is unknown)."""
    return conn.execute(
        """
        SELECT o.order_id,
               coalesce((SELECT max(e.occurred_at) FROM orderflow.order_event e
                          WHERE e.order_id = o.order_id AND e.to_status = 'READY'),
                        o.received_at),
               c.tier,
               (SELECT sum(l.quantity * (coalesce(l.contract_price, l.unit_price) - i.unit_cost))
                  FROM orderflow.order_line l
                  JOIN orderflow.item i ON i.item_id = coalesce(l.substitute_item_id, l.item_id)
                 WHERE l.order_id = o.order_id)
          FROM orderflow."order" o
          LEFT JOIN orderflow.customer c ON c.customer_id = o.customer_id
         WHERE o.order_id = ANY(%s)
        """,
        (list(order_ids),),
    ).fetchall()


def db_now(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT now()").fetchone()[0]
