"""The trigger an approval's Required Action waits on: Airflow's human-in-the-loop trigger
(an answer, or the timeout's default), that also watches the exception in the store and
fires as soon as it is resolved anywhere else — at the desk, from the CLI, by a reprocess or
a rule — so the Required Action ends within ``watch_interval`` seconds and its approval run
gives its place in the window back instead of waiting for its 3-day timeout.

A triggerer may hold hundreds of these (one per waiting approval, ``APPROVAL_WINDOW``): the
store is read once per interval for all of them in the process (one query), not once each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.standard.triggers.hitl import HITLTrigger, HITLTriggerEventSuccessPayload
from airflow.sdk.timezone import utcnow
from airflow.triggers.base import TriggerEvent

from orderflow.settings import APPROVAL_WATCH_S, STORE_CONN_ID

log = logging.getLogger(__name__)

#: The event's key when the exception was resolved outside the Required Action.
RESOLVED_ELSEWHERE = "resolved_elsewhere"


def _read(conn_id: str, exception_ids: list[int]) -> dict[int, dict]:
    from orderflow.store import db
    from orderflow.store import decisions as decisions_store

    conn = db.connect(conn_id)
    try:
        return decisions_store.exception_states(conn, exception_ids)
    finally:
        conn.close()


def _read_answer(ti_id: Any) -> Any:
    """The Required Action's HITL detail (its answer, if any), through the supervisor."""
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    resp = get_hitl_detail_content_detail(ti_id=ti_id)
    if resp is None:
        # dag.test() runs the trigger under an in-process supervisor that relays no HITL
        # reads (the triggerer's does): ask its Execution API client directly
        supervisor = getattr(task_runner.SUPERVISOR_COMMS, "supervisor", None)
        if supervisor is not None:
            resp = supervisor.client.hitl.get_detail_response(ti_id)
    return resp


class _ExceptionWatch:
    """The states of every exception watched in this process, read together at most once
    per interval (per store connection)."""

    def __init__(self) -> None:
        self.watched: dict[str, Counter[int]] = {}
        self.states: dict[int, dict] = {}
        self.read_at: dict[str, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}  # per event loop (dag.test runs one each)

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())

    def add(self, conn_id: str, exception_id: int) -> None:
        self.watched.setdefault(conn_id, Counter())[exception_id] += 1
        self.read_at.pop(conn_id, None)  # a newcomer is read on its first look

    async def state(self, conn_id: str, exception_id: int, interval: float) -> dict | None:
        from asgiref.sync import sync_to_async

        watched = self.watched.get(conn_id) or Counter({exception_id: 1})
        async with self._lock():
            if time.monotonic() - self.read_at.get(conn_id, float("-inf")) >= interval:
                self.read_at[conn_id] = time.monotonic()
                try:
                    self.states.update(await sync_to_async(_read)(conn_id, sorted(watched)))
                except Exception:  # the store restarting: look again next interval
                    log.warning("approvals: could not read the exceptions watched", exc_info=True)
        return self.states.get(exception_id)

    def forget(self, conn_id: str, exception_id: int) -> None:
        watched = self.watched.get(conn_id)
        if watched and exception_id in watched:
            watched[exception_id] -= 1
            if watched[exception_id] <= 0:
                del watched[exception_id]
                self.states.pop(exception_id, None)


_WATCH = _ExceptionWatch()


class ExceptionApprovalTrigger(HITLTrigger):
    """:class:`HITLTrigger` for one exception's approval: also fires
    ``{"resolved_elsewhere": {status, resolution, resolved_by, resolved_at}}`` once the
    exception is no longer open.

    :param exception_id: the exception the Required Action asks about (0: none, not watched).
    :param store_conn_id: the operational store.
    :param watch_interval: seconds between two looks at the store.
    :param poke_interval: seconds between two reads of the answer (a safety net: Airflow's
        API resumes the waiting task itself when a person answers).
    """

    def __init__(
        self,
        *,
        exception_id: int,
        store_conn_id: str = STORE_CONN_ID,
        watch_interval: float = APPROVAL_WATCH_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exception_id = int(exception_id)
        self.store_conn_id = store_conn_id
        self.watch_interval = float(watch_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (
            f"{__name__}.{type(self).__name__}",
            {
                **kwargs,
                "exception_id": self.exception_id,
                "store_conn_id": self.store_conn_id,
                "watch_interval": self.watch_interval,
            },
        )

    async def _handle_response(self) -> TriggerEvent | None:
        """A person's answer, validated as :class:`HITLTrigger` does (read through
        :func:`_read_answer`)."""
        from airflow.providers.common.compat.sdk import ParamValidationError
        from asgiref.sync import sync_to_async

        resp = await sync_to_async(_read_answer)(self.ti_id)
        if resp is None or not (resp.response_received and resp.chosen_options):
            return None
        params_input = resp.params_input or {}
        try:
            for key, value in params_input.items():
                self.params[key] = value
        except ParamValidationError as err:
            return TriggerEvent({"error": str(err), "error_type": "validation"})
        responder = self._get_responder(resp)
        self.log.info("[approval] answered %s by %s", list(resp.chosen_options), responder)
        return TriggerEvent(
            HITLTriggerEventSuccessPayload(
                chosen_options=list(resp.chosen_options),
                params_input=params_input,
                responded_at=resp.responded_at,
                responded_by_user=responder,
                timedout=responder is None,
            )
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        next_answer_read = 0.0
        if self.exception_id:
            _WATCH.add(self.store_conn_id, self.exception_id)
        try:
            while True:
                if self.timeout_datetime and self.timeout_datetime < utcnow():
                    yield await self._handle_timeout()
                    return
                if time.monotonic() >= next_answer_read:
                    event = await self._handle_response()
                    if event:
                        yield event
                        return
                    next_answer_read = time.monotonic() + self.poke_interval
                if self.exception_id:
                    state = await _WATCH.state(
                        self.store_conn_id, self.exception_id, self.watch_interval
                    )
                    if state is not None and state["status"] != "open":
                        self.log.info(
                            "[approval] exception %s resolved elsewhere: %s",
                            self.exception_id,
                            state,
                        )
                        yield TriggerEvent({RESOLVED_ELSEWHERE: state})
                        return
                await asyncio.sleep(min(self.watch_interval, self.poke_interval))
        finally:
            if self.exception_id:
                _WATCH.forget(self.store_conn_id, self.exception_id)
