"""The real-scheduler bench's figures, computed from stored rows (``orderflow.dev.realbench``):
orders/s per stage from the mapped task instances and the orders their events name, sends/s
from the outbox's ``sent_at`` inside the sender's task instances, the day's received →
released, the singles' p95, and the JSON's shape (issue #16's keys)."""

from __future__ import annotations

import contextlib
import json
import types
from datetime import UTC, datetime, timedelta

import pytest

from orderflow.dev import realbench as rb

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _ti(task_id, map_index, start_s, seconds, state="success", run="r1"):
    start = T0 + timedelta(seconds=start_s)
    return rb.TaskRow(run, task_id, map_index, state, start, start + timedelta(seconds=seconds))


def test_stage_rate_is_orders_decided_over_the_seconds_inside_execute():
    tis = [
        _ti("validate_orders", 0, 0, 2.0),
        _ti("validate_orders", 1, 0, 3.0),
        _ti("validate_orders", 2, 0, 9.0, state="failed"),  # not a success: not counted
        _ti("check_credit", 0, 5, 4.0, run="r2"),
        _ti("claim_orders", -1, 0, 50.0),  # not a stage
    ]
    inside = {
        ("r1", "validate_orders", 0): {"validate_orders": 0.15},
        ("r1", "validate_orders", 1): {"validate_orders": 0.1},
        ("r1", "validate_orders", 2): {"validate_orders": 7.0},  # the failed try's: not counted
        ("r2", "check_credit", 0): {"check_credit": 0.5},
    }
    rates = rb.stage_rates(tis, {"validate_orders": 1000, "check_credit": 200}, inside)
    assert set(rates) == {"validate", "credit", "allocate", "plan", "release"}
    assert rates["validate"] == {
        "task_instances": 2,
        "ti_seconds": 5.0,
        "execute_s": 0.25,
        "orders": 1000,
        "orders_per_s": 4000.0,
        "orders_per_ti_s": 200.0,
        "cpu_s": None,  # no CPU seconds recorded (an older XCom): none, not zero
        "cpu_ms_per_order": None,
    }
    assert rates["credit"]["orders_per_s"] == 400.0
    assert rates["credit"]["orders_per_ti_s"] == 50.0
    assert rates["plan"]["orders_per_s"] is None  # no instance: no rate, not zero
    # an instance without its execute seconds: no inside-execute rate rather than a wrong one
    del inside[("r1", "validate_orders", 1)]
    partial = rb.stage_rates(tis, {"validate_orders": 1000}, inside)["validate"]
    assert partial["orders_per_s"] is None
    assert partial["orders_per_ti_s"] == 200.0


def test_a_carried_stage_counts_its_seconds_for_that_stage():
    """A partition carried through every stage by its validate task: each carried stage's
    seconds go to that stage (which has no instance of its own for that partition), not to
    validate; a partition whose carry stopped is taken on by the next stage's instance."""
    values = [
        ("r1", "validate_orders", 0, {"orders": 2, "execute_s": 0.2, "carried": [
            {"task_id": "check_credit", "orders": 2, "execute_s": 0.1},
            {"task_id": "allocate_inventory", "orders": 2, "execute_s": 0.3},
            {"task_id": "send_releases", "sent": 4, "execute_s": 0.5},  # not a stage
        ]}),
        ("r1", "validate_orders", 1, {"orders": 500, "execute_s": 1.5, "cpu_s": 1.0,
            "carry_stopped": {"task_id": "check_credit", "error": "ExternalUnavailable: 503"}}),
        ("r1", "check_credit", 0, {"orders": 500, "execute_s": 0.7, "cpu_s": 0.25}),
        ("r1", "plan_shipments", 0, "an older XCom without figures"),
    ]  # fmt: skip
    spent = rb.execute_seconds(values)
    assert spent == {
        ("r1", "validate_orders", 0): pytest.approx(
            {"validate_orders": 0.2, "check_credit": 0.1, "allocate_inventory": 0.3}
        ),
        ("r1", "validate_orders", 1): {"validate_orders": 1.5},
        ("r1", "check_credit", 0): {"check_credit": 0.7},
    }
    tis = [
        _ti("validate_orders", 0, 0, 2.0),
        _ti("validate_orders", 1, 0, 3.0),
        _ti("check_credit", 0, 4, 1.0),
    ]
    rates = rb.stage_rates(tis, {"check_credit": 502, "allocate_inventory": 2}, spent)
    assert rates["credit"]["task_instances"] == 1
    assert rates["credit"]["execute_s"] == pytest.approx(0.8)  # carried 0.1 + its own 0.7
    assert rates["allocate"]["task_instances"] == 0
    assert rates["allocate"]["orders_per_s"] == pytest.approx(2 / 0.3, abs=0.1)
    # CPU seconds, where every instance of the stage recorded them: ms of CPU per order
    cpu = rb.execute_seconds(values, "cpu_s")
    assert cpu == {("r1", "validate_orders", 1): {"validate_orders": 1.0},
                   ("r1", "check_credit", 0): {"check_credit": 0.25}}  # fmt: skip
    rates = rb.stage_rates(tis, {"check_credit": 502, "validate_orders": 502}, spent, cpu)
    assert rates["credit"]["cpu_s"] is None  # the carried credit of partition 0 has none
    rates = rb.stage_rates(tis[1:], {"check_credit": 500, "validate_orders": 500}, spent, cpu)
    assert rates["validate"]["cpu_ms_per_order"] == 2.0
    assert rates["credit"]["cpu_ms_per_order"] == 0.5
    # a carrying instance that failed counts for no stage
    failed = [_ti("validate_orders", 0, 0, 2.0, state="failed"), *tis[1:]]
    assert rb.stage_rates(failed, {"allocate_inventory": 2}, spent)["allocate"]["execute_s"] is None


