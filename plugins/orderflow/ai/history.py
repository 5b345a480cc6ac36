"""Labelled examples from generated history (``orderflow_sandbox.generator.history``).

The generated orders go through the real validation (``orderflow.domain.validation``) against
the generated master data, oldest first; each order's features are computed from what was
known before it (:class:`orderflow.ai.features.Context`, grown one order at a time), and only
then is the hidden label looked up. What a model sees is what the store would have seen.

Used by ``orderflow ai evaluate`` (train on the earlier months, score the later ones) and by
``import_examples`` (a generated history as ``orderflow.ai_example`` rows, so a fresh store can
train before its desk has labelled anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from orderflow.ai import features as fx


@dataclass
class Example:
    model: str
    subject: str  # order id, or order id:line
    at: datetime
    features: dict[str, float]
    label: str
    #: the order's line values (anomaly policy), not a feature
    extra: dict[str, Any] | None = None


def _reference(hist) -> Any:
    from orderflow.domain.reference import Contract, Customer, Item, ReferenceData, ShipTo

    w = hist.world
    ref = ReferenceData()
    for c in w.customers:
        ref.customers[c["customer_id"]] = Customer(
            c["customer_id"], c["name"], c["tier"], c["payment_terms"], bool(c["active"])
        )
    for s in hist.ship_tos():
        ref.ship_tos[s["ship_to_id"]] = ShipTo(
            s["ship_to_id"], s["customer_id"], s.get("name"), s.get("address_line1"),
            s.get("city"), s.get("region"), s.get("postal_code"), s.get("country"), s.get("zone"),
        )  # fmt: skip
    for it in w.items:
        ref.items[it["item_id"]] = Item(
            it["item_id"], it["uom"], Decimal(str(it["list_price"])), upc=it.get("upc"),
            vendor_part=it.get("vendor_part"),
        )  # fmt: skip
    for (c, i), cpn in w.xrefs.items():
        ref.xref[(w.customers[c]["customer_id"], cpn)] = w.items[i]["item_id"]
    for k in w.contracts:
        ref.contracts.setdefault((k["customer_id"], k["item_id"]), []).append(
            Contract(
                k["contract_id"],
                k["customer_id"],
                k["item_id"],
                Decimal(str(k["unit_price"])),
                k["uom"],
                date.fromisoformat(k["effective_from"]),
                date.fromisoformat(k["expires_on"]) if k["expires_on"] else None,
                None if k["tolerance_pct"] is None else Decimal(str(k["tolerance_pct"])),
            )
        )
    return ref


def _order_view(row: dict[str, Any]):
    from orderflow.domain.reference import LineView, OrderView

    return OrderView(
        order_id=row["order_id"],
        status="RECEIVED",
        channel=row["channel"],
        customer_id=row["customer_id"],
        ship_to_id=row["ship_to_id"],
        po_number=row["po_number"],
        po_date=row["po_date"],
        received_at=row["received_at"],
        requested_ship_date=None,
        requested_delivery_date=None,
        currency="USD",
        lines=tuple(
            LineView(
                line_no=ln["line_no"],
                quantity=Decimal(str(ln["quantity"])),
                uom=ln["uom"],
                unit_price=None if ln["unit_price"] is None else Decimal(str(ln["unit_price"])),
                item_id=ln["item_id"],
                customer_part_number=ln["customer_part_number"],
            )
            for ln in row["lines"]
        ),
        ship_to_address=row["ship_to_address"],
    )


def examples(hist, book) -> list[Example]:
    """Every labelled example of ``hist`` for both models, oldest first."""
    from orderflow.domain.validation import validate

    ref = _reference(hist)
    w = hist.world
    ctx = fx.Context()
    ctx.pack_size = {it["item_id"]: int(it.get("pack_size") or 1) for it in w.items}
    for (c, _i), cpn in w.xrefs.items():
        ctx.parts[w.customers[c]["customer_id"]].append(cpn)
    # ship-tos are on file from the world's start, or from the day the generator added them
    for s in w.ship_tos:
        ctx.ship_tos[s["customer_id"]].append(
            (s["ship_to_id"], fx._address_text(s), s.get("region"), None)
        )
    extra = sorted(hist.extra_ship_tos, key=lambda s: s["updated_at"])
    valid_uoms = book.validation.valid_uoms
    min_history = book.ai.anomaly.min_history_orders
    out: list[Example] = []
    for row in hist.orders:
        at = row["received_at"]
        while extra and date.fromisoformat(extra[0]["updated_at"][:10]) <= at.date():
            s = extra.pop(0)
            ctx.ship_tos[s["customer_id"]].append(
                (
                    s["ship_to_id"],
                    fx._address_text(s),
                    s.get("region"),
                    date.fromisoformat(s["updated_at"][:10]),
                )
            )
        [result] = validate([_order_view(row)], ref, book.validation, book.pricing)
        order = result.order
        oid = order.order_id
        for h in result.holds:
            if h.category not in fx.CAUSE_CATEGORIES:
                continue
            label = hist.causes.get((oid, h.line_no or 0))
            if label is None:
                continue  # a hold the history did not cause on purpose (the world's defects)
            f = fx.cause_features(h, order, ref, ctx, valid_uoms)
            out.append(Example("exception_cause", f"{oid}:{h.line_no or 0}", at, f, label))
        if ctx.n_orders.get(order.customer_id or "", 0) >= min_history and not any(
            (oid, k) in hist.causes for k in [0, *(ln.line_no for ln in order.lines)]
        ):
            f = fx.anomaly_features(order, ref, ctx)
            out.append(
                Example(
                    "arrival_anomaly",
                    oid,
                    at,
                    f,
                    hist.anomalies.get(oid, "none"),
                    {"line_values": fx.line_values(order)},
                )
            )
        st = ref.ship_tos.get(order.ship_to_id or "")
        if result.ok or oid in hist.anomalies:
            # what the desk let through becomes history; a held order is corrected first
            if oid not in hist.anomalies:
                ctx.add(order, st.region if st else None)
        elif any(h.category in ("pricing_mismatch", "expired_contract") for h in result.holds):
            _remember_price_offs(ctx, order, result.holds)
    return out


def _remember_price_offs(ctx: fx.Context, order, holds) -> None:
    """A price hold's ratio is history too (what the customer sent, resolved or not)."""
    for h in holds:
        d = h.details
        if d.get("order_price") in (None, "None") or not d.get("reference_price"):
            continue
        paid, refp = float(d["order_price"]), float(d["reference_price"])
        if paid > 0 and refp > 0:
            ctx.off_ratios[order.customer_id or ""].append(paid / refp)
