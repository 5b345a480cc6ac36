"""GX data docs of the master-data quality gate, as a static folder.

Where: ``$ORDERFLOW_DQ_DOCS_DIR`` if set, else ``<ORDERFLOW_STATE_DIR>/dq-docs``
(``.orderflow/dq-docs`` in a development checkout, the state volume in the compose deployment):

- ``index.html`` — GX's site index: every suite (its expectations, one reviewable page each)
  and the latest :data:`INDEX_LIMIT` validation results across runs, newest first;
- ``validations/masterdata/<entity>/<run>/<time>/…html`` — one page per suite and run;
- ``results/…json`` — the GX validation results behind the pages (the gate's ephemeral context
  keeps suites in memory but writes results here so the index spans runs). Pruned after
  :data:`KEEP_DAYS`; GX then drops their pages.

How to reach it (plain static HTML, no server needed):

- on the machine: open ``file://<state dir>/dq-docs/index.html``; the sync task's XCom summary
  (``docs``) and every ``MasterDataQualityFailed`` message carry that URI;
- over HTTP: ``python -m http.server --directory .orderflow/dq-docs 8085``;
- inside Airflow: the plugin can mount :func:`asgi_app` on the API server
  (``fastapi_apps=[{"app": asgi_app(), "url_prefix": "/dq-docs", "name": "Data quality"}]``);
  the docs are then at ``<airflow url>/dq-docs/``.

The record of results is ``orderflow.dq_result`` (and its views); the docs are its readable
face for the recent runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

SITE_NAME = "orderflow_masterdata"
#: Days of validation results (and their pages) kept.
KEEP_DAYS = 7
#: Validation results listed on the index (≈ a day of hourly runs that found changes).
INDEX_LIMIT = 240


def docs_dir() -> Path:
    """The data docs folder (read at call time, so tests and deployments can move it)."""
    from orderflow.settings import STATE_DIR

    return Path(os.environ.get("ORDERFLOW_DQ_DOCS_DIR") or STATE_DIR / "dq-docs")


def results_backend(base: Path) -> dict[str, Any]:
    """The GX validation-results store backend: JSON files under ``<base>/results``."""
    return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(base / "results")}


def add_site(context: Any, base: Path) -> None:
    """Register the static site on a GX context (a local filesystem site)."""
    context.add_data_docs_site(
        site_name=SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "validation_results_limit": INDEX_LIMIT,
            },
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(base),
            },
        },
    )


def build(
    context: Any, base: Path, run_identifier: Any = None, *, keep_days: int = KEEP_DAYS
) -> str:
    """Prune old results, render this run's pages and the suites, rebuild the index.
    Returns the ``file://`` URI of the index."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    from orderflow.dq.gate import quiet_gx

    quiet_gx()
    base.mkdir(parents=True, exist_ok=True)
    prune(base, keep_days=keep_days)
    ids: list[Any] = [ExpectationSuiteIdentifier(name=s.name) for s in context.suites.all()]
    if run_identifier is not None:
        ids += [
            k
            for k in context.validation_results_store.list_keys()
            if k.run_id.run_name == run_identifier.run_name
            and k.run_id.run_time == run_identifier.run_time
        ]
    context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=ids)
    return (base / "index.html").resolve().as_uri()


def prune(base: Path, *, keep_days: int = KEEP_DAYS) -> int:
    """Delete validation results older than ``keep_days`` (GX removes their pages when it
    rebuilds the index); returns files removed."""
    cutoff = time.time() - keep_days * 86400
    removed = 0
    for path in (base / "results").rglob("*.json"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def asgi_app() -> Any:
    """A FastAPI app serving the docs folder (for the Airflow plugin's ``fastapi_apps``)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(title="OrderFlow master-data quality docs")
    app.mount("/", StaticFiles(directory=docs_dir(), html=True, check_dir=False), name="dq_docs")
    return app
