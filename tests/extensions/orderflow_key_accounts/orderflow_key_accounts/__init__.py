"""Key-account policy: an example rule type that lives outside OrderFlow's core package.

It is declared in this package's pyproject (entry-point group ``orderflow.rule_types``), and
OrderFlow's registry (``orderflow.rules.registry``) finds it there: its versions are read
from ``include/rules/key_accounts/<version>.yaml`` and validated against
:class:`KeyAccountRules`, and the validation stage calls :func:`check` and :func:`explain`
for every order with the version in force. Key accounts are the customers whose tier the
rules name:

- a line that would take a key account's open quantity of a capped item over the cap is
  held ``allocation_cap_exceeded`` (the category this type brings along);
- a ``pricing_mismatch`` of a key account within ``price_tolerance_pct`` of the reference
  price is explained away, and the line is charged the customer's price; beyond it, the
  hold is replaced by a ``key_account_price`` hold (the key-account team decides, not
  pricing).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field

from orderflow.domain.reference import Explanation, Hold, OrderView, ReferenceData
from orderflow.rules import ExceptionCategory, RuleSet, RuleType

CAP_EXCEEDED = "allocation_cap_exceeded"
KEY_ACCOUNT_PRICE = "key_account_price"

#: order statuses whose quantities count as "on open orders" (validated, not yet released)
OPEN_STATUSES = ("VALIDATED", "CREDIT_OK", "ALLOCATED", "READY")


class KeyAccountRules(RuleSet):
    name: ClassVar[str] = "key_accounts"
    #: customer tiers that are key accounts
    tiers: frozenset[str]
    #: item → the most a key account may have on open orders, this order's line included
    max_open_quantity: dict[str, Decimal] = Field(default_factory=dict)
    #: a key account's price within this share of the reference price is accepted
    price_tolerance_pct: Decimal = Field(Decimal("0"), ge=0, le=50)


def load_context(
    conn: Any, orders: Sequence[OrderView], rules: KeyAccountRules
) -> dict[tuple[str, str], Decimal]:
    """(customer, item) → quantity on the customer's other open orders, for the capped items:
    data the master-data reference does not carry, read from the store before the check."""
    customers = sorted({o.customer_id for o in orders if o.customer_id})
    if not customers or not rules.max_open_quantity:
        return {}
    rows = conn.execute(
        """
        SELECT o.customer_id, l.item_id, sum(l.quantity)
          FROM orderflow."order" o JOIN orderflow.order_line l USING (order_id)
         WHERE o.customer_id = ANY(%s) AND o.status = ANY(%s) AND l.item_id = ANY(%s)
           AND NOT o.order_id = ANY(%s)
         GROUP BY 1, 2
        """,
        (
            customers,
            list(OPEN_STATUSES),
            list(rules.max_open_quantity),
            [o.order_id for o in orders],
        ),
    ).fetchall()
    return {(c, i): q for c, i, q in rows}


def _key_account(order: OrderView, ref: ReferenceData, rules: KeyAccountRules) -> bool:
    customer = ref.customers.get(order.customer_id or "")
    return customer is not None and customer.tier in rules.tiers


def check(
    order: OrderView,
    ref: ReferenceData,
    rules: KeyAccountRules,
    context: dict[tuple[str, str], Decimal] | None,
) -> list[Hold]:
    if not _key_account(order, ref, rules):
        return []
    holds = []
    for ln in order.lines:
        cap = rules.max_open_quantity.get(ln.item_id or "")
        if cap is None:
            continue
        already = (context or {}).get((order.customer_id or "", ln.item_id or ""), Decimal("0"))
        if already + ln.quantity > cap:
            holds.append(
                Hold(
                    CAP_EXCEEDED,
                    f"line {ln.line_no}: {ln.quantity} {ln.uom} of {ln.item_id} with {already} "
                    f"already on open orders is over the key-account cap of {cap}; reduce the "
                    "line or approve it",
                    line_no=ln.line_no,
                    details={
                        "item_id": ln.item_id,
                        "quantity": str(ln.quantity),
                        "open_quantity": str(already),
                        "cap": str(cap),
                    },
                )
            )
    return holds


def explain(
    hold: Hold, order: OrderView, ref: ReferenceData, rules: KeyAccountRules, context: Any
) -> Explanation | None:
    if not _key_account(order, ref, rules):
        return None
    price = Decimal(hold.details["order_price"])
    reference = Decimal(hold.details["reference_price"])
    if reference <= 0:
        return None
    if abs(price - reference) / reference * 100 <= rules.price_tolerance_pct:
        return Explanation(
            f"key account: price {price} is within {rules.price_tolerance_pct}% of {reference}",
            charge_price=price,
        )
    return Explanation(
        f"key account: price {price} is beyond its {rules.price_tolerance_pct}% tolerance",
        instead=Hold(
            KEY_ACCOUNT_PRICE,
            f"line {hold.line_no}: key account price {price} differs from {reference} by more "
            f"than {rules.price_tolerance_pct}%; the key-account team agrees it with the "
            "customer",
            line_no=hold.line_no,
            details=dict(hold.details),
        ),
    )


RULE_TYPE = RuleType(
    KeyAccountRules,
    check=check,
    explain=explain,
    explains=frozenset({"pricing_mismatch"}),
    load_context=load_context,
    categories=(
        ExceptionCategory(
            CAP_EXCEEDED,
            "Key account over its cap of a scarce item on open orders",
            default_owner_role="sales_ops",
            default_sla_minutes=120,
        ),
        ExceptionCategory(
            KEY_ACCOUNT_PRICE,
            "Key account price beyond its tolerance",
            default_owner_role="sales_ops",
        ),
    ),
    description="Key accounts: caps on scarce items, wider price tolerance",
)
