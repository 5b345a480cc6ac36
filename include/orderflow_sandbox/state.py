"""The stateful model of one industrial distributor's systems, as the sandbox serves them.

Loaded from a generated day (``world.json``, ``orders.jsonl``, ``deliveries.jsonl``), then
changed only through the API: reservations deplete availability under one lock (never
negative), releases are idempotent per key and schedule WMS milestones that materialise as
the simulated clock passes them, shipments get carrier tracking, invoices post to AR.
Around the distributor: the mail relay (an SMTP sink keeps what we send), the portal's
notification webhooks, and the trading partners, who answer our 855/856/810 with a 997
dropped into the EDI folder some simulated minutes later.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import email
import email.policy
import hashlib
import heapq
import json
import logging
import os
import random
import shutil
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from orderflow_sandbox.faults import SimClock
from orderflow_sandbox.persist import FORMAT, StateStore, decode_key, encode_key

log = logging.getLogger(__name__)

#: the durable state's file, in the sandbox's state dir (ORDERFLOW_SANDBOX_DIR)
STATE_FILE = "state.sqlite3"

# Persisted collections: record name → attribute of the Distributor.
DICT_COLLECTIONS = {
    "release": "releases",
    "reservation": "reservations",
    "erp_order": "erp_orders",
    "invoice": "invoices",
    "shipment": "shipments",
    "inventory": "inventory",
    "crm_approval": "crm_approvals",
    "portal_submission": "portal_submissions",
}
LIST_COLLECTIONS = {
    "milestone": "milestones",
    "tracking": "tracking",
    "outbound_edi": "outbound_edi",
    "mail": "mail",
    "webhook": "webhooks",
    "ack997": "acks_997",
    "marketplace_callback": "marketplace_callbacks",
}

MASTER_ENTITIES = {
    "customers": "customer_id",
    "ship_tos": "ship_to_id",
    "items": "item_id",
    # Positional: the ERP may hold the same customer part number twice (a defect the quality
    # gate must see), so the natural key cannot be the dictionary key.
    "xrefs": None,
    "contracts": "contract_id",
    "credit_accounts": "customer_id",
    "carriers": ("carrier_id", "service_code"),
    "partners": "partner_id",
    "dcs": "dc_id",
    # The CRM's account context (served under /crm, see orderflow_sandbox.crm)
    "crm_accounts": "account_id",
    "crm_agreements": "agreement_id",
    "crm_quotes": "quote_id",
}

# Tax rates by US state (sandbox tax engine); anything else gets the default.
TAX_RATES = {
    "CA": 0.0725,
    "NY": 0.04,
    "TX": 0.0625,
    "FL": 0.06,
    "WA": 0.065,
    "IL": 0.0625,
    "PA": 0.06,
    "OH": 0.0575,
    "GA": 0.04,
    "NC": 0.0475,
    "NJ": 0.06625,
    "OR": 0.0,
    "DE": 0.0,
    "MT": 0.0,
    "NH": 0.0,
}
DEFAULT_TAX_RATE = 0.05
#: the carrier's fuel surcharge on booked freight (its rate table is without it)
FUEL_SURCHARGE = 0.045
#: a pick wave's length when capacity per wave is set (/admin/wms/capacity)
WAVE_MINUTES = 120


class Conflict(Exception):
    """A request that contradicts state (e.g. not enough stock); maps to HTTP 409."""


class Invalid(Exception):
    """A malformed or inconsistent request; maps to HTTP 422."""


class NotFound(Exception):
    pass


def _name_tokens(name: str) -> set[str]:
    """The words of a party's name that screening compares (case-folded, over 2 letters)."""
    return {t for t in name.casefold().replace(",", " ").split() if len(t) > 2}


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


#: A record's value as JSON text: the model's dicts hold JSON types only (datetimes are
#: stored as ISO text, see ``_value``), which msgspec writes in a seventh of ``json.dumps``'s
#: time (≈ 2 µs against 14 a release record; a send of 1,800 releases writes ≈ 18,000
#: records) and which read back the same (text outside ASCII is written as UTF-8 rather
#: than escaped; a NaN would become null). Anything else is written as its ``str``, as before.
_RECORD_ENCODER = msgspec.json.Encoder(enc_hook=str)


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class IdempotencyStore:
    """First answer wins: a repeated key returns it; the same key with another body is refused.
    ``on_remember(key)`` is told of each new answer (the Distributor persists it)."""

    answers: dict[str, tuple[str, dict]] = field(default_factory=dict)
    on_remember: Any = None

    def replay(self, key: str, body: Any) -> dict | None:
        if key not in self.answers:
            return None
        digest, answer = self.answers[key]
        if digest != body_hash(body):
            raise Invalid(f"Idempotency-Key {key!r} was already used with a different request body")
        return answer

    def remember(self, key: str, body: Any, answer: dict) -> dict:
        self.answers[key] = (body_hash(body), answer)
        if self.on_remember is not None:
            self.on_remember(key)
        return answer


@dataclass(order=True)
class _Scheduled:
    at: datetime
    seq: int
    kind: str = field(compare=False)  # "wms" | "carrier"
    event: dict = field(compare=False)


