"""Validation with the CRM's account context (pure): a valid quote or special price agreement
explains a price outside its contract (no hold, and the line names the document), an expired
quote at that price holds ``pricing_mismatch`` with cause ``quote_expired``."""

from datetime import timedelta
from decimal import Decimal

import pytest
from test_processing_domain import BOOK, TODAY, cats, line, order, ref

from orderflow.domain.crm_pricing import CrmDocuments, PriceAgreement, Quote
from orderflow.domain.validation import validate
from orderflow.rules import registry

D = Decimal


def with_docs(*docs):
    """The CRM documents as the ``crm_pricing`` rule type's context (its ``load_context``)."""
    return CrmDocuments().add(*docs)


def check(o, docs):
    """Validate as the stage does: the core rule types with hooks bound to their version in
    force (``crm_pricing``) and the documents as its context."""
    checks = registry.checks(BOOK, {"crm_pricing": docs}, core=True)
    return validate([o], ref(), BOOK.validation, BOOK.pricing, checks)[0]


def quote(price, start=-5, end=10, qid="Q1", item="I1", status="issued"):
    return Quote(
        qid, "C1", item, D(price), TODAY + timedelta(start), TODAY + timedelta(end), status
    )


def agreement(price, start=-30, end=30, aid="SPA1", item="I1"):
    return PriceAgreement(
        aid, "C1", item, D(price), TODAY + timedelta(start), TODAY + timedelta(end)
    )


def test_a_valid_quote_explains_a_price_outside_the_contract():
    v = check(order(line(item_id="I1", price="8.50")), with_docs(quote("8.50")))
    assert v.ok, v.holds
    ln = v.order.lines[0]
    assert (ln.price_source, ln.price_document_id, ln.contract_price) == ("quote", "Q1", D("8.50"))


def test_an_agreement_explains_within_the_contract_tolerance_and_sets_the_price():
    v = check(order(line(item_id="I1", price="8.52")), with_docs(agreement("8.50")))
    assert v.ok, v.holds
    ln = v.order.lines[0]
    assert (ln.price_source, ln.price_document_id, ln.contract_price) == (
        "agreement",
        "SPA1",
        D("8.50"),
    )


def test_a_list_priced_line_is_explained_too():
    v = check(order(line(item_id="I4", price="4.00")), with_docs(quote("4.00", item="I4")))
    assert v.ok and v.order.lines[0].price_source == "quote"


@pytest.mark.parametrize(
    "docs",
    [
        [quote("8.40")],  # another price
        [quote("8.50", start=1, end=10)],  # not quoted yet
        [quote("8.50", status="withdrawn")],
        [agreement("8.50", start=-30, end=-1)],  # agreement over
        [agreement("7.00")],  # far from the order's price
    ],
)
def test_documents_that_do_not_explain_leave_the_mismatch(docs):
    v = check(order(line(item_id="I1", price="8.50")), with_docs(*docs))
    assert cats(v) == ["pricing_mismatch"]
    assert "cause" not in v.holds[0].details
    assert v.order.lines[0].price_source == "contract"


def test_an_expired_quote_holds_with_its_cause():
    v = check(order(line(item_id="I1", price="8.50")), with_docs(quote("8.50", -40, -3, "Q7")))
    assert cats(v) == ["pricing_mismatch"]
    h = v.holds[0]
    assert (h.details["cause"], h.details["quote_id"]) == ("quote_expired", "Q7")
    assert h.details["quote_expires_on"] == str(TODAY - timedelta(3))
    assert "quote Q7" in h.reason and "expired" in h.reason


def test_a_valid_quote_wins_over_an_expired_one():
    docs = with_docs(quote("8.50", -40, -3, "Q7"), quote("8.50", -2, 5, "Q8"))
    v = check(order(line(item_id="I1", price="8.50")), docs)
    assert v.ok and v.order.lines[0].price_document_id == "Q8"


def test_a_price_within_the_contract_is_the_contracts_whatever_the_crm_says():
    v = check(order(line(item_id="I1", price="9.00")), with_docs(quote("9.00", qid="Q9")))
    ln = v.order.lines[0]
    assert v.ok and (ln.price_source, ln.price_document_id) == ("contract", "K1")
