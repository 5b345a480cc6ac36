"""Customer notifications: emails rendered from templates (``include/templates/notifications``)
and webhooks for portal customers, queued in the outbox in the transaction of the decision
that caused them.

Keys are ``email:<event>:<ref>`` and ``webhook:<event>:<ref>`` (``ref``: the order and its
release version, the shipment, or the invoice and its version), so a rerun never notifies
twice. Every email carries a ``Message-ID`` derived from its key: a receiver (and our SMTP
sink) can tell a re-send from a new message. Addresses never reach the log.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import Notifications

SMTP_CONN_ID = "smtp_default"
PORTAL_CONN_ID = "portal_default"


@lru_cache(maxsize=1)
def _env():
    import jinja2

    from orderflow.settings import INCLUDE_DIR

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(INCLUDE_DIR / "templates" / "notifications"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(event: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, html body) of a notification. The subject is the template's first line,
    a Jinja comment ``{# subject: … #}``, rendered with the same context."""
    env = _env()
    source, _, _ = env.loader.get_source(env, f"{event}.html")
    first = source.splitlines()[0].strip()
    if not (first.startswith("{# subject:") and first.endswith("#}")):
        raise ValueError(f"template {event}.html must start with '{{# subject: … #}}'")
    # A subject is a header, not HTML: rendered without escaping (the SMTP library encodes it).
    plain = env.overlay(autoescape=False)
    subject = plain.from_string(first[len("{# subject:") : -2].strip()).render(context)
    subject = " ".join(subject.split())  # no line breaks in a header
    body = env.get_template(f"{event}.html").render(context)
    return subject, body


def message_id(key: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@orderflow.local>"


def queue(
    conn: psycopg.Connection,
    rules: Notifications,
    *,
    event: str,
    ref: str,
    order: dict[str, Any],
    context: dict[str, Any],
    smtp_conn_id: str = SMTP_CONN_ID,
    portal_conn_id: str = PORTAL_CONN_ID,
) -> int:
    """Queue the email and/or webhook the rules give ``event`` for the order's channel.

    ``order`` needs ``order_id``, ``channel``, ``customer_id``, ``customer_name``, ``email``,
    ``po_number``. Returns how many side effects were queued (0 on a rerun)."""
    from orderflow.store import outbox

    queued = 0
    channel = order["channel"]
    ctx = {
        "order_id": order["order_id"],
        "po_number": order["po_number"],
        "customer_name": order.get("customer_name") or order["customer_id"],
        **context,
    }
    if rules.emails(event, channel) and order.get("email"):
        queued += queue_email(
            conn, order["email"], event, ref, ctx, order_id=order["order_id"], conn_id=smtp_conn_id
        )
    if rules.webhooks(event, channel):
        queued += outbox.enqueue(
            conn,
            idempotency_key=f"webhook:{event}:{ref}",
            action="webhook",
            target_conn_id=portal_conn_id,
            order_id=order["order_id"],
            payload={
                "event": event,
                "customer_id": order["customer_id"],
                "order_id": order["order_id"],
                "data": {"po_number": order["po_number"], **_plain(context)},
            },
        )
    return queued


def queue_email(
    conn: psycopg.Connection,
    to: str,
    event: str,
    ref: str,
    context: dict[str, Any],
    *,
    order_id: str | None = None,
    conn_id: str = SMTP_CONN_ID,
) -> bool:
    """Render ``event``'s template and queue it for ``to`` under ``email:<event>:<ref>``."""
    from orderflow.store import outbox

    key = f"email:{event}:{ref}"
    subject, body = render(event, context)
    return outbox.enqueue(
        conn,
        idempotency_key=key,
        action="email",
        target_conn_id=conn_id,
        order_id=order_id,
        payload={
            "event": event,
            "to": to,
            "subject": subject,
            "html": body,
            "message_id": message_id(key),
        },
    )


def _plain(context: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a template context (Decimals and dates as text)."""
    import json

    return json.loads(json.dumps(context, default=str))


def order_contacts(conn: psycopg.Connection, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What a notification needs to know about each order and its customer."""
    cur = conn.execute(
        """
        SELECT o.order_id, o.channel, o.customer_id, o.po_number, c.name AS customer_name,
               c.email, o.partner_id
          FROM orderflow."order" o LEFT JOIN orderflow.customer c USING (customer_id)
         WHERE o.order_id = ANY(%s)
        """,
        (order_ids,),
    )
    cols = [c.name for c in cur.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in cur}


# ------------------------------------------------------------------------------- senders
def send_email(conn_id: str, payload: dict, key: str) -> dict:
    """Deliver one email through the Airflow SMTP Connection."""
    import smtplib

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    from orderflow.integrations.http import ExternalRejected, ExternalUnavailable

    try:
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(
                to=payload["to"],
                subject=payload["subject"],
                html_content=payload["html"],
                custom_headers={"Message-ID": payload["message_id"], "X-OrderFlow-Key": key},
            )
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise ExternalRejected("SMTP", conn_id, f"refused the {payload['event']} email") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise ExternalUnavailable("SMTP", conn_id, type(exc).__name__) from exc
    return {"message_id": payload["message_id"]}


def send_webhook(conn_id: str, payload: dict, key: str) -> dict:
    from orderflow.integrations.systems import PortalHook

    return PortalHook(conn_id).webhook(payload, idempotency_key=key)
