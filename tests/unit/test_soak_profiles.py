"""The soak's chaos profiles (include/soak/*.yaml): every one loads, the queue outage of the
pushed-event wake-ups is in the CI short soak, the drill and the ten-day soak, and a malformed
``queue_down`` is refused with the reason."""

from __future__ import annotations

import pytest

from orderflow.dev import soak


@pytest.mark.parametrize("name", ["short", "drill", "default", "kills"])
def test_every_profile_loads_in_time_order(name):
    profile = soak.load_profile(name)
    assert profile.actions
    hours = [a.at_hours for a in profile.actions]
    assert hours == sorted(hours)
    assert {a.kind for a in profile.actions} <= set(soak.KINDS)


@pytest.mark.parametrize("name", ["short", "drill", "default"])
def test_the_queue_goes_down_for_a_while_and_comes_back_before_the_day_ends(name):
    profile = soak.load_profile(name)
    outages = [a for a in profile.actions if a.kind == "queue_down"]
    assert outages
    for a in outages:
        assert a.duration_hours > 0 and a.signal in ("kill", "stop")
        # back while releases still ship (orders arrive until about 23.5 h and ship up to
        # ~7 h after): a shipment notified through a push wake-up after it is its recovery
        assert a.at_hours + a.duration_hours <= 26 or name == "default"


def test_the_short_soak_takes_the_queue_down_with_sigkill_and_the_drill_freezes_it():
    short = [a for a in soak.load_profile("short").actions if a.kind == "queue_down"]
    drill = [a for a in soak.load_profile("drill").actions if a.kind == "queue_down"]
    assert [a.signal for a in short] == ["kill"]
    assert [a.signal for a in drill] == ["stop"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("{at_hours: 1, kind: queue_down}", "queue_down needs duration_hours"),
        (
            "{at_hours: 1, kind: queue_down, duration_hours: 1, signal: term}",
            "signal is 'kill' or 'stop'",
        ),
        ("{at_hours: 1, kind: redis_down, duration_hours: 1}", "kind must be one of"),
    ],
)
def test_a_malformed_queue_down_is_refused(tmp_path, action, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nactions:\n  - {action}\n")
    with pytest.raises(ValueError, match=reason):
        soak.load_profile(str(path))


def test_notifications_are_classified_by_the_run_that_sent_them():
    assert soak._path("asset_triggered", ["orders_released", "fulfilment_events_pushed"]) == "push"
    assert soak._path("scheduled", []) == "poll"
    assert soak._path("asset_triggered", ["orders_released"]) == "other"
    assert soak._path("manual", []) == "other"


def test_latency_is_split_by_path_with_the_shipments_counted():
    notified = [{"seconds": s, "path": "push"} for s in (2.0, 4.0, 6.0)] + [
        {"seconds": 100.0, "path": "poll"}
    ]
    by_path = soak._latency_by_path(notified)
    assert by_path["all"]["shipments"] == 4
    assert by_path["push"] == {"p50_s": 4.0, "p95_s": 5.8, "max_s": 6.0, "shipments": 3}
    assert by_path["poll"]["p95_s"] == 100.0 and by_path["poll"]["shipments"] == 1
    assert by_path["other"] == {"p50_s": None, "p95_s": None, "max_s": None, "shipments": 0}
    lines = soak._path_lines(by_path)
    assert any(line.startswith("  - via push: p50 4.0 s, p95 5.8 s") for line in lines)


def test_a_wait_that_overlapped_a_fault_is_left_out_of_the_calm_figure():
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

    def notice(arrived_s: float, sent_s: float) -> dict:
        arrived, sent = t0 + timedelta(seconds=arrived_s), t0 + timedelta(seconds=sent_s)
        return {"arrived": arrived, "sent": sent, "seconds": sent_s - arrived_s, "path": "push"}

    kill = soak.Injected("worker_killed_mid_task", "kill", t0.isoformat(), "", recovered_s=90)
    lifted = soak.Injected(  # never recovered: its window ends when it was lifted
        "fault_window", "outage", (t0 + timedelta(seconds=200)).isoformat(), "",
        until=(t0 + timedelta(seconds=210)).isoformat(),
    )  # fmt: skip
    skipped = soak.Injected("queue_down", "q", t0.isoformat(), "", detail={"skipped": "x"})
    before, held, after = notice(-10, -5), notice(30, 95), notice(100, 103)
    waited_into_it = notice(-5, 10)  # arrived before the kill, sent after it
    in_outage, after_outage = notice(205, 220), notice(211, 214)
    notified = [before, held, after, waited_into_it, in_outage, after_outage]
    calm = soak.outside_faults(notified, [kill, lifted, skipped])
    assert calm == [before, after, after_outage]
    orders = [{"received": n["arrived"], "released": n["sent"]} for n in notified]
    assert soak.outside_faults(orders, [kill, lifted], "received", "released") == [
        orders[0], orders[2], orders[5]
    ]  # fmt: skip
    by_path = soak._latency_by_path(notified)
    outside = soak._latency_by_path(calm)["all"]
    assert outside["max_s"] == 5.0
    assert any("outside the faults' reach" in ln for ln in soak._path_lines(by_path, outside))
    assert set(by_path) == {"all", *soak.PATHS}  # the paths add up to all: nothing else in


def test_the_soaks_people_cover_every_owner_role_and_one_outsider():
    import yaml

    from orderflow import access, settings

    shipped = yaml.safe_load((settings.INCLUDE_DIR / "access" / "roles.yaml").read_text())
    users = soak.desk_users()
    for role in shipped["roles"]:
        if role in ("operations_manager", "rule_approver", "sales"):
            continue
        assert users[f"desk.{role}"] == [role]
    assert not set(users[soak.OUTSIDER]) & (set(shipped["roles"]) - {"sales"})
    assert access.SUPER_ROLE in users["admin"]


def test_the_local_stack_logs_in_every_user_the_roles_file_names(tmp_path, monkeypatch):
    import yaml

    from orderflow.dev import stack

    path = tmp_path / "roles.yaml"
    path.write_text(
        yaml.safe_dump({"users": {"admin": ["operations_manager"], "b": ["x"], "a": []}})
    )
    monkeypatch.setenv("ORDERFLOW_ROLES_FILE", str(path))
    assert stack.airflow_users() == "admin:admin,a:user,b:user"
