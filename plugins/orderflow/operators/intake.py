"""Intake operators: thin glue from Airflow to ``orderflow.intake``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.assets import announce_if, announcing
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
    :param announces: an Asset (``orders_received``) emitted only when the feed had items.
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
        announces: Any = None,
        **kwargs: Any,
    ) -> None:
        announcing(announces, kwargs)
        super().__init__(**kwargs)
        self.announces = announces
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
        announce_if(context, self.announces, summary.get("items"))
        return summary


class PullMarketplaceOrdersOperator(BaseOperator):
    """Pull new orders and buyers' cancellation requests from a marketplace's feed into the
    store (micro-batch), as :class:`PullPortalOrdersOperator` does for the portal.

    Each item is stored raw, parsed and gets exactly one outcome; an order created queues
    its acknowledgement in the outbox in the same transaction; a cancellation request is a
    cancel change of its order. The marketplace's time limits are kept per order
    (``marketplace_order``). Rerun-safe, as the portal's.

    :param marketplace_conn_id: HTTP Connection of the marketplace's seller API. Templated.
        Default ``marketplace_default``.
    :param marketplace_id: the partner id its orders are stored under (default
        ``marketplace``; one per marketplace when there are several).
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param page_size: items per feed request (default 200).
    :param max_pages: stop after this many pages (default None: drain the feed).
    :param announces: an Asset (``orders_received``) emitted only when the feed had items.
    :return: (XCom) counts only — pages, items, outcomes, cursor range.
    """

    template_fields: Sequence[str] = ("marketplace_conn_id", "store_conn_id")
    ui_color = "#e3eefa"

    def __init__(
        self,
        *,
        marketplace_conn_id: str = "marketplace_default",
        marketplace_id: str = "marketplace",
        store_conn_id: str = STORE_CONN_ID,
        page_size: int = 200,
        max_pages: int | None = None,
        announces: Any = None,
        **kwargs: Any,
    ) -> None:
        announcing(announces, kwargs)
        super().__init__(**kwargs)
        self.announces = announces
        self.marketplace_conn_id = marketplace_conn_id
        self.marketplace_id = marketplace_id
        self.store_conn_id = store_conn_id
        self.page_size = page_size
        self.max_pages = max_pages

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow.intake import marketplace
        from orderflow.integrations.systems import MarketplaceHook
        from orderflow.store import db

        conn = db.connect(self.store_conn_id)
        try:
            stats = marketplace.pull(
                conn,
                MarketplaceHook(self.marketplace_conn_id),
                partner_id=self.marketplace_id,
                page_size=self.page_size,
                max_pages=self.max_pages,
                run=run_keys(context),
            )
        finally:
            conn.close()
        summary = stats.summary()
        self.log.info("marketplace intake: %s", summary)
        announce_if(context, self.announces, summary.get("items"))
        return summary


class IngestDropFolderOperator(BaseOperator):
    """Ingest every file waiting in a drop folder (EDI X12, e-mailed POs or inside-sales CSV).

    Each file is stored raw, parsed and gets exactly one outcome (orders created,
    quarantined with the reason, or duplicate), then moves to the folder's ``.archive``.
    EDI acknowledgements (997/TA1) are queued in the outbox under their idempotency keys.
    Rerun-safe: a file already decided is recognised by its ingest key.

    :param channel: ``edi`` (one sub-folder per trading partner), ``email`` (one ``.eml``
        per message; low-confidence extractions are created ON_HOLD) or ``csv``.
    :param inbox_conn_id: File (fs) Connection whose ``path`` extra is the folder. Templated.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param max_bytes: files above this are quarantined unread (default 32 MiB).
    :param limit: at most this many files per run (default 2000), so a flood is worked off
        over several short runs instead of one long one.
    """

    template_fields: Sequence[str] = ("inbox_conn_id", "store_conn_id")
    ui_color = "#e3eefa"

    def __init__(
        self,
        *,
        channel: str,
        inbox_conn_id: str,
        store_conn_id: str = STORE_CONN_ID,
        max_bytes: int = 32 * 1024 * 1024,
        limit: int = 2000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if channel not in ("edi", "csv", "email"):
            raise ValueError(f"channel must be 'edi', 'email' or 'csv', not {channel!r}")
        self.channel = channel
        self.inbox_conn_id = inbox_conn_id
        self.store_conn_id = store_conn_id
        self.max_bytes = max_bytes
        self.limit = limit

    def execute(self, context: Any) -> dict[str, Any]:
        from pathlib import Path

        from airflow.providers.standard.hooks.filesystem import FSHook

        from orderflow.intake import drops
        from orderflow.store import db

        root = Path(FSHook(self.inbox_conn_id).get_path())
        conn = db.connect(self.store_conn_id)
        try:
            if self.channel == "email":
                from orderflow.intake import mailbox

                stats = mailbox.ingest_mailbox(
                    conn, root, run=run_keys(context), limit=self.limit, wait_for_master_data_s=180
                )
            else:
                stats = drops.ingest_folder(
                    conn,
                    root,
                    self.channel,
                    run=run_keys(context),
                    max_bytes=self.max_bytes,
                    limit=self.limit,
                )
        finally:
            conn.close()
        summary = stats.summary()
        self.log.info("%s intake from %s: %s", self.channel, root, summary)
        return summary


class ReplayMessagesOperator(BaseOperator):
    """Replay quarantined channel messages through intake (after a fix).

    :param message_ids: ids to replay (templated: e.g. ``{{ params.message_ids }}``); empty
        with ``channel`` set replays every not-yet-replayed quarantined message of it.
    :param channel: limit the "all quarantined" replay to one channel. Templated.
    :param reason: why, for the audit log. Templated.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :return: (XCom) outcome per replayed message id.
    """

    template_fields: Sequence[str] = ("message_ids", "channel", "reason", "store_conn_id")

    def __init__(
        self,
        *,
        message_ids: Any = (),
        channel: str | None = None,
        reason: str | None = None,
        store_conn_id: str = STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message_ids = message_ids
        self.channel = channel
        self.reason = reason
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, str]:
        from orderflow.intake import replay
        from orderflow.store import db

        ids = self.message_ids
        if isinstance(ids, str):
            ids = [int(x) for x in ids.replace(",", " ").split() if x.strip()]
        actor = getattr(context.get("dag_run"), "triggering_user_name", None) or "airflow"
        conn = db.connect(self.store_conn_id)
        results: dict[str, str] = {}
        try:
            if not ids and self.channel:
                ids = [
                    m["message_id"]
                    for m in replay.quarantined(conn, channel=self.channel, limit=10_000)
                ]
            for mid in ids:
                try:
                    out = replay.replay(
                        conn, int(mid), actor=actor, reason=self.reason, run=run_keys(context)
                    )
                    results[str(mid)] = f"{out.outcome} as message {out.message_id}"
                except replay.NotReplayable as exc:
                    results[str(mid)] = f"skipped: {exc}"
        finally:
            conn.close()
        for mid, res in results.items():
            self.log.info("message %s: %s", mid, res)
        return results
