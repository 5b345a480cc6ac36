"""Customer notifications: emails rendered from templates (``include/templates/notifications``)
and webhooks for portal customers, queued in the outbox in the transaction of the decision
that caused them.

Every email is ``multipart/alternative``: a text/plain part rendered from ``<event>.txt`` and
the HTML part from ``<event>.html``, from the same context (mail clients and relays that show
text only — our SMTP sink among them — got an empty body from HTML alone).

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


@lru_cache(maxsize=1)
def _text_env():
    # Plain text: nothing to escape; block tags leave no blank lines or indentation behind.
    return _env().overlay(autoescape=False, trim_blocks=True, lstrip_blocks=True)


TEXT_WIDTH = 72


def render(event: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, html body) of a notification. The subject is the template's first line,
    a Jinja comment ``{# subject: … #}``, rendered with the same context."""
    env = _env()
    source, _, _ = env.loader.get_source(env, f"{event}.html")
    first = source.splitlines()[0].strip()
    if not (first.startswith("{# subject:") and first.endswith("#}")):
        raise ValueError(f"template {event}.html must start with '{{# subject: … #}}'")
    subject = _subject_template(first[len("{# subject:") : -2].strip()).render(context)
    subject = " ".join(subject.split())  # no line breaks in a header
    body = env.get_template(f"{event}.html").render(context)
    return subject, body


@lru_cache(maxsize=256)
def _subject_template(source: str):
    """A subject line's template, compiled once per text (compiling is most of rendering).
    A subject is a header, not HTML: rendered without escaping (the SMTP library encodes it)."""
    return _env().overlay(autoescape=False).from_string(source)


def render_text(event: str, context: dict[str, Any]) -> str:
    """The text/plain body of a notification, from ``<event>.txt`` and the context its HTML is
    rendered with. Paragraphs are wrapped at :data:`TEXT_WIDTH`; indented lines (the order
    summary, the lines) are kept as written."""
    text = _text_env().get_template(f"{event}.txt").render(context)
    return _wrap(text)


def _wrap(text: str) -> str:
    import textwrap

    blocks = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        if any(ln[:1].isspace() for ln in lines):
            blocks.append(block.rstrip())
        else:
            blocks.append(
                textwrap.fill(
                    " ".join(ln.strip() for ln in lines),
                    TEXT_WIDTH,
                    break_long_words=False,  # item ids, tracking numbers stay whole
                    break_on_hyphens=False,
                )
            )
    return "\n\n".join(blocks) + "\n"


def text_from_html(html: str) -> str:
    """A readable text body from an HTML one: paragraphs, table rows as ``a | b | c``.
    Only for e-mails queued before they carried their own text part."""
    from html.parser import HTMLParser

    blocks: list[str] = []
    current: list[str] = []
    row: list[str] | None = None

    def flush() -> None:
        words = " ".join("".join(current).split())
        if words:
            blocks.append(words)
        current.clear()

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal row
            if tag in ("p", "br", "div", "table", "ul", "ol", "li", "h1", "h2", "h3"):
                flush()
            elif tag == "tr":
                flush()
                row = []
            elif tag in ("td", "th"):
                flush()

        def handle_endtag(self, tag):
            nonlocal row
            if tag in ("td", "th") and row is not None:
                row.append(" ".join("".join(current).split()))
                current.clear()
            elif tag == "tr" and row is not None:
                blocks.append("  " + " | ".join(row))
                row = None
            elif tag in ("p", "div", "li", "h1", "h2", "h3", "table"):
                flush()

        def handle_data(self, data):
            current.append(data)

    parser = Parser(convert_charrefs=True)
    parser.feed(html)
    parser.close()
    flush()
    out: list[str] = []
    for b in blocks:  # table rows together, paragraphs apart
        if out and not (b.startswith("  ") and out[-1].startswith("  ")):
            out.append("")
        out.append(b if b.startswith("  ") else _wrap(b).rstrip("\n"))
    return "\n".join(out) + "\n"


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
    if channel == "marketplace":  # the marketplace's own status callbacks
        from orderflow import marketplace

        queued += marketplace.queue_status_callback(
            conn, event=event, ref=ref, order=order, context=_plain(context)
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
            "text": render_text(event, context),
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
    from orderflow.store import orders

    return orders.contacts(conn, order_ids)


# ------------------------------------------------------------------------------- senders
@lru_cache(maxsize=1)
def _smtp_hook_class():
    from email.mime.text import MIMEText

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class AlternativeSmtpHook(SmtpHook):
        """``SmtpHook`` sending ``multipart/alternative``: the text/plain part, then the HTML
        part the hook builds (a reader shows the last part it can). Everything else — sender,
        headers, login, retries — is the hook's own."""

        def __init__(self, smtp_conn_id: str, text: str) -> None:
            super().__init__(smtp_conn_id=smtp_conn_id)
            self.text = text

        def _build_mime_message(self, *args, **kwargs):
            msg, recipients = super()._build_mime_message(*args, **kwargs)
            parts = msg.get_payload()
            if msg.get_content_subtype() != "alternative" or [
                p.get_content_type() for p in parts
            ] != ["text/html"]:
                raise RuntimeError("SmtpHook built an unexpected message: cannot add a text part")
            parts.insert(0, MIMEText(self.text, "plain", kwargs.get("mime_charset", "utf-8")))
            return msg, recipients

    return AlternativeSmtpHook


def send_email(conn_id: str, payload: dict, key: str) -> dict:
    """Deliver one email (text and HTML) through the Airflow SMTP Connection."""
    import smtplib

    from orderflow.integrations.http import ExternalRejected, ExternalUnavailable

    # Rows queued before e-mails carried a text part: derive it from their HTML.
    text = payload.get("text") or text_from_html(payload["html"])
    try:
        with _smtp_hook_class()(conn_id, text) as hook:
            hook.send_email_smtp(
                to=payload["to"],
                subject=payload["subject"],
                html_content=payload["html"],
                mime_subtype="alternative",
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
