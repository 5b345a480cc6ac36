"""Validation: is this order something we can fulfil as sent?

Per order: customer and ship-to, item mapping (customer part number → item), master-data
quality of everything it depends on, unit of measure, contract price vs the order's price
(an expired contract and a price mismatch are distinct reasons), minimums and duplicate
suspicion. Every problem found becomes a :class:`Hold`; an order with none is VALIDATED with
its lines mapped to items and priced from the contract.

Rule types (``orderflow.rules.registry``) take part through :class:`RuleCheck`: the core's
with hooks first (the CRM's quotes and agreements: ``domain.crm_pricing``), then those from
outside the core. After the order's own checks, each may explain a hold of a category it
declares (waive it, charge another price, or replace it with a more precise one — which the
rule types after it are asked about in turn), and add holds of its own. A check that raises
holds that order ``rule_error``; the other orders of the partition go on.

Duplicates: an order with the PO number of another live order of the customer, or the same
lines to the same ship-to within the window, is held ``duplicate_suspect``. When neither
matches, a learned matcher (:class:`NearDuplicates`: ``orderflow.ai.duplicates``), if the
stage has one and the validation rules enable it, scores the order against the customer's
other orders of the rules' window; a best match at or above the threshold holds it
``possible_duplicate`` naming the matched order, the score and the evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Protocol

from orderflow.domain.reference import (
    Contract,
    Explanation,
    Hold,
    LineView,
    OrderView,
    PriorOrder,
    ReferenceData,
)
from orderflow.rules import PricingRules, ValidationRules

# Which product-id qualifiers name what (X12 235/234 codes as the channels pass them on).
CUSTOMER_PART = ("BP", "IN", "CB")
OUR_ITEM = ("SK", "IT", "SKU")
VENDOR_PART = ("VP", "VN", "VA", "MG")
UPC = ("UP", "UK", "UA")
EAN = ("EN", "EO")

#: the hold category of an order a rule type's check failed on (its own bug or bad data)
RULE_ERROR = "rule_error"


class RuleCheck(Protocol):
    """One rule type's checks bound to the rule-set version in force (and the context its
    glue loaded): what ``orderflow.rules.registry.checks`` hands to :func:`validate`."""

    #: ``<rule set>@<version>#<hash>``: recorded with what it explained or held
    pinned: str
    #: hold categories :meth:`explain` is asked about
    explains: frozenset[str]

    def holds(self, order: OrderView, ref: ReferenceData) -> Iterable[Hold]: ...

    def explain(self, hold: Hold, order: OrderView, ref: ReferenceData) -> Explanation | None: ...


class NearDuplicates(Protocol):
    """A trained near-duplicate model bound for the stage (``orderflow.ai.duplicates.Matcher``)."""

    #: ``<model>@<version>``: recorded with each hold it raises
    pinned: str
    #: the score calibrated at training (used when the rules set no ``min_score``)
    threshold: float

    def best(
        self, order: OrderView, candidates: Sequence[PriorOrder]
    ) -> tuple[str, float, dict] | None:
        """The candidate ``order`` most likely re-submits: (order id, score, evidence)."""
        ...


@dataclass(slots=True)
class Validated:
    order: OrderView  # with item ids and contract prices filled in
    holds: list[Hold] = field(default_factory=list)
    #: holds a rule type explained away: category, line, by (pinned version), reason, price
    explained: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.holds


def validate(
    orders: Sequence[OrderView],
    ref: ReferenceData,
    rules: ValidationRules,
    pricing: PricingRules,
    checks: Sequence[RuleCheck] = (),
    near: NearDuplicates | None = None,
) -> list[Validated]:
    """Validate a partition of orders against the master data in ``ref``; ``checks``: the
    rule types with hooks, in order (``registry.checks(book, contexts, core=True)``: see
    :class:`RuleCheck`); ``near``: the near-duplicate matcher, when the ``ai`` rule set
    enables ``near_duplicate`` and a version is active (``orderflow.ai.inference``)."""
    # Other live orders per customer (the store's, then this partition's as they validate).
    by_customer: dict[str | None, list[PriorOrder]] = {}
    for prior in ref.prior_orders:
        by_customer.setdefault(prior.customer_id, []).append(prior)
    out = []
    for order in orders:
        result = _validate_one(order, ref, rules, pricing, checks)
        candidates = by_customer.setdefault(result.order.customer_id, [])
        result.holds.extend(_duplicate_holds(result.order, candidates, rules, near))
        candidates.append(_prior(result.order))
        out.append(result)
    return out


def _validate_one(
    order: OrderView,
    ref: ReferenceData,
    rules: ValidationRules,
    pricing: PricingRules,
    checks: Sequence[RuleCheck] = (),
) -> Validated:
    holds: list[Hold] = []
    cust = ref.customers.get(order.customer_id or "")
    if cust is None or not cust.active:
        what = "is not active" if cust else "is not on file"
        holds.append(
            Hold(
                "unknown_customer",
                f"customer {order.customer_id or '(none given)'} {what}; map the sender to a "
                "customer (trading partner, e-mail or account number) and revalidate",
                details={"customer_id": order.customer_id, "partner_id": order.partner_id},
            )
        )
        return Validated(order, holds)
    if (reason := ref.dq_failures.get(("customer", cust.customer_id))) is not None:
        holds.append(_mdq("customer", cust.customer_id, reason))

    holds.extend(_ship_to_holds(order, ref))

    lines: list[LineView] = []
    for ln in order.lines:
        line, line_holds = _validate_line(order, ln, ref, rules, pricing)
        lines.append(line)
        holds.extend(line_holds)
    order = replace(order, lines=tuple(lines))
    explained: list[dict] = []
    if checks:
        order, holds, explained = _rule_checks(order, holds, ref, checks)

    if not holds:
        value = order.amount()
        if value < rules.minimum_order_value:
            holds.append(
                Hold(
                    "minimum_not_met",
                    f"order value {value} {order.currency} is below the minimum "
                    f"{rules.minimum_order_value}; confirm with the customer or cancel",
                    details={"amount": str(value)},
                )
            )
    return Validated(order, holds, explained)


def _rule_checks(
    order: OrderView, holds: list[Hold], ref: ReferenceData, checks: Sequence[RuleCheck]
) -> tuple[OrderView, list[Hold], list[dict]]:
    """The rule types' turn: explain what they can of ``holds``, then add their own."""
    kept: list[Hold] = []
    explained: list[dict] = []
    for hold in holds:
        current: Hold | None = hold
        for check in checks:
            if current is None:
                break
            if current.category not in check.explains:
                continue
            try:
                answer = check.explain(current, order, ref)
            except Exception as exc:
                kept.append(_rule_error(check, exc))
                continue
            if answer is None:
                continue
            explained.append(
                {
                    "category": current.category,
                    "line_no": current.line_no,
                    "by": check.pinned,
                    "reason": answer.reason,
                    "charge_price": None
                    if answer.charge_price is None
                    else str(answer.charge_price),
                    "instead": None if answer.instead is None else answer.instead.category,
                }
            )
            if current.line_no is not None:
                order = _charge(order, current.line_no, answer)
            # a replacement is a hold like the others: the rule types after this one may
            # explain it in turn
            current = answer.instead
        if current is not None:
            kept.append(current)
    for check in checks:
        try:
            kept.extend(check.holds(order, ref))
        except Exception as exc:
            kept.append(_rule_error(check, exc))
    return order, kept, explained


