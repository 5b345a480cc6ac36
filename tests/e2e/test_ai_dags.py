"""Decision support (#17) through the real pieces: a small generated history imported as
labelled examples, the ``train_models`` DAG (``dag.test()``), inference in the validation
stage on held orders (cause recommended, routed, in the exception's details; an anomaly held),
the label loop (a desk correction is in the next training set), the kill switch, and that no
model acts alone on a financially sensitive decision."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from tests_support_ai import run_dag, seed_customer_item, take_order, trained_store

from orderflow import processing, rules
from orderflow.ai import governance, inference
from orderflow.processing import RunContext
from orderflow.store import ai as repo

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db]

CTX = RunContext(dag_id="test_ai_dags", run_id="manual__t", task_id="validate")


@pytest.fixture(scope="module")
def trained(store_url, airflow_db):
    conn, counts = trained_store(3, days=45, orders_per_day=30)
    assert counts["exception_cause"] > 50 and counts["arrival_anomaly"] > 500
    assert counts["near_duplicate"] > 500  # labelled pairs of generated re-submissions
    yield conn
    conn.close()


def _tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def test_the_dag_trains_and_activates_a_version_per_model(trained):
    for name in ("exception_cause", "arrival_anomaly", "near_duplicate"):
        [v] = [v for v in repo.versions(trained, name) if v["active"]]
        assert v["n_examples"] > 0 and v["window_from"] < v["window_to"]
        assert v["metrics"]["gate"]["value"] is not None
        assert v["decision_note"] == "first version"


def test_a_held_order_gets_a_cause_with_confidence_evidence_and_routing(trained):
    conn, tag = trained, _tag()
    cid, item = seed_customer_item(conn, tag)
    book = rules.load()
    oid = take_order(conn, f"O-AI-{tag}", cid, item, 3, "120.00")  # priced per pack of 12
    res = processing.validate(conn, [oid], CTX, book)
    assert res.held == {"pricing_mismatch": 1}
    exc_id, owner, details = conn.execute(
        "SELECT exception_id, owner_role, details FROM orderflow.order_exception "
        "WHERE order_id = %s",
        (oid,),
    ).fetchone()
    ai = details["ai_cause"]
    assert ai["cause"] == "item_master"
    assert 0 < ai["confidence"] <= 1 and ai["evidence"]
    assert {"feature", "value", "weight"} <= set(ai["evidence"][0])
    [d] = repo.decisions_for(conn, exception_id=exc_id)
    assert (d["model_name"], d["output_label"], d["order_id"]) == (
        "exception_cause",
        ai["cause"],
        oid,
    )
    assert d["model_version"] == ai["model"].split("@")[1]
    if ai["confidence"] >= book.ai.policy("exception_cause").min_confidence:
        assert d["action"] == "route"
        assert owner == ai["routed_to"] == book.routing.causes["item_master"].owner_role
    # the model did not decide the order: it is on hold until a person acts
    status = conn.execute('SELECT status FROM orderflow."order" WHERE order_id = %s', (oid,))
    assert status.fetchone()[0] == "ON_HOLD"


def test_a_desk_correction_is_in_the_next_training_set(trained):
    conn, tag = trained, _tag()
    cid, item = seed_customer_item(conn, tag)
    oid = take_order(conn, f"O-AIL-{tag}", cid, item, 3, "10.90")
    processing.validate(conn, [oid], CTX, rules.load())
    [d] = repo.decisions_for(conn, order_id=oid)
    before = len(repo.training_set(conn, "exception_cause"))
    assert governance.review(
        conn, d["decision_id"], actor="alice", followed=False, label="keying_error"
    )
    assert not governance.review(conn, d["decision_id"], actor="bob", followed=True)  # once
    rows = repo.training_set(conn, "exception_cause")
    assert len(rows) == before + 1
    assert [r for r in rows if r[3] == "desk"][-1][2] == "keying_error"
    run_dag("train_models", models="exception_cause")
    newest = repo.versions(conn, "exception_cause")[-1]
    assert "desk" in newest["metrics"]["sources"]


def test_an_order_far_from_history_is_held_as_an_anomaly_by_policy(trained):
    from datetime import UTC, datetime, timedelta

    conn, tag = trained, _tag()
    cid, item = seed_customer_item(conn, tag)
    book = rules.load()
    start = datetime.now(UTC) - timedelta(days=30)
    past = [
        take_order(conn, f"O-AIH-{tag}-{n}", cid, item, 5, "10.00", start + timedelta(days=n))
        for n in range(8)
    ]
    assert processing.validate(conn, past, CTX, book).passed == 8
    oid = take_order(conn, f"O-AIA-{tag}", cid, item, 500, "10.00")  # 100x, worth 5000
    res = processing.validate(conn, [oid], CTX, book)
    assert res.held == {"anomaly": 1}, res
    details = conn.execute(
        "SELECT details FROM orderflow.order_exception WHERE order_id = %s AND category = "
        "'anomaly'",
        (oid,),
    ).fetchone()[0]
    assert details["kind"] == "quantity" and details["action"] == "hold"
    [d] = repo.decisions_for(conn, order_id=oid)
    assert (d["model_name"], d["action"]) == ("arrival_anomaly", "hold")


def test_the_kill_switch_stops_inference(trained, tmp_path):
    conn, tag = trained, _tag()
    copy = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), copy)
    newest = rules.file_versions("ai")[-1].effective_from  # the switch comes after it
    (copy / "ai" / "2026.12.99.yaml").write_text(
        f'version: "2026.12.99"\neffective_from: "{newest.isoformat()[:19]}.5Z"\n'
        "models:\n  exception_cause: {enabled: false}\n  arrival_anomaly: {enabled: false}\n"
        "  near_duplicate: {enabled: false}\n"
    )
    book = rules.load(directory=copy)
    for name in ("exception_cause", "arrival_anomaly", "near_duplicate"):
        assert not governance.enabled(book, name)
    assert inference.near_duplicates(conn, book) is None  # not asked: no matcher
    assert inference.near_duplicates(conn, rules.load()) is not None  # on: the active version
    cid, item = seed_customer_item(conn, tag)
    oid = take_order(conn, f"O-AIK-{tag}", cid, item, 3, "120.00")
    assert processing.validate(conn, [oid], CTX, book).held == {"pricing_mismatch": 1}
    assert repo.decisions_for(conn, order_id=oid) == []
    details = conn.execute(
        "SELECT details FROM orderflow.order_exception WHERE order_id = %s", (oid,)
    ).fetchone()[0]
    assert "ai_cause" not in details
    with pytest.raises(governance.PolicyViolation, match="switched off"):
        governance.record(
            conn,
            [governance.Output("exception_cause", "v", oid, "x", 0.9, {}, [], "recommend")],
            book,
        )


def test_no_model_acts_alone_on_a_sensitive_decision(trained):
    conn, tag = trained, _tag()
    cid, item = seed_customer_item(conn, tag)
    oid = take_order(conn, f"O-AIP-{tag}", cid, item, 3, "120.00")
    book = rules.load()
    for action in ("approve", "release", "waive", "resolve"):
        with pytest.raises(governance.PolicyViolation, match="person"):
            governance.record(
                conn,
                [governance.Output("exception_cause", "v", oid, "x", 0.99, {}, [], action)],
                book,
            )
    # the store refuses it too, and the decisions are append-only
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO orderflow.ai_decision (model_name, model_version, order_id, input_hash, "
            "features, output_label, score, action) VALUES ('m', 'v', %s, 'h', '{}', 'x', 1, "
            "'approve')",
            (oid,),
        )
    processing.validate(conn, [oid], CTX, book)
    [d] = repo.decisions_for(conn, order_id=oid)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "UPDATE orderflow.ai_decision SET output_label = 'other' WHERE decision_id = %s",
            (d["decision_id"],),
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "DELETE FROM orderflow.ai_decision WHERE decision_id = %s", (d["decision_id"],)
        )
    # a tampered artifact is never loaded
    conn.execute(
        "UPDATE orderflow.ai_model_version SET active = active WHERE false"
    )  # (the hash is checked by the store on insert: a mismatching row cannot exist)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO orderflow.ai_model_version (model_name, version, library, artifact, "
            "artifact_sha256) VALUES ('m', 'bad', 'x', '\\x00', 'deadbeef')"
        )
