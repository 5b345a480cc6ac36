"""Master-data sync: pull entities from the ERP/WMS (incremental by changed-since, or full),
then publish them to the store with one bulk upsert per entity.

Each entity is a :class:`Spec`: where it comes from, which store table it lands in, its key
and how source fields map to columns. The changed-since cursor per entity advances only
after its publish committed. Order processing reads master data only from the store.

An incremental extract asks for changes since the cursor *minus an overlap*: source systems
stamp changes coarsely (two changes in the same tick share a time, and the cursor sits on that
time) and sometimes late (an event applied after a later change, stamped when it happened),
and a strict "changed after the cursor" would skip both forever. Re-reading the window is safe
because the publish is an idempotent upsert that counts only real changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderflow.store import bulk, cursors, db
from orderflow.store import inventory as inventory_positions

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: Cursor recording when the last full refresh finished (ISO timestamp).
FULL_REFRESH_CURSOR = "masterdata:last_full_refresh"


def ready(conn: psycopg.Connection) -> bool:
    """Whether a full master-data sync has completed: before it, validation and extraction
    would match against an empty copy and hold every order as unknown."""
    return cursors.get(conn, FULL_REFRESH_CURSOR) is not None


def _ts(value: Any) -> Any:
    return value or None


@dataclass(frozen=True)
class Spec:
    entity: str  # ERP/WMS entity name
    system: str  # "erp" or "wms"
    table: str  # orderflow.<table>
    key: tuple[str, ...]
    columns: dict[str, str | Callable[[dict], Any]]  # column -> source field or function
    incremental: bool = True
    #: how far before the cursor an incremental extract re-reads (source time)
    overlap: timedelta = timedelta(minutes=10)

    def row(self, rec: dict) -> tuple:
        return tuple(src(rec) if callable(src) else rec.get(src) for src in self.columns.values())


def _nz(field: str, default: Any) -> Callable[[dict], Any]:
    return lambda r: default if r.get(field) is None else r.get(field)


SPECS: dict[str, Spec] = {
    s.entity: s
    for s in [
        Spec(
            "customers",
            "erp",
            "customer",
            ("customer_id",),
            {
                "customer_id": "customer_id",
                "name": "name",
                "tier": _nz("tier", "standard"),
                "payment_terms": "payment_terms",
                "currency": _nz("currency", "USD"),
                "edi_partner_id": "edi_partner_id",
                "email": "email",
                "active": _nz("active", True),
                "ship_complete": _nz("ship_complete", False),
                "accepts_substitutes": _nz("accepts_substitutes", False),
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "ship_tos",
            "erp",
            "ship_to",
            ("ship_to_id",),
            {
                "ship_to_id": "ship_to_id",
                "customer_id": "customer_id",
                "name": "name",
                "address_line1": "address_line1",
                "address_line2": "address_line2",
                "city": "city",
                "region": "region",
                "postal_code": "postal_code",
                "country": "country",
                "zone": "zone",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "items",
            "erp",
            "item",
            ("item_id",),
            {
                "item_id": "item_id",
                "description": "description",
                "uom": "uom",
                "pack_size": _nz("pack_size", 1),
                "weight_kg": "weight_kg",
                "length_cm": "length_cm",
                "width_cm": "width_cm",
                "height_cm": "height_cm",
                "hazmat": _nz("hazmat", False),
                "discontinued": _nz("discontinued", False),
                "substitute_item_ids": _nz("substitute_item_ids", []),
                "list_price": "list_price",
                "unit_cost": "unit_cost",
                "upc": "upc",
                "vendor_part": "vendor_part",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "xrefs",
            "erp",
            "customer_item_xref",
            ("customer_id", "customer_part_number"),
            {
                "customer_id": "customer_id",
                "customer_part_number": "customer_part_number",
                "item_id": "item_id",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "contracts",
            "erp",
            "price_contract",
            ("contract_id",),
            {
                "contract_id": "contract_id",
                "customer_id": "customer_id",
                "item_id": "item_id",
                "unit_price": "unit_price",
                "currency": _nz("currency", "USD"),
                "uom": "uom",
                "effective_from": "effective_from",
                "expires_on": "expires_on",
                "tolerance_pct": "tolerance_pct",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "credit_accounts",
            "erp",
            "credit_account",
            ("customer_id",),
            {
                "customer_id": "customer_id",
                "credit_limit": "credit_limit",
                "open_ar": _nz("open_ar", 0),
                "on_hold": _nz("on_hold", False),
                "hold_reason": "hold_reason",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "carriers",
            "erp",
            "carrier_service",
            ("carrier_id", "service_code"),
            {
                "carrier_id": "carrier_id",
                "service_code": "service_code",
                "mode": "mode",
                "transit_days": "transit_days",
                "max_weight_kg": "max_weight_kg",
                "hazmat_allowed": _nz("hazmat_allowed", False),
                "active": _nz("active", True),
                "base_rate": "base_rate",
                "per_kg": "per_kg",
                "source_updated_at": lambda r: _ts(r.get("updated_at")),
            },
        ),
        Spec(
            "partners",
            "erp",
            "trading_partner",
            ("partner_id",),
            {
                "partner_id": "partner_id",
                "customer_id": "customer_id",
                "isa_qualifier": "isa_qualifier",
                "isa_id": lambda r: (r.get("isa_id") or "").strip() or None,
                "gs_id": "gs_id",
                "x12_version": "isa_version",
                "element_sep": "element_sep",
                "segment_term": "segment_term",
                "component_sep": "component_sep",
                "repetition_sep": "repetition_sep",
            },
            incremental=False,
        ),
        Spec(
            "dcs",
            "erp",
            "distribution_center",
            ("dc_id",),
            {
                "dc_id": "dc_id",
                "name": "name",
                "region": "region",
                "cutoff_local_time": "cutoff_local_time",
                "timezone": _nz("timezone", "UTC"),
                "zones": _nz("zones", []),
                "postal_code": "postal_code",
                "country": "country",
            },
            incremental=False,
        ),
        Spec(
            "inventory",
            "wms",
            "inventory_position",
            ("item_id", "dc_id"),
            {
                "item_id": "item_id",
                "dc_id": "dc_id",
                "on_hand": "on_hand",
                # what the WMS holds for releases it received and has not shipped
                "wms_reserved": _nz("reserved", 0),
                "as_of": lambda r: r.get("updated_at") or datetime.now(UTC).isoformat(),
            },
        ),
    ]
}
# Publish order: referenced entities first (DCs before inventory, items before xrefs, …).
ORDER = [
    "dcs",
    "customers",
    "partners",
    "ship_tos",
    "items",
    "xrefs",
    "contracts",
    "credit_accounts",
    "carriers",
    "inventory",
]


@dataclass
class EntityResult:
    entity: str
    rows: int
    changed: int
    duplicates: int
    extract_s: float
    publish_s: float
    cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def dedupe(spec: Spec, records: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """One record per key (the most recently updated wins); returns (kept, superseded).
    Duplicates are a data-quality finding for the gate, never a crash of the publish."""
    best: dict[tuple, dict] = {}
    dropped: list[dict] = []
    for rec in records:
        k = tuple(rec.get(c) for c in spec.key)
        prev = best.get(k)
        if prev is None:
            best[k] = rec
        elif (rec.get("updated_at") or "") >= (prev.get("updated_at") or ""):
            dropped.append(prev)
            best[k] = rec
        else:
            dropped.append(rec)
    return list(best.values()), dropped


def _rewind(cursor: str | None, overlap: timedelta) -> str | None:
    """The changed-since an extract asks for: the cursor moved back by the overlap."""
    if not cursor:
        return None
    at = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - overlap).astimezone(UTC).isoformat().replace("+00:00", "Z")


def extract(spec: Spec, hooks: dict[str, Any], changed_since: str | None) -> list[dict]:
    if spec.system == "wms":
        return hooks["wms"].inventory(changed_since=changed_since)
    return list(hooks[spec.system].extract(spec.entity, changed_since=changed_since))


def publish(conn: psycopg.Connection, spec: Spec, records: list[dict]) -> tuple[int, int]:
    """Bulk upsert in the caller's transaction; returns (staged, changed)."""
    cols = tuple(spec.columns)
    touch = "synced_at" if spec.table != "distribution_center" else None
    return bulk.upsert(
        conn, spec.table, cols, (spec.row(r) for r in records), key=spec.key, touch=touch
    )