class Distributor:
    """All stand-in systems over one lock (the sandbox is one process, like a test double
    of the whole estate; the lock makes concurrent reservations exact).

    Durable (see :mod:`orderflow_sandbox.persist`): every change is written to
    ``state_path`` (default ``drop_dir/state.sqlite3``) in one transaction before the call
    that made it returns, and a Distributor created on the same files continues where the
    last one stopped — records, idempotency answers, feed positions, pending events,
    delivered files, counters and the clock. ``fresh`` forgets the stored state first;
    so does :meth:`reset`. ``state_path=False`` keeps everything in memory only."""

    def __init__(
        self,
        day_dir: Path,
        drop_dir: Path,
        clock: SimClock,
        seed: int = 7,
        *,
        state_path: Path | bool | None = None,
        fresh: bool = False,
    ):
        self.day_dir = day_dir
        self.drop_dir = drop_dir
        self.clock = clock
        self.seed = seed
        self.lock = threading.RLock()
        self._depth = 0  # nesting of _txn: one flush per outermost call
        # What a reset goes back to: this start's clock (a resumed state keeps its own).
        self._origin = {"start": _iso(clock.now()), "speed": clock.speed}
        #: feed → (its items, their parsed arrival times): see :meth:`_arrivals`
        self._arrival_cache: dict[str, tuple[list[dict], list[datetime]]] = {}
        self._load_day()
        self.store = (
            None
            if state_path is False
            else StateStore(drop_dir / STATE_FILE if state_path in (None, True) else state_path)
        )
        self.resumed = self._open_state(fresh)

    def _load_day(self) -> None:
        """The generated day as it was before any request (the base the stored state overlays)."""
        day_dir = self.day_dir
        self.rng = random.Random(self.seed)
        self._dirty: set[tuple[str, Any]] = set()
        self._meta_dirty = False
        self._next_seq = 1
        world = json.loads((day_dir / "world.json").read_text())
        self.world_meta = {k: world[k] for k in ("seed", "business_date", "days") if k in world}
        self.dcs = {d["dc_id"]: d for d in world["dcs"]}
        self.partners = {p["partner_id"]: p for p in world.get("partners", [])}
        self.restricted = world.get("restricted_parties", [])
        # each party's name tokens, once (a screening compares a name with every party)
        self._restricted_tokens = [(p, _name_tokens(p["name"])) for p in self.restricted]
        self.master_data_defects = world.get("master_data_defects", [])
        self.master: dict[str, dict[Any, dict]] = {}
        for entity, key in MASTER_ENTITIES.items():
            self.master[entity] = {
                (n if key is None else self._key(row, key)): dict(row)
                for n, row in enumerate(world.get(entity, []))
            }
        self.inventory: dict[tuple[str, str], dict] = {
            (r["item_id"], r["dc_id"]): {
                "on_hand": float(r["on_hand"]),
                "reserved": 0.0,
                "updated_at": r.get("updated_at"),
            }
            for r in world["inventory"]
        }
        #: where each position started: the WMS's receiving tops low positions up toward it
        self._initial_on_hand = {k: v["on_hand"] for k, v in self.inventory.items()}
        #: inbound deliveries are received through this day (see _receive)
        self._receipts_through: str = str(world.get("business_date") or "")
        self.received_units = 0.0
        self.reservations: dict[str, dict] = {}
        self.releases: dict[str, dict] = {}
        self.erp_orders: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.shipments: dict[str, dict] = {}
        self.outbound_edi: list[dict] = []
        self.crm_approvals: dict[str, dict] = {}  # pricing-approval requests (CRM)
        self._idem = {
            name: IdempotencyStore(on_remember=lambda key, n=name: self._mark(f"idem.{n}", key))
            for name in (
                "release",
                "release_cancel",
                "erp_order",
                "invoice",
                "shipment",
                "outbound",
                "webhook",
                "marketplace",
                "crm_approval",
            )
        }
        self.release_keys = self._idem["release"]
        self.release_cancel_keys = self._idem["release_cancel"]
        self.erp_order_keys = self._idem["erp_order"]
        self.invoice_keys = self._idem["invoice"]
        self.shipment_keys = self._idem["shipment"]
        self.outbound_keys = self._idem["outbound"]
        self.webhook_keys = self._idem["webhook"]
        self._schedule: list[_Scheduled] = []
        self._pending: dict[int, _Scheduled] = {}  # the schedule by seq (what is persisted)
        #: share of well-formed groups partners refuse all the same (settable: /admin/partners)
        self.partner_refusal_rate = PARTNER_REFUSAL_RATE
        #: how the carrier answers tenders (settable: /admin/carrier/tendering): services it
        #: refuses ("CARRIER/SERVICE", optionally "CARRIER/SERVICE@DC" for one origin lane)
        #: and the fuel surcharge it adds to its table rate on booking
        self.tender_refusals: set[str] = set()
        self.fuel_surcharge = FUEL_SURCHARGE
        #: the WMS prints the booked label (its shipped milestone carries the carrier's
        #: tracking number); off by default, so a day's carrier events stay as generated
        self.label_from_booking = False
        #: pick capacity per DC per wave (settable: /admin/wms/capacity): DC → picks (release
        #: lines) a wave holds; a DC not named is unconstrained (the default: none is). A
        #: release beyond its wave's capacity is accepted and deferred to the next wave with
        #: room: picked then, never refused, never lost.
        self.wave_capacity: dict[str, int] = {}
        self.wave_minutes = WAVE_MINUTES
        #: DC → local time its carriers' trucks leave (with a capacity): a shipment packed
        #: after it leaves on the next business day at that time
        self.carrier_cutoffs: dict[str, dt_time] = {}
        self.milestones: list[dict] = []  # materialised WMS events, seq-ordered
        self.tracking: list[dict] = []  # materialised carrier events
        self.portal_orders = [
            o for o in self._read_jsonl(day_dir / "orders.jsonl") if o["channel"] == "portal"
        ]
        # Customers' cancel and change items, merged into the feed by arrival time (stable:
        # an item becomes visible only when its time comes, after everything before it).
        self.portal_orders = sorted(
            self.portal_orders + self._read_jsonl(day_dir / "portal_changes.jsonl"),
            key=lambda o: _parse(o["arrival_at"]),
        )
        #: orders customers placed on the portal while the sandbox runs (client request id →
        #: feed item), kept in the state and merged into the feed (:meth:`submit_portal_order`)
        self.portal_submissions: dict[str, dict] = {}
        self.deliveries = self._read_jsonl(day_dir / "deliveries.jsonl")
        self._delivered: set[str] = set()
        self.mail: list[dict] = []  # what the SMTP sink received
        self.webhooks: list[dict] = []  # portal notifications received
        self.acks_997: list[dict] = []  # partners' 997s to our outbound EDI, due or delivered
        # the marketplace (orderflow_sandbox.marketplace): its feed and the callbacks it got
        from orderflow_sandbox import marketplace

        self.marketplace_feed = marketplace.load_feed(day_dir)
        self.marketplace_callbacks: list[dict] = []
        self._ack_controls: dict[str, int] = {}  # partner → next ISA13/GS06 of its 997s

    # ------------------------------------------------------------------ durability
    def _fingerprint(self) -> str:
        """Which generated day the stored state belongs to (a new day starts afresh)."""
        source = self.day_dir / "manifest.json"
        if not source.exists():
            source = self.day_dir / "world.json"
        return hashlib.sha256(source.read_bytes()).hexdigest()

    def _open_state(self, fresh: bool) -> bool:
        """Lay the stored state over the day; True when there was one to resume."""
        if self.store is None:
            return False
        if fresh:
            self.store.wipe()
        elif not self.store.is_empty():
            day, fmt = self.store.meta("day"), self.store.meta("format")
            if day == self._fingerprint() and fmt == FORMAT:
                self._restore()
                for item in self.portal_submissions.values():
                    self._insert_portal(item)
                return True
            self._set_aside(f"day {day} format {fmt}")
        legacy = self.drop_dir / ".delivered"
        if legacy.exists():  # what the files-only sandbox of earlier versions delivered
            for path in legacy.read_text().split():
                self._delivered.add(path)
                self._mark("delivered", path)
            legacy.rename(legacy.with_name(".delivered.imported"))
        self._meta_dirty = True
        self._flush(meta={"format": FORMAT, "day": self._fingerprint(), "origin": self._origin})
        self.clock.bind(self._persist_clock)
        return False

    def _set_aside(self, why: str) -> None:
        """A stored state of another generated day (or layout): keep it, but not here."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.store.close()
        path = self.store.path
        for suffix in ("", "-wal", "-shm"):
            old = path.with_name(path.name + suffix)
            if old.exists():
                old.rename(path.with_name(f"{path.name}.stale-{stamp}{suffix}"))
        log.warning("stored sandbox state (%s) is not of this day: set aside, starting fresh", why)
        self.store = StateStore(path)

    def _persist_clock(self, value: dict) -> None:
        self.store.write(meta={"clock": value})

    def _restore(self) -> None:
        lists: dict[str, dict[int, Any]] = {name: {} for name in LIST_COLLECTIONS}
        for coll, raw_key, raw in self.store.records():
            key, value = decode_key(raw_key), json.loads(raw)
            if coll in DICT_COLLECTIONS:
                getattr(self, DICT_COLLECTIONS[coll])[key] = value
            elif coll in LIST_COLLECTIONS:
                lists[coll][key] = value
            elif coll.startswith("master."):
                self.master[coll.removeprefix("master.")][key] = value
            elif coll.startswith("idem."):
                self._idem[coll.removeprefix("idem.")].answers[key] = tuple(value)
            elif coll == "schedule":
                self._pending[key] = _Scheduled(
                    _parse(value["at"]), key, value["kind"], value["event"]
                )
            elif coll == "delivered":
                self._delivered.add(key)
            else:
                raise ValueError(f"unknown record collection {coll!r} in {self.store.path}")
        for coll, rows in lists.items():
            if sorted(rows) != list(range(len(rows))):
                raise ValueError(f"{self.store.path}: {coll} positions are not contiguous")
            items = [rows[i] for i in range(len(rows))]
            if coll == "ack997":
                items = [
                    {**a, "due_at": _parse(a["due_at"]), "data": base64.b64decode(a["data"])}
                    for a in items
                ]
            setattr(self, LIST_COLLECTIONS[coll], items)
        self._schedule = list(self._pending.values())
        heapq.heapify(self._schedule)
        self._next_seq = self.store.meta("seq", 1)
        self._ack_controls = self.store.meta("ack_controls", {})
        self._receipts_through = self.store.meta("receipts_through", self._receipts_through)
        self.received_units = self.store.meta("received_units", 0.0)
        self._origin = self.store.meta("origin", self._origin)
        clock = self.store.meta("clock")
        if clock:  # continue at the last time it could have shown, at its speed
            self.clock.set(_parse(clock["ceiling"]), clock["speed"])
        self.clock.bind(self._persist_clock)
        self._recover_drops()
        log.warning(
            "sandbox state resumed from %s: %d releases, %d milestones, %d mails, clock %s",
            self.store.path,
            len(self.releases),
            len(self.milestones),
            len(self.mail),
            _iso(self.clock.now()),
        )

    def _recover_drops(self) -> None:
        """Finish file deliveries cut short between their record and their rename."""
        by_path = {d["path"]: d for d in self.deliveries}
        moves = [self._target(by_path[p]) for p in self._delivered if p in by_path]
        moves += [self.drop_dir / a["path"] for a in self.acks_997 if a["delivered"]]
        for target in moves:
            tmp = target.with_name("." + target.name + ".part")
            if tmp.exists() and not target.exists():
                os.replace(tmp, target)

    def _mark(self, coll: str, key: Any) -> None:
        self._dirty.add((coll, key))

    def _value(self, coll: str, key: Any) -> Any:
        """The record's current value (None: it is gone)."""
        if coll in DICT_COLLECTIONS:
            return getattr(self, DICT_COLLECTIONS[coll]).get(key)
        if coll in LIST_COLLECTIONS:
            items = getattr(self, LIST_COLLECTIONS[coll])
            value = items[key] if key < len(items) else None
            if coll == "ack997" and value is not None:
                value = {
                    **value,
                    "due_at": _iso(value["due_at"]),
                    "data": base64.b64encode(value["data"]).decode(),
                }
            return value
        if coll.startswith("master."):
            return self.master[coll.removeprefix("master.")].get(key)
        if coll.startswith("idem."):
            return self._idem[coll.removeprefix("idem.")].answers.get(key)
        if coll == "schedule":
            item = self._pending.get(key)
            return item and {"at": _iso(item.at), "kind": item.kind, "event": item.event}
        if coll == "delivered":
            return True if key in self._delivered else None
        raise ValueError(coll)

    def _flush(self, meta: dict | None = None) -> None:
        """Write every changed record (and the counters) in one transaction."""
        upserts, deletes = [], []
        for coll, key in self._dirty:
            value = self._value(coll, key)
            if value is None:
                deletes.append((coll, encode_key(key)))
            else:
                upserts.append((coll, encode_key(key), _RECORD_ENCODER.encode(value).decode()))
        meta = dict(meta or {})
        if self._meta_dirty:
            meta.update(
                seq=self._next_seq,
                ack_controls=self._ack_controls,
                receipts_through=self._receipts_through,
                received_units=self.received_units,
            )
        if self.store is not None:
            self.store.write(upserts, deletes, meta)
        self._dirty.clear()
        self._meta_dirty = False

    @contextlib.contextmanager
    def _txn(self):
        """The lock, and what changed under it durable before the outermost call returns."""
        with self.lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if not self._depth and (self._dirty or self._meta_dirty):
                    self._flush()

    def batch(self):
        """Several calls as one: what they change is made durable together, once, before the
        block ends (a batch endpoint's items; each call still takes the lock itself)."""
        return self._txn()

    def set_clock(
        self,
        now: datetime | None = None,
        speed: float | None = None,
        advance_minutes: float | None = None,
    ) -> None:
        """Set, speed up or advance the simulated clock (stored before it returns)."""
        with self.lock:
            if now is not None:
                self.clock.set(now, speed)
            elif speed is not None:
                self.clock.set(self.clock.now(), speed)
            if advance_minutes:
                self.clock.advance(timedelta(minutes=advance_minutes))

    def reset(self, start: datetime | None = None, speed: float | None = None) -> dict:
        """Forget everything on purpose (a WMS restored from nothing): back to the generated
        day, the clock at ``start`` (default: where it started first). Files already in the
        drop folders stay; they are delivered again as the clock passes them."""
        with self.lock:
            if self.store is not None:
                self.store.wipe()
            self._load_day()
            self.clock.set(
                start or _parse(self._origin["start"]),
                speed if speed is not None else self._origin["speed"],
            )
            self._meta_dirty = True
            self._flush(meta={"format": FORMAT, "day": self._fingerprint(), "origin": self._origin})
            self.resumed = False
            return {"clock": _iso(self.now()), "speed": self.clock.speed}

    def close(self) -> None:
        with self.lock:
            if self.store is not None:
                self.store.close()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _key(row: dict, key: str | tuple[str, ...]):
        return row[key] if isinstance(key, str) else tuple(row[k] for k in key)

    @staticmethod
    def _read_jsonl(path: Path) -> list[dict]:
        if not path.exists():
            return []
        with path.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def now(self) -> datetime:
        return self.clock.now()

    # ------------------------------------------------------------------ ERP: master data
    def extract(self, entity: str, changed_since: str | None, offset: int, limit: int) -> dict:
        """Incremental extract: rows changed after ``changed_since``, in a stable order."""
        if entity not in self.master:
            raise NotFound(entity)
        with self.lock:
            rows = list(self.master[entity].values())
        if changed_since:
            since = _parse(changed_since)
            rows = [r for r in rows if r.get("updated_at") and _parse(r["updated_at"]) > since]
        key = MASTER_ENTITIES[entity] or ("customer_id", "customer_part_number", "item_id")
        rows.sort(key=lambda r: (r.get("updated_at") or "", json.dumps(self._key(r, key))))
        page = rows[offset : offset + limit]
        return {
            "entity": entity,
            "total": len(rows),
            "offset": offset,
            "items": page,
            "next_offset": offset + len(page) if offset + len(page) < len(rows) else None,
            "extracted_at": _iso(self.now()),
        }

    def update_master(self, entity: str, key: str, changes: dict) -> dict:
        """Change one master record (an upstream fix or a new defect), bumping updated_at."""
        if entity not in self.master:
            raise NotFound(entity)
        with self._txn():
            table = self.master[entity]
            natural = MASTER_ENTITIES[entity] or ("customer_id", "customer_part_number")
            match = next(
                (
                    k
                    for k, row in table.items()
                    if "|".join(
                        str(v)
                        for v in (
                            self._key(row, natural)
                            if isinstance(natural, tuple)
                            else (row[natural],)
                        )
                    )
                    == key
                ),
                None,
            )
            if match is None:
                raise NotFound(f"{entity}/{key}")
            table[match].update(changes)
            table[match]["updated_at"] = _iso(self.now())
            self._mark(f"master.{entity}", match)
            return dict(table[match])

    def exposure(self, customer_id: str) -> dict:
        with self.lock:
            account = self.master["credit_accounts"].get(customer_id)
            if account is None:
                raise NotFound(f"credit account {customer_id}")
            open_orders = sum(
                o["amount"]
                for o in self.erp_orders.values()
                if o["customer_id"] == customer_id and o["status"] == "open"
            )
            return {
                "customer_id": customer_id,
                "credit_limit": account["credit_limit"],
                "open_ar": account["open_ar"],
                "open_orders": round(open_orders, 2),
                "exposure": round(account["open_ar"] + open_orders, 2),
                "on_hold": account["on_hold"],
                "hold_reason": account.get("hold_reason"),
            }

    def exposures(self, customer_ids: list[str]) -> dict:
        """Current exposure of several customers in one call (the credit stage's batched
        read); ids without a credit account are listed apart."""
        items, unknown = [], []
        for cid in dict.fromkeys(customer_ids):
            try:
                items.append(self.exposure(cid))
            except NotFound:
                unknown.append(cid)
        return {"items": items, "unknown": unknown, "as_of": _iso(self.now())}

    def create_erp_order(self, key: str, body: dict) -> tuple[dict, bool]:
        with self._txn():
            if (prior := self.erp_order_keys.replay(key, body)) is not None:
                return prior, True
            if body["customer_id"] not in self.master["customers"]:
                raise Invalid(f"unknown customer {body['customer_id']}")
            number = f"SO{len(self.erp_orders) + 1:07d}"
            amount = round(sum(ln["quantity"] * ln["unit_price"] for ln in body["lines"]), 2)
            order = {
                "erp_order_number": number,
                "order_id": body["order_id"],
                "customer_id": body["customer_id"],
                "amount": amount,
                "status": "open",
                "created_at": _iso(self.now()),
            }
            self.erp_orders[number] = order
            self._mark("erp_order", number)
            return self.erp_order_keys.remember(key, body, order), False

    def post_invoice(self, key: str, body: dict) -> tuple[dict, bool]:
        with self._txn():
            if (prior := self.invoice_keys.replay(key, body)) is not None:
                return prior, True
            account = self.master["credit_accounts"].get(body["customer_id"])
            if account is None:
                raise Invalid(f"unknown customer {body['customer_id']}")
            total = round(
                sum(ln["quantity"] * ln["unit_price"] for ln in body["lines"])
                + body.get("tax", 0)
                + body.get("freight", 0),
                2,
            )
            number = f"INV{len(self.invoices) + 1:07d}"
            invoice = {
                "invoice_number": number,
                "order_id": body["order_id"],
                "customer_id": body["customer_id"],
                "total": total,
                "posted_at": _iso(self.now()),
            }
            self.invoices[number] = invoice
            self._mark("invoice", number)
            account["open_ar"] = round(account["open_ar"] + total, 2)
            self._mark("master.credit_accounts", body["customer_id"])
            for so in self.erp_orders.values():
                if so["order_id"] == body["order_id"]:
                    so["status"] = "invoiced"
                    self._mark("erp_order", so["erp_order_number"])
            return self.invoice_keys.remember(key, body, invoice), False

    # ------------------------------------------------------------------ WMS
    def availability(
        self, item_ids: list[str] | None, dc_id: str | None, changed_since: str | None = None
    ) -> list[dict]:
        with self._txn():
            # what is due has happened: a snapshot as of now includes it (else an event applied
            # later, stamped earlier, would escape every changed-since extract)
            self._materialise()
            out = []
            for (item, dc), pos in self.inventory.items():
                if item_ids and item not in item_ids:
                    continue
                if dc_id and dc != dc_id:
                    continue
                if changed_since and (
                    not pos["updated_at"] or _parse(pos["updated_at"]) <= _parse(changed_since)
                ):
                    continue
                out.append(
                    {
                        "item_id": item,
                        "dc_id": dc,
                        "on_hand": pos["on_hand"],
                        "reserved": pos["reserved"],
                        "available": round(pos["on_hand"] - pos["reserved"], 3),
                        "updated_at": pos["updated_at"],
                    }
                )
            return out

    def reserve(self, item_id: str, dc_id: str, quantity: float, reference: str) -> dict:
        if quantity <= 0:
            raise Invalid("quantity must be positive")
        with self._txn():
            pos = self.inventory.get((item_id, dc_id))
            if pos is None:
                raise NotFound(f"no inventory position for {item_id} at {dc_id}")
            available = pos["on_hand"] - pos["reserved"]
            if quantity > available + 1e-9:
                raise Conflict(
                    f"only {available:g} of {item_id} available at {dc_id}, {quantity:g} requested"
                )
            pos["reserved"] += quantity
            pos["updated_at"] = _iso(self.now())
            rid = f"R{len(self.reservations) + 1:08d}"
            res = {
                "reservation_id": rid,
                "item_id": item_id,
                "dc_id": dc_id,
                "quantity": quantity,
                "reference": reference,
                "status": "held",
                "created_at": _iso(self.now()),
            }
            self.reservations[rid] = res
            self._mark("reservation", rid)
            self._mark("inventory", (item_id, dc_id))
            return dict(res)

    def cancel_reservation(self, rid: str) -> dict:
        with self._txn():
            res = self.reservations.get(rid)
            if res is None:
                raise NotFound(f"reservation {rid}")
            if res["status"] == "held":
                pos = self.inventory[(res["item_id"], res["dc_id"])]
                pos["reserved"] -= res["quantity"]
                pos["updated_at"] = _iso(self.now())
                res["status"] = "cancelled"
                self._mark("reservation", rid)
                self._mark("inventory", (res["item_id"], res["dc_id"]))
            return dict(res)

    def release(self, key: str, body: dict, *, reuse_id: bool = False) -> tuple[dict, bool]:
        """Release an order to the floor. A repeated key returns the first answer, never a
        second pick. Lines are taken from the named reservations or, without, from stock.
        ``reuse_id`` (a fault) answers with the id of the first release instead of its own."""
        with self._txn():
            if (prior := self.release_keys.replay(key, body)) is not None:
                return prior, True
            dc_id = body["dc_id"]
            if dc_id not in self.dcs:
                raise Invalid(f"unknown DC {dc_id}")
            # Check every line first: a refused release changes nothing.
            from_stock: Counter[str] = Counter()
            named: set[str] = set()
            for ln in body["lines"]:
                rid = ln.get("reservation_id")
                if rid:
                    res = self.reservations.get(rid)
                    if res is None or res["status"] != "held" or rid in named:
                        raise Conflict(f"reservation {rid} is not held")
                    named.add(rid)
                else:
                    from_stock[ln["item_id"]] += ln["quantity"]
            for item_id, quantity in from_stock.items():
                pos = self.inventory.get((item_id, dc_id))
                if pos is None or pos["on_hand"] - pos["reserved"] < quantity:
                    raise Conflict(f"not enough {item_id} at {dc_id} to release")
            lines = []
            for ln in body["lines"]:
                if rid := ln.get("reservation_id"):
                    self.reservations[rid]["status"] = "released"
                    self._mark("reservation", rid)
                else:
                    pos = self.inventory[(ln["item_id"], dc_id)]
                    pos["reserved"] += ln["quantity"]
                    # a changed position is reported by changed-since extracts, as of now
                    pos["updated_at"] = _iso(self.now())
                    self._mark("inventory", (ln["item_id"], dc_id))
                lines.append(
                    {"line_no": ln["line_no"], "item_id": ln["item_id"], "quantity": ln["quantity"]}
                )
            release_id = f"REL{len(self.releases) + 1:07d}"
            now = self.now()
            release = {
                "release_id": release_id,
                "order_id": body["order_id"],
                "dc_id": dc_id,
                "lines": lines,
                "status": "released",
                "released_at": _iso(now),
            }
            if dc_id in self.wave_capacity:
                # a pick wave with room: this one, or the next that has it (deferred)
                release["picks"] = len(lines)
                release["wave_start"] = _iso(self._wave_with_room(dc_id, len(lines), now))
            self.releases[release_id] = release
            self._mark("release", release_id)
            self._plan_milestones(release, now)
            answer = dict(release)
            # which held reservations it took (a cancel gives them back); not in the answer
            release["reservation_ids"] = sorted(named)
            if reuse_id and len(self.releases) > 1:
                answer["release_id"] = next(iter(self.releases))
            return self.release_keys.remember(key, body, answer), False

    # ------------------------------------------------------------------ pick waves
    def _tz(self, dc_id: str) -> ZoneInfo:
        return ZoneInfo(self.dcs.get(dc_id, {}).get("timezone") or "UTC")

    def _wave_of(self, dc_id: str, at: datetime) -> datetime:
        """The start of the wave ``at`` falls in (waves of ``wave_minutes`` from local
        midnight, round the clock)."""
        local = at.astimezone(self._tz(dc_id))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        n = int((local - midnight).total_seconds() // (self.wave_minutes * 60))
        return (midnight + timedelta(minutes=n * self.wave_minutes)).astimezone(UTC)

    def _wave_used(self, dc_id: str) -> Counter[str]:
        used: Counter[str] = Counter()
        for r in self.releases.values():
            if r["dc_id"] == dc_id and r.get("wave_start") and r["status"] != "cancelled":
                used[r["wave_start"]] += r.get("picks", 0)
        return used

    def _wave_with_room(self, dc_id: str, picks: int, now: datetime) -> datetime:
        """The first wave from now's with room for ``picks``; a release larger than a whole
        wave takes the first empty one alone."""
        cap, used = self.wave_capacity[dc_id], self._wave_used(dc_id)
        wave = self._wave_of(dc_id, now)
        step = timedelta(minutes=self.wave_minutes)
        while True:
            n = used.get(_iso(wave), 0)
            if n + picks <= cap or n == 0:
                return wave
            wave = self._wave_of(dc_id, wave + step + timedelta(seconds=1))

    def _truck_after(self, dc_id: str, packed: datetime, shipped: datetime) -> datetime:
        """With a carrier cutoff: a shipment packed after the day's cutoff leaves on the next
        business day's truck, at the cutoff."""
        tz = self._tz(dc_id)
        cutoff = self.carrier_cutoffs[dc_id]
        local = packed.astimezone(tz)
        if local.time() <= cutoff:
            return shipped
        day = local.date() + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return max(shipped, datetime.combine(day, cutoff, tz).astimezone(UTC))

    def capacity(self) -> dict:
        """Per DC: the picks a wave holds (None: unconstrained), the current wave, what is
        used of it and left, when the next wave starts, the carrier cutoff."""
        with self.lock:
            now = self.now()
            out = {}
            for dc_id in sorted(self.dcs):
                wave = self._wave_of(dc_id, now)
                nxt = self._wave_of(dc_id, wave + timedelta(minutes=self.wave_minutes, seconds=1))
                cap = self.wave_capacity.get(dc_id)
                used = self._wave_used(dc_id).get(_iso(wave), 0) if cap is not None else 0
                cut = self.carrier_cutoffs.get(dc_id)
                out[dc_id] = {
                    "per_wave": cap,
                    "wave_start": _iso(wave),
                    "next_wave_at": _iso(nxt),
                    "used": used,
                    "remaining": None if cap is None else max(cap - used, 0),
                    "carrier_cutoff": cut.strftime("%H:%M") if cut else None,
                }
            return {"as_of": _iso(now), "wave_minutes": self.wave_minutes, "dcs": out}

    def cancel_release(self, key: str, release_id: str) -> tuple[dict, bool]:
        """Withdraw a release the floor has not started picking: the stock it held goes back
        (its named reservations are cancelled) and none of its later milestones is emitted.
        Refused (:class:`Conflict`, 409) once picking started — picked, short picked, packed
        or shipped. A repeated key returns the first answer; a cancelled release cancelled
        again under another key answers as it stands."""
        body = {"release_id": release_id}
        with self._txn():
            if (prior := self.release_cancel_keys.replay(key, body)) is not None:
                return prior, True
            self._materialise()  # what the floor has done by now
            release = self.releases.get(release_id)
            if release is None:
                raise NotFound(f"release {release_id}")
            if release["status"] == "cancelled":
                return {k: v for k, v in release.items() if k != "reservation_ids"}, True
            if release["status"] != "released":
                raise Conflict(
                    f"release {release_id} is {release['status']}: picking has started, "
                    "it can no longer be cancelled"
                )
            now = self.now()
            for ln in release["lines"]:
                pos = self.inventory[(ln["item_id"], release["dc_id"])]
                pos["reserved"] = max(0.0, pos["reserved"] - ln["quantity"])
                pos["updated_at"] = _iso(now)
                self._mark("inventory", (ln["item_id"], release["dc_id"]))
            for rid in release.get("reservation_ids", ()):
                self.reservations[rid]["status"] = "cancelled"
                self._mark("reservation", rid)
            release["status"] = "cancelled"
            release["cancelled_at"] = _iso(now)
            self._mark("release", release_id)
            answer = {k: v for k, v in release.items() if k != "reservation_ids"}
            return self.release_cancel_keys.remember(key, body, answer), False

    def _plan_milestones(self, release: dict, now: datetime) -> None:
        """Released → picked → packed → shipped, with realistic delays and some short picks."""
        rnd = random.Random(f"{self.world_meta.get('seed')}:{release['release_id']}")
        base = {
            "release_id": release["release_id"],
            "order_id": release["order_id"],
            "dc_id": release["dc_id"],
        }
        self._push(now, "wms", {**base, "milestone": "released"})
        # deferred to a later pick wave: picked in that wave
        start = max(now, _parse(release["wave_start"])) if release.get("wave_start") else now
        picked = start + timedelta(minutes=rnd.uniform(20, 120))
        picks = []
        for ln in release["lines"]:
            qty = ln["quantity"]
            if rnd.random() < 0.03:  # a short pick: the shelf had less than the system said
                qty = max(0.0, float(int(qty * rnd.uniform(0.3, 0.9))))
            picks.append(
                {
                    "line_no": ln["line_no"],
                    "item_id": ln["item_id"],
                    "ordered": ln["quantity"],
                    "picked": qty,
                }
            )
        short = any(p["picked"] < p["ordered"] for p in picks)
        if short:
            self._push(picked, "wms", {**base, "milestone": "short_picked", "lines": picks})
        self._push(picked, "wms", {**base, "milestone": "picked", "lines": picks})
        packed = picked + timedelta(minutes=rnd.uniform(10, 40))
        self._push(packed, "wms", {**base, "milestone": "packed"})
        shipped = packed + timedelta(minutes=rnd.uniform(30, 240))
        if rnd.random() < 0.04:  # missed the truck
            shipped += timedelta(days=1)
        if release.get("wave_start") and release["dc_id"] in self.carrier_cutoffs:
            shipped = self._truck_after(release["dc_id"], packed, shipped)
        tracking = f"1Z{rnd.randrange(10**15):015d}"
        if self.label_from_booking:  # the tender may have been booked before the release came
            tracking = self._booked_tracking(release["order_id"], release["dc_id"]) or tracking
        # What left the dock: normally what was picked. Drawn after every draw above, so a
        # seed's event timings are what they were before shipped quantities existed.
        loaded = [{**p, "shipped": p["picked"]} for p in picks]
        if rnd.random() < 0.005:  # the dock count differs: one unit too many went out
            loaded[rnd.randrange(len(loaded))]["shipped"] += 1
        self._push(
            shipped,
            "wms",
            {**base, "milestone": "shipped", "lines": loaded, "tracking_number": tracking},
        )

    def _push(self, at: datetime, kind: str, event: dict) -> None:
        item = _Scheduled(at, self._next_seq, kind, event)
        self._next_seq += 1
        self._meta_dirty = True
        heapq.heappush(self._schedule, item)
        self._pending[item.seq] = item
        self._mark("schedule", item.seq)

    def _materialise(self) -> None:
        """Move scheduled events whose time has come into the feeds (and react to them)."""
        now = self.now()
        self._receive_due(now)
        while self._schedule and self._schedule[0].at <= now:
            item = heapq.heappop(self._schedule)
            del self._pending[item.seq]
            self._mark("schedule", item.seq)
            event = {**item.event, "occurred_at": _iso(item.at)}
            if self.releases.get(event.get("release_id"), {}).get("status") == "cancelled":
                continue  # a cancelled release is not picked, packed or shipped
            if item.kind == "wms":
                event["seq"] = len(self.milestones) + 1
                self._mark("milestone", len(self.milestones))
                self.milestones.append(event)
                self._apply_wms(event, item.at)
            else:
                event["seq"] = len(self.tracking) + 1
                self._mark("tracking", len(self.tracking))
                self.tracking.append(event)

    def _receive_due(self, now: datetime) -> None:
        """Inbound deliveries: every day at 06:00 (simulated, UTC) after the first business
        day, each DC receives stock for the positions running low."""
        if not self._receipts_through:
            return
        day = datetime.fromisoformat(self._receipts_through).date() + timedelta(days=1)
        while datetime(day.year, day.month, day.day, 6, tzinfo=UTC) <= now:
            self._receive(day)
            self._receipts_through = day.isoformat()
            self._meta_dirty = True
            day += timedelta(days=1)

    def _receive(self, day) -> None:
        """One day's receipts: a position whose free stock fell under a quarter of where it
        started (at least 40 units) is topped back up to that level — on about half of the
        days, as suppliers deliver (seeded per day, item and DC)."""
        at = _iso(datetime(day.year, day.month, day.day, 6, tzinfo=UTC))
        seed = self.world_meta.get("seed")
        for key in sorted(self.inventory):
            pos = self.inventory[key]
            target = max(self._initial_on_hand.get(key, 0.0), 40.0)
            free = pos["on_hand"] - pos["reserved"]
            if free >= 0.25 * target:
                continue
            if random.Random(f"{seed}:receipt:{day}:{key[0]}:{key[1]}").random() >= 0.5:
                continue
            qty = float(round(target - free))
            pos["on_hand"] += qty
            pos["updated_at"] = _later(pos.get("updated_at"), at)
            self.received_units += qty
            self._mark("inventory", key)

    def _apply_wms(self, event: dict, at: datetime) -> None:
        release = self.releases[event["release_id"]]
        release["status"] = event["milestone"]
        self._mark("release", event["release_id"])
        if event["milestone"] != "shipped":
            return
        for p in event["lines"]:
            pos = self.inventory[(p["item_id"], release["dc_id"])]
            pos["reserved"] = max(0.0, pos["reserved"] - p["ordered"])
            pos["on_hand"] = max(0.0, pos["on_hand"] - p.get("shipped", p["picked"]))
            pos["updated_at"] = _later(pos.get("updated_at"), _iso(at))
            self._mark("inventory", (p["item_id"], release["dc_id"]))
        rnd = random.Random(f"track:{event['tracking_number']}")
        base = {
            "tracking_number": event["tracking_number"],
            "order_id": event["order_id"],
            "release_id": event["release_id"],
        }
        t = at + timedelta(hours=rnd.uniform(1, 4))
        self._push(t, "carrier", {**base, "status": "in_transit"})
        transit = timedelta(days=rnd.choice([1, 2, 2, 3, 4]))
        if rnd.random() < 0.05:
            self._push(
                t + transit / 2, "carrier", {**base, "status": "delayed", "reason": "weather"}
            )
            transit += timedelta(days=1)
        if rnd.random() < 0.01:
            self._push(
                t + transit,
                "carrier",
                {**base, "status": "exception", "reason": "damaged in transit"},
            )
        else:
            self._push(t + transit, "carrier", {**base, "status": "delivered"})

    def feed(self, which: str, after: int, limit: int) -> dict:
        with self._txn():
            self._materialise()
            events = self.milestones if which == "wms" else self.tracking
            page = events[after : after + limit]
            return {
                "items": [dict(e) for e in page],
                "next_cursor": after + len(page),
                "as_of": _iso(self.now()),
            }

    def compact_feed(self, which: str, drop: int) -> dict:
        """Retention on a feed (a WMS that purged the events it thinks were read, and numbered
        the rest from the start again): the first ``drop`` events are gone and every later one
        moves down, so a reader's cursor points past the end or at another event. Nothing not
        yet read is lost if ``drop`` is at most the reader's cursor."""
        with self._txn():
            self._materialise()
            coll, events = (
                ("milestone", self.milestones) if which == "wms" else ("tracking", self.tracking)
            )
            before = len(events)
            drop = max(0, min(drop, before))
            del events[:drop]
            for i, event in enumerate(events):
                event["seq"] = i + 1
            for i in range(before):
                self._mark(coll, i)
            return {"feed": which, "dropped": drop, "length": len(events)}

    # ------------------------------------------------------------------ carrier / tax / credit / screening
    def rate_quotes(self, weight_kg: float, dc_id: str, zone: str, hazmat: bool) -> list[dict]:
        zone_n = int("".join(c for c in zone if c.isdigit()) or 4)
        quotes = []
        for c in self.master["carriers"].values():
            if not c.get("active", True) or (hazmat and not c["hazmat_allowed"]):
                continue
            if c["max_weight_kg"] and weight_kg > c["max_weight_kg"]:
                continue
            if c["mode"] == "ltl" and weight_kg < 70:
                continue
            price = c["base_rate"] + c["per_kg"] * weight_kg * (1 + 0.08 * zone_n)
            quotes.append(
                {
                    "carrier_id": c["carrier_id"],
                    "service_code": c["service_code"],
                    "mode": c["mode"],
                    "transit_days": c["transit_days"] + (zone_n > 5),
                    "amount": round(price, 2),
                    "currency": "USD",
                    "dc_id": dc_id,
                }
            )
        return sorted(quotes, key=lambda q: q["amount"])

    def book_shipment(self, key: str, body: dict) -> tuple[dict, bool]:
        """Book (tender) a shipment with a carrier service. A repeated key returns the first
        answer, never a second booking. Refused (:class:`Conflict`, 409) when the carrier
        does not offer the service (not in its rate table, inactive, over its weight limit,
        hazmat it does not take) or has no capacity for it on the lane (``tender_refusals``).
        The booked amount is the table rate plus the fuel surcharge. A booked shipment's
        tracking number is what the WMS prints on the label: the release's shipped milestone
        carries it."""
        with self._txn():
            if (prior := self.shipment_keys.replay(key, body)) is not None:
                return prior, True
            carrier, service = body["carrier_id"], body["service_code"]
            lane = f"{carrier}/{service}"
            dc_id = body.get("dc_id")
            if lane in self.tender_refusals or f"{lane}@{dc_id}" in self.tender_refusals:
                raise Conflict(f"{lane} has no capacity on the lane from {dc_id or 'origin'}")
            c = self.master["carriers"].get((carrier, service))
            weight = float(body["weight_kg"])
            if c is None or not c.get("active", True):
                raise Conflict(f"{lane} is not a service this carrier offers")
            if c["max_weight_kg"] and weight > c["max_weight_kg"]:
                raise Conflict(f"{lane} takes at most {c['max_weight_kg']} kg")
            if body.get("hazmat") and not c["hazmat_allowed"]:
                raise Conflict(f"{lane} does not take hazmat")
            zone_n = int("".join(ch for ch in (body.get("zone") or "") if ch.isdigit()) or 4)
            billed = max(weight, 68.0) if c["mode"] == "ltl" else weight
            table = c["base_rate"] + c["per_kg"] * billed * (1 + 0.08 * zone_n)
            n = len(self.shipments) + 1
            shipment = {
                "shipment_id": f"SH{n:07d}",
                "booking_id": f"BK{n:07d}",
                "pro_number": f"PRO{n:09d}",
                "tracking_number": f"TRK{n:010d}",
                "label_url": f"/carrier/labels/SH{n:07d}.pdf",
                "carrier_id": carrier,
                "service_code": service,
                "order_id": body["order_id"],
                "dc_id": dc_id,
                "reference": body.get("reference"),
                "amount": round(table * (1 + self.fuel_surcharge), 2),
                "table_amount": round(table, 2),
                "currency": "USD",
                "booked_at": _iso(self.now()),
            }
            self.shipments[shipment["shipment_id"]] = shipment
            self._mark("shipment", shipment["shipment_id"])
            if self.label_from_booking:
                self._label_release(body["order_id"], dc_id, shipment["tracking_number"])
            return self.shipment_keys.remember(key, body, shipment), False

    def _booked_tracking(self, order_id: str, dc_id: str) -> str | None:
        """The tracking number of the order's latest booking from that DC, if one was booked."""
        for shipment in reversed(self.shipments.values()):
            if shipment["order_id"] == order_id and shipment["dc_id"] in (None, dc_id):
                return shipment["tracking_number"]
        return None

    def _label_release(self, order_id: str, dc_id: str | None, tracking: str) -> None:
        """The WMS prints the booked label: the coming shipped milestone of the order's
        release from that DC carries the carrier's tracking number."""
        for item in self._shipped_pending(order_id):
            if dc_id is None or item.event.get("dc_id") == dc_id:
                item.event["tracking_number"] = tracking
                self._mark("schedule", item.seq)

    def _shipped_pending(self, order_id: str) -> list[_Scheduled]:
        """Scheduled shipped milestones of an order, from an index brought up to date with
        what was scheduled since the last look (newest first: the schedule only grows at its
        end), so a day of bookings does not scan the schedule once per booking."""
        if getattr(self, "_shipped_of", None) is None or self._shipped_of[0] is not self._pending:
            self._shipped_of = (self._pending, {}, 0)
        pending, index, mark = self._shipped_of
        newest = mark
        for seq in reversed(pending):
            if seq <= mark:
                break
            newest = max(newest, seq)
            item = pending[seq]
            if item.kind == "wms" and item.event.get("milestone") == "shipped":
                index.setdefault(item.event.get("order_id"), []).append(seq)
        self._shipped_of = (pending, index, newest)
        return [pending[q] for q in index.get(order_id, ()) if q in pending]

    @staticmethod
    def tax_quote(region: str, country: str, lines: list[dict], exempt: bool = False) -> dict:
        rate = 0.0 if exempt or country != "US" else TAX_RATES.get(region, DEFAULT_TAX_RATE)
        taxed = [
            {"line_no": ln["line_no"], "amount": ln["amount"], "tax": round(ln["amount"] * rate, 2)}
            for ln in lines
        ]
        return {
            "rate": rate,
            "lines": taxed,
            "total_tax": round(sum(t["tax"] for t in taxed), 2),
            "jurisdiction": f"{country}-{region}",
        }

    def credit_check(self, customer_id: str, amount: float) -> dict:
        exp = self.exposure(customer_id)
        after = exp["exposure"] + amount
        if exp["on_hold"]:
            decision, reason = "decline", f"account on hold: {exp['hold_reason'] or 'credit hold'}"
        elif after > exp["credit_limit"]:
            decision, reason = "refer", "exposure would exceed credit limit"
        else:
            decision, reason = "approve", "within limit"
        headroom = exp["credit_limit"] - after
        return {
            **exp,
            "order_amount": amount,
            "exposure_after": round(after, 2),
            "headroom": round(headroom, 2),
            "decision": decision,
            "reason": reason,
        }

    def screen(self, name: str, country: str) -> dict:
        tokens = _name_tokens(name)
        hits = []
        for party, ptoks in self._restricted_tokens:
            if not ptoks:
                continue
            score = len(tokens & ptoks) / len(ptoks)
            if score >= 0.6 and (not party.get("country") or party["country"] == country):
                hits.append({**party, "score": round(score, 2)})
        return {
            "name": name,
            "country": country,
            "hits": hits,
            "status": "review" if hits else "clear",
        }

    # ------------------------------------------------------------------ "new orders" webhooks
    def notices(self, source: str, after: int, limit: int) -> dict:
        """What the portal's or the marketplace's "new orders" webhook says about its feed past
        ``after``: one notice per item that has become visible — its position in the feed and
        when it arrived, never the order (the receiver reads the feed for that)."""
        items, arrived = self._arrivals(source)
        visible = bisect.bisect_right(arrived, self.now())
        end = min(visible, after + limit)
        return {
            "items": [
                {"feed": source, "seq": i + 1, "arrived_at": items[i]["arrival_at"]}
                for i in range(after, end)
            ],
            "next_cursor": max(after, end),
            "length": visible,
        }

    def _arrivals(self, source: str) -> tuple[list[dict], list[datetime]]:
        """The feed's items (sorted by arrival) and their parsed arrival times, parsed once per
        loaded list: the push loop asks several times a second."""
        items = self.portal_orders if source == "portal" else self.marketplace_feed
        cached = self._arrival_cache.get(source)
        if cached is None or cached[0] is not items or len(cached[1]) != len(items):
            cached = (items, [_parse(o["arrival_at"]) for o in items])
            self._arrival_cache[source] = cached
        return cached

    # ------------------------------------------------------------------ portal
    def submit_portal_order(self, order: dict) -> tuple[dict, bool]:
        """A customer places an order on the portal now: it is in the orders feed at once,
        after everything already visible. Idempotent by ``client_request_id`` (the answer
        says ``replayed``); kept in the sandbox's state, so a restart keeps the feed."""
        with self._txn():
            rid = order["client_request_id"]
            item = self.portal_submissions.get(rid)
            if item is None:
                item = {**order, "channel": "portal", "arrival_at": _iso(self.now())}
                self.portal_submissions[rid] = item
                self._mark("portal_submission", rid)
                self._insert_portal(item)
                replayed = False
            else:
                replayed = True
            return {"client_request_id": rid, "submitted_at": item["arrival_at"]}, replayed

    def _insert_portal(self, item: dict) -> None:
        """Into the feed in arrival order (after every item of the same time or earlier: what
        a reader has seen never moves)."""
        _, arrived = self._arrivals("portal")
        self.portal_orders.insert(bisect.bisect_right(arrived, _parse(item["arrival_at"])), item)

    def portal_page(self, after: int, limit: int) -> dict:
        now = self.now()
        visible = [o for o in self.portal_orders if _parse(o["arrival_at"]) <= now]
        page = visible[after : after + limit]
        items = [
            {k: v for k, v in o.items() if k != "arrival_at"}
            if o.get("type") in ("cancel", "change")
            else {
                "client_request_id": o["client_request_id"],
                "submitted_at": o["arrival_at"],
                "order": {
                    k: o[k]
                    for k in (
                        "customer_id",
                        "ship_to_id",
                        "po_number",
                        "po_date",
                        "requested_ship_date",
                        "currency",
                        "lines",
                    )
                },
            }
            for o in page
        ]
        for it in items:  # the portal does not know our true item ids
            if "order" not in it:
                continue
            it["order"]["lines"] = [
                {k: v for k, v in ln.items() if k != "item_id"} for ln in it["order"]["lines"]
            ]
        return {
            "items": items,
            "next_cursor": after + len(page),
            "has_more": after + len(page) < len(visible),
            "as_of": _iso(now),
        }

    def receive_webhook(self, key: str, body: dict) -> tuple[dict, bool]:
        """A customer notification we sent to the portal (idempotent per key)."""
        with self._txn():
            if (prior := self.webhook_keys.replay(key, body)) is not None:
                return prior, True
            answer = {
                "webhook_id": f"WH{len(self.webhooks) + 1:07d}",
                "event": body["event"],
                "customer_id": body["customer_id"],
                "order_id": body["order_id"],
                "received_at": _iso(self.now()),
            }
            self._mark("webhook", len(self.webhooks))
            self.webhooks.append({**answer, "data": body.get("data"), "idempotency_key": key})
            return self.webhook_keys.remember(key, body, answer), False

    def webhook_list(self, customer_id: str | None, event: str | None) -> list[dict]:
        with self.lock:
            return [
                dict(w)
                for w in self.webhooks
                if (not customer_id or w["customer_id"] == customer_id)
                and (not event or w["event"] == event)
            ]

    # ------------------------------------------------------------------ mail relay (SMTP sink)
    def receive_mail(self, mail_from: str | None, rcpt_tos: list[str], content: bytes) -> dict:
        """Keep one message the SMTP sink accepted (addresses are kept, never logged)."""
        msg = email.message_from_bytes(content, policy=email.policy.default)

        def body(kind: str) -> str:
            try:
                part = msg.get_body(preferencelist=(kind,))
                return part.get_content().replace("\r\n", "\n") if part is not None else ""
            except (LookupError, ValueError):  # an unknown charset or a broken part
                return ""

        text, html = body("plain"), body("html")
        parts = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
        header = lambda name: str(msg[name]).strip() if msg[name] is not None else None  # noqa: E731
        with self._txn():
            record = {
                "seq": len(self.mail) + 1,
                "message_id": header("Message-ID"),
                "from": mail_from or header("From"),
                "to": list(rcpt_tos) or [a.strip() for a in (header("To") or "").split(",")],
                "subject": header("Subject") or "",
                "key": header("X-OrderFlow-Key"),
                "body": text,
                # the message's structure: content type and the type of each leaf part
                "content_type": msg.get_content_type(),
                "parts": parts,
                "html": html,
                "received_at": _iso(self.now()),
            }
            self._mark("mail", len(self.mail))
            self.mail.append(record)
            return dict(record)

    def mail_messages(self, to: str | None = None, subject: str | None = None) -> list[dict]:
        with self.lock:
            return [
                dict(m)
                for m in self.mail
                if (not to or to.casefold() in (a.casefold() for a in m["to"]))
                and (not subject or subject.casefold() in m["subject"].casefold())
            ]

    def _mail_counts(self) -> dict:
        ids = Counter(m["message_id"] for m in self.mail if m["message_id"])
        return {
            "messages": len(self.mail),
            "duplicate_message_ids": sum(1 for n in ids.values() if n > 1),
        }

    # ------------------------------------------------------------------ EDI + mailbox deliveries
    def receive_edi(
        self, key: str, partner_id: str, document_type: str, body: str
    ) -> tuple[dict, bool]:
        payload = {"partner_id": partner_id, "document_type": document_type, "body": body}
        with self._txn():
            if (prior := self.outbound_keys.replay(key, payload)) is not None:
                return prior, True
            receipt = {
                "receipt_id": f"RCV{len(self.outbound_edi) + 1:07d}",
                "partner_id": partner_id,
                "document_type": document_type,
                "bytes": len(body.encode()),
                "received_at": _iso(self.now()),
            }
            self._mark("outbound_edi", len(self.outbound_edi))
            self.outbound_edi.append({**receipt, "body": body})
            if document_type.strip() in ACKNOWLEDGED_SETS:
                self._schedule_997(partner_id, receipt["receipt_id"], body)
            return self.outbound_keys.remember(key, payload, receipt), False

    def _schedule_997(self, partner_id: str, receipt_id: str, body: str) -> None:
        """The partner's translator reads what we sent and answers each functional group
        with a 997, 5-30 simulated minutes later (seeded), in an interchange of its own."""
        parsed = _read_x12(body)
        if parsed is None:  # not even an ISA: a real translator would not answer either
            return
        isa, groups, interchange_ok = parsed
        profile = self.partners.get(partner_id) or isa["profile"]
        for g in groups:
            if g["functional_id"] == "FA":  # acknowledgments are not acknowledged
                continue
            rnd = random.Random(
                f"{self.world_meta.get('seed')}:997:{partner_id}:{isa['control']}:{g['control']}"
            )
            at = self.now() + timedelta(minutes=rnd.uniform(5, 30))
            # now and then a partner's translator refuses a well-formed document (its own
            # rules: an unknown item, a missing reference) — seeded per group
            refused = rnd.random() < self.partner_refusal_rate
            control = self._ack_controls.get(partner_id, ACK_CONTROL_START)
            self._ack_controls[partner_id] = control + 1
            self._meta_dirty = True
            segments, status = _render_997(isa, g, interchange_ok, control, at, refused)
            self._mark("ack997", len(self.acks_997))
            self.acks_997.append(
                {
                    "partner_id": partner_id,
                    "control_number": f"{control:09d}",
                    "path": f"edi/inbound/{partner_id}/997_{control:09d}.x12",
                    "due_at": at,
                    "status": status,
                    "acknowledges": {
                        "receipt_id": receipt_id,
                        "functional_id": g["functional_id"],
                        "group_control_number": g["control"],
                        "sets": [t["control"] for t in g["sets"]],
                    },
                    "data": _serialise_x12(profile, isa, segments),
                    "delivered": False,
                    "refused_by_partner": refused,
                }
            )

    def ack_list(self, partner_id: str | None = None) -> list[dict]:
        with self.lock:
            return [
                {
                    **{k: v for k, v in a.items() if k not in ("data", "due_at")},
                    "due_at": _iso(a["due_at"]),
                }
                for a in self.acks_997
                if not partner_id or a["partner_id"] == partner_id
            ]

    def deliver_due(self, duplicate: bool = False) -> int:
        """Copy artefacts whose time has come into the drop folders, exactly once across
        restarts: each file is written under a hidden ``.part`` name, the delivery is
        recorded (durably), then the file is renamed into place. A kill between record and
        rename is finished at the next start (:meth:`_recover_drops`); one before the
        record writes the file again."""
        now = self.now()
        with self.lock:
            moves: list[tuple[Path, Path]] = []
            with self._txn():
                for d in self.deliveries:
                    if _parse(d["at"]) > now:
                        break
                    if d["path"] in self._delivered:
                        continue
                    target = self._target(d)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name("." + target.name + ".part")
                    shutil.copyfile(self.day_dir / d["path"], tmp)
                    moves.append((tmp, target))
                    self._delivered.add(d["path"])
                    self._mark("delivered", d["path"])
                files = len(moves)
                for n, a in enumerate(self.acks_997):
                    if a["delivered"] or a["due_at"] > now:
                        continue
                    target = self.drop_dir / a["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name("." + target.name + ".part")
                    tmp.write_bytes(a["data"])
                    moves.append((tmp, target))
                    a["delivered"] = True
                    self._mark("ack997", n)
            for n, (tmp, target) in enumerate(moves):  # recorded: now visible
                os.replace(tmp, target)
                if duplicate and n < files:  # a partner re-sends the same file, renamed
                    dup = target.with_name(target.stem + ".resend" + target.suffix)
                    shutil.copyfile(target, dup)
        return len(moves)

    def _target(self, d: dict) -> Path:
        name = Path(d["path"]).name
        if d["channel"] == "edi":
            return self.drop_dir / "edi" / "inbound" / (d.get("partner_id") or "unknown") / name
        if d["channel"] == "email":
            return self.drop_dir / "mailbox" / "new" / name
        return self.drop_dir / "csv" / "inbound" / name

    def summary(self) -> dict:
        with self._txn():
            self._materialise()
            return {
                "clock": _iso(self.now()),
                "speed": self.clock.speed,
                **self.world_meta,
                "master_data": {k: len(v) for k, v in self.master.items()},
                "inventory_positions": len(self.inventory),
                "portal_orders": len(self.portal_orders),
                "deliveries": {"total": len(self.deliveries), "delivered": len(self._delivered)},
                "reservations": len(self.reservations),
                "releases": len(self.releases),
                "erp_orders": len(self.erp_orders),
                "invoices": len(self.invoices),
                "shipments": len(self.shipments),
                "milestones": len(self.milestones),
                "tracking_events": len(self.tracking),
                "outbound_edi": len(self.outbound_edi),
                "edi_997": {
                    "generated": len(self.acks_997),
                    "delivered": sum(a["delivered"] for a in self.acks_997),
                    "rejected": sum(a["status"] != "A" for a in self.acks_997),
                    "refused_by_partner": sum(
                        bool(a.get("refused_by_partner")) for a in self.acks_997
                    ),
                },
                "mail": self._mail_counts(),
                "portal_webhooks": len(self.webhooks),
                "marketplace": _marketplace_summary(self),
                "crm_approvals": len(self.crm_approvals),
                "pending_events": len(self._schedule),
                "received_units": self.received_units,
                "receipts_through": self._receipts_through,
                "state_file": str(self.store.path) if self.store else None,
                "resumed": self.resumed,
            }


def _marketplace_summary(state: Distributor) -> dict:
    from orderflow_sandbox import marketplace

    return marketplace.summary(state)


# ---------------------------------------------------------------------- the partners' 997s
# A trading partner's translator, in miniature: it reads our interchange on its own (the
# sandbox shares no code with OrderFlow), checks the envelope and the set trailers, and
# answers each functional group with a 997.

#: outbound documents the partners acknowledge (what we send them besides 997/TA1)
ACKNOWLEDGED_SETS = frozenset({"855", "856", "810"})
#: first ISA13/GS06 of a partner's 997s: far above the numbers of its 850 interchanges
ACK_CONTROL_START = 900_000_001


def _later(current: str | None, at: str) -> str:
    """A position's change time never goes back: an event applied after a later change (the
    feeds materialise lazily) must still be reported by a changed-since extract."""
    return at if not current or _parse(at) >= _parse(current) else current


#: Share of well-formed groups a partner refuses all the same (AK5 R 5 / AK9 R), seeded.
PARTNER_REFUSAL_RATE = 0.01


def _el(seg: list[str], n: int) -> str:
    return seg[n].strip() if len(seg) > n else ""


def _read_x12(body: str) -> tuple[dict, list[dict], bool] | None:
    """The ISA (with delimiters), the groups with their sets and what is wrong with them,
    and whether ISA13 = IEA02; None when there is no readable ISA."""
    text = body.lstrip("\ufeff \t\r\n")
    if not text.startswith("ISA") or len(text) < 106:
        return None
    element, component, term = text[3], text[104], text[105]
    rest = text[106:]
    if term in "\r\n":  # line ends terminate segments (CR LF: the LF is the "suffix")
        suffix = "\n" if term == "\r" and rest.startswith("\n") else ""
    else:
        suffix = rest[: len(rest) - len(rest.lstrip("\r\n"))]
    if term in "\r\n":
        raw = text.splitlines()
    else:
        raw = text.replace("\r", "").replace("\n", "").split(term)
    segs = [r.split(element) for r in raw if r.strip()]
    isa = segs[0]
    if len(isa) < 17:
        return None
    segs[1:] = [[s[0].strip().upper(), *s[1:]] for s in segs[1:]]
    iea = next((s for s in segs if s[0] == "IEA"), None)
    interchange_ok = iea is not None and _el(iea, 2) == _el(isa, 13)
    groups: list[dict] = []
    g: dict | None = None
    t: dict | None = None
    for s in segs[1:]:
        tag = s[0]
        if tag == "GS":
            g = {
                "functional_id": _el(s, 1),
                "sender": _el(s, 2),
                "receiver": _el(s, 3),
                "control": _el(s, 6),
                "version": _el(s, 8),
                "declared": None,
                "sets": [],
                "codes": [],
            }
            groups.append(g)
        elif tag == "ST" and g is not None:
            t = {"set_id": _el(s, 1), "control": _el(s, 2), "count": 1, "codes": []}
            g["sets"].append(t)
        elif tag == "SE" and t is not None:
            t["count"] += 1
            if not _el(s, 1).isdecimal() or int(_el(s, 1)) != t["count"]:
                t["codes"].append("4")  # number of included segments does not match
            if _el(s, 2) != t["control"]:
                t["codes"].append("3")  # ST02 and SE02 differ
            t = None
        elif tag == "GE" and g is not None:
            if t is not None:
                t["codes"].append("2")  # transaction set trailer missing
                t = None
            g["declared"] = _el(s, 1)
            if _el(s, 2) != g["control"]:
                g["codes"].append("4")  # GS06 and GE02 differ
            if not _el(s, 1).isdecimal() or int(_el(s, 1)) != len(g["sets"]):
                g["codes"].append("5")  # number of included sets does not match
            g = None
        elif t is not None:
            t["count"] += 1
    if t is not None:
        t["codes"].append("2")
    if g is not None:
        g["codes"].append("3")  # functional group trailer missing
    header = {
        "segment": isa,
        "control": _el(isa, 13),
        "profile": {
            "element_sep": element,
            "segment_term": term,
            "component_sep": component,
            "repetition_sep": None,
            "line_ending": suffix,
            "wrap80": False,
            "bom": False,
        },
    }
    return header, groups, interchange_ok


def _render_997(
    isa: dict, g: dict, interchange_ok: bool, control: int, at: datetime, refused: bool = False
) -> tuple[list[list[str]], str]:
    """The 997 interchange (segments) for group ``g``, and its AK9 status.

    Each set gets AK2 + AK5: ``A``, or ``R`` with its own AK502 codes (4 segment count, 3
    control numbers differ, 2 trailer missing). A group whose envelope is broken (GS06 ≠
    GE02, GE01 ≠ sets, no GE, or ISA13 ≠ IEA02) is refused whole: AK9 R with its AK905
    codes (none exists for the interchange; the sets say R without a code of their own).
    """
    at = at.astimezone(UTC)
    version = g["version"]
    v5 = version[:3].isdecimal() and int(version[:3]) >= 5
    broken = bool(g["codes"]) or not interchange_ok
    body: list[list[str]] = [["AK1", g["functional_id"], g["control"], *([version] if v5 else [])]]
    accepted = 0
    for t in g["sets"]:
        ok = not t["codes"] and not broken and not refused
        accepted += ok
        body.append(["AK2", t["set_id"], t["control"]])
        # AK502 5: one or more segments in error (the partner's own business rules)
        codes = t["codes"][:5] or (["5"] if refused and not broken else [])
        body.append(["AK5", "A" if ok else "R", *codes])
    received = len(g["sets"])
    declared = g["declared"] if (g["declared"] or "").isdecimal() else str(received)
    status = "A" if accepted == received and not broken else ("P" if accepted else "R")
    body.append(["AK9", status, str(int(declared)), str(received), str(accepted), *g["codes"][:5]])
    st = [["ST", "997", "0001"], *body, ["SE", str(len(body) + 2), "0001"]]
    r = isa["segment"]
    isa_version = _el(r, 12)
    gs_date = at.strftime("%Y%m%d" if version[:6] >= "004010" else "%y%m%d")
    hhmm = at.strftime("%H%M")
    segments = [
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            _el(r, 7),  # the partner: who we addressed
            _el(r, 8).ljust(15)[:15],
            _el(r, 5),  # us: who sent it
            _el(r, 6).ljust(15)[:15],
            at.strftime("%y%m%d"),
            hhmm,
            "",  # ISA11: set by _serialise_x12 from the partner's delimiters
            isa_version,
            f"{control:09d}",
            "0",
            _el(r, 15) or "P",
            "",  # ISA16: the component separator, likewise
        ],
        ["GS", "FA", g["receiver"], g["sender"], gs_date, hhmm, str(control), "X", version],
        *st,
        ["GE", "1", str(control)],
        ["IEA", "1", f"{control:09d}"],
    ]
    return segments, status


def _serialise_x12(profile: dict, isa: dict, segments: list[list[str]]) -> bytes:
    """Write the 997 the way this partner writes its files (delimiters, line ends, 80-column
    wrapping, BOM: its profile in the world, else the delimiters of what it received)."""
    from orderflow_sandbox.generator.x12 import serialise

    used = {profile["element_sep"], profile["segment_term"], profile["component_sep"]}
    first = [list(s) for s in segments]
    if _el(isa["segment"], 12) >= "00402":
        choices = [profile.get("repetition_sep"), _el(isa["segment"], 11), *"^{!|}"]
        rep = next(c for c in choices if c and len(c) == 1 and not c.isalnum() and c not in used)
    else:
        rep = "U"
    first[0][11] = rep
    first[0][16] = profile["component_sep"]
    return serialise(profile, [first])
