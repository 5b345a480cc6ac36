"""Portal intake against the sandbox feed: no gaps, no repeats, across reruns, redeliveries,
5xx and a lost watermark."""

import json
from datetime import timedelta

import pytest
from tests_support import START

from orderflow.intake import portal
from orderflow.integrations.systems import PortalHook
from orderflow.store import cursors, db

pytestmark = [pytest.mark.sandbox, pytest.mark.db]


@pytest.fixture(autouse=True)
def connections(sandbox, monkeypatch):
    for key, value in sandbox.connection_env().items():
        monkeypatch.setenv(key, value)


def _faults(sandbox, *rules):
    sandbox.client.put("/admin/faults", json={"seed": 9, "rules": list(rules)}).raise_for_status()


def _portal_submissions(day_dir):
    """Everything the portal feed carries: new orders, and customers' cancel/change items."""
    rows = [json.loads(x) for x in (day_dir / "orders.jsonl").read_text().splitlines()]
    changes = day_dir / "portal_changes.jsonl"
    extra = [json.loads(x) for x in changes.read_text().splitlines()] if changes.exists() else []
    return [r for r in rows if r["channel"] == "portal"] + extra


def _request_ids(subs) -> list[str]:
    """The request ids intake stores them under (a change item's is marked as one)."""
    return [
        ("change:" if s.get("type") in ("cancel", "change") else "") + s["client_request_id"]
        for s in subs
    ]


def _portal_messages(store, day_dir):
    """Messages of this day's portal submissions (the store is shared with other tests)."""
    ids = _request_ids(_portal_submissions(day_dir))
    return store.execute(
        "SELECT count(*), count(DISTINCT client_request_id) FROM orderflow.channel_message "
        "WHERE channel = 'portal' AND client_request_id = ANY(%s)",
        (ids,),
    ).fetchone()


def test_portal_pull_is_gapless_and_exactly_once(sandbox, store, day_dir):
    subs = _portal_submissions(day_dir)
    half = sorted(s["arrival_at"] for s in subs)[len(subs) // 2]
    sandbox.client.put("/admin/clock", json={"now": half})
    # flaky feed: redeliveries, reordering and 5xx while reading
    _faults(
        sandbox,
        {"prefix": "/portal", "duplicate_rate": 0.3, "out_of_order_rate": 0.5, "error_rate": 0.2},
    )
    hook = PortalHook(retries=10, backoff=0.01)
    first = portal.pull(store, hook, page_size=25)
    assert first.items > 0
    assert first.redeliveries > 0
    n_first, distinct_first = _portal_messages(store, day_dir)
    assert n_first == distinct_first == first.cursor_to

    # a rerun with nothing new stores nothing
    again = portal.pull(store, hook, page_size=25)
    assert again.outcomes == {}
    assert _portal_messages(store, day_dir)[0] == n_first

    # the watermark write is lost (crash after storing, before advancing): no repeats
    with db.transaction(store):
        cursors.put(store, "portal:portal_default", "0")
    replay = portal.pull(store, hook, page_size=25)
    assert replay.outcomes == {}
    assert replay.redeliveries >= n_first
    assert _portal_messages(store, day_dir)[0] == n_first

    # the rest of the day arrives
    sandbox.client.put("/admin/clock", json={"now": (START + timedelta(days=2)).isoformat()})
    portal.pull(store, hook, page_size=25)
    total, distinct = _portal_messages(store, day_dir)
    assert total == distinct == len({s["client_request_id"] for s in subs})
    counts = dict(
        store.execute(
            "SELECT outcome, count(*) FROM orderflow.channel_message WHERE channel = 'portal' "
            "AND client_request_id = ANY(%s) GROUP BY outcome",
            (_request_ids(subs),),
        ).fetchall()
    )
    assert counts.get("pending", 0) == 0
    assert sum(counts.values()) == total
    portal_ids = {s["submission_id"] for s in subs if "submission_id" in s}
    resubmitted_in_portal = sum(1 for s in subs if s.get("duplicate_of") in portal_ids)
    assert counts.get("duplicate", 0) >= resubmitted_in_portal