def test_sends_count_only_rows_sent_inside_a_sender_instance():
    tis = [_ti("send_releases", -1, 0, 4.0), _ti("send_releases", -1, 100, 10.0, run="r2")]
    sent = [T0 + timedelta(seconds=s) for s in (1, 2, 3, 3.5)] + [T0 + timedelta(seconds=50)]
    r = rb.send_rate(tis, sent)
    # 4 rows inside the first instance (4 s); the second sent none and does not dilute
    assert r == {
        "sent": 4,
        "sent_outside_sender": 1,
        "sender_task_instances": 1,
        "carried_sends": 0,
        "sender_seconds": 4.0,
        "sends_per_s": 1.0,
    }


def test_a_send_carried_by_a_stage_task_counts_as_a_sender():
    """Every partition carried: its releases are sent from its validate task, whose XCom
    says when; those rows and seconds count, merged with the sender instances'."""
    at = lambda s: (T0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    values = [
        ("r1", "validate_orders", 0, {"orders": 9, "carried": [
            {"task_id": "check_credit", "orders": 9, "execute_s": 0.1},
            {"task_id": "send_releases", "sent": 3, "started_at": at(10), "ended_at": at(12)},
        ]}),
        ("r1", "validate_orders", 1, {"orders": 9, "carried": [
            {"task_id": "send_releases", "sent": 2, "started_at": at(11), "ended_at": at(14)},
        ]}),
        ("r1", "validate_orders", 2, {"orders": 1, "carried": [  # an older XCom: no times
            {"task_id": "send_releases", "sent": 1, "execute_s": 0.2},
        ]}),
    ]  # fmt: skip
    carried = rb.carried_sends(values)
    assert carried == [(T0 + timedelta(seconds=10), T0 + timedelta(seconds=12)),
                       (T0 + timedelta(seconds=11), T0 + timedelta(seconds=14))]  # fmt: skip
    tis = [_ti("send_releases", -1, 30, 2.0)]  # the run's own sender, finding nothing
    sent = [T0 + timedelta(seconds=s) for s in (10.5, 11, 12.5, 13, 13.5)]
    r = rb.send_rate(tis, sent, carried)
    assert r["sent"] == 5 and r["sent_outside_sender"] == 0
    assert r["carried_sends"] == 2 and r["sender_task_instances"] == 0
    assert r["sender_seconds"] == 4.0  # 10–14 s merged
    assert r["sends_per_s"] == round(5 / 4, 1)
    # without the carried sends, none of those rows would count
    assert rb.send_rate(tis, sent)["sends_per_s"] is None


def test_overlapping_senders_of_two_runs_count_each_row_and_second_once():
    tis = [_ti("send_releases", -1, 0, 10.0), _ti("send_releases", -1, 5, 10.0, run="r2")]
    sent = [T0 + timedelta(seconds=s) for s in (1, 6, 7, 14)]
    r = rb.send_rate(tis, sent)
    assert r["sent"] == 4 and r["sent_outside_sender"] == 0
    assert r["sender_seconds"] == 15.0  # 0–15 s, not 10 + 10
    assert r["sends_per_s"] == round(4 / 15, 1)


def test_day_latency_spans_first_received_to_last_released():
    rows = [
        (T0, T0 + timedelta(seconds=30)),
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=100)),
        (T0 + timedelta(seconds=20), None),  # held: no release, still received
    ]
    d = rb.day_latency(rows)
    assert d["orders_received"] == 3 and d["orders_released"] == 2
    assert d["received_to_released_s"] == 100.0
    assert d["received_to_released_p50_s"] == 60.0  # 30 and 90 s


