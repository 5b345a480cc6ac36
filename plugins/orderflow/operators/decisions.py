"""Operators for human decisions: dispatching approvals to Airflow's human-in-the-loop tasks,
applying the answers, and preparing a one-order reprocess run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.operators.processing import _ctx
from orderflow.settings import (
    APPROVAL_ANSWER_POLL_S,
    APPROVAL_WATCH_S,
    APPROVAL_WINDOW,
    STORE_CONN_ID,
)

APPROVAL_DAG_ID = "order_approval"


def _user(context: Any, answer: dict | None = None) -> str:
    """Who decided: the HITL responder, else the user who triggered the run."""
    if answer and (who := answer.get("responded_by_user")):
        return who.get("name") or who.get("id") or "unknown"
    run = context.get("dag_run")
    return getattr(run, "triggering_user_name", None) or "unknown"


class RequestApprovalsOperator(BaseOperator):
    """Find open exceptions that need a person's approval and have no approval run yet; mark
    them and return one ``order_approval`` run request each (``trigger_run_id`` + ``conf``),
    for a mapped ``TriggerDagRunOperator``. Bounded per run, and by the window: never more
    than ``window`` ``order_approval`` runs active (queued or waiting for an answer), so none
    queues behind the DAG's run limit; what does not fit waits on the desk for a place.

    :param limit: approvals requested per run (default 100).
    :param window: ``order_approval`` runs active at most (default ``APPROVAL_WINDOW``, the
        DAG's ``max_active_runs``). Templated.
    :param store_conn_id: the operational store. Templated.
    """

    template_fields: Sequence[str] = ("window", "store_conn_id")

    def __init__(
        self,
        *,
        limit: int = 100,
        window: int | str = APPROVAL_WINDOW,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.limit = limit
        self.window = window
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from orderflow.domain.approvals import APPROVABLE, POST_RELEASE
        from orderflow.store import db
        from orderflow.store import decisions as decisions_store

        active = context["ti"].get_dr_count(dag_id=APPROVAL_DAG_ID, states=["queued", "running"])
        room = min(self.limit, max(0, int(self.window) - active))
        if not room:
            self.log.info(
                "approval window full (%d of %s runs active): new approvals wait on the desk",
                active,
                self.window,
            )
            return []

        conn = db.connect(self.store_conn_id)
        try:
            with db.transaction(conn):
                rows = decisions_store.take_for_approval(conn, [*APPROVABLE, *POST_RELEASE], room)
        finally:
            conn.close()
        requests = [
            {
                "trigger_run_id": run_id,
                "conf": {
                    "exception_id": eid,
                    "order_id": oid,
                    "category": cat,
                    "owner_role": role,
                    "escalation_role": escalation or "",
                    "subject": f"{cat.replace('_', ' ')} on order {oid} — {role} decision",
                    "body": f"{reason}\n\nSLA due {due:%Y-%m-%d %H:%M} UTC. Approve (with a "
                    "reason), reject the order, or keep it on hold.",
                },
            }
            for eid, oid, cat, role, reason, due, run_id, escalation in rows
        ]
        self.log.info(
            "requesting %d approvals (%d runs already active, window %s)",
            len(requests),
            active,
            self.window,
        )
        return requests


class ApplyDecisionOperator(BaseOperator):
    """Apply a human-in-the-loop answer to its exception (audited, idempotent).

    :param exception_id: the exception decided. Templated.
    :param answer: the HITL task's result (``chosen_options``, ``params_input``,
        ``responded_by_user``). Templated (pass ``hitl_task.output``).
    """

    template_fields: Sequence[str] = ("exception_id", "answer", "store_conn_id")

    def __init__(
        self,
        *,
        exception_id: int | str,
        answer: Any,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exception_id = exception_id
        self.answer = answer
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow import decisions
        from orderflow.store import db

        answer = self.answer or {}
        choice = (answer.get("chosen_options") or ["Keep on hold"])[0]
        reason = (answer.get("params_input") or {}).get("reason")
        conn = db.connect(self.store_conn_id)
        try:
            result = decisions.decide(
                conn,
                int(self.exception_id),
                choice,
                actor=_user(context, answer),
                reason=reason,
                ctx=_ctx(context, claimed=False),
            )
        except decisions.DecisionRefused as exc:
            from airflow.sdk.exceptions import AirflowFailException

            decisions.ask_again(conn, int(self.exception_id))
            raise AirflowFailException(f"{exc} — the exception will be asked again") from exc
        finally:
            conn.close()
        self.log.info("decision on exception %s: %s", self.exception_id, result)
        return result


class PrepareReprocessOperator(BaseOperator):
    """Apply a reprocess action to one order and claim it for this run.

    :param order_id: the order. Templated.
    :param action: revalidate | reallocate | release | cancel. Templated.
    :param reason: why (audited). Templated.
    :return: (XCom) the partition for the stage operators: ``{"label", "order_ids"}``.
    """

    template_fields: Sequence[str] = ("order_id", "action", "reason", "store_conn_id")

    def __init__(
        self,
        *,
        order_id: str,
        action: str,
        reason: str = "",
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.order_id = order_id
        self.action = action
        self.reason = reason
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow import decisions
        from orderflow.store import db

        order_id = self.order_id.strip()
        conn = db.connect(self.store_conn_id)
        try:
            result = decisions.reprocess(
                conn,
                order_id,
                self.action,
                actor=_user(context),
                reason=self.reason,
                ctx=_ctx(context),
            )
        except decisions.DecisionRefused as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from exc  # a retry would not change the answer
        finally:
            conn.close()
        self.log.info("reprocess: %s", result)
        return {"label": f"{order_id} · {self.action}", "order_ids": [order_id]}


def _hitl_base():
    from airflow.providers.standard.operators.hitl import HITLOperator

    return HITLOperator


class OwnerRoleHITLOperator(_hitl_base()):
    """A Required Action only the users holding the exception's owner (or escalation) role
    may answer: ``assigned_users`` from the OrderFlow role mapping (``orderflow.access``),
    resolved when the task runs. Airflow refuses a response from anyone else.

    It waits deferred on :class:`~orderflow.operators.approval_trigger.ExceptionApprovalTrigger`
    (Airflow's human-in-the-loop trigger that also watches the exception): an answer resumes it
    as usual; when the exception is resolved anywhere else (desk, CLI, reprocess, a rule) the
    task ends **skipped** within ``watch_interval`` seconds — audited as ended by
    ``orderflow``, with who resolved the exception and how — and its run frees its place in
    the approval window.

    :param owner_role: the exception's owner role. Templated.
    :param escalation_role: its escalation role, if any. Templated.
    :param exception_id: the exception asked about (0: none to watch). Templated.
    :param watch_interval: seconds between two looks at the exception.
    :param answer_poll_interval: seconds between two reads of the answer by the trigger (a
        safety net: the API's answer resumes the task itself).
    """

    template_fields: Sequence[str] = (
        *_hitl_base().template_fields,
        "owner_role",
        "escalation_role",
        "exception_id",
        "store_conn_id",
    )

    def __init__(
        self,
        *,
        owner_role: str,
        escalation_role: str = "",
        exception_id: int | str = 0,
        store_conn_id: str = STORE_CONN_ID,
        watch_interval: float = APPROVAL_WATCH_S,
        answer_poll_interval: float = APPROVAL_ANSWER_POLL_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.owner_role = owner_role
        self.escalation_role = escalation_role
        self.exception_id = exception_id
        self.store_conn_id = store_conn_id
        self.watch_interval = watch_interval
        self.answer_poll_interval = answer_poll_interval

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail
        from airflow.sdk.timezone import utcnow

        from orderflow import access
        from orderflow.operators.approval_trigger import ExceptionApprovalTrigger

        users = access.users_with(self.owner_role, self.escalation_role)
        if not users:
            raise AirflowFailException(
                f"no Airflow user holds the {self.owner_role!r} role (or "
                f"{access.SUPER_ROLE!r}): add one in {access.roles_file()}"
            )
        self.assigned_users = [{"id": u, "name": u} for u in users]
        self.log.info("assigned to %s (role %s)", ", ".join(users), self.owner_role)
        ti_id = context["task_instance"].id
        upsert_hitl_detail(
            ti_id=ti_id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=self.defaults,
            multiple=self.multiple,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        timeout_at = utcnow() + self.response_timeout if self.response_timeout else None
        self.hitl_summary_extra["timeout_datetime"] = timeout_at.isoformat() if timeout_at else None
        for notifier in self.notifiers:
            notifier(context)
        self.log.info("Waiting for a response (or exception %s resolved)", self.exception_id)
        self.defer(
            trigger=ExceptionApprovalTrigger(
                ti_id=ti_id,
                options=self.options,
                defaults=self.defaults,
                params=self.serialized_params,
                multiple=self.multiple,
                timeout_datetime=timeout_at,
                poke_interval=self.answer_poll_interval,
                exception_id=int(self.exception_id or 0),
                store_conn_id=self.store_conn_id,
                watch_interval=self.watch_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from orderflow.operators.approval_trigger import RESOLVED_ELSEWHERE

        if RESOLVED_ELSEWHERE not in event:
            return super().execute_complete(context, event)
        from airflow.sdk.exceptions import AirflowSkipException

        from orderflow import decisions
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            why = decisions.required_action_ended(
                conn, int(self.exception_id), context["ti"].run_id, event[RESOLVED_ELSEWHERE]
            )
        finally:
            conn.close()
        self.hitl_summary_extra[RESOLVED_ELSEWHERE] = event[RESOLVED_ELSEWHERE]
        raise AirflowSkipException(why)
