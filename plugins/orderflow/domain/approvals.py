"""What a person may decide on an exception, and where an approved order resumes."""

from __future__ import annotations

APPROVE, REJECT, KEEP = "Approve", "Reject order", "Keep on hold"
OPTIONS = [APPROVE, REJECT, KEEP]

#: Categories a person may approve, and the status the order resumes from: the stage after
#: the one that raised it (later stages honour the approval stored on the order).
APPROVABLE: dict[str, str] = {
    "pricing_mismatch": "VALIDATED",  # price override: the customer's price is charged
    "expired_contract": "VALIDATED",
    "duplicate_suspect": "VALIDATED",
    "possible_duplicate": "VALIDATED",  # a person found it is an order of its own
    "minimum_not_met": "VALIDATED",
    "low_confidence_extraction": "RECEIVED",  # extraction checked: validate it normally
    "credit_limit": "CREDIT_OK",  # credit exception
    "credit_hold": "CREDIT_OK",
    "substitution_needed": "CREDIT_OK",  # customer consented: allocation substitutes
    "compliance_review": "ALLOCATED",  # cleared: planning ignores the screening hit
}

#: Categories raised after release, approved without moving the order: a quantity mismatch
#: approved means billing confirmed the shipped quantities, and the withheld invoice goes.
POST_RELEASE: frozenset[str] = frozenset({"quantity_mismatch"})
