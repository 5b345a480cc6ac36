"""Fulfilment operators: read the WMS and carrier feeds into the store, apply the events,
move orders forward. Thin glue over ``orderflow.fulfilment``; XCom carries counts only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.operators.processing import _ctx, _rule_book
from orderflow.settings import STORE_CONN_ID


class PullFeedOperator(BaseOperator):
    """Read one event feed from its persisted cursor into ``fulfilment_event``.

    :param source: ``wms`` (milestones: released, picked, short_picked, packed, shipped) or
        ``carrier`` (tracking: in_transit, delayed, delivered, exception).
    :param conn_id: the system's HTTP Connection (default ``wms_default`` / ``carrier_default``).
    :param page_size: events per request.
    :param max_pages: pages per run (the rest waits for the next run).
    :return: (XCom) pages, received, stored, duplicates and the cursor reached.
    """

    template_fields: Sequence[str] = ("conn_id", "store_conn_id")
    ui_color = "#dfeaf7"

    def __init__(
        self,
        *,
        source: str,
        conn_id: str | None = None,
        store_conn_id: str = STORE_CONN_ID,
        page_size: int = 500,
        max_pages: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if source not in ("wms", "carrier"):
            raise ValueError(f"source must be 'wms' or 'carrier', not {source!r}")
        self.source = source
        self.conn_id = conn_id or f"{source}_default"
        self.store_conn_id = store_conn_id
        self.page_size = page_size
        self.max_pages = max_pages

    def execute(self, context: Any) -> dict[str, int]:
        from orderflow import fulfilment
        from orderflow.integrations.systems import CarrierHook, WmsHook
        from orderflow.store import db

        if self.source == "wms":
            fetch = WmsHook(self.conn_id).milestones
        else:
            fetch = CarrierHook(self.conn_id).tracking
        conn = db.connect(self.store_conn_id)
        try:
            stats = fulfilment.pull_feed(
                conn,
                self.source,
                fetch,
                page_size=self.page_size,
                max_pages=self.max_pages,
                run_id=context["ti"].run_id,
            )
        finally:
            conn.close()
        self.log.info("%s feed: %s", self.source, stats)
        return stats


class ApplyFulfilmentEventsOperator(BaseOperator):
    """Apply stored events: shipment state (forward only), order lifecycle, 856, invoice
    (ERP + 810) and notifications queued in the outbox; unknown orders quarantined.

    :param max_events: events per run (the rest waits for the next run).
    :param notify_actions: outbox actions sent at once, in this task, when it shipped
        something (the customer's shipped notices): the notice leaves with the shipment's
        commit instead of one task later. Keyed like every send; whatever this misses (a
        receiver down, the task killed) the DAG's send task delivers. Empty: none.
    :return: (XCom) counts: events, applied, no_op, quarantined, shipped, invoices, …
        and ``notified``, the outbox counts of the sends made here.
    """

    template_fields: Sequence[str] = ("store_conn_id",)
    ui_color = "#e4f2e8"

    def __init__(
        self,
        *,
        store_conn_id: str = STORE_CONN_ID,
        max_events: int = 50_000,
        notify_actions: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id
        self.max_events = max_events
        self.notify_actions = list(notify_actions)

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow import fulfilment
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            out = fulfilment.apply_events(
                conn, _ctx(context, claimed=False), _rule_book(context), max_events=self.max_events
            )
            result = out.as_xcom()
            if out.shipped and self.notify_actions:
                result["notified"] = self._notify(conn)
        finally:
            conn.close()
        self.log.info("fulfilment events: %s", result)
        return result

    def _notify(self, conn: Any) -> dict[str, int]:
        """Send the shipped notices just queued. A failure here fails nothing: the rows stay
        in the outbox (pending, or backing off) for the send task."""
        from orderflow.integrations import outbox

        try:
            res = outbox.send(conn, self.notify_actions, limit=5_000)
        except Exception as exc:
            self.log.warning("notices left to the send task: %s", type(exc).__name__)
            return {"error": 1}
        for error in res.errors:
            self.log.warning("notice not sent yet: %s", error)
        return res.as_dict()


class AdvanceOrdersOperator(BaseOperator):
    """Move orders forward that their shipments and posted invoices now allow (e.g. to
    INVOICED once the ERP accepted the last invoice).

    :return: (XCom) moves by target status.
    """

    template_fields: Sequence[str] = ("store_conn_id",)
    ui_color = "#e8f1e4"

    def __init__(self, *, store_conn_id: str = STORE_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, int]:
        from orderflow import fulfilment
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            moves = fulfilment.advance_orders(
                conn, _ctx(context, claimed=False), _rule_book(context)
            )
        finally:
            conn.close()
        self.log.info("orders moved: %s", moves)
        return moves
