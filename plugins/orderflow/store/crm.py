"""The CRM's account context in the store: quotes and agreements for validation (the
``crm_pricing`` rule type's context), the account
team on pricing exceptions, and the approval requests raised in the CRM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from orderflow.domain.crm_pricing import CrmDocuments, PriceAgreement, Quote
from orderflow.domain.reference import OrderView

if TYPE_CHECKING:
    import psycopg

#: Exceptions about a price: routed to the account's team, approvable in the CRM.
PRICING_CATEGORIES = ("pricing_mismatch", "expired_contract")
#: The outbox action that asks the CRM for an approval (see ``orderflow.crm``).
REQUEST_ACTION = "crm_approval_request"
CRM_CONN_ID = "crm_default"


def load_pricing_context(
    conn: psycopg.Connection, orders: Sequence[OrderView], rules: Any = None
) -> CrmDocuments:
    """The quotes and special price agreements of these orders' customers: the ``crm_pricing``
    rule type's ``load_context`` (its lines are not mapped to items yet, so every item's)."""
    docs = CrmDocuments()
    customers = sorted({o.customer_id for o in orders if o.customer_id})
    if not customers:
        return docs
    for r in conn.execute(
        "SELECT quote_id, customer_id, item_id, quoted_price, quoted_on, expires_on, status "
        "FROM orderflow.crm_quote WHERE customer_id = ANY(%s)",
        (customers,),
    ):
        docs.add(Quote(*r))
    for r in conn.execute(
        "SELECT agreement_id, customer_id, item_id, unit_price, valid_from, valid_to "
        "FROM orderflow.crm_price_agreement WHERE customer_id = ANY(%s)",
        (customers,),
    ):
        docs.add(PriceAgreement(*r))
    return docs


def route_to_account_team(conn: psycopg.Connection, order_ids: Sequence[str]) -> int:
    """Put the account's owner and team (from the CRM) on the open pricing exceptions of
    these orders that do not name them yet."""
    return conn.execute(
        """
        UPDATE orderflow.order_exception e
           SET owner_team = a.team, account_owner = a.owner
          FROM orderflow."order" o
          JOIN orderflow.crm_account a ON a.customer_id = o.customer_id
         WHERE e.order_id = o.order_id AND o.order_id = ANY(%s)
           AND e.status = 'open' AND e.category = ANY(%s) AND e.owner_team IS NULL
        """,
        (list(order_ids), list(PRICING_CATEGORIES)),
    ).rowcount


def enqueue_requests(conn: psycopg.Connection, order_ids: Sequence[str] | None = None) -> int:
    """Queue one CRM approval request per open pricing exception whose customer has a CRM
    account (of these orders, or all): keyed by the exception, so a rerun queues nothing."""
    rows = conn.execute(
        """
        SELECT e.exception_id, e.order_id, e.category, e.line_no, e.reason, e.details,
               o.customer_id, o.po_number
          FROM orderflow.order_exception e
          JOIN orderflow."order" o USING (order_id)
         WHERE e.status = 'open' AND e.category = ANY(%s)
           AND (%s::text[] IS NULL OR e.order_id = ANY(%s::text[]))
           AND EXISTS (SELECT 1 FROM orderflow.crm_account a WHERE a.customer_id = o.customer_id)
           AND NOT EXISTS (SELECT 1 FROM orderflow.outbox x
                            WHERE x.idempotency_key = 'crm-approval:' || e.exception_id)
         ORDER BY e.exception_id
        """,
        (list(PRICING_CATEGORIES), order_ids, order_ids),
    ).fetchall()
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO orderflow.outbox (idempotency_key, order_id, action, version,
                target_conn_id, payload)
            VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING
            """,
            [
                (
                    f"crm-approval:{eid}",
                    order_id,
                    REQUEST_ACTION,
                    CRM_CONN_ID,
                    Jsonb(
                        {
                            "reference": str(eid),
                            "exception_id": eid,
                            "order_id": order_id,
                            "po_number": po,
                            "customer_id": cust,
                            "category": cat,
                            "line_no": line_no,
                            "item_id": details.get("item_id"),
                            "order_price": _num(details.get("order_price")),
                            "reference_price": _num(details.get("reference_price")),
                            "reason": reason,
                        }
                    ),
                )
                for eid, order_id, cat, line_no, reason, details, cust, po in rows
            ],
        )
    return len(rows)


def _num(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "None") else None
    except (TypeError, ValueError):
        return None


def record_request(conn: psycopg.Connection, payload: dict, answer: dict) -> None:
    """The CRM accepted a request: remember its id against the exception (once)."""
    conn.execute(
        """
        INSERT INTO orderflow.crm_approval (request_id, exception_id, order_id, owner, team)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (request_id) DO NOTHING
        """,
        (
            answer["request_id"],
            payload["exception_id"],
            payload.get("order_id"),
            answer.get("owner"),
            answer.get("team"),
        ),
    )


def lock_approval(conn: psycopg.Connection, request_id: str) -> dict[str, Any] | None:
    cur = conn.execute(
        "SELECT request_id, exception_id, order_id, status, applied_at, owner "
        "FROM orderflow.crm_approval WHERE request_id = %s FOR UPDATE",
        (request_id,),
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def mark_applied(conn: psycopg.Connection, request_id: str, decision: dict, outcome: str) -> None:
    conn.execute(
        """
        UPDATE orderflow.crm_approval
           SET status = %s, decided_by = %s, decided_at = %s, decision_note = %s,
               decision_seq = %s, applied_at = now(), outcome = %s
         WHERE request_id = %s AND applied_at IS NULL
        """,
        (
            decision["decision"],
            decision.get("decided_by"),
            decision.get("decided_at"),
            decision.get("note"),
            decision.get("decision_seq"),
            outcome,
            request_id,
        ),
    )


def escalate(conn: psycopg.Connection, exception_id: int) -> str | None:
    """A price the account owner rejected goes up: the exception's escalation role owns it
    from now on (marked escalated). Returns the new owner role."""
    row = conn.execute(
        """
        UPDATE orderflow.order_exception
           SET owner_role = coalesce(escalation_role, owner_role),
               escalated_at = coalesce(escalated_at, now())
         WHERE exception_id = %s AND status = 'open'
        RETURNING owner_role
        """,
        (exception_id,),
    ).fetchone()
    return row[0] if row else None


def mark_refused(conn: psycopg.Connection, request_id: str, decision: dict, outcome: str) -> None:
    """A decision read and refused (it stays ``requested``): never applied, never re-read."""
    conn.execute(
        """
        UPDATE orderflow.crm_approval
           SET decided_by = %s, decided_at = %s, decision_note = %s, decision_seq = %s,
               applied_at = now(), outcome = %s
         WHERE request_id = %s AND applied_at IS NULL
        """,
        (
            decision.get("decided_by"),
            decision.get("decided_at"),
            decision.get("note"),
            decision.get("decision_seq"),
            outcome,
            request_id,
        ),
    )


def pricing_holds_unrouted(conn: psycopg.Connection) -> list[str]:
    """Orders with an open pricing hold not yet routed to an account team."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT order_id FROM orderflow.order_exception "
            "WHERE status = 'open' AND owner_team IS NULL AND category = ANY(%s) "
            "AND order_id IS NOT NULL",
            (list(PRICING_CATEGORIES),),
        )
    ]
