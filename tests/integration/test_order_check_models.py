"""The order check answers what the batch decides WITH the models of #17 active: a small
generated history imported as labelled examples, ``substitute_rank`` and ``delay_risk``
trained on it and activated (``orderflow.ai.training.train``, the ``train_models`` DAG's
work), then a generated day landed through intake; each order is checked (a draft, with the
batch's credit and screening services) and then processed by the real stage functions, one
order per partition, as ``test_order_check`` does without models. Compared per order:

- the proposed (or shipped) substitute of every line, and the ranking behind it: the check's
  ranking equals the decision the allocation stage recorded (candidates, order, P(accept));
- the delay flag: the check says ``flagged`` exactly when the planning stage recorded a
  ``delay_risk`` flag decision for the order, with the same probability and version.

The day must exercise both: lines where the model put a candidate first that the catalogue
lists later, and orders on both sides of the flag threshold."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from tests_support import land_day

from orderflow import processing, rules
from orderflow.ai import delay, evaluate, training
from orderflow.ai import substitutes as sb
from orderflow.ordercheck.service import check, draft_of
from orderflow.processing import RunContext
from orderflow.store import ai as ai_repo
from orderflow.store import db
from orderflow.store import processing as repo

pytestmark = [pytest.mark.db, pytest.mark.sandbox]

CTX = RunContext(dag_id="test_order_check_models", run_id="manual__check", task_id="stage")


def _batch(conn, oid: str) -> dict:
    subs = dict(
        conn.execute(
            "SELECT line_no, substitute_item_id FROM orderflow.order_line "
            "WHERE order_id = %s AND substitute_item_id IS NOT NULL",
            (oid,),
        ).fetchall()
    )
    for (details,) in conn.execute(
        "SELECT details FROM orderflow.order_exception WHERE order_id = %s "
        "AND category = 'substitution_needed'",
        (oid,),
    ):
        for p in (details or {}).get("proposals", []):
            subs[p["line_no"]] = p["substitute_item_id"]
    decisions = ai_repo.decisions_for(conn, order_id=oid)
    ranked = {
        d["line_no"]: (d["model_version"], d["evidence"])
        for d in decisions
        if d["model_name"] == sb.MODEL_NAME
    }
    [flag] = [
        (d["model_version"], float(d["score"]), d["action"])
        for d in decisions
        if d["model_name"] == delay.MODEL_NAME
    ] or [None]
    status = conn.execute(
        'SELECT status FROM orderflow."order" WHERE order_id = %s', (oid,)
    ).fetchone()[0]
    return {"status": status, "subs": subs, "ranked": ranked, "flag": flag}


def model_differences(answer, batch: dict) -> list[str]:
    """Where the check's substitutes and delay flag differ from the batch's (empty: equal)."""
    out = []
    stage = answer.first_hold_stage
    if stage in (None, "plan", "allocate"):
        # the batch allocated (or held on allocation): every line's substitute is decided
        for ln in answer.lines:
            if ln.substitute_item_id != batch["subs"].get(ln.line_no):
                out.append(
                    f"line {ln.line_no} substitute: check {ln.substitute_item_id} "
                    f"batch {batch['subs'].get(ln.line_no)}"
                )
            recorded = batch["ranked"].get(ln.line_no)
            if recorded is not None:
                version, evidence = recorded
                mine = [(r.substitute_item_id, r.p_accept) for r in ln.substitute_ranking or []]
                theirs = [(e["substitute_item_id"], e["p_accept"]) for e in evidence]
                if mine != theirs or ln.substitute_model != f"{sb.MODEL_NAME}@{version}":
                    out.append(f"line {ln.line_no} ranking: check {mine} batch {theirs}")
    planned = answer.outcome == "would_release"
    if planned != (batch["status"] == "READY"):
        out.append(f"outcome: check {answer.outcome} batch {batch['status']}")
    elif planned:
        risk = answer.delay_risk
        if risk is None:
            out.append("delay risk: the check has none for a planned order")
        elif risk.flagged != (batch["flag"] is not None):
            out.append(
                f"delay flag: check {risk.flagged} ({risk.probability}) batch {batch['flag']}"
            )
        elif batch["flag"] is not None:
            version, score, action = batch["flag"]
            if (risk.model_version, risk.probability, action) != (version, round(score, 4), "flag"):
                out.append(f"delay risk: check {risk} batch {batch['flag']}")
    return out


def _short_of_stock(conn, n: int = 25) -> list[str]:
    """The ``n`` items the day orders most made short: each out of stock everywhere, with
    three other items of its unit that are well in stock as its catalogue substitutes (in an
    order of their own, not the model's: few generated items list two or more). Their lines
    go short, so allocation ranks the substitutes (shipped with a customer's standing
    consent, proposed on a hold otherwise)."""
    with db.transaction(conn):
        items = [
            r[0]
            for r in conn.execute(
                """
                WITH top AS (SELECT item_id FROM orderflow.order_line WHERE item_id IS NOT NULL
                              GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT %s),
                     stocked AS (SELECT item_id FROM orderflow.inventory_position
                                  GROUP BY item_id HAVING sum(greatest(available, 0)) > 200)
                UPDATE orderflow.item i SET substitute_item_ids = ARRAY(
                       SELECT s.item_id FROM stocked s JOIN orderflow.item j USING (item_id)
                        WHERE j.uom = i.uom AND j.dq_passed
                          AND s.item_id NOT IN (SELECT item_id FROM top)
                        ORDER BY md5(i.item_id || s.item_id) LIMIT 3)
                 WHERE i.item_id IN (SELECT item_id FROM top)
                RETURNING i.item_id
                """,
                (n,),
            )
        ]
        conn.execute(
            "UPDATE orderflow.inventory_position SET on_hand = allocated WHERE item_id = ANY(%s)",
            (items,),
        )
    return items


@pytest.fixture(scope="module")
def compared(store_url, sandbox):
    from threadpoolctl import threadpool_limits

    from orderflow.integrations.systems import CreditHook, ScreeningHook, TaxHook

    conn = db.connect()
    land_day(conn, sandbox)
    short = _short_of_stock(conn)
    counts = evaluate.import_history(conn, seed=5, days=40, orders_per_day=25)
    assert counts[sb.MODEL_NAME] > 100 and counts[delay.MODEL_NAME] > 500, counts
    for name in (sb.MODEL_NAME, delay.MODEL_NAME):
        assert training.train(conn, name).activated, name
    os.environ.update(sandbox.connection_env())
    book = rules.load(conn=conn)
    assert book.ai.enabled(sb.MODEL_NAME) and book.ai.enabled(delay.MODEL_NAME)
    credit, tax, screening = CreditHook(), TaxHook(), ScreeningHook()
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT order_id FROM orderflow.\"order\" WHERE status = 'RECEIVED' "
            "AND parent_order_id IS NULL AND customer_id IS NOT NULL "
            "ORDER BY received_at, order_id"
        )
    ]
    results = []
    # one OpenMP thread for the batch's predictions too (the check sets its own): a pool of
    # threads spin-waiting for one row each costs minutes on a busy test machine
    limit = threadpool_limits(1)
    for oid in ids:
        [o] = repo.load_orders(conn, [oid], ["RECEIVED"])
        answer = check(
            conn,
            draft_of(o),
            book,
            received_at=o.received_at,
            credit_service=credit.check,
            screening_service=screening.check,
        )
        processing.validate(conn, [oid], CTX, book)
        processing.check_credit(conn, [oid], CTX, book, credit.check)
        processing.allocate(conn, [oid], CTX, book)
        processing.plan(conn, [oid], CTX, book, tax.quote, screening.check)
        results.append((oid, answer, _batch(conn, oid)))
    limit.restore_original_limits()
    yield short, results
    conn.close()


def test_with_both_models_active_the_check_proposes_and_flags_what_the_batch_does(compared):
    short, compared = compared
    wrong = [(oid, d) for oid, answer, batch in compared if (d := model_differences(answer, batch))]
    assert not wrong, (len(wrong), wrong[:5])
    assert len(short) >= 10 and len(compared) > 250
    # the day exercises both models, not only their absence
    ranked = [
        ln
        for _, answer, _ in compared
        for ln in answer.lines
        if ln.substitute_ranking and ln.substitute_item_id
    ]
    reordered = [ln for ln in ranked if ln.substitute_ranking[0].catalogue_rank > 1]
    planned = [a.delay_risk for _, a, b in compared if b["status"] == "READY"]
    flags = Counter(r.flagged for r in planned)
    assert ranked and reordered, (len(ranked), len(reordered))
    # every planned order scored, not one constant: the flagged ones' probabilities (what the
    # stage records) were compared to 4 decimals above
    assert len(planned) > 150 and len({r.probability for r in planned}) > 20, flags
    print(
        f"\n{len(compared)} orders: {len(ranked)} substitutes proposed by the ranking "
        f"({len(reordered)} against the catalogue's order); delay flags {dict(flags)}"
    )
