"""Model 4 of #17 (``substitute_rank``) through the real pieces: generated substitute offers
imported as labelled examples, the ``train_models`` DAG (``dag.test()``), the allocation
stage ranking a short line's substitutes (stored as a decision, shown on the exception) while
the substitution rules decide, the label loop (the desk's answer is in the next training
set), and the kill switch."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from tests_support_ai import seed_contract, seed_customer, seed_item, take_order, trained_store

from orderflow import decisions, processing, rules
from orderflow.ai import inference
from orderflow.ai import substitutes as sb
from orderflow.domain.approvals import APPROVE, REJECT
from orderflow.processing import RunContext
from orderflow.store import ai as repo
from orderflow.store import db

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db]

CTX = RunContext(dag_id="test_ai_substitutes", run_id="manual__t", task_id="allocate")


@pytest.fixture(scope="module")
def trained(store_url, airflow_db):
    conn, counts = trained_store(3, days=45, orders_per_day=30, models=sb.MODEL_NAME)
    assert counts[sb.MODEL_NAME] > 100
    yield conn
    conn.close()


def _seed(conn, *, consent: bool) -> tuple[str, str, str, str]:
    """A customer, an item out of stock whose catalogue lists A then B (both in stock), and a
    history: this customer rejected A for it three times and accepted B three times."""
    tag = uuid.uuid4().hex[:6].upper()
    cid, x, a, b = f"C-SB-{tag}", f"IT-SBX-{tag}", f"IT-SBA-{tag}", f"IT-SBB-{tag}"
    seed_customer(conn, cid, tier="gold", accepts_substitutes=consent)
    for item, pack, price, vp, subs, stock in (
        (x, 12, "10.00", f"FAS-M1-{tag}X", [a, b], 0),
        (a, 6, "7.00", f"FAS-M2-{tag}A", [], 50),
        (b, 12, "10.50", f"FAS-M1-{tag}B", [], 50),
    ):
        seed_item(conn, item, pack_size=pack, list_price=price, unit_cost="5.00", vendor_part=vp,
                  substitutes=subs, stock={"DC-EAST": stock, "DC-WEST": stock})  # fmt: skip
    seed_contract(conn, cid, x)
    with db.transaction(conn):
        facts = {
            x: sb.Facts("EA", 12, 10.0, f"FAS-M1-{tag}X"),
            a: sb.Facts("EA", 6, 7.0, f"FAS-M2-{tag}A"),
            b: sb.Facts("EA", 12, 10.5, f"FAS-M1-{tag}B"),
        }
        ctx, rows, at = sb.Context(), [], datetime.now(UTC) - timedelta(days=30)
        for n, (sub, ok) in enumerate([(a, False), (b, True)] * 3):
            f = sb.features(ctx, cid, "gold", facts[x], sub, facts[sub], item_id=x,
                            catalogue_rank=[a, b].index(sub), n_candidates=2,
                            at_preferred_dc=True)  # fmt: skip
            when = at + timedelta(days=n)
            rows.append((sb.MODEL_NAME, "test", f"T{tag}{n}|{cid}|{x}|{sub}", when,
                         {k: (None if v != v else v) for k, v in f.items()},
                         sb.ACCEPTED if ok else sb.REJECTED))  # fmt: skip
            ctx.add(sb.outcome_of(when, cid, "gold", x, sub, facts, ok))
        repo.add_examples(conn, rows)
    return cid, x, a, b


def _credit_ok(conn, cid: str, item: str, book) -> str:
    oid = take_order(conn, f"O-SB-{uuid.uuid4().hex[:8].upper()}", cid, item, 5, "10.00")
    assert processing.validate(conn, [oid], CTX, book).passed == 1
    assert processing.check_credit(conn, [oid], CTX, book, credit_service=None).passed == 1
    return oid


def _exception(conn, oid):
    return conn.execute(
        "SELECT exception_id, details FROM orderflow.order_exception "
        "WHERE order_id = %s AND category = 'substitution_needed' AND status = 'open'",
        (oid,),
    ).fetchone()


def test_the_dag_trains_an_active_version_on_imported_offers(trained):
    [v] = [v for v in repo.versions(trained, sb.MODEL_NAME) if v["active"]]
    assert v["n_examples"] > 80 and v["metrics"]["gate"]["metric"] == "auc"
    assert v["metrics"]["auc"] > 0.55  # better than chance on the held-out offers


def test_ranking_is_a_decision_on_the_desk_and_consent_still_decides(trained):
    conn, book = trained, rules.load()
    cid, x, a, b = _seed(conn, consent=False)
    oid = _credit_ok(conn, cid, x, book)
    out = processing.allocate(conn, [oid], CTX, book)
    assert out.held == {"substitution_needed": 1}  # no standing consent: a person asks
    [d] = [d for d in repo.decisions_for(conn, order_id=oid) if d["model_name"] == sb.MODEL_NAME]
    assert (d["action"], d["output_label"], d["line_no"]) == ("recommend", sb.ACCEPTED, 1)
    ranked = [e["substitute_item_id"] for e in d["evidence"]]
    assert sorted(ranked) == sorted([a, b])
    # this customer rejected A and accepted B before: B first, against the catalogue's order
    assert ranked[0] == b and d["evidence"][0]["catalogue_rank"] == 2
    _exc_id, details = _exception(conn, oid)
    assert details["proposals"][0]["substitute_item_id"] == ranked[0]
    assert details["ai_substitutes"]["lines"][0]["decision_id"] == d["decision_id"]
    row = conn.execute(
        "SELECT input_hash, model_version FROM orderflow.ai_decision WHERE decision_id = %s",
        (d["decision_id"],),
    ).fetchone()
    assert len(row[0]) == 64 and row[1] == d["model_version"]
    # with standing consent the same ranking ships its first candidate
    cid2, x2, _a2, b2 = _seed(conn, consent=True)
    oid2 = _credit_ok(conn, cid2, x2, book)
    assert processing.allocate(conn, [oid2], CTX, book).passed == 1
    sub = conn.execute(
        "SELECT status, substitute_item_id FROM orderflow.order_line WHERE order_id = %s",
        (oid2,),
    ).fetchone()
    assert sub == ("SUBSTITUTED", b2)


@pytest.mark.parametrize("choice", [APPROVE, REJECT])
def test_the_customers_answer_is_in_the_next_training_set(trained, choice):
    conn, book = trained, rules.load()
    cid, x, _a, _b = _seed(conn, consent=False)
    oid = _credit_ok(conn, cid, x, book)
    processing.allocate(conn, [oid], CTX, book)
    exc_id, _ = _exception(conn, oid)
    before = [r for r in repo.training_set(conn, sb.MODEL_NAME) if r[4] == oid]
    assert before == []  # an unanswered ranking is no label
    decisions.decide(conn, exc_id, choice, actor="desk.alice", reason="customer called", ctx=CTX)
    [row] = [r for r in repo.training_set(conn, sb.MODEL_NAME) if r[4] == oid]
    assert row[3] == "desk"
    assert row[2] == (sb.ACCEPTED if choice == APPROVE else sb.REJECTED)
    # and the next ranking reads it as this customer's history
    seen = repo.substitute_outcomes(conn, sb.MODEL_NAME, datetime.now(UTC) + timedelta(1))
    assert any(r[1] == cid and r[6] == (choice == APPROVE) and r[0] > row[0] for r in seen)


def test_the_kill_switch_keeps_the_catalogue_order(trained, tmp_path):
    conn = trained
    copy = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), copy)
    newest = rules.file_versions("ai")[-1].effective_from  # the switch comes after it
    (copy / "ai" / "2026.12.99.yaml").write_text(
        f'version: "2026.12.99"\neffective_from: "{newest.isoformat()[:19]}.5Z"\n'
        "models:\n  substitute_rank: {enabled: false}\n"
    )
    book = rules.load(directory=copy)
    cid, x, a, _b = _seed(conn, consent=False)
    oid = _credit_ok(conn, cid, x, book)
    assert inference.substitute_ranker(conn, [], {}, {}, book) is None
    assert processing.allocate(conn, [oid], CTX, book).held == {"substitution_needed": 1}
    assert repo.decisions_for(conn, order_id=oid) == []
    _exc, details = _exception(conn, oid)
    assert details["proposals"][0]["substitute_item_id"] == a  # the catalogue's first
    assert "ai_substitutes" not in details
