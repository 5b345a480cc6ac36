"""The CRM pricing rule (rule set ``crm_pricing``): a price difference the customer's CRM
quote or special price agreement explains is no mismatch, and a price from an expired quote
is one with cause ``quote_expired``.

A core rule type with an ``explain`` hook (``orderflow.rules`` registers it like the other
core rule sets; ``orderflow.rules.registry`` binds it to the version in force): the validation
stage asks it about every ``pricing_mismatch`` / ``expired_contract`` hold the core price
check raised, before any rule type from outside the core. Its answer, for the hold's line:

- a quote valid on the PO date at the order's price (within ``quote_tolerance_pct``): the
  hold is waived and the customer's price charged, the line priced from that quote;
- else a special price agreement valid on the PO date within ``agreement_tolerance_pct`` of
  the order's price: waived, the agreed price charged, the line priced from the agreement;
- else a quote at the order's price that expired before the PO date: the hold is replaced by
  a ``pricing_mismatch`` naming the quote (``cause: quote_expired``) for the account team;
- else nothing: the core's hold stands.

Pure: the quotes and agreements come in as :class:`CrmDocuments`, read from the store by
``orderflow.store.crm.load_pricing_context`` (the rule type's ``load_context``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from orderflow.domain.reference import Explanation, Hold, LineView, OrderView, ReferenceData

#: the hold categories the CRM documents may explain (the core's price holds)
EXPLAINS = frozenset({"pricing_mismatch", "expired_contract"})


@dataclass(frozen=True, slots=True)
class Quote:
    """A price quoted to a customer in the CRM, valid from ``quoted_on`` to ``expires_on``."""

    quote_id: str
    customer_id: str
    item_id: str
    quoted_price: Decimal
    quoted_on: date
    expires_on: date
    status: str = "issued"

    def valid_on(self, day: date) -> bool:
        return self.status == "issued" and self.quoted_on <= day <= self.expires_on


@dataclass(frozen=True, slots=True)
class PriceAgreement:
    """A special price agreed with a customer in the CRM, valid between two dates."""

    agreement_id: str
    customer_id: str
    item_id: str
    unit_price: Decimal
    valid_from: date
    valid_to: date | None

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(slots=True)
class CrmDocuments:
    """The CRM's account context of a partition's customers, by (customer, item)."""

    quotes: dict[tuple[str, str], list[Quote]] = field(default_factory=dict)
    agreements: dict[tuple[str, str], list[PriceAgreement]] = field(default_factory=dict)

    def add(self, *docs: Quote | PriceAgreement) -> CrmDocuments:
        for d in docs:
            target = self.quotes if isinstance(d, Quote) else self.agreements
            target.setdefault((d.customer_id, d.item_id), []).append(d)
        return self


def explain(
    hold: Hold, order: OrderView, ref: ReferenceData, rules: Any, docs: CrmDocuments | None
) -> Explanation | None:
    """The CRM's answer about a price hold (see the module doc); ``rules``: the
    ``crm_pricing`` version in force."""
    ln = next((x for x in order.lines if x.line_no == hold.line_no), None)
    if docs is None or ln is None or ln.unit_price is None or not ln.item_id:
        return None
    day = order.po_date or order.received_at.date()
    pair = (order.customer_id or "", ln.item_id)
    quotes = [
        q
        for q in docs.quotes.get(pair, [])
        if q.valid_on(day) and _within(ln.unit_price, q.quoted_price, rules.quote_tolerance_pct)
    ]
    if quotes:
        q = max(quotes, key=lambda q: (q.quoted_on, q.quote_id))
        return Explanation(
            f"line {ln.line_no}: CRM quote {q.quote_id} prices {ln.item_id} at {q.quoted_price}",
            charge_price=ln.unit_price,
            price_source="quote",
            price_document_id=q.quote_id,
        )
    agreements = [
        a
        for a in docs.agreements.get(pair, [])
        if a.valid_on(day) and _within(ln.unit_price, a.unit_price, rules.agreement_tolerance_pct)
    ]
    if agreements:
        a = max(agreements, key=lambda a: (a.valid_from, a.agreement_id))
        return Explanation(
            f"line {ln.line_no}: CRM special price agreement {a.agreement_id} prices "
            f"{ln.item_id} at {a.unit_price}",
            charge_price=a.unit_price,
            price_source="agreement",
            price_document_id=a.agreement_id,
        )
    if (expired := _expired_quote(docs, pair, ln, day, rules)) is not None:
        return Explanation(
            f"line {ln.line_no}: the price is CRM quote {expired.quote_id}'s, which expired on "
            f"{expired.expires_on}",
            instead=_quote_expired(hold, ln, expired),
        )
    return None


def _expired_quote(
    docs: CrmDocuments, pair: tuple[str, str], ln: LineView, day: date, rules: Any
) -> Quote | None:
    """The latest quote at this line's price that expired before the PO date."""
    found = [
        q
        for q in docs.quotes.get(pair, [])
        if q.expires_on < day
        and _within(ln.unit_price or Decimal(0), q.quoted_price, rules.quote_tolerance_pct)
    ]
    return max(found, key=lambda q: (q.expires_on, q.quote_id)) if found else None


def _quote_expired(hold: Hold, ln: LineView, quote: Quote) -> Hold:
    """The core's price hold made precise: the price is an expired quote's. Against a live
    contract it names the contract; otherwise (list price, or a contract that expired) the
    list price."""
    details = dict(hold.details)
    if hold.category != "pricing_mismatch":  # expired_contract: judged against the list price
        details.update(contract_id=None, contract_expires_on=None)
    contract_id = details.get("contract_id")
    what = f"contract {contract_id} price" if contract_id else "list price"
    return Hold(
        "pricing_mismatch",
        f"line {ln.line_no}: price {ln.unit_price} is quote {quote.quote_id}'s, which expired "
        f"on {quote.expires_on}; the {what} is {details.get('reference_price')}. Renew the "
        "quote in the CRM (the account owner approves the price) or confirm the current price "
        "with the customer",
        line_no=ln.line_no,
        details={
            **details,
            "cause": "quote_expired",
            "quote_id": quote.quote_id,
            "quote_expires_on": str(quote.expires_on),
        },
    )


def _within(price: Decimal, reference: Decimal, tol_pct: Decimal) -> bool:
    if reference <= 0:
        return price == reference
    return abs(price - reference) / reference * 100 <= tol_pct