def test_single_summary_splits_the_wait_for_intake_from_processing():
    singles = [
        {"drop_to_stored_s": float(s), "drop_to_released_s": float(s + 20)} for s in range(1, 21)
    ] + [{"drop_to_stored_s": 5.0, "drop_to_released_s": None}]  # held: not in the p95
    s = rb.single_summary(singles)
    assert s["singles"] == 21 and s["singles_released"] == 20
    assert s["single_arrival_max_s"] == 40.0
    assert 39.0 <= s["single_arrival_p95_s"] <= 40.0
    assert s["single_stored_to_released_p95_s"] == 20.0
    assert s["single_drop_to_wms_p95_s"] is None  # no send measured: none, not zero
    for i, single in enumerate(singles[:20]):
        single["drop_to_wms_s"] = single["drop_to_released_s"] + (30.0 if i == 0 else 2.0)
    assert rb.single_summary(singles)["single_drop_to_wms_p95_s"] >= 40.0


def test_the_json_has_the_issue_keys_first_and_refuses_a_missing_one(tmp_path):
    results = {
        "executor": "celery",
        "orders": 500,
        "received_to_released_s": 80.0,
        "stage_orders_per_s": {k: 1.0 for k in ("validate", "credit", "allocate", "plan")}
        | {"release": 2.0},
        "sends_per_s": 30.0,
        "single_arrival_p95_s": 40.0,
        "naive_orders": 100,
        "naive_ratio": 12.5,
        "peak_rss_mib": 2048.0,
        "shipped_to_notified_p95_s": 12.0,
        "workers": 2,
    }
    out = rb.shape(results)
    assert list(out)[: len(rb.JSON_KEYS)] == list(rb.JSON_KEYS)
    assert json.loads(json.dumps(out))["workers"] == 2
    with pytest.raises(KeyError):
        rb.shape({k: v for k, v in results.items() if k != "sends_per_s"})
    with pytest.raises(KeyError):
        rb.shape(results | {"stage_orders_per_s": {"validate": 1.0}})


def test_the_pool_holds_only_what_the_sandbox_will_not_deliver(tmp_path):
    from datetime import date

    from orderflow_sandbox.generator import generate

    m = generate(
        tmp_path,
        seed=3,
        days=2,
        orders_per_day=60,
        customers=80,
        items=300,
        business_date=date(2026, 11, 27),
    )
    day2 = datetime.combine(date.fromisoformat(m.business_dates[1]), datetime.min.time(), UTC)
    pool = rb._pool(tmp_path, day2 - timedelta(minutes=1))
    assert pool["singles"] and pool["files"]
    for item in pool["singles"] + pool["files"]:
        assert datetime.fromisoformat(item["at"].replace("Z", "+00:00")) >= day2 - timedelta(
            minutes=1
        )
    for item in pool["singles"]:
        assert item["channel"] == "edi" and len(item["orders"]) == 1
        assert not item["orders"][0]["defects"] and not item["orders"][0]["duplicate_of"]
    assert pool["portal_singles"]
    for order in pool["portal_singles"]:
        assert order["channel"] == "portal" and not order["defects"]
        assert datetime.fromisoformat(
            order["arrival_at"].replace("Z", "+00:00")
        ) > day2 - timedelta(minutes=1)


