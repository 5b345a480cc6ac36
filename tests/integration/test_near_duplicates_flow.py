"""Near-duplicate orders in the validation stage (#17, model 2), against the real store: an
EDI re-send of a portal order with a reformatted PO number is held ``possible_duplicate``
naming the portal order, a weekly re-order of the same items is not, a person's reject
cancels the duplicate, each hold is the model's recorded decision (``orderflow.ai.governance``),
and without a trained model, or with the model switched off in the ``ai`` rules, the stage
decides as before.

The model is trained through the registry (``orderflow.ai.training``) on labelled pairs of a
small generated history (``orderflow_sandbox.generator.duplicates``) imported into the store,
stored as a hash-checked version and loaded by the stage from there."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from test_processing_store import (
    CTX,
    insert,
    seed_contract,
    seed_customer,
    seed_item,
    shared_master_data,  # noqa: F401 (autouse fixture)
    statuses,
)

from orderflow import decisions, processing, rules
from orderflow.ai import duplicates as nd
from orderflow.ai import governance, training
from orderflow.domain.approvals import REJECT
from orderflow.domain.models import Address, Channel, Order, OrderLine, ProductId, Provenance
from orderflow.store import ai as ai_repo
from orderflow.store import db
from orderflow_sandbox.generator.duplicates import generate_labelled

pytestmark = [pytest.mark.db]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)


@pytest.fixture(scope="module")
def book():
    book = rules.load()
    assert book.validation.near_duplicates.enabled
    return book


@pytest.fixture(scope="module")
def trained(store_url):
    """The registry's near-duplicate model trained on labelled pairs of a small generated
    history (twelve business days) imported into this module's store; its active version."""
    data = generate_labelled(23, 12, customers=15, items=120, orders_per_day=30)
    docs = [nd.from_generated(o) for o in data.orders]
    pairs = nd.examples(docs, data.duplicate_of, timedelta(hours=168))
    conn = db.connect()
    try:
        with db.transaction(conn):
            ai_repo.add_examples(conn, [(nd.MODEL_NAME, "history:23", *p) for p in pairs])
        result = training.train(conn, nd.MODEL_NAME)
    finally:
        conn.close()
    assert result.activated and result.version, result
    return result.version


def _order(oid, cid, po, channel, at, items) -> Order:
    return Order(
        order_id=oid,
        po_number=po,
        customer_id=cid,
        ship_to=Address(
            name=f"{cid} Albany",
            party_id=f"{cid}-ST1",
            address_lines=["1 Main St"],
            city="Albany",
            region="NY",
            postal_code="12207",
            country="US",
        ),
        lines=[
            OrderLine(
                line_no=n,
                item_id=item,
                product_ids=[ProductId(qualifier="VP", value=f"VP-{item}")],
                description=f"Widget {item}",
                quantity=Decimal(qty),
                uom="EA",
                unit_price="10.00",
            )
            for n, (item, qty) in enumerate(items, start=1)
        ],
        provenance=Provenance(channel=channel, partner_id=f"P-{cid}", received_at=at),
    )


def _seed(store, tag):
    cid = f"C-ND-{tag}"
    items = [f"ITM-ND-{tag}-{k}" for k in (1, 2)]
    with db.transaction(store):
        seed_customer(store, cid)
        for item in items:
            seed_item(store, item, east=100, west=100)
            seed_contract(store, cid, item)
    return cid, [(items[0], 4), (items[1], 2)]


def _exceptions(store, oid):
    return store.execute(
        "SELECT exception_id, category, owner_role, details FROM orderflow.order_exception "
        "WHERE order_id = %s ORDER BY exception_id",
        (oid,),
    ).fetchall()


def test_without_a_trained_model_the_stage_decides_as_before(store, book):
    # runs first: the module's store has no near-duplicate version yet
    assert ai_repo.active_version(store, nd.MODEL_NAME) is None
    tag = uuid.uuid4().hex[:6].upper()
    cid, basket = _seed(store, tag)
    (portal_id,) = insert(
        store, [_order(f"POR-{tag}", cid, "4500012345", Channel.PORTAL, T0, basket)]
    )
    resend = _order(
        f"EDI-{tag}", cid, "PO# 4500-0123-45", Channel.EDI, T0 + timedelta(hours=3), basket
    )
    ids = [portal_id, *insert(store, [resend])]
    out = processing.validate(store, ids, CTX, book)
    assert (out.passed, out.held) == (2, {}), out
    # an exact re-send (the same PO number) is still the exact check's
    again = _order(f"EDI-{tag}-2", cid, "4500012345", Channel.EDI, T0 + timedelta(hours=4), basket)
    out = processing.validate(store, insert(store, [again]), CTX, book)
    assert out.held == {"duplicate_suspect": 1}