def _charge(order: OrderView, line_no: int, answer: Explanation) -> OrderView:
    """The line as an explanation prices it: the price to charge, and the document."""
    change: dict = {}
    if answer.charge_price is not None:
        change["contract_price"] = answer.charge_price
    if answer.price_source is not None:
        change.update(price_source=answer.price_source, price_document_id=answer.price_document_id)
    if not change:
        return order
    lines = tuple(replace(ln, **change) if ln.line_no == line_no else ln for ln in order.lines)
    return replace(order, lines=lines)


def _rule_error(check: RuleCheck, exc: Exception) -> Hold:
    return Hold(
        RULE_ERROR,
        f"rule {check.pinned} failed on this order ({type(exc).__name__}: {exc}); fix the rule "
        "type or its rule-set version, then reprocess the order",
        details={"rule": check.pinned, "error": f"{type(exc).__name__}: {exc}"},
    )


def _mdq(entity_type: str, entity_id: str, reason: str, line_no: int | None = None) -> Hold:
    return Hold(
        "master_data_quality",
        f"{entity_type.replace('_', ' ')} {entity_id} failed master-data checks ({reason}); "
        "the order is released automatically once the data is fixed upstream and passes",
        line_no=line_no,
        details={"entity_type": entity_type, "entity_id": entity_id},
    )


