"""Settle triggers the sender of a slow-schedule outbox action (crm_sync, every 5 minutes)
when only its rows are due, at most once a minute — instead of reporting "did not settle"."""

from __future__ import annotations

from orderflow.dev import soak


class _Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def api(self, method: str, path: str, **_kw) -> None:
        self.calls.append((method, path))


def test_due_crm_requests_trigger_crm_sync_once_a_minute():
    stack = _Api()
    triggered: dict[str, float] = {}
    detail = {"outbox crm_approval_request pending": 8}
    soak._trigger_scheduled_senders(stack, detail, triggered)
    soak._trigger_scheduled_senders(stack, detail, triggered)
    assert stack.calls == [("POST", "/dags/crm_sync/dagRuns")]
    triggered["crm_sync"] -= 61
    soak._trigger_scheduled_senders(stack, detail, triggered)
    assert len(stack.calls) == 2


def test_rows_other_senders_deliver_trigger_nothing():
    stack = _Api()
    detail = {"outbox email pending": 3, "task order_processing.plan_shipments running": 1}
    soak._trigger_scheduled_senders(stack, detail, {})
    assert stack.calls == []


class _Stack(_Api):
    """The stack as ``_wait_quiet`` sees it: no work DAG busy, no file waiting, and the store
    counts (messages, outbox due, events, changes due) read in turn from ``store``."""

    def __init__(self, store: list[tuple], state) -> None:
        super().__init__()
        self.store = list(store)
        self.state = state
        self.polls = 0

    def sample_cpu(self) -> None:
        pass

    def query(self, db: str, sql: str, params=None):
        if db == "airflow":
            return []
        if "order_change" in sql:
            self.polls += 1
            return [self.store.pop(0) if len(self.store) > 1 else self.store[0]]
        return []


def test_a_change_waiting_for_its_next_processing_run_keeps_settle_busy_and_runs_it(
    monkeypatch, tmp_path
):
    """A customer's change to a released order: its WMS cancel is sent, and the next
    order_processing run gives the stock back. Until then the stack is not settled (compared
    earlier, our released stock is above the WMS's), and settle runs order_processing rather
    than wait up to 5 minutes for its schedule."""
    monkeypatch.setattr(soak, "QUIET_POLL_S", 0)
    monkeypatch.setattr(soak.time, "sleep", lambda _s: None)
    changes_then_none = [(0, 0, 0, 1)] * 2 + [(0, 0, 0, 0)]
    stack = _Stack(changes_then_none, tmp_path)
    quiet, busy, _ = soak._wait_quiet(stack, deadline=soak.time.monotonic() + 60)
    # quiet only after three polls in a row without the change: 2 busy polls + 3 quiet ones
    assert quiet and busy[-1] == 0 and stack.polls == 5
    assert stack.calls == [("POST", "/dags/order_processing/dagRuns")]  # once, not per poll