def sync(
    conn: psycopg.Connection,
    hooks: dict[str, Any],
    *,
    entities: list[str] | None = None,
    full: bool = False,
    run_id: str | None = None,
    gate: Callable[[str, list[dict], list[dict]], None] | None = None,
    specs: dict[str, Spec] | None = None,
) -> list[EntityResult]:
    """Sync the given entities (default all, in dependency order).

    ``gate(entity, records, duplicates)`` runs between extract and publish (the data-quality
    gate hooks in here). ``specs``: another system's entities (e.g. the CRM's account
    context), synced in their insertion order with cursors ``<system>:<entity>``."""
    results = []
    own = specs is None
    specs = SPECS if own else specs
    for entity in [e for e in (ORDER if own else list(specs)) if entities is None or e in entities]:
        spec = specs[entity]
        name = f"masterdata:{entity}" if own else f"{spec.system}:{entity}"
        since = None if (full or not spec.incremental) else cursors.get(conn, name)
        t0 = time.perf_counter()
        records = extract(spec, hooks, _rewind(since, spec.overlap))
        kept, dups = dedupe(spec, records)
        t1 = time.perf_counter()
        if gate is not None:
            gate(entity, kept, dups)
        with db.transaction(conn):
            if spec.table == "inventory_position":
                # The WMS snapshot is the truth as of its time; our reservations not shipped by
                # then sit on top. Positions are locked in key order first, as allocation does.
                kept.sort(key=lambda r: (r["item_id"], r["dc_id"]))
                inventory_positions.lock_all_positions(conn)
            staged, changed = publish(conn, spec, kept) if kept else (0, 0)
            if spec.table == "inventory_position":
                from orderflow.store import processing as inventory

                inventory.refresh_allocated(conn)
            newest = max((r.get("updated_at") or "" for r in records), default="")
            if spec.incremental and newest:
                cursors.put(conn, name, max(newest, since or ""), run_id)
        res = EntityResult(
            entity,
            staged,
            changed,
            len(dups),
            t1 - t0,
            time.perf_counter() - t1,
            cursors.get(conn, name) if spec.incremental else None,
        )
        log.info("master data %s: %s", entity, res.as_dict())
        results.append(res)
    if full and entities is None and own:  # every entity published: the store's copy is whole
        with db.transaction(conn):
            cursors.put(conn, FULL_REFRESH_CURSOR, datetime.now(UTC).isoformat(), run_id)
    return results