def _ship_to_holds(order: OrderView, ref: ReferenceData) -> list[Hold]:
    st = ref.ship_tos.get(order.ship_to_id or "")
    if st is None or st.customer_id != order.customer_id:
        sent = order.ship_to_address
        where = order.ship_to_id or sent.get("name") or "(none given)"
        return [
            Hold(
                "ship_to_incomplete",
                f"ship-to {where} is not on file for customer {order.customer_id}; add it in "
                "the ERP (or correct the order's ship-to code) and revalidate",
                details={"ship_to_id": order.ship_to_id, "as_sent": sent},
            )
        ]
    missing = [
        name
        for name, value in (
            ("address line 1", st.address_line1),
            ("city", st.city),
            ("postal code", st.postal_code),
            ("country", st.country),
        )
        if not (value or "").strip()
    ]
    if missing:
        return [
            Hold(
                "ship_to_incomplete",
                f"ship-to {st.ship_to_id} has no {', '.join(missing)}; complete the address "
                "in the ERP and the order revalidates",
                details={"ship_to_id": st.ship_to_id, "missing": missing},
            )
        ]
    if (reason := ref.dq_failures.get(("ship_to", st.ship_to_id))) is not None:
        return [_mdq("ship_to", st.ship_to_id, reason)]
    return []


def resolve_item(order: OrderView, ln: LineView, ref: ReferenceData) -> tuple[str | None, str]:
    """Our item for a line, and how it was found (or what was tried)."""
    if ln.item_id and ln.item_id in ref.items:
        return ln.item_id, "item id"
    tried = []
    cpns = [ln.customer_part_number] if ln.customer_part_number else []
    cpns += [v for q, v in ln.product_ids if q in CUSTOMER_PART]
    for cpn in dict.fromkeys(c for c in cpns if c):
        item = ref.xref.get((order.customer_id or "", cpn))
        if item:
            return item, f"customer part {cpn}"
        tried.append(f"customer part {cpn}")
    for q, v in ln.product_ids:
        item = None
        if q in OUR_ITEM or q in VENDOR_PART:
            # VN is "vendor's item number" — ours, seen from the customer — and senders mix
            # up VN/VP/SK, so an exact item id or vendor part under any of them is a match.
            item = v if v in ref.items else ref.item_by_vendor_part(v)
        elif q in UPC:
            item = ref.item_by_upc(v)
        elif q in EAN:
            item = ref.item_by_upc(v[1:] if len(v) == 13 and v.startswith("0") else v)
        if item:
            return item, f"{q} {v}"
        if q not in CUSTOMER_PART:
            tried.append(f"{q} {v}")
    if ln.item_id:
        tried.insert(0, f"item {ln.item_id}")
    return None, ", ".join(tried) or "no product id on the line"


def _validate_line(
    order: OrderView,
    ln: LineView,
    ref: ReferenceData,
    rules: ValidationRules,
    pricing: PricingRules,
) -> tuple[LineView, list[Hold]]:
    item_id, how = resolve_item(order, ln, ref)
    if item_id is None:
        return ln, [
            Hold(
                "unknown_item",
                f"line {ln.line_no}: no item matches {how}; add the customer's part number "
                "cross-reference (or correct the line) and revalidate",
                line_no=ln.line_no,
                details={"tried": how},
            )
        ]
    item = ref.items[item_id]
    if (reason := ref.dq_failures.get(("item", item_id))) is not None:
        return replace(ln, item_id=item_id), [_mdq("item", item_id, reason, ln.line_no)]
    for cpn in {ln.customer_part_number, *(v for q, v in ln.product_ids if q in CUSTOMER_PART)}:
        key = f"{order.customer_id}|{cpn}"
        if cpn and (reason := ref.dq_failures.get(("customer_item_xref", key))) is not None:
            return replace(ln, item_id=item_id), [
                _mdq("customer_item_xref", key, reason, ln.line_no)
            ]
    holds: list[Hold] = []
    if ln.uom.upper() not in rules.valid_uoms or ln.uom.upper() != item.uom.upper():
        ln = replace(ln, item_id=item_id)
        holds.append(
            Hold(
                "uom_invalid",
                f"line {ln.line_no}: unit {ln.uom!r} is not how {item_id} is sold ({item.uom}); "
                "correct the unit or quantity and revalidate",
                line_no=ln.line_no,
                details={"uom": ln.uom, "item_uom": item.uom},
            )
        )
        return ln, holds
    if ln.quantity < rules.minimum_line_quantity:
        holds.append(
            Hold(
                "minimum_not_met",
                f"line {ln.line_no}: quantity {ln.quantity} is below the minimum",
                line_no=ln.line_no,
            )
        )
    priced, price_holds = _price(order, ln, item_id, item.list_price, ref, pricing)
    return priced, holds + price_holds


