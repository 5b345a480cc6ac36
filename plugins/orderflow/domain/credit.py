"""Credit: may we extend this much credit to this customer now?

Exposure = open AR + open orders (accepted, not yet invoiced) + this order, against the
credit limit times the tier's multiplier. An account on hold, prepaid terms, or the credit
service's own "decline" hold the order ``credit_hold``; exposure over the limit (or the
service's "refer") holds it ``credit_limit``. Orders of one customer are decided in priority
order and each approved one adds to the exposure the next one sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from orderflow.domain.reference import Customer, Hold, OrderView
from orderflow.rules import CreditRules


@dataclass(frozen=True, slots=True)
class CreditAccount:
    customer_id: str
    credit_limit: Decimal
    open_ar: Decimal
    on_hold: bool
    hold_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CreditDecision:
    order_id: str
    approved: bool
    amount: Decimal
    exposure_after: Decimal
    limit: Decimal
    hold: Hold | None = None


def with_live_exposure(
    accounts: dict[str, CreditAccount], live: dict[str, dict]
) -> dict[str, CreditAccount]:
    """The synced accounts with the ERP's current limit, open AR and hold where the ERP
    answered (an invoice posted minutes ago is in its open AR, not yet in our copy)."""
    out = dict(accounts)
    for cid, row in live.items():
        out[cid] = CreditAccount(
            customer_id=cid,
            credit_limit=Decimal(str(row["credit_limit"])),
            open_ar=Decimal(str(row["open_ar"])),
            on_hold=bool(row["on_hold"]),
            hold_reason=row.get("hold_reason"),
        )
    return out


def decide(
    orders: Sequence[OrderView],
    customers: dict[str, Customer],
    accounts: dict[str, CreditAccount],
    open_orders: dict[str, Decimal],
    service: dict[str, dict],
    rules: CreditRules,
) -> list[CreditDecision]:
    """Decide every order of a partition.

    ``open_orders``: per customer, the value of its open orders already accepted (from the
    store). ``service``: per customer, the credit service's answer for the partition's total
    (``{"decision": "approve" | "refer" | "decline", "reason": ...}``), empty when not asked.
    """
    exposure = dict(open_orders)
    out = []
    for order in orders:
        cid = order.customer_id or ""
        amount = order.amount()
        acct = accounts.get(cid)
        cust = customers.get(cid)
        if acct is None:
            out.append(
                CreditDecision(
                    order.order_id,
                    False,
                    amount,
                    amount,
                    Decimal("0"),
                    Hold(
                        "credit_hold",
                        f"customer {cid} has no credit account; set one up in the ERP "
                        "(or approve a credit exception)",
                    ),
                )
            )
            continue
        mult = rules.tier_limit_multiplier.get(cust.tier if cust else "standard", Decimal("1"))
        limit = acct.credit_limit * mult
        after = acct.open_ar + exposure.get(cid, Decimal("0")) + amount
        answer = service.get(cid) or {}
        hold = None
        terms = order.payment_terms or (cust.payment_terms if cust else None)
        if acct.on_hold or answer.get("decision") == "decline":
            why = acct.hold_reason or answer.get("reason") or "account on hold"
            hold = Hold(
                "credit_hold",
                f"customer {cid} is on credit hold ({why}); credit control must lift the hold "
                "or approve a credit exception",
                details={"hold_reason": why, "service": answer.get("decision")},
            )
        elif terms and terms.upper() in rules.prepaid_terms:
            hold = Hold(
                "credit_hold",
                f"customer {cid} buys on prepaid terms ({terms}); release after payment",
                details={"terms": terms},
            )
        elif after > limit:
            hold = Hold(
                "credit_limit",
                f"exposure would be {after:.2f} against a limit of {limit:.2f} (open AR "
                f"{acct.open_ar:.2f} + open orders {exposure.get(cid, Decimal('0')):.2f} + this "
                f"order {amount:.2f}); approve a credit exception or wait for payment",
                details={
                    "exposure_after": str(after),
                    "limit": str(limit),
                    "open_ar": str(acct.open_ar),
                    "order_amount": str(amount),
                },
            )
        elif answer.get("decision") == "refer":
            # The service sees exposure we do not (e.g. orders entered directly in the ERP).
            hold = Hold(
                "credit_limit",
                f"credit service referred customer {cid}: {answer.get('reason')}; review",
                details={"service": answer},
            )
        if hold is not None and hold.category in order.approvals:
            hold = None  # a person with the credit role approved a credit exception
        if hold is None:
            exposure[cid] = exposure.get(cid, Decimal("0")) + amount
        out.append(CreditDecision(order.order_id, hold is None, amount, after, limit, hold))
    return out
