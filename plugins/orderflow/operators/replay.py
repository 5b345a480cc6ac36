"""Operators for governed replays: outbound dead letters (``outbox_replay``) and a window of
orders (``order_reprocess_window``). Who may do what is decided in the functions they call
(``outbox.replay_dead_letters``, ``reprocess_window.run``), for the user who triggered the
run — the same rules as the CLI and the UI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.operators.decisions import _user
from orderflow.operators.outbox import SendOutboxOperator
from orderflow.operators.processing import _ctx
from orderflow.settings import STORE_CONN_ID


def _when(value: Any) -> datetime | None:
    if value in (None, "", "None"):
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _ids(value: Any) -> list[int]:
    if value in (None, "", "None"):
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(v) for v in re.split(r"[\s,;]+", str(value).strip("[] ")) if v]


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


class ReplayDeadLettersOperator(BaseOperator):
    """Put dead-lettered outbox rows back in the queue (``outbox.replay_dead_letters``): the
    triggering user must hold the ``integration_failure`` owner or escalation role; a refusal
    is audited and fails the task (no retry: it would not change the answer).

    :param outbox_ids: ids, comma or space separated. Templated.
    :param action: an outbox action (with or without a window). Templated.
    :param window_from: dead-lettered at or after (ISO). Templated.
    :param window_to: … and before (ISO). Templated.
    :param reason: why (audited). Templated.
    :param dry_run: only list the rows. Templated.
    :return: (XCom) ``{"replayed": [keys], "skipped": [keys], "actions": [...], "dry_run"}``.
    """

    template_fields: Sequence[str] = (
        "outbox_ids",
        "action",
        "window_from",
        "window_to",
        "reason",
        "dry_run",
        "store_conn_id",
    )

    def __init__(
        self,
        *,
        outbox_ids: Any = "",
        action: str = "",
        window_from: Any = "",
        window_to: Any = "",
        reason: str = "",
        dry_run: Any = False,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.outbox_ids = outbox_ids
        self.action = action
        self.window_from = window_from
        self.window_to = window_to
        self.reason = reason
        self.dry_run = dry_run
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from orderflow.integrations import outbox
        from orderflow.store import db

        dry_run = _flag(self.dry_run)
        conn = db.connect(self.store_conn_id)
        try:
            out = outbox.replay_dead_letters(
                conn,
                actor=_user(context),
                reason=self.reason,
                outbox_ids=_ids(self.outbox_ids) or None,
                action=(self.action or "").strip() or None,
                since=_when(self.window_from),
                until=_when(self.window_to),
                dry_run=dry_run,
            )
        except outbox.ReplayRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            conn.close()
        for r in out["selected"]:
            self.log.info(
                "%s %-40s %-12s %s: %s",
                "would replay" if dry_run else "",
                r["idempotency_key"],
                r["action"],
                r["status"],
                r["last_error"],
            )
        replayed = set(out["replayed"])
        actions = sorted({r["action"] for r in out["selected"] if r["idempotency_key"] in replayed})
        self.log.info("replayed %d, skipped %d", len(out["replayed"]), len(out["skipped"]))
        return {
            "dry_run": dry_run,
            "selected": [r["idempotency_key"] for r in out["selected"]],
            "replayed": out["replayed"],
            "skipped": out["skipped"],
            "actions": actions,
        }


class SendReplayedOperator(SendOutboxOperator):
    """Send the rows a replay task put back in the queue now (only their actions; nothing
    when it replayed nothing).

    :param replay_task_id: the task whose XCom names the replayed ``actions``.
    """

    def __init__(self, *, replay_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("actions", [])
        super().__init__(**kwargs)
        self.replay_task_id = replay_task_id

    def execute(self, context: Any) -> dict[str, int]:
        done = context["ti"].xcom_pull(task_ids=self.replay_task_id) or {}
        if not done.get("actions"):
            self.log.info("nothing was replayed: nothing to send")
            return {}
        self.actions = list(done["actions"])
        return super().execute(context)


class PrepareReprocessWindowOperator(BaseOperator):
    """Apply a reprocess action to every order of a window (``reprocess_window.run``), or with
    ``dry_run`` only report what would happen. The orders applied are claimed for this run.

    :return: (XCom) the partition for the stage operators, ``{"label", "order_ids"}``, plus
        ``dry_run``, ``counts`` and the per-order report ``orders``.
    """

    template_fields: Sequence[str] = (
        "window_from",
        "window_to",
        "channel",
        "customer_id",
        "status",
        "hold_category",
        "action",
        "reason",
        "dry_run",
        "store_conn_id",
    )

    def __init__(
        self,
        *,
        window_from: Any,
        window_to: Any,
        action: str,
        reason: str = "",
        channel: str = "",
        customer_id: str = "",
        status: str = "",
        hold_category: str = "",
        dry_run: Any = True,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.window_from = window_from
        self.window_to = window_to
        self.channel = channel
        self.customer_id = customer_id
        self.status = status
        self.hold_category = hold_category
        self.action = action
        self.reason = reason
        self.dry_run = dry_run
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from orderflow import decisions, reprocess_window
        from orderflow.store import db

        def text(v: Any) -> str | None:
            return None if v in (None, "", "None") else str(v).strip() or None

        since, until = _when(self.window_from), _when(self.window_to)
        if since is None or until is None:
            raise AirflowFailException("give the window: from and to (received_at)")
        window = reprocess_window.Window(
            since=since,
            until=until,
            channel=text(self.channel),
            customer_id=text(self.customer_id),
            status=text(self.status),
            hold_category=text(self.hold_category),
        )
        dry_run = _flag(self.dry_run)
        conn = db.connect(self.store_conn_id)
        try:
            out = reprocess_window.run(
                conn,
                window,
                self.action,
                actor=_user(context),
                reason=self.reason,
                ctx=_ctx(context),
                dry_run=dry_run,
            )
        except decisions.DecisionRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            conn.close()
        for line in reprocess_window.render(out).splitlines():
            self.log.info("%s", line)
        ids = out["order_ids"]
        return {
            "label": f"window · {self.action} · {len(ids)} orders",
            "order_ids": ids,
            "dry_run": dry_run,
            "counts": out["counts"],
            "orders": out["orders"],
        }
