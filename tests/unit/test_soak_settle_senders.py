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