def test_an_edi_resend_is_held_with_the_portal_order_and_a_weekly_reorder_is_not(
    store, book, trained
):
    tag = uuid.uuid4().hex[:6].upper()
    cid, basket = _seed(store, tag)
    portal = _order(f"POR-{tag}", cid, "4500012345", Channel.PORTAL, T0, basket)
    (portal_id,) = insert(store, [portal])
    assert processing.validate(store, [portal_id], CTX, book).passed == 1

    resend = _order(
        f"EDI-{tag}", cid, "PO# 4500-0123-45", Channel.EDI, T0 + timedelta(hours=3), basket
    )
    reorder = _order(
        f"POR-{tag}-W", cid, "4500012352", Channel.PORTAL, T0 + timedelta(days=5), basket
    )
    ids = insert(store, [resend, reorder])
    out = processing.validate(store, ids, CTX, book)
    assert out.held == {"possible_duplicate": 1}, out
    assert statuses(store, ids) == {resend.order_id: "ON_HOLD", reorder.order_id: "VALIDATED"}

    ((exception_id, category, owner, details),) = _exceptions(store, resend.order_id)
    assert (category, owner) == ("possible_duplicate", "customer_service")
    assert details["duplicate_of"] == portal_id and details["match"] == "model"
    assert details["model"] == f"near_duplicate@{trained}"
    assert details["score"] >= details["threshold"] > 0
    assert details["evidence"]["channels"] == ["portal", "edi"]
    assert details["evidence"]["po_same_after_normalising"] is True
    assert len(details["input_hash"]) == 64
    assert _exceptions(store, reorder.order_id) == []
    # the hold is the model's recorded decision (governance): version, inputs, score, action
    [d] = ai_repo.decisions_for(store, order_id=resend.order_id)
    assert (d["model_name"], d["model_version"], d["action"]) == (
        "near_duplicate",
        trained,
        "hold",
    )
    assert d["decision_id"] == details["decision_id"]
    assert abs(float(d["score"]) - details["score"]) < 1e-6
    input_hash, features = store.execute(
        "SELECT input_hash, features FROM orderflow.ai_decision WHERE decision_id = %s",
        (d["decision_id"],),
    ).fetchone()
    assert input_hash == governance.input_hash(features) and set(features) == set(nd.FEATURES)
    assert {"duplicate_of": portal_id} in d["evidence"]
    assert ai_repo.decisions_for(store, order_id=reorder.order_id) == []

    # a person confirms it is a duplicate: the re-send is rejected, the portal order goes on
    done = decisions.decide(
        store,
        exception_id,
        REJECT,
        actor="cs.tester",
        reason="EDI re-send of the portal PO",
        ctx=CTX,
    )
    assert done["order_status"] == "REJECTED"
    assert statuses(store, [portal_id])[portal_id] == "VALIDATED"


def test_the_ai_rules_kill_switch_stops_it(store, trained, tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), copy)
    newest = rules.file_versions("ai")[-1]  # the switch: a copy of it, one moment after
    text = (copy / "ai" / f"{newest.version}.yaml").read_text()
    at = newest.effective_from.isoformat()[:19]
    assert f'"{newest.version}"' in text and f'"{at}Z"' in text
    (copy / "ai" / "2026.12.99.yaml").write_text(
        text.replace(f'"{newest.version}"', '"2026.12.99"')
        .replace(f'"{at}Z"', f'"{at}.5Z"')
        .replace("near_duplicate: {enabled: true}", "near_duplicate: {enabled: false}")
    )
    off = rules.load(directory=copy)
    assert off.ai.version == "2026.12.99" and not governance.enabled(off, nd.MODEL_NAME)
    tag = uuid.uuid4().hex[:6].upper()
    cid, basket = _seed(store, tag)
    (portal_id,) = insert(
        store, [_order(f"POR-{tag}", cid, "4500012345", Channel.PORTAL, T0, basket)]
    )
    resend = _order(
        f"EDI-{tag}", cid, "PO# 4500-0123-45", Channel.EDI, T0 + timedelta(hours=3), basket
    )
    ids = [portal_id, *insert(store, [resend])]
    out = processing.validate(store, ids, CTX, off)
    assert (out.passed, out.held) == (2, {}), out
    assert ai_repo.decisions_for(store, order_id=resend.order_id) == []
