"""The outbox sender as a task: every DAG that sends side effects uses this one operator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.assets import announce_if, announcing
from orderflow.settings import STORE_CONN_ID


class SendOutboxOperator(BaseOperator):
    """Deliver queued side effects of the given actions (at most once per idempotency key).

    :param actions: outbox actions to send, e.g. ``["edi_997", "edi_ta1"]``. Templated.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param limit: rows per run (default 500); the rest wait for the next run.
    :param announces: an Asset emitted only when this run sent something (an outlet emitted
        on every run would start the DAGs scheduled on it after every empty send).
    :return: (XCom) counts of sent / retry / dead (and follow-ups, settled sends). Fails, without
        a task retry, when it claimed rows and none was sent or answered.
    """

    template_fields: Sequence[str] = ("actions", "store_conn_id")
    ui_color = "#f6ead8"

    def __init__(
        self,
        *,
        actions: list[str],
        store_conn_id: str = STORE_CONN_ID,
        limit: int = 500,
        announces: Any = None,
        **kwargs: Any,
    ) -> None:
        announcing(announces, kwargs)
        super().__init__(**kwargs)
        self.announces = announces
        self.actions = actions
        self.store_conn_id = store_conn_id
        self.limit = limit

    def deliver(self, conn: Any) -> Any:
        """Send what is due of this task's actions on ``conn`` (``outbox.send``): what
        ``execute`` does, and what a stage task carrying a small partition through to this
        task does right after its release (``OrderStageOperator.carry_through``)."""
        from orderflow.integrations import outbox

        return outbox.send(conn, list(self.actions), limit=int(self.limit))

    def execute(self, context: Any) -> dict[str, int]:
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            res = self.deliver(conn)
        finally:
            conn.close()
        counts = res.as_dict()
        self.log.info("outbox %s: %s", self.actions, counts)
        announce_if(context, self.announces, res.sent)
        for error in res.errors:
            self.log.warning("not sent: %s", error)
        if res.claimed and not res.sent and not res.rejected:
            # Every row is recorded (backing off or dead-lettered), but a task that delivered
            # nothing of what it took must not look healthy. No task retry: the rows are not
            # due again yet; the next run tries them after their backoff. (A receiver that
            # answered no — a WMS refusing to cancel a release being picked — did answer.)
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"sent none of the {res.claimed} outbox rows claimed ({counts}); first error: "
                f"{res.errors[0] if res.errors else 'unknown'}"
            )
        return counts
