"""Operators for human decisions: dispatching approvals to Airflow's human-in-the-loop tasks,
applying the answers, and preparing a one-order reprocess run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.operators.processing import _ctx
from orderflow.settings import APPROVAL_WINDOW, STORE_CONN_ID

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

    :param owner_role: the exception's owner role. Templated.
    :param escalation_role: its escalation role, if any. Templated.
    """

    template_fields: Sequence[str] = (
        *_hitl_base().template_fields,
        "owner_role",
        "escalation_role",
    )

    def __init__(self, *, owner_role: str, escalation_role: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner_role = owner_role
        self.escalation_role = escalation_role

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from orderflow import access

        users = access.users_with(self.owner_role, self.escalation_role)
        if not users:
            raise AirflowFailException(
                f"no Airflow user holds the {self.owner_role!r} role (or "
                f"{access.SUPER_ROLE!r}): add one in {access.roles_file()}"
            )
        self.assigned_users = [{"id": u, "name": u} for u in users]
        self.log.info("assigned to %s (role %s)", ", ".join(users), self.owner_role)
        return super().execute(context)
