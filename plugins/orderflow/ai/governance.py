"""The one place that records a model's output, and the policy every output stays within.

Policy (#17): a model recommends inside policy; it never alone approves anything financially
or contractually sensitive. In code that means a model's output may only be one of
:data:`ALLOWED_ACTIONS` — recommend (shown to a person), route (who looks at an exception),
flag (a note on the order) or hold (more caution, never less) — and :func:`record` refuses
anything else (an approval, a release, a waiver, a price change) with :class:`PolicyViolation`
before anything is written; the store's CHECK on ``ai_decision.action`` refuses it too.
Clearing a hold stays a person's act on the desk (``orderflow.desk``); a model's decision is
reviewed there (:func:`review`), and the review is the label the next training uses.

Every output is stored (``orderflow.ai_decision``) with the model name and version, the hash
and values of its inputs, the label, score and evidence, and the ``ai`` rule set version in
force. A model switched off in the ``ai`` rule set (:func:`enabled`) is never asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from orderflow.rules import RuleBook

log = logging.getLogger(__name__)

#: what a model's output may do; anything else is a person's decision
ALLOWED_ACTIONS = frozenset({"recommend", "route", "flag", "hold"})
#: what a model may never do alone (named so the refusal says what was attempted)
SENSITIVE_ACTIONS = frozenset(
    {"approve", "release", "resolve", "waive", "reprice", "credit_release", "cancel"}
)


class PolicyViolation(Exception):
    """A model's output tried to act beyond recommending (approve, release, waive, …)."""


@dataclass(frozen=True)
class Output:
    """One output of a model about one order (and exception, line)."""

    model_name: str
    model_version: str
    order_id: str | None
    label: str
    score: float
    features: dict[str, Any]
    evidence: list[dict[str, Any]]
    action: str
    exception_id: int | None = None
    line_no: int | None = None


def input_hash(features: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(features, sort_keys=True).encode()).hexdigest()


def check_action(action: str) -> None:
    if action not in ALLOWED_ACTIONS:
        what = "sensitive" if action in SENSITIVE_ACTIONS else "unknown"
        raise PolicyViolation(
            f"a model may only {', '.join(sorted(ALLOWED_ACTIONS))}; {what} action {action!r} "
            "is a person's decision (the desk), never a model's alone"
        )


def enabled(book: RuleBook, model_name: str) -> bool:
    """The kill switch: the ``ai`` rule set in force names the model and enables it."""
    return book.ai.enabled(model_name)


def record(conn: psycopg.Connection, outputs: list[Output], book: RuleBook) -> list[int]:
    """Store the outputs as AI decisions (refusing any beyond policy first)."""
    from orderflow.ai.features import jsonable
    from orderflow.store import ai as repo

    for o in outputs:
        check_action(o.action)
        if not enabled(book, o.model_name):
            raise PolicyViolation(f"model {o.model_name} is switched off in {book.ai.pinned}")
    rows = []
    for o in outputs:
        feats = jsonable(o.features)
        rows.append(
            {
                "model_name": o.model_name,
                "model_version": o.model_version,
                "order_id": o.order_id,
                "exception_id": o.exception_id,
                "line_no": o.line_no,
                "input_hash": input_hash(feats),
                "features": feats,
                "output_label": o.label,
                "score": min(max(o.score, 0.0), 1.0),
                "evidence": o.evidence,
                "action": o.action,
                "rule_set_version": book.ai.pinned,
            }
        )
    ids = repo.record_decisions(conn, rows)
    log.info(
        "ai decisions recorded: %d (%s)",
        len(ids),
        ",".join(sorted({o.model_name for o in outputs})),
    )
    return ids


def review(
    conn: psycopg.Connection,
    decision_id: int,
    *,
    actor: str,
    followed: bool,
    label: str | None = None,
    actor_role: str | None = None,
) -> bool:
    """A person's verdict on a decision (the desk): followed it, or corrected it with
    ``label``; set once, audited. The next training takes it as a label."""
    from orderflow.store import ai as repo
    from orderflow.store import audit, db

    if not followed and label is None:
        raise ValueError("a correction names the right label")
    with db.transaction(conn):
        done = repo.review(
            conn, decision_id, followed=followed, label=None if followed else label, actor=actor
        )
        if done:
            audit.record_ai_review(
                conn,
                actor=actor,
                actor_role=actor_role,
                decision_id=decision_id,
                followed=followed,
                label=label,
            )
    return done


#: per model: (version, recorded SHA-256, the loaded model) — the version a process loaded
_CACHE: dict[str, tuple[str, str, Any]] = {}


def active_model(conn: psycopg.Connection, model_name: str) -> tuple[str, Any] | None:
    """(version, model) of the active version. The artifact is loaded (only if its bytes
    match the hash recorded when OrderFlow wrote them) once per process and version: each call
    reads which version is active (a small row, never the artifact), so an activation or a
    rollback is seen on the next call, and the bytes are fetched only for a version this
    process has not loaded yet. Never at import time: on the first call that needs it."""
    from orderflow.ai import models
    from orderflow.store import ai as repo

    meta = repo.active_meta(conn, model_name)
    if meta is None:
        return None
    version_id, version, sha256 = meta
    hit = _CACHE.get(model_name)
    if hit is not None and hit[0] == version and hit[1] == sha256:
        return version, hit[2]
    got = repo.artifact(conn, version_id)
    if got is None:  # deactivated and removed between the two reads: as if none
        return None
    model = models.loads(got[0], sha256)
    _CACHE[model_name] = (version, sha256, model)  # one version per model kept
    return version, model
