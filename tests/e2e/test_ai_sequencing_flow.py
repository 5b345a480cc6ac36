"""Capacity-aware release sequencing (#17, model 5) through the real pieces: a small
generated history imported as labelled examples, the ``train_models`` DAG (``dag.test()``)
training the delay-risk model (the sequencing's learned part), orders taken to READY through
the stages, and the release stage asking the sandbox WMS over HTTP for its pick capacity (the
release operator's own call): when the wave cannot take every READY order, the ones whose wait
adds most risk go first, each ranking is an AI decision, and the others stay READY and go in
the next run. The kill switch off, or no capacity stated: everything is released at once, as
before. The sandbox WMS itself defers a release beyond its wave's capacity to the next wave
(accepted, never refused) and picks it then."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from test_ai_delay_flow import CTX, _book, _planned_order
from tests_support_ai import seed_east_dc, trained_store

from orderflow import processing
from orderflow.ai import delay, governance
from orderflow.ai import sequencing as ai_seq
from orderflow.operators.processing import ReleaseToWmsOperator
from orderflow.store import ai as repo

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_db, pytest.mark.db, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def trained(store_url, airflow_db):
    conn, counts = trained_store(3, days=45, orders_per_day=25, models=delay.MODEL_NAME)
    assert counts[delay.MODEL_NAME] > 800
    seed_east_dc(conn)
    yield conn
    conn.close()


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)
    yield
    sandbox.client.put("/admin/wms/capacity", json={}).raise_for_status()


def _set_capacity(sandbox, per_wave: dict[str, int]) -> dict:
    r = sandbox.client.put("/admin/wms/capacity", json={"per_wave": per_wave})
    r.raise_for_status()
    return r.json()


def _capacity(book):
    """What the release operator passes the stage: the WMS asked over HTTP."""
    return ReleaseToWmsOperator(task_id="release")._capacity(book)


def _status(conn, oids) -> dict[str, str]:
    return dict(
        conn.execute(
            'SELECT order_id, status FROM orderflow."order" WHERE order_id = ANY(%s)', (oids,)
        ).fetchall()
    )


def _seq_decisions(conn, oid) -> list[dict]:
    return [
        d for d in repo.decisions_for(conn, order_id=oid) if d["model_name"] == "release_sequence"
    ]


def test_a_short_wave_releases_the_riskiest_first_and_the_rest_in_the_next_run(
    trained, sandbox, tmp_path
):
    conn = trained
    book = _book(tmp_path, models={ai_seq.MODEL_NAME: {"enabled": True}})
    oids = [_planned_order(conn, book) for _ in range(4)]
    state = _set_capacity(sandbox, {"DC-EAST": 2})
    assert state["dcs"]["DC-EAST"]["remaining"] == 2
    capacity = _capacity(book)
    assert capacity["DC-EAST"].remaining == 2 and capacity["DC-EAST"].per_wave == 2
    out = processing.release(conn, oids, CTX, book, capacity=capacity)
    status = _status(conn, oids)
    now = [o for o in oids if status[o] == "RELEASED"]
    wait = [o for o in oids if status[o] == "READY"]
    assert out.orders == 2 and len(now) == 2 and len(wait) == 2
    version, _model = governance.active_model(conn, delay.MODEL_NAME)
    decided = {}
    for oid in oids:
        [d] = _seq_decisions(conn, oid)
        assert d["action"] == "recommend"  # never "release": the stage and the WMS release
        assert d["model_version"] == f"{delay.MODEL_NAME}@{version}"
        assert d["output_label"] == ("now" if oid in now else "wait")
        decided[oid] = d
    feats = conn.execute(
        "SELECT features, input_hash FROM orderflow.ai_decision WHERE decision_id = %s",
        (decided[oids[0]]["decision_id"],),
    ).fetchone()
    assert feats[1] == governance.input_hash(feats[0])
    assert {"risk_now", "risk_later", "margin"} <= set(feats[0])
    assert {"tier", "cutoff", "picks", "capacity"} <= set(decided[oids[0]]["evidence"][0])
    assert feats[0]["risk_later"] is not None  # the delay model was asked in the flow
    # the two released are the two ranked first
    ranks = {oid: decided[oid]["evidence"][0]["rank"] for oid in oids}
    assert sorted(ranks[o] for o in now) == [0, 1]
    # ranked deadline first: each order's deadline (from its planned shipments' promised date
    # and transit, at the DC's cutoff) in the evidence; none released after one that waits
    ev = {oid: decided[oid]["evidence"][0] for oid in oids}
    assert all(ev[o]["deadline"] for o in oids)

    def due(o):
        return (ev[o]["lost"], datetime.fromisoformat(ev[o]["deadline"]))

    assert max(due(o) for o in now) <= min(due(o) for o in wait)
    # the next run: the wave has room again (nothing was sent to it here) — they go
    processing.release(conn, wait, CTX, book, capacity=_capacity(book))
    assert set(_status(conn, wait).values()) == {"RELEASED"}


def test_switched_off_or_no_capacity_everything_is_released_at_once(trained, sandbox, tmp_path):
    conn = trained
    off = _book(tmp_path, models={ai_seq.MODEL_NAME: {"enabled": False}})
    _set_capacity(sandbox, {"DC-EAST": 1})
    assert _capacity(off) is None  # the operator does not even ask the WMS
    oids = [_planned_order(conn, off) for _ in range(3)]
    assert processing.release(conn, oids, CTX, off, capacity=_capacity(off)).orders == 3
    assert all(_seq_decisions(conn, o) == [] for o in oids)
    # switched on, but the WMS states no capacity (the default): as before
    on = _book(tmp_path / "on", models={ai_seq.MODEL_NAME: {"enabled": True}})
    _set_capacity(sandbox, {})
    assert _capacity(on) is None
    oids = [_planned_order(conn, on) for _ in range(3)]
    assert processing.release(conn, oids, CTX, on, capacity=_capacity(on)).orders == 3
    assert all(_seq_decisions(conn, o) == [] for o in oids)
    # a model switched off cannot record a sequencing decision
    with pytest.raises(governance.PolicyViolation, match="switched off"):
        governance.record(
            conn, [governance.Output(ai_seq.MODEL_NAME, "v", oids[0], "now", 0.5, {}, [],
                                     "recommend")], off
        )  # fmt: skip


def test_the_sandbox_wms_defers_a_release_beyond_its_wave_and_picks_it_then(sandbox):
    inv = sandbox.client.get("/wms/inventory", params={"dc_id": "DC-EAST"}).json()["items"]
    item = next(i for i in inv if i["available"] >= 10)
    state = _set_capacity(sandbox, {"DC-EAST": 2})
    wave = state["dcs"]["DC-EAST"]["wave_start"]
    answers = []
    for n in range(3):
        body = {
            "order_id": f"O-CAP-{uuid.uuid4().hex[:6]}",
            "dc_id": "DC-EAST",
            "lines": [{"line_no": 1, "item_id": item["item_id"], "quantity": 1}],
        }
        r = sandbox.client.post(
            "/wms/releases", json=body, headers={"Idempotency-Key": f"cap-{uuid.uuid4().hex}"}
        )
        assert r.status_code == 201, r.text  # accepted, never refused for capacity
        answers.append(r.json())
        if n == 1:
            cap = sandbox.client.get("/wms/capacity").json()["dcs"]["DC-EAST"]
            assert (cap["used"], cap["remaining"]) == (2, 0)
    assert [a["wave_start"] for a in answers[:2]] == [wave, wave]
    assert answers[2]["wave_start"] == state["dcs"]["DC-EAST"]["next_wave_at"]
    # the other DC states no capacity: its releases are as they always were
    assert sandbox.client.get("/wms/capacity").json()["dcs"]["DC-WEST"]["per_wave"] is None