def test_an_order_is_released_when_its_release_commits_not_when_its_transaction_began():
    """RELEASED events carry their transaction's start; the release stage's counts say when
    it ended (committed): own release tasks and releases carried in an earlier stage's
    instance (its map index on the events), the later of two under one key."""
    at = lambda s: (T0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    values = [
        ("r1", "validate_orders", 0, {"orders": 9, "carried": [
            {"task_id": "check_credit", "ended_at": at(3)},
            {"task_id": "release_to_wms", "ended_at": at(9)},
        ]}),
        ("r1", "release_to_wms", 1, {"orders": 4, "ended_at": at(12)}),
        ("r1", "release_to_wms", 0, {"orders": 2, "ended_at": at(15)}),  # same key as above
        ("r2", "release_to_wms", 0, {"orders": 1}),  # an older XCom: no time
    ]  # fmt: skip
    ends = rb.release_ends(values)
    assert ends == {("r1", 0): T0 + timedelta(seconds=15), ("r1", 1): T0 + timedelta(seconds=12)}
    event = T0 + timedelta(seconds=5)
    assert rb.released_at(event, "r1", 1, ends) == T0 + timedelta(seconds=12)
    assert rb.released_at(event, "r2", 0, ends) == event  # unknown: the event
    later = T0 + timedelta(seconds=20)
    assert rb.released_at(later, "r1", 1, ends) == later  # never before the event


@pytest.mark.parametrize(
    ("cmd", "group"),
    [
        ("airflow supervisor: ['airflow', 'tasks', 'run', 'order_processing']", "task supervisors"),
        ("airflow worker -- 0199a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", "task processes"),
        ("airflow worker -- LocalExecutor: <idle>", "executor workers"),
        ("airflow api_server -- host:127.0.0.1 port:8080", "api-server"),
        ("postgres: postgres orderflow 127.0.0.1(40122) idle", "postgresql orderflow"),
        ("postgres: postgres airflow 127.0.0.1(40124) UPDATE", "postgresql airflow"),
        ("postgres: autovacuum worker orderflow", "postgresql"),
        ("postgres: postgres orderflow [local] idle in transaction", "postgresql orderflow"),
        ("postgres: 15/main: postgres airflow 127.0.0.1(5122) idle", "postgresql airflow"),
        ("postgres: 15/main: checkpointer", "postgresql"),
        ("python -m something.else --flag", "other: python -m something.else --flag"),
        ("/usr/lib/postgresql/16/bin/postgres -D /tmp/pgdata", "postgresql"),
        ("tesseract /tmp/ocr-x/page.png stdout --psm 6 tsv", "OCR (tesseract)"),
    ],
)
def test_stack_processes_are_grouped_by_their_titles(cmd, group):
    assert rb.process_group(cmd) == group


def test_cpu_between_two_looks_counts_new_groups_and_drops_idle_ones():
    before = {"scheduler": 10.0, "postgresql orderflow": 5.0, "sandbox": 2.0}
    after = {"scheduler": 12.5, "postgresql orderflow": 25.0, "sandbox": 2.0, "task processes": 7}
    assert rb.cpu_between(before, after) == {
        "postgresql orderflow": 20.0,
        "task processes": 7.0,
        "scheduler": 2.5,
    }


class _Proc:
    def __init__(self, cmd, parent=None):
        self.cmd, self._parent = cmd, parent

    def cmdline(self):
        return self.cmd.split(" ")

    def name(self):
        return self.cmd.split(" ")[0]

    def parent(self):
        return self._parent


def test_a_spawned_worker_counts_with_the_process_that_spawned_it():
    api = _Proc("airflow api_server -- host:127.0.0.1 port:8080")
    worker = _Proc("python -B -c from multiprocessing.spawn import spawn_main", api)
    assert rb._group(worker) == "api-server"
    assert rb._group(_Proc("python -c from multiprocessing.spawn import spawn_main")) == (
        "other: python -c from multiprocessing.spawn import spawn_main"
    )


class _Looked(_Proc):
    """A process as the sampler looks at it: its command line and CPU seconds so far."""

    pid = 4242

    def __init__(self, cmd, cpu):
        super().__init__(cmd)
        self.cpu = cpu

    def cmdline(self):
        return self.cmd.split(" ") if self.cmd else []

    def oneshot(self):
        return contextlib.nullcontext()

    def memory_info(self):
        return types.SimpleNamespace(rss=2**20)

    def cpu_times(self):
        return types.SimpleNamespace(user=self.cpu, system=0.0)

    def create_time(self):
        return 1.0


def test_an_exiting_process_keeps_the_group_it_was_seen_in():
    """A zombie's command line is empty: its CPU stays with its group, not ``other``."""
    looks = iter(
        [
            [_Looked("airflow worker -- 0199a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", 1.0)],
            [_Looked("", 2.5)],
        ]
    )
    sampler = rb.Sampler(stack=None)
    sampler.processes = lambda: next(looks)
    sampler.sample()
    sampler.sample()
    assert sampler.cpu_by_group() == {"task processes": 2.5}


def test_the_summary_names_how_fast_the_host_was():
    """Two runs of the same code differed by a third on one machine type: the summary and
    the JSON carry the reference workload's CPU before and after, to tell them apart."""
    results = {
        "executor": "local",
        "orders": 500,
        "received_to_released_s": 80.0,
        "stage_orders_per_s": {"validate": 1.0},
        "sends_per_s": 30.0,
        "single_arrival_p95_s": None,
        "naive_orders": 0,
        "naive_ratio": None,
        "peak_rss_mib": 2048.0,
        "machine": {"cpus": 2, "reference_cpu_ms_start": 38.4, "reference_cpu_ms_end": 52.1},
    }
    host = [ln for ln in rb.summary_lines(results) if "reference workload" in ln]
    assert host and "38.4 ms" in host[0] and "52.1 ms" in host[0]
    assert 1 < rb.reference_cpu_ms(repeat=1) < 5_000
