"""A first custom operator: proof that a scheduled run reaches the operational store."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.settings import STORE_CONN_ID


class RecordHeartbeatOperator(BaseOperator):
    """Write one heartbeat row per DAG run to ``orderflow.heartbeat``.

    Keyed by (dag_id, run_id): a retry or a UI "clear" of the same run updates its row
    (counting the attempt) instead of adding another, so the table reads as one row per run.

    :param store_conn_id: Postgres Connection of the operational store. Templated.
        Default ``orderflow_db``.
    """

    template_fields: Sequence[str] = ("store_conn_id",)
    ui_color = "#e8f4ea"

    def __init__(self, *, store_conn_id: str = STORE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> int:
        from orderflow.store import db, heartbeats

        conn = db.connect(self.store_conn_id)
        try:
            with db.transaction(conn):
                attempts = heartbeats.record(
                    conn,
                    dag_id=self.dag_id,
                    run_id=context["run_id"],
                    logical_date=context.get("logical_date"),
                    host=socket.gethostname(),
                )
        finally:
            conn.close()
        self.log.info("heartbeat recorded for run %s (attempt %d)", context["run_id"], attempts)
        return attempts