def _price(
    order: OrderView,
    ln: LineView,
    item_id: str,
    list_price: Decimal | None,
    ref: ReferenceData,
    pricing: PricingRules,
) -> tuple[LineView, list[Hold]]:
    """``ln`` mapped to ``item_id`` and priced (one copy of the line: each is a
    ``dataclasses.replace``, the costliest step of validating a line)."""
    day = order.po_date or order.received_at.date()
    contracts = ref.contracts.get((order.customer_id or "", item_id), [])
    live = sorted((c for c in contracts if c.valid_on(day)), key=lambda c: c.effective_from)
    for c in live:
        if (reason := ref.dq_failures.get(("price_contract", c.contract_id))) is not None:
            return replace(ln, item_id=item_id), [
                _mdq("price_contract", c.contract_id, reason, ln.line_no)
            ]
    if live:
        contract = live[-1]  # the most recently effective contract wins
        tol = (
            contract.tolerance_pct
            if contract.tolerance_pct is not None
            else pricing.default_contract_tolerance_pct
        )
        ln = replace(
            ln,
            item_id=item_id,
            contract_id=contract.contract_id,
            contract_price=contract.unit_price,
            price_source="contract",
            price_document_id=contract.contract_id,
        )
        if ln.unit_price is not None and not _within(ln.unit_price, contract.unit_price, tol):
            return ln, [
                Hold(
                    "pricing_mismatch",
                    f"line {ln.line_no}: price {ln.unit_price} differs from contract "
                    f"{contract.contract_id} price {contract.unit_price} by more than {tol}%; "
                    "approve the customer's price, or confirm the contract price with the customer",
                    line_no=ln.line_no,
                    details=_price_details(ln, contract.unit_price, tol, contract),
                )
            ]
        return ln, []
    ln = replace(
        ln,
        item_id=item_id,
        contract_price=list_price,
        price_source="list" if list_price is not None else None,
        price_document_id=None,
    )
    if ln.unit_price is None or list_price is None:
        return ln, []
    tol = pricing.list_price_tolerance_pct
    if _within(ln.unit_price, list_price, tol):
        return ln, []
    expired = [c for c in contracts if c.expires_on is not None and c.expires_on < day]
    if expired:
        last = max(expired, key=lambda c: c.expires_on or day)
        return ln, [
            Hold(
                "expired_contract",
                f"line {ln.line_no}: priced at {ln.unit_price} from contract {last.contract_id}, "
                f"which expired on {last.expires_on}; list price is {list_price}. Renew the "
                "contract or confirm the list price with the customer",
                line_no=ln.line_no,
                details=_price_details(ln, list_price, tol, last),
            )
        ]
    return ln, [
        Hold(
            "pricing_mismatch",
            f"line {ln.line_no}: price {ln.unit_price} differs from list price {list_price} "
            "and the customer has no contract for this item; approve or correct the price",
            line_no=ln.line_no,
            details=_price_details(ln, list_price, tol, None),
        )
    ]


def _within(price: Decimal, reference: Decimal, tol_pct: Decimal) -> bool:
    if reference <= 0:
        return price == reference
    return abs(price - reference) / reference * 100 <= tol_pct


