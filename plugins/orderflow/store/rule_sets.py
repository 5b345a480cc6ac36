"""Rule-set repository: the stored content of every rule-set version in use
(``rule_set_version``, content-addressed) and the governed promotions and rollbacks
(``rule_set_activation``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg


def record_versions(conn: psycopg.Connection, rows: Sequence[tuple], source: str) -> None:
    """Store each (rule_set, version, effective_from, content as Jsonb, content_sha256) once
    (a hash already stored is kept as it is), tagged with ``source``."""
    if not rows:
        return
    conn.execute(
        """
        INSERT INTO orderflow.rule_set_version (rule_set, version, effective_from, content,
            content_sha256, source)
        SELECT r.*, %s FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::jsonb[],
                                   %s::text[]) AS r
        ON CONFLICT DO NOTHING
        """,
        (source, *(list(col) for col in zip(*rows, strict=True))),
    )


def promoted(conn: Any, at: datetime) -> list[tuple[str, datetime, str, str]]:
    """Per rule set, the latest promotion or rollback activated at or before ``at``:
    (rule_set, activated_at, content_sha256, content as JSON text)."""
    return conn.execute(
        """
        SELECT DISTINCT ON (a.rule_set) a.rule_set, a.activated_at, a.content_sha256,
               v.content::text
          FROM orderflow.rule_set_activation a
          JOIN orderflow.rule_set_version v USING (rule_set, content_sha256)
         WHERE a.activated_at <= %s
         ORDER BY a.rule_set, a.activated_at DESC, a.activation_id DESC
        """,
        (at,),
    ).fetchall()


def find_versions(
    conn: psycopg.Connection, rule_set: str, version: str | None, sha_prefix: str | None
) -> list[tuple[str, str]]:
    """(content_sha256, content as JSON text) of the stored versions of ``rule_set`` with
    that version and/or hash prefix (None: any), oldest first."""
    return conn.execute(
        "SELECT content_sha256, content::text FROM orderflow.rule_set_version "
        "WHERE rule_set = %s AND (%s::text IS NULL OR version = %s) "
        "AND (%s::text IS NULL OR content_sha256 LIKE %s || '%%') ORDER BY loaded_at",
        (rule_set, version, version, sha_prefix, sha_prefix),
    ).fetchall()


def other_contents(conn: psycopg.Connection, rule_set: str, version: str, sha256: str) -> list[str]:
    """Hashes of stored contents of ``rule_set@version`` other than ``sha256``."""
    return [
        sha
        for (sha,) in conn.execute(
            "SELECT content_sha256 FROM orderflow.rule_set_version "
            "WHERE rule_set = %s AND version = %s AND content_sha256 <> %s",
            (rule_set, version, sha256),
        )
    ]


def stored_refs(conn: psycopg.Connection, rule_sets: Sequence[str]) -> list[tuple[str, str, str]]:
    """(rule_set, version, content_sha256) of every stored version of ``rule_sets``."""
    return conn.execute(
        "SELECT rule_set, version, content_sha256 FROM orderflow.rule_set_version "
        "WHERE rule_set = ANY(%s)",
        (list(rule_sets),),
    ).fetchall()


# --------------------------------------------------------------------------- activations
def lock_governance(conn: psycopg.Connection, rule_set: str) -> None:
    """Serialise promotions and rollbacks of ``rule_set`` (until the transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('rule_governance:' || %s))", (rule_set,))


def clock(conn: psycopg.Connection) -> datetime:
    """The wall clock now (not the transaction's start)."""
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def activations(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every promotion and rollback, newest first."""
    cur = conn.execute(
        "SELECT activation_id, rule_set, action, version, content_sha256, previous_version, "
        "previous_sha256, undoes, whatif_run_id, actor, reason, activated_at "
        "FROM orderflow.rule_set_activation ORDER BY activation_id DESC"
    )
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


def activations_of(conn: psycopg.Connection, rule_set: str) -> list[tuple]:
    """(activation_id, action, version, content_sha256, previous_version, previous_sha256)
    of every activation of ``rule_set``, oldest first."""
    return conn.execute(
        "SELECT activation_id, action, version, content_sha256, previous_version, "
        "previous_sha256 FROM orderflow.rule_set_activation WHERE rule_set = %s "
        "ORDER BY activation_id",
        (rule_set,),
    ).fetchall()


def add_activation(
    conn: psycopg.Connection,
    action: Literal["promote", "rollback"],
    *,
    rule_set: str,
    version: str,
    sha256: str,
    previous_version: str,
    previous_sha256: str,
    actor: str,
    reason: str,
    activated_at: datetime,
    whatif_run_id: int | None = None,
    undoes: int | None = None,
) -> int:
    """Record a promotion (checked by what-if run ``whatif_run_id``, if any) or a rollback
    (undoing activation ``undoes``); returns its activation id."""
    return conn.execute(
        """
        INSERT INTO orderflow.rule_set_activation (rule_set, version, content_sha256,
            action, previous_version, previous_sha256, whatif_run_id, undoes, actor, reason,
            activated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING activation_id
        """,
        (
            rule_set,
            version,
            sha256,
            action,
            previous_version,
            previous_sha256,
            whatif_run_id,
            undoes,
            actor,
            reason,
            activated_at,
        ),
    ).fetchone()[0]
