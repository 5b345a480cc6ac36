"""Master-data operator: thin glue from Airflow to ``orderflow.masterdata`` and the quality gate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from orderflow.settings import STORE_CONN_ID


def _as_bool(value: Any) -> bool:
    """Templated flags arrive as strings unless the DAG renders native objects."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class SyncMasterDataOperator(BaseOperator):
    """Sync master data from the ERP/WMS into the store through the data-quality gate.

    Extracts each entity (incrementally by changed-since, or in full), runs its Great
    Expectations suite (:mod:`orderflow.dq.suites`), publishes it, then flags every published
    row ``dq_passed``. A failing entity never stops the pipeline: its rows are published and
    flagged (rows the store would reject are withheld and their stored version flagged), one
    ``master_data_quality`` exception per failing entity is opened, and order validation holds
    only the orders that use flagged rows. Full results go to ``orderflow.dq_result`` and the GX
    data docs (:mod:`orderflow.dq.docs`).

    Freshness: the gate records, per entity, how old the previous extract was when this one
    ran (``extract_freshness`` in ``dq_result``) against ``max_extract_age``; a stale entity is
    logged and listed in the summary, and readers check the ``master_data_freshness`` view.

    :param erp_conn_id: HTTP Connection of the ERP. Templated. Default ``erp_default``.
    :param wms_conn_id: HTTP Connection of the WMS. Templated. Default ``wms_default``.
    :param store_conn_id: the operational store. Templated. Default ``orderflow_db``.
    :param entities: entities to sync (default None: all, in dependency order). Templated.
    :param full_refresh: extract everything instead of changes since the cursor. Templated
        (``"{{ params.full_refresh }}"``; strings like ``"True"`` are accepted).
    :param full_refresh_every: also run in full when the last full refresh is older than this
        (default 24 h): cross-entity rules and upstream fixes elsewhere are re-checked only for
        re-extracted rows, and a full pass at default scale (≈120k rows) costs ≈ 7–8 s
        (benchmarks/masterdata_sync.py). ``None`` disables it.
    :param max_extract_age: freshness limit per entity (default 2 h: two missed hourly runs).
    :param fail_on_quality_failure: raise ``MasterDataQualityFailed`` after publishing when a
        suite failed (default False: the policy is to hold affected orders, not the pipeline;
        the summary and the log carry the same message either way).
    :param build_docs: build GX data docs after the run (default True; ≈1 s).
    :return: (XCom) a small summary: per entity rows, changes, pass rate, failed rules,
        exceptions opened/resolved and seconds; the data docs URI.
    """

    template_fields: Sequence[str] = (
        "erp_conn_id",
        "wms_conn_id",
        "store_conn_id",
        "entities",
        "full_refresh",
    )
    ui_color = "#e8f3e8"

    def __init__(
        self,
        *,
        erp_conn_id: str = "erp_default",
        wms_conn_id: str = "wms_default",
        store_conn_id: str = STORE_CONN_ID,
        entities: list[str] | None = None,
        full_refresh: bool | str = False,
        full_refresh_every: timedelta | None = timedelta(hours=24),
        max_extract_age: timedelta = timedelta(hours=2),
        fail_on_quality_failure: bool = False,
        build_docs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.erp_conn_id = erp_conn_id
        self.wms_conn_id = wms_conn_id
        self.store_conn_id = store_conn_id
        self.entities = entities
        self.full_refresh = full_refresh
        self.full_refresh_every = full_refresh_every
        self.max_extract_age = max_extract_age
        self.fail_on_quality_failure = fail_on_quality_failure
        self.build_docs = build_docs

    def execute(self, context: Any) -> dict[str, Any]:
        from orderflow.integrations.systems import ErpHook, WmsHook
        from orderflow.store import db

        run_id = context["run_id"]
        hooks = {"erp": ErpHook(self.erp_conn_id), "wms": WmsHook(self.wms_conn_id)}
        conn = db.connect(self.store_conn_id)
        try:
            if self.entities:
                _wait_for_the_first_full_sync(conn, self.entities)
            summary = sync_with_gate(
                conn,
                hooks,
                run_id=run_id,
                entities=list(self.entities) if self.entities else None,
                full=_as_bool(self.full_refresh),
                full_refresh_every=self.full_refresh_every,
                max_extract_age=self.max_extract_age,
                build_docs=self.build_docs,
                fail_on_quality_failure=self.fail_on_quality_failure,
                log=self.log,
            )
        finally:
            conn.close()
        return summary


def _wait_for_the_first_full_sync(conn: Any, entities: list[str]) -> None:
    """Skip a sync of some entities (the 2-minute inventory sync) until a full sync has run:
    checked against an empty catalogue every row fails its "exists" rules — a fresh stack's
    first inventory sync, started beside the first full sync, opened 20,000 exceptions on
    the inventory positions that way, all resolved by the next run."""
    from airflow.sdk.exceptions import AirflowSkipException

    from orderflow import masterdata

    if not masterdata.ready(conn):
        raise AirflowSkipException(
            f"{', '.join(entities)}: waiting for the first full master-data sync "
            "(masterdata_sync): the items, DCs and customers they are checked against are "
            "not in the store yet"
        )


def sync_with_gate(
    conn: Any,
    hooks: dict[str, Any],
    *,
    run_id: str,
    entities: list[str] | None = None,
    full: bool = False,
    full_refresh_every: timedelta | None = timedelta(hours=24),
    max_extract_age: timedelta = timedelta(hours=2),
    build_docs: bool = True,
    docs_dir: Any = None,
    fail_on_quality_failure: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """The operator's work as a plain function, callable without Airflow (tests, benchmark).

    Returns the XCom summary; raises :class:`~orderflow.dq.gate.MasterDataQualityFailed` only
    when ``fail_on_quality_failure`` is set, after everything was published and flagged."""
    import contextlib
    import logging
    import time
    from datetime import UTC, datetime

    from orderflow import masterdata
    from orderflow.dq.gate import QualityGate
    from orderflow.store import cursors

    log = log or logging.getLogger(__name__)
    t0 = time.perf_counter()
    last_full = cursors.get(conn, masterdata.FULL_REFRESH_CURSOR)
    due = full_refresh_every is not None and (
        last_full is None
        or datetime.now(UTC) - datetime.fromisoformat(last_full) > full_refresh_every
    )
    full = full or (due and entities is None)
    gate = QualityGate(
        conn,
        run_id=run_id,
        max_extract_age=max_extract_age,
        build_docs=build_docs,
        docs_dir=docs_dir,
    )
    # The 2-minute inventory sync and the hourly sync take turns: each waits for the other
    # (seconds) instead of failing into a retry delay (a fresh stack claims no order until
    # its first full sync is done).
    with cursors.exclusive(conn, "masterdata:sync", wait_s=180):
        try:
            results = masterdata.sync(
                conn, hooks, entities=entities, full=full, run_id=run_id, gate=gate
            )
        except Exception:
            # Entities published before the failure get their flags now (a retry would too:
            # flags derive from the exceptions); never mask the original error.
            with contextlib.suppress(Exception):
                gate.flag_published()
            raise
    t_sync = time.perf_counter() - t0
    report = gate.finish()
    suites = report.pop("suites")
    kept = ("validate_s", "pass_rate", "failed_rules", "failed_entities", "withheld", "fresh")
    summary: dict[str, Any] = {
        "run_id": run_id,
        "full_refresh": full,
        "entities": {
            r.entity: {
                "rows": r.rows,
                "changed": r.changed,
                "extract_s": round(r.extract_s, 3),
                # masterdata.sync times its publish from the end of the extract: gate included
                "publish_s": round(r.publish_s - suites.get(r.entity, {}).get("validate_s", 0), 3),
                **{k: v for k, v in suites.get(r.entity, {}).items() if k in kept},
            }
            for r in results
        },
        **report,
        "seconds": round(time.perf_counter() - t0, 3),
        "sync_s": round(t_sync, 3),
    }
    failure = gate.failure()
    if failure is not None:
        log.warning("%s", failure)
        if fail_on_quality_failure:
            raise failure
    log.info("master data sync: %s", summary)
    return summary
