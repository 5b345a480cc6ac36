"""What partners' 997s say about the documents we sent (855, 856, 810), on the desk.

- **Rejected.** A 997 whose AK9 (or an AK5 of our set) is R, E, M, W, X — or AK9 P — opens
  an ``edi_rejected`` exception on the document's order, owned by the EDI team, with the
  partner's codes read from the 997 itself (AK9 and its AK905.., each set's AK5 and its
  AK502.., the AK3/AK4 segment and element notes) and what they mean. One exception per
  order lists every rejected document of it that has not been resent.
- **Overdue.** A document sent longer ago than its partner's window
  (``trading_partner.ack_window_hours``, default 24 h; NULL: the partner sends no 997s)
  without a 997 opens ``edi_ack_overdue`` (:func:`overdue`, run by ``watch.run`` every 5
  minutes). It resolves itself when the 997 arrives (also a late one that rejects: then the
  document is ``edi_rejected`` instead) or the document is resent.
- **Resend** (:func:`resend`, the desk's *Resend* on either exception): each listed document
  is enveloped again — new ISA13/GS06 from the partner's sequence, ST02 renumbered, SE01 and
  GE01 counted by our writer, the partner's ids as they are on file now — around the same
  content segments, and queued under a new key (``<first key>:resend<n>``, outbox
  ``version`` + 1) that the partner's next 997 is matched to. The old document points to
  the new one (``resent_as``), so it is resent once however often the desk is clicked, and
  is neither rejected nor overdue any more. Audited.

  Why re-envelope instead of rebuilding: a structural rejection (counts, control numbers,
  a trailer — what a translator checks before reading content) is corrected by writing the
  envelope again, and the partner's ids come from ``trading_partner`` as corrected; the
  content is what the customer already had (an 855 acknowledging their PO as it was, an
  856 / 810 for what shipped and was billed) and is kept identical, which is checked by
  reading the new document back. A *content* correction (a price, an item) is not a resend:
  it is a new version of the document made by its producer (re-acknowledgement after an
  order change, a credit/re-bill invoice version).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orderflow.store import db, exceptions
from orderflow.store import edi_documents as store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

REJECTED = "edi_rejected"
OVERDUE = "edi_ack_overdue"
CATEGORIES = (REJECTED, OVERDUE)
RESOLVER = "orderflow.edi_acks"

#: AK901 values that put a group's document on the desk (A alone does not).
GROUP_NOT_ACCEPTED = frozenset({"E", "M", "P", "R", "W", "X"})
#: AK501 values that do the same for one of our sets.
SET_NOT_ACCEPTED = frozenset({"E", "M", "R", "W", "X"})

STATUS_TEXT = {
    "A": "accepted",
    "E": "accepted, but errors were noted",
    "M": "rejected, message authentication code failed",
    "P": "partially accepted, at least one set rejected",
    "R": "rejected",
    "W": "rejected, assurance failed validity tests",
    "X": "rejected, content after decryption could not be analysed",
}
#: AK502..AK506 (X12 element 718)
AK5_CODES = {
    "1": "transaction set not supported",
    "2": "transaction set trailer missing",
    "3": "ST02 and SE02 control numbers do not match",
    "4": "number of included segments does not match actual count",
    "5": "one or more segments in error",
    "6": "missing or invalid transaction set identifier",
    "7": "missing or invalid transaction set control number",
    "23": "transaction set control number not unique within the group",
}
#: AK905..AK909 (X12 element 716)
AK9_CODES = {
    "1": "functional group not supported",
    "2": "functional group version not supported",
    "3": "functional group trailer missing",
    "4": "GS06 and GE02 control numbers do not agree",
    "5": "number of included transaction sets does not match actual count",
    "6": "group control number violates syntax",
    "19": "group control number not unique within the interchange",
}
#: AK304 (X12 element 720)
AK3_CODES = {
    "1": "unrecognised segment",
    "2": "unexpected segment",
    "3": "mandatory segment missing",
    "4": "loop occurs over maximum times",
    "5": "segment exceeds maximum use",
    "6": "segment not in defined transaction set",
    "7": "segment not in proper sequence",
    "8": "segment has data element errors",
}
#: AK403 (X12 element 723)
AK4_CODES = {
    "1": "mandatory element missing",
    "2": "conditional required element missing",
    "3": "too many elements",
    "4": "element too short",
    "5": "element too long",
    "6": "invalid character",
    "7": "invalid code value",
    "8": "invalid date",
    "9": "invalid time",
    "10": "exclusion condition violated",
}


class ResendRefused(ValueError):
    """A resend that cannot be done as asked (the message says why and what to do)."""


def not_accepted(status: str | None, detail: dict | None) -> bool:
    """Does this 997 (AK901 ``status``, ``detail`` with each set's AK501) put the document on
    the desk?"""
    sets = (detail or {}).get("transactions") or {}
    return (status or "") in GROUP_NOT_ACCEPTED or any(v in SET_NOT_ACCEPTED for v in sets.values())


# ------------------------------------------------------------------------------ codes
def partner_codes(raw: bytes, functional_id: str, group_control_number: str) -> dict[str, Any]:
    """The partner's codes for our group, read from their 997 as it came (``raw``): AK9
    status and codes, and per set AK5 status, codes and AK3/AK4 notes. Never raises: a 997
    that cannot be read gives ``{}`` (its status was already matched by intake)."""
    from orderflow.channels.x12.reader import decode, read_interchanges

    try:
        text = decode(raw).text
        if not text:
            return {}
        interchanges, _ = read_interchanges(text)
    except Exception:  # a reader failure must never fail the intake decision
        log.exception("997 codes unreadable")
        return {}
    want = _int(group_control_number)
    for ic in interchanges:
        out: dict[str, Any] | None = None
        current: dict[str, Any] | None = None
        for s in ic.segments:
            if s.tag == "ST":
                out, current = None, None
            elif s.tag == "AK1":
                if s.el(1) == functional_id and _int(s.el(2)) == want:
                    out = {"ak9": {}, "sets": []}
            elif out is None:
                continue
            elif s.tag == "AK2":
                current = {"set_id": s.el(1), "control": s.el(2), "notes": []}
                out["sets"].append(current)
            elif s.tag == "AK3" and current is not None:
                current["notes"].append(
                    {
                        "segment": s.el(1),
                        "position": s.el(2),
                        "loop": s.el(3) or None,
                        "code": s.el(4) or None,
                        "elements": [],
                    }
                )
            elif s.tag == "AK4" and current is not None and current["notes"]:
                current["notes"][-1]["elements"].append(
                    {
                        "position": s.el(1),
                        "reference": s.el(2) or None,
                        "code": s.el(3),
                        "value": s.el(4) or None,
                    }
                )
            elif s.tag == "AK5" and current is not None:
                current["status"] = s.el(1)
                current["codes"] = [c for c in (s.el(k) for k in range(2, 7)) if c]
            elif s.tag == "AK9":
                out["ak9"] = {
                    "status": s.el(1),
                    "codes": [c for c in (s.el(k) for k in range(5, 10)) if c],
                }
                return out
        if out is not None:
            return out
    return {}


def _int(value: str | None) -> int | None:
    v = (value or "").strip()
    return int(v) if v.isdecimal() else None


def describe(codes: dict[str, Any], status: str | None) -> str:
    """The partner's codes in words: ``AK9 R (rejected): 5 number of included …; set 855
    0001 AK5 R: 4 number of included segments …``."""
    ak9 = codes.get("ak9") or {}
    st = ak9.get("status") or status or "?"
    parts = [
        f"AK9 {st} ({STATUS_TEXT.get(st, 'unknown status')})"
        + (
            ": " + ", ".join(f"{c} {AK9_CODES.get(c, 'code ' + c)}" for c in ak9["codes"])
            if ak9.get("codes")
            else ""
        )
    ]
    for s in codes.get("sets") or []:
        if s.get("status") in (None, "A") and not s.get("notes"):
            continue
        text = f"set {s.get('set_id')} {s.get('control')} AK5 {s.get('status') or '?'}"
        if s.get("codes"):
            text += ": " + ", ".join(f"{c} {AK5_CODES.get(c, 'code ' + c)}" for c in s["codes"])
        for n in s.get("notes") or []:
            text += (
                f"; {n['segment']} at segment {n['position']}"
                + (f" ({AK3_CODES.get(n['code'], 'code ' + n['code'])})" if n.get("code") else "")
                + "".join(
                    f", element {e['position']} {AK4_CODES.get(e['code'], 'code ' + e['code'])}"
                    + (f" {e['value']!r}" if e.get("value") else "")
                    for e in n["elements"]
                )
            )
        parts.append(text)
    return "; ".join(parts)


# ------------------------------------------------------------------------------ on a 997
def on_ack(
    conn: psycopg.Connection,
    key: str,
    status: str | None,
    detail: dict,
    message_id: int | None,
) -> None:
    """A 997 was matched to our document ``key`` (in intake's transaction): record the
    partner's codes, open or refresh ``edi_rejected`` for a rejection, and let a late 997
    resolve the document's ``edi_ack_overdue``."""
    doc = store.document(conn, key)
    if doc is None:
        return
    order_id, functional_id, group_control = doc
    if not_accepted(status, detail) and message_id is not None:
        raw = store.message_raw(conn, message_id)
        codes = partner_codes(raw, functional_id, group_control) if raw is not None else {}
        store.add_ack_detail(conn, key, {"codes": codes, "explained": describe(codes, status)})
    refresh_rejected(conn, order_id, key)
    _resolve_overdue_if_clear(conn, order_id, key)


def _subject(order_id: str | None, key: str) -> dict[str, Any]:
    """Open on the order; a document without one (none today) on itself."""
    return {"order_id": order_id} if order_id else {"entity": ("outbound_document", key)}


def refresh_rejected(conn: psycopg.Connection, order_id: str | None, key: str) -> int | None:
    """Open (or refresh) the ``edi_rejected`` exception of an order from its documents the
    partner did not accept and that were not resent; resolve it when none is left (the
    partner accepted after all, or every document was resent)."""
    rejected = [
        r
        for r in store.acknowledged_documents(conn, order_id, key)
        if r["ack_status"] is not None and not_accepted(r["ack_status"], r["ack_detail"])
    ]
    subject = _subject(order_id, key)
    if not rejected:
        _auto_resolve(conn, REJECTED, order_id, key, "the partner accepted the document")
        return None
    docs = []
    lines = []
    for r in rejected:
        detail = r["ack_detail"] or {}
        explained = detail.get("explained") or describe(detail.get("codes") or {}, r["ack_status"])
        docs.append(
            {
                "key": r["idempotency_key"],
                "partner_id": r["partner_id"],
                "document_type": r["document_type"],
                "interchange_control_number": r["interchange_control_number"],
                "group_control_number": r["group_control_number"],
                "version": r["version"],
                "ack_status": r["ack_status"],
                "codes": detail.get("codes") or {},
                "explained": explained,
            }
        )
        lines.append(
            f"{r['partner_id']} did not accept our {r['document_type']} "
            f"(ISA13 {r['interchange_control_number']}, GS06 {r['group_control_number']}): "
            f"{explained}."
        )
    reason = (
        " ".join(lines)
        + " Correct the cause (our envelope or the partner's ids on file), then Resend: a new "
        "control number, the same content."
    )
    return exceptions.open_routed(
        conn, category=REJECTED, reason=reason, details={"documents": docs}, **subject
    )


def _auto_resolve(conn, category: str, order_id: str | None, key: str, note: str) -> int:
    if order_id:
        return store.resolve_open_of_order(conn, RESOLVER, note, category, order_id)
    return exceptions.resolve_entity(
        conn, category=category, entity=("outbound_document", key), resolver=RESOLVER, note=note
    )


def _resolve_overdue_if_clear(conn, order_id: str | None, key: str) -> None:
    if not store.overdue_documents(conn, order_id, key):
        _auto_resolve(conn, OVERDUE, order_id, key, "the partner's 997 arrived")


# ------------------------------------------------------------------------------ overdue
@dataclass
class OverdueResult:
    documents: int = 0
    opened: int = 0
    resolved: int = 0
    subjects: list[str] = field(default_factory=list)


def overdue_rows(conn) -> list[dict[str, Any]]:
    """Every sent document without a 997 past its partner's window."""
    return store.overdue_documents(conn)


def overdue(conn: psycopg.Connection) -> OverdueResult:
    """Open ``edi_ack_overdue`` for sent documents without a 997 past their partner's
    window (one per order, listing its documents); resolve those whose documents were
    acknowledged or resent since. Idempotent."""
    out = OverdueResult()
    with db.transaction(conn):
        rows = overdue_rows(conn)
        out.documents = len(rows)
        by: dict[tuple[str | None, str], list[dict]] = defaultdict(list)
        for r in rows:
            subject = (r["order_id"], r["order_id"] or r["idempotency_key"])
            by[subject].append(r)
        for (order_id, ref), docs in by.items():
            lines = [
                f"{d['partner_id']} has not acknowledged our {d['document_type']} (ISA13 "
                f"{d['interchange_control_number']}, GS06 {d['group_control_number']}) sent "
                f"{d['sent_at']:%Y-%m-%d %H:%M} UTC, {float(d['hours']):.0f} h ago (window "
                f"{float(d['ack_window_hours']):g} h)."
                for d in docs
            ]
            reason = (
                " ".join(lines)
                + " Ask the partner whether it arrived; Resend sends it again under a new "
                "control number."
            )
            details = {
                "documents": [
                    {
                        "key": d["idempotency_key"],
                        "partner_id": d["partner_id"],
                        "document_type": d["document_type"],
                        "interchange_control_number": d["interchange_control_number"],
                        "group_control_number": d["group_control_number"],
                        "version": d["version"],
                        "sent_at": d["sent_at"].isoformat(),
                        "window_hours": float(d["ack_window_hours"]),
                    }
                    for d in docs
                ]
            }
            opened = exceptions.open_routed(
                conn,
                category=OVERDUE,
                reason=reason,
                details=details,
                **_subject(order_id, docs[0]["idempotency_key"]),
            )
            out.opened += opened is not None
            out.subjects.append(ref)
        orders = sorted({o for o, _ in by if o})
        entities = sorted({ref for o, ref in by if not o})
        out.resolved = store.resolve_acknowledged(conn, RESOLVER, OVERDUE, orders, entities)
    if rows:
        log.warning("%d documents without a 997 past their partner's window", len(rows))
    return out


# ------------------------------------------------------------------------------ resend
_RESEND = re.compile(r"^(?P<root>.*?)(?::resend(?P<n>\d+))?$")


def resend_key(key: str) -> str:
    """``edi_855:O1:r1`` → ``edi_855:O1:r1:resend1`` → ``…:resend2``: one lineage per first
    key, so a resend never takes a key its producer will use (a re-release's ``r2``, an
    invoice's ``v2``)."""
    m = _RESEND.match(key)
    assert m is not None
    return f"{m['root']}:resend{int(m['n'] or 0) + 1}"


@dataclass(frozen=True)
class StoredDocument:
    """A document we sent, read back: its delimiters and versions, and per set its id and
    content segments (between ST and SE)."""

    delimiters: Any
    isa_version: str
    gs_version: str
    functional_id: str
    sets: list[tuple[str, list[list[str]]]]


def read_sent(body: str) -> StoredDocument:
    """Read the one interchange of one group we sent. ValueError when it is not that."""
    from orderflow.channels.x12.reader import read_interchanges

    interchanges, _ = read_interchanges(body)
    if len(interchanges) != 1:
        raise ValueError(f"expected one interchange, found {len(interchanges)}")
    ic = interchanges[0]
    gs: list[str] | None = None
    sets: list[tuple[str, list[list[str]]]] = []
    current: list[list[str]] | None = None
    for s in ic.segments:
        if s.tag == "GS":
            if gs is not None:
                raise ValueError("more than one functional group")
            gs = s.elements
        elif s.tag == "ST":
            current = []
            sets.append((s.el(1), current))
        elif s.tag in ("SE", "GE"):
            current = None
        elif current is not None:
            current.append(list(s.elements))
    if gs is None or not sets:
        raise ValueError("no functional group with a transaction set")
    return StoredDocument(
        delimiters=ic.isa.delimiters,
        isa_version=ic.isa.el(12),
        gs_version=gs[8].strip() if len(gs) > 8 else "",
        functional_id=gs[1].strip(),
        sets=sets,
    )


def reenvelope(doc: StoredDocument, env: dict[str, Any]) -> str:
    """``doc``'s content segments in a new envelope (``outbound.envelope``'s arguments)."""
    from orderflow.channels.x12 import writer

    sets = [
        writer.transaction_set(set_id, f"{n:04d}", body)
        for n, (set_id, body) in enumerate(doc.sets, start=1)
    ]
    group = writer.functional_group(
        doc.functional_id,
        sender=env["gs_sender"],
        receiver=env["gs_receiver"],
        control_number=env["control_number"],
        now=env["now"],
        version=doc.gs_version or env["version"],
        sets=sets,
    )
    return writer.interchange(
        [group],
        d=doc.delimiters,
        sender=env["sender"],
        receiver=env["receiver"],
        control_number=env["control_number"],
        now=env["now"],
        version=doc.isa_version or "00401",
    )


def resend(
    conn: psycopg.Connection,
    exception_id: int,
    *,
    actor: str,
    reason: str | None,
    role: str | None = None,
) -> dict[str, Any]:
    """Resend the documents of an ``edi_rejected`` / ``edi_ack_overdue`` exception (who may
    is checked by the caller: the desk). One transaction: the new outbox rows, the links
    old → new, the exception resolved ``fixed``, the audit row. A second call finds the
    exception resolved and sends nothing."""
    from orderflow import outbound

    def listed(details: dict | None) -> list[str]:
        return sorted({d["key"] for d in (details or {}).get("documents") or []})

    with db.transaction(conn):
        # Documents first, then the exception: the order intake takes them in when a 997
        # arrives (outbound_document, then the exception it opens), so the two never deadlock.
        row = store.exception(conn, exception_id)
        if row is None:
            raise ResendRefused(f"exception {exception_id} does not exist")
        keys = listed(row[4])
        docs = store.lock_documents(conn, keys)
        order_id, category, status, owner, details = store.exception(conn, exception_id, lock=True)
        if status != "open":
            return {"exception_id": exception_id, "applied": False, "why": "already resolved"}
        if category not in CATEGORIES:
            raise ResendRefused(f"{category} is not about a document we sent: nothing to resend")
        if listed(details) != keys:
            raise ResendRefused(
                f"exception {exception_id} changed meanwhile (another 997 came): look again"
            )
        due = [
            d
            for d in docs
            if d["resent_as"] is None
            and (
                not_accepted(d["ack_status"], d["ack_detail"])
                if category == REJECTED
                else d["ack_status"] is None
            )
        ]
        if not due:
            raise ResendRefused(
                f"nothing of exception {exception_id} is left to resend: its documents were "
                "resent or acknowledged since"
            )
        sent = []
        for d in due:
            try:
                stored = read_sent(d["body"] or "")
            except ValueError as exc:
                raise ResendRefused(
                    f"{d['idempotency_key']}: the document we sent cannot be read back ({exc})"
                ) from exc
            new_key = resend_key(d["idempotency_key"])
            built: dict[str, Any] = {}

            def build(env: dict[str, Any], stored=stored, built=built) -> str:
                text = reenvelope(stored, env)
                again = read_sent(text)
                if again.sets != stored.sets:
                    raise ResendRefused("the new envelope would change the content")
                built["control_number"] = env["control_number"]
                return text

            queued = outbound.queue_x12(
                conn,
                partner_id=d["partner_id"],
                kind=d["document_type"],
                functional_id=d["functional_id"],
                key=new_key,
                build=build,
                order_id=d["order_id"],
                shipment_id=d["shipment_id"],
                version=d["version"] + 1,
                conn_id=d["target_conn_id"],
            )
            if not queued or "control_number" not in built:
                raise ResendRefused(
                    f"{d['idempotency_key']} could not be queued again as {new_key} (already "
                    "queued, or the partner has no ISA id on file)"
                )
            store.link_resend(conn, d["idempotency_key"], new_key, actor)
            sent.append(
                {
                    "key": d["idempotency_key"],
                    "document_type": d["document_type"],
                    "old_control_number": d["interchange_control_number"],
                    "new_key": new_key,
                    "new_control_number": f"{built['control_number']:09d}",
                    "version": d["version"] + 1,
                }
            )
        note = "resent: " + ", ".join(
            f"{s['document_type']} as {s['new_key']} (ISA13 {s['new_control_number']})"
            for s in sent
        )
        if reason:
            note += f" — {reason}"
        store.resolve_fixed(conn, exception_id, actor, note)
        store.audit_resend(
            conn,
            actor,
            role or owner,
            exception_id,
            {
                "exception": "open",
                "category": category,
                "documents": [
                    {
                        "key": s["key"],
                        "interchange_control_number": s["old_control_number"],
                    }
                    for s in sent
                ],
            },
            {"exception": "fixed", "resent": sent},
            reason,
        )
        # The resent documents are neither rejected nor overdue any more: the order's other
        # EDI exception follows (what is still open lists only what was not resent).
        refresh_rejected(conn, order_id, sent[0]["key"])
        _resolve_overdue_if_clear(conn, order_id, sent[0]["key"])
    return {"exception_id": exception_id, "applied": True, "order_id": order_id, "resent": sent}
