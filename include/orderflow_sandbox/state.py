"""The stateful model of one industrial distributor's systems, as the sandbox serves them.

Loaded from a generated day (``world.json``, ``orders.jsonl``, ``deliveries.jsonl``), then
changed only through the API: reservations deplete availability under one lock (never
negative), releases are idempotent per key and schedule WMS milestones that materialise as
the simulated clock passes them, shipments get carrier tracking, invoices post to AR.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orderflow_sandbox.faults import SimClock

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


class Conflict(Exception):
    """A request that contradicts state (e.g. not enough stock); maps to HTTP 409."""


class Invalid(Exception):
    """A malformed or inconsistent request; maps to HTTP 422."""


class NotFound(Exception):
    pass


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class IdempotencyStore:
    """First answer wins: a repeated key returns it; the same key with another body is refused."""

    answers: dict[str, tuple[str, dict]] = field(default_factory=dict)

    def replay(self, key: str, body: Any) -> dict | None:
        if key not in self.answers:
            return None
        digest, answer = self.answers[key]
        if digest != body_hash(body):
            raise Invalid(f"Idempotency-Key {key!r} was already used with a different request body")
        return answer

    def remember(self, key: str, body: Any, answer: dict) -> dict:
        self.answers[key] = (body_hash(body), answer)
        return answer


@dataclass(order=True)
class _Scheduled:
    at: datetime
    seq: int
    kind: str = field(compare=False)  # "wms" | "carrier"
    event: dict = field(compare=False)


class Distributor:
    """All stand-in systems over one lock (the sandbox is one process, like a test double
    of the whole estate; the lock makes concurrent reservations exact)."""

    def __init__(self, day_dir: Path, drop_dir: Path, clock: SimClock, seed: int = 7):
        self.day_dir = day_dir
        self.drop_dir = drop_dir
        self.clock = clock
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self._seq = itertools.count(1)
        world = json.loads((day_dir / "world.json").read_text())
        self.world_meta = {k: world[k] for k in ("seed", "business_date", "days") if k in world}
        self.dcs = {d["dc_id"]: d for d in world["dcs"]}
        self.partners = {p["partner_id"]: p for p in world.get("partners", [])}
        self.restricted = world.get("restricted_parties", [])
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
        self.reservations: dict[str, dict] = {}
        self.releases: dict[str, dict] = {}
        self.release_keys = IdempotencyStore()
        self.erp_orders: dict[str, dict] = {}
        self.erp_order_keys = IdempotencyStore()
        self.invoices: dict[str, dict] = {}
        self.invoice_keys = IdempotencyStore()
        self.shipments: dict[str, dict] = {}
        self.shipment_keys = IdempotencyStore()
        self.outbound_edi: list[dict] = []
        self.outbound_keys = IdempotencyStore()
        self._schedule: list[_Scheduled] = []
        self.milestones: list[dict] = []  # materialised WMS events, seq-ordered
        self.tracking: list[dict] = []  # materialised carrier events
        self.portal_orders = [
            o for o in self._read_jsonl(day_dir / "orders.jsonl") if o["channel"] == "portal"
        ]
        self.deliveries = self._read_jsonl(day_dir / "deliveries.jsonl")
        self._delivered_log = drop_dir / ".delivered"
        self._delivered = (
            set(self._delivered_log.read_text().split()) if self._delivered_log.exists() else set()
        )

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
        with self.lock:
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

    def create_erp_order(self, key: str, body: dict) -> tuple[dict, bool]:
        with self.lock:
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
            return self.erp_order_keys.remember(key, body, order), False

    def post_invoice(self, key: str, body: dict) -> tuple[dict, bool]:
        with self.lock:
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
            account["open_ar"] = round(account["open_ar"] + total, 2)
            for so in self.erp_orders.values():
                if so["order_id"] == body["order_id"]:
                    so["status"] = "invoiced"
            return self.invoice_keys.remember(key, body, invoice), False

    # ------------------------------------------------------------------ WMS
    def availability(
        self, item_ids: list[str] | None, dc_id: str | None, changed_since: str | None = None
    ) -> list[dict]:
        with self.lock:
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
        with self.lock:
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
            return dict(res)

    def cancel_reservation(self, rid: str) -> dict:
        with self.lock:
            res = self.reservations.get(rid)
            if res is None:
                raise NotFound(f"reservation {rid}")
            if res["status"] == "held":
                pos = self.inventory[(res["item_id"], res["dc_id"])]
                pos["reserved"] -= res["quantity"]
                pos["updated_at"] = _iso(self.now())
                res["status"] = "cancelled"
            return dict(res)

    def release(self, key: str, body: dict) -> tuple[dict, bool]:
        """Release an order to the floor. A repeated key returns the first answer, never a
        second pick. Lines are taken from the named reservations or, without, from stock."""
        with self.lock:
            if (prior := self.release_keys.replay(key, body)) is not None:
                return prior, True
            dc_id = body["dc_id"]
            if dc_id not in self.dcs:
                raise Invalid(f"unknown DC {dc_id}")
            lines = []
            for ln in body["lines"]:
                rid = ln.get("reservation_id")
                if rid:
                    res = self.reservations.get(rid)
                    if res is None or res["status"] != "held":
                        raise Conflict(f"reservation {rid} is not held")
                    res["status"] = "released"
                else:
                    pos = self.inventory.get((ln["item_id"], dc_id))
                    if pos is None or pos["on_hand"] - pos["reserved"] < ln["quantity"]:
                        raise Conflict(f"not enough {ln['item_id']} at {dc_id} to release")
                    pos["reserved"] += ln["quantity"]
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
            self.releases[release_id] = release
            self._plan_milestones(release, now)
            return self.release_keys.remember(key, body, dict(release)), False

    def _plan_milestones(self, release: dict, now: datetime) -> None:
        """Released → picked → packed → shipped, with realistic delays and some short picks."""
        rnd = random.Random(f"{self.world_meta.get('seed')}:{release['release_id']}")
        base = {
            "release_id": release["release_id"],
            "order_id": release["order_id"],
            "dc_id": release["dc_id"],
        }
        self._push(now, "wms", {**base, "milestone": "released"})
        picked = now + timedelta(minutes=rnd.uniform(20, 120))
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
        tracking = f"1Z{rnd.randrange(10**15):015d}"
        self._push(
            shipped,
            "wms",
            {**base, "milestone": "shipped", "lines": picks, "tracking_number": tracking},
        )

    def _push(self, at: datetime, kind: str, event: dict) -> None:
        heapq.heappush(self._schedule, _Scheduled(at, next(self._seq), kind, event))

    def _materialise(self) -> None:
        """Move scheduled events whose time has come into the feeds (and react to them)."""
        now = self.now()
        while self._schedule and self._schedule[0].at <= now:
            item = heapq.heappop(self._schedule)
            event = {**item.event, "occurred_at": _iso(item.at)}
            if item.kind == "wms":
                event["seq"] = len(self.milestones) + 1
                self.milestones.append(event)
                self._apply_wms(event, item.at)
            else:
                event["seq"] = len(self.tracking) + 1
                self.tracking.append(event)

    def _apply_wms(self, event: dict, at: datetime) -> None:
        release = self.releases[event["release_id"]]
        release["status"] = event["milestone"]
        if event["milestone"] != "shipped":
            return
        for p in event["lines"]:
            pos = self.inventory[(p["item_id"], release["dc_id"])]
            pos["reserved"] = max(0.0, pos["reserved"] - p["ordered"])
            pos["on_hand"] = max(0.0, pos["on_hand"] - p["picked"])
            pos["updated_at"] = _iso(at)
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
        with self.lock:
            self._materialise()
            events = self.milestones if which == "wms" else self.tracking
            page = events[after : after + limit]
            return {
                "items": [dict(e) for e in page],
                "next_cursor": after + len(page),
                "as_of": _iso(self.now()),
            }

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
        with self.lock:
            if (prior := self.shipment_keys.replay(key, body)) is not None:
                return prior, True
            n = len(self.shipments) + 1
            shipment = {
                "shipment_id": f"SH{n:07d}",
                "tracking_number": f"TRK{n:010d}",
                "carrier_id": body["carrier_id"],
                "service_code": body["service_code"],
                "order_id": body["order_id"],
                "booked_at": _iso(self.now()),
            }
            self.shipments[shipment["shipment_id"]] = shipment
            return self.shipment_keys.remember(key, body, shipment), False

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
        tokens = {t for t in name.casefold().replace(",", " ").split() if len(t) > 2}
        hits = []
        for party in self.restricted:
            ptoks = {t for t in party["name"].casefold().replace(",", " ").split() if len(t) > 2}
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

    # ------------------------------------------------------------------ portal
    def portal_page(self, after: int, limit: int) -> dict:
        now = self.now()
        visible = [o for o in self.portal_orders if _parse(o["arrival_at"]) <= now]
        page = visible[after : after + limit]
        items = [
            {
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
            it["order"]["lines"] = [
                {k: v for k, v in ln.items() if k != "item_id"} for ln in it["order"]["lines"]
            ]
        return {
            "items": items,
            "next_cursor": after + len(page),
            "has_more": after + len(page) < len(visible),
            "as_of": _iso(now),
        }

    # ------------------------------------------------------------------ EDI + mailbox deliveries
    def receive_edi(
        self, key: str, partner_id: str, document_type: str, body: str
    ) -> tuple[dict, bool]:
        payload = {"partner_id": partner_id, "document_type": document_type, "body": body}
        with self.lock:
            if (prior := self.outbound_keys.replay(key, payload)) is not None:
                return prior, True
            receipt = {
                "receipt_id": f"RCV{len(self.outbound_edi) + 1:07d}",
                "partner_id": partner_id,
                "document_type": document_type,
                "bytes": len(body.encode()),
                "received_at": _iso(self.now()),
            }
            self.outbound_edi.append({**receipt, "body": body})
            return self.outbound_keys.remember(key, payload, receipt), False

    def deliver_due(self, duplicate: bool = False) -> int:
        """Copy artefacts whose time has come into the drop folders (atomically, once)."""
        now = self.now()
        n = 0
        with self.lock:
            for d in self.deliveries:
                if _parse(d["at"]) > now:
                    break
                if d["path"] in self._delivered:
                    continue
                target = self._target(d)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name("." + target.name + ".part")
                shutil.copyfile(self.day_dir / d["path"], tmp)
                os.replace(tmp, target)
                if duplicate:  # a partner re-sends the same file under another name
                    dup = target.with_name(target.stem + ".resend" + target.suffix)
                    shutil.copyfile(target, dup)
                self._delivered.add(d["path"])
                with self._delivered_log.open("a") as f:
                    f.write(d["path"] + "\n")
                n += 1
        return n

    def _target(self, d: dict) -> Path:
        name = Path(d["path"]).name
        if d["channel"] == "edi":
            return self.drop_dir / "edi" / "inbound" / (d.get("partner_id") or "unknown") / name
        if d["channel"] == "email":
            return self.drop_dir / "mailbox" / "new" / name
        return self.drop_dir / "csv" / "inbound" / name

    def summary(self) -> dict:
        with self.lock:
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
                "pending_events": len(self._schedule),
            }