def _price_details(
    ln: LineView, reference: Decimal, tol: Decimal, contract: Contract | None
) -> dict:
    return {
        "order_price": str(ln.unit_price),
        "reference_price": str(reference),
        "tolerance_pct": str(tol),
        "contract_id": contract.contract_id if contract else None,
        "contract_expires_on": str(contract.expires_on)
        if contract and contract.expires_on
        else None,
        "item_id": ln.item_id,
    }


def signature(order: OrderView) -> tuple[tuple[str, str, str], ...]:
    """Lines as (item or part number, quantity, UoM), order-independent."""
    return tuple(
        sorted(
            (
                ln.item_id or ln.customer_part_number or "|".join(v for _, v in ln.product_ids),
                str(ln.quantity.normalize()),
                ln.uom.upper(),
            )
            for ln in order.lines
        )
    )


def _duplicate_holds(
    order: OrderView,
    candidates: list[PriorOrder],
    rules: ValidationRules,
    near: NearDuplicates | None = None,
) -> list[Hold]:
    """``candidates``: other live orders of the same customer. The exact checks first; then,
    if nothing matched, the near-duplicate matcher (:func:`_near_duplicate_holds`)."""
    window = timedelta(hours=rules.duplicate_window_hours)
    sig = signature(order)
    for prior in candidates:
        if prior.order_id == order.order_id or prior.customer_id != order.customer_id:
            continue
        if prior.po_number == order.po_number:
            return [
                Hold(
                    "duplicate_suspect",
                    f"PO {order.po_number} of customer {order.customer_id} is already order "
                    f"{prior.order_id}; cancel this one if it is a re-send, or approve it",
                    details={"duplicate_of": prior.order_id, "match": "po_number"},
                )
            ]
        if (
            len(sig) >= rules.near_identical_min_lines
            and prior.signature == sig
            and prior.ship_to_id == order.ship_to_id
            and abs(prior.received_at - order.received_at) <= window
        ):
            return [
                Hold(
                    "duplicate_suspect",
                    f"order has the same {len(sig)} lines to the same ship-to as order "
                    f"{prior.order_id} (PO {prior.po_number}) within "
                    f"{rules.duplicate_window_hours} h; cancel it if it is a re-send, or approve",
                    details={"duplicate_of": prior.order_id, "match": "identical_lines"},
                )
            ]
    return _near_duplicate_holds(order, candidates, rules, near)


def _near_duplicate_holds(
    order: OrderView,
    candidates: list[PriorOrder],
    rules: ValidationRules,
    near: NearDuplicates | None,
) -> list[Hold]:
    """``possible_duplicate`` when the matcher's best match among the customer's orders of
    the window scores at least the threshold (the rules' ``min_score``, else the model's)."""
    policy = rules.near_duplicates
    if near is None or not order.customer_id:  # no matcher: switched off, or none trained
        return []
    if "possible_duplicate" in order.approvals:
        return []  # a person found it is an order of its own: a revalidation does not ask again
    window = timedelta(hours=policy.window_hours)
    pool = [
        p
        for p in candidates
        if p.order_id != order.order_id
        and p.customer_id == order.customer_id
        and p.lines
        and abs(p.received_at - order.received_at) <= window
    ]
    found = near.best(order, pool) if pool else None
    if found is None:
        return []
    matched, score, evidence = found
    threshold = policy.min_score if policy.min_score is not None else near.threshold
    if score < threshold:
        return []
    prior = next(p for p in pool if p.order_id == matched)
    return [
        Hold(
            "possible_duplicate",
            f"order may re-submit order {matched} (PO {prior.po_number}"
            f"{', ' + prior.channel if prior.channel else ''}): near-duplicate score "
            f"{score:.2f} (threshold {threshold:.2f}, model {near.pinned}); reject it if it is "
            "a duplicate, or approve it as an order of its own",
            details={
                "duplicate_of": matched,
                "match": "model",
                "score": round(float(score), 4),
                "threshold": round(float(threshold), 4),
                "model": near.pinned,
                "input_hash": evidence.get("input_hash"),
                "evidence": evidence,
            },
        )
    ]


def _prior(o: OrderView) -> PriorOrder:
    return PriorOrder(
        o.order_id,
        o.customer_id,
        o.po_number,
        o.ship_to_id,
        o.received_at,
        signature(o),
        o.channel,
        o.lines,
    )
