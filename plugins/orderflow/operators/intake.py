"""Intake operators: thin glue from Airflow to ``orderflow.intake``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.settings import STORE_CONN_ID


def run_keys(context: Any) -> dict[str, Any]:
    """Which run did it: stored on every event this task writes (trace from order to task)."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None,
    }


class PullPortalOrdersOperator(BaseOperator):
    """Pull new orders from the B2B portal feed into the store (micro-batch).

    Reads from the persisted watermark to the end of the feed (or ``max_pages``); each item is
    stored raw, parsed and gets exactly one outcome. Safe to rerun or clear: items already
    stored are recognised and the watermark never skips an unstored item.

    :param portal_conn_id: HTTP Connection of the portal feed. Templated. Default ``portal_default``.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param page_size: items per feed request (default 200: one round trip per ≈200 orders).
    :param max_pages: stop after this many pages (default None: drain the feed), so one run
        stays short when a backlog builds up; the next run continues.
    :return: (XCom) counts only — pages, items, outcomes, cursor range.
    """

    template_fields: Sequence[str] = ("portal_conn_id", "store_conn_id")
    ui_color = "#e3eefa"

    def __init__(
        self,
        *,
        portal_conn_id: str = "portal_default",
        store_conn_id: str = STORE_CONN_ID,
        page_size: int = 200,
        max_pages: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.portal_conn_id = portal_conn_id
        self.store_conn_id = store_conn_id
        self.page_size = page_size
        self.max_pages = max_pages

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow.intake import portal
        from orderflow.integrations.systems import PortalHook
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            stats = portal.pull(
                conn,
                PortalHook(self.portal_conn_id),
                page_size=self.page_size,
                max_pages=self.max_pages,
                run=run_keys(context),
            )
        finally:
            conn.close()
        summary = stats.summary()
        self.log.info("portal intake: %s", summary)
        return summary
