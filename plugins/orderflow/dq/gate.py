"""The master-data quality gate: GX suites between extract and publish.

``masterdata.sync(conn, hooks, gate=QualityGate(conn, run_id=...))`` calls the gate once per
entity with the records about to be published and the superseded duplicates. For each entity
the gate

1. builds a pandas DataFrame of the batch in the published shape (:mod:`orderflow.dq.suites`)
   and adds the cross-entity helper columns from the store;
2. runs the entity's GX suite (ephemeral context, pandas data source, whole-dataframe batch,
   ``COMPLETE`` results indexed by ``entity_key`` and ``row_no``);
3. in one transaction: writes every expectation's result to ``orderflow.dq_result`` (replacing
   this run's earlier rows of that suite, so a retry does not double count), plus an
   ``extract_freshness`` row; opens (or refreshes the reason of) one ``master_data_quality``
   exception per failing entity, owner role and SLA from ``exception_category``; auto-resolves
   (``auto_resolved`` by ``dq-gate``) open exceptions of entities of that type that now pass;
4. withholds from the publish the rows that fail a *blocking* rule (the store would reject
   them or they would overwrite a usable row with an unusable one); every other failing row is
   published.

After the sync, :meth:`QualityGate.flag_published` sets ``dq_passed`` on every master-data table
that has the column: ``false`` exactly where an open ``master_data_quality`` exception names the
row, ``true`` elsewhere. The flag is derived from the exceptions, so it is idempotent, self-healing
after a crashed run, and follows a person's resolution too. Order validation holds only the
orders that depend on flagged rows: a failing entity never stops the pipeline.

A failing suite is reported as :class:`MasterDataQualityFailed` (returned by
:meth:`QualityGate.failure`; raised only by ``strict=True`` gates or operators configured to
fail): its message lists the failing expectations, the entity ids and where the full result is.

Freshness is the age of the previous successful extract of an entity when this run extracts it
(``extract_freshness`` in ``dq_result``, compared with ``max_extract_age``): it shows, per entity
and over time, how stale the store's copy became between syncs. Readers that must not use stale
master data check the current age in the ``orderflow.master_data_freshness`` view.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow.dq import suites
from orderflow.store import db
from orderflow.store import dq as repo

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

log = logging.getLogger(__name__)

CATEGORY = "master_data_quality"
RESOLVER = "dq-gate"
FRESHNESS = "extract_freshness"
#: Entity ids kept per expectation in ``dq_result.details`` (all of them drive the exceptions).
MAX_IDS_STORED = 500
#: Failing entity ids named per expectation in the failure message.
MAX_IDS_IN_MESSAGE = 5


def quiet_gx() -> None:
    """GX logs ~200 INFO lines per context; keep its warnings only."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


# ---------------------------------------------------------------------------- results


@dataclass
class Finding:
    """One rule failed by one row of an entity."""

    rule: str
    values: dict[str, Any]
    superseded: bool = False


@dataclass
class RuleOutcome:
    """One expectation's result, as stored in ``dq_result``."""

    rule: str
    expectation: str
    description: str
    blocking: bool
    success: bool
    element_count: int
    unexpected_count: int
    entity_ids: list[str]
    details: dict[str, Any]


@dataclass
class SuiteResult:
    """What the gate decided for one entity of one run."""

    entity: str
    suite: str
    entity_type: str
    run_id: str
    rows: int
    duplicates: int
    outcomes: list[RuleOutcome] = field(default_factory=list)
    failing: dict[str, list[Finding]] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    fresh: bool = True
    extract_age_s: float | None = None
    opened: int = 0
    refreshed: int = 0
    resolved: int = 0
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed_rules(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def pass_rate(self) -> float:
        """Share of this batch's published-shape rows (kept records) that pass every rule."""
        if not self.rows:
            return 1.0
        return 1.0 - min(self.rows, len(self.failing)) / self.rows

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "duplicates": self.duplicates,
            "expectations": f"{sum(o.success for o in self.outcomes)}/{len(self.outcomes)}",
            "failed_rules": [o.rule for o in self.failed_rules],
            "failed_entities": len(self.failing),
            "withheld": len(self.withheld),
            "pass_rate": round(self.pass_rate, 5),
            "opened": self.opened,
            "resolved": self.resolved,
            "fresh": self.fresh,
            "extract_age_s": None if self.extract_age_s is None else round(self.extract_age_s),
            "validate_s": round(self.seconds, 3),
        }


class MasterDataQualityFailed(Exception):
    """Master data failed its quality suites.

    :ivar results: the failing :class:`SuiteResult` per entity.
    :ivar docs: where the data docs of the run are (a ``file://`` URI), if built.
    """

    def __init__(self, results: list[SuiteResult], *, docs: str | None = None):
        self.results = results
        self.docs = docs
        super().__init__(self._message())

    @property
    def run_id(self) -> str | None:
        return self.results[0].run_id if self.results else None

    def _message(self) -> str:
        lines = [f"master data failed quality checks in run {self.run_id}:"]
        for res in self.results:
            if res.failed_rules:
                lines.append(
                    f"- {res.suite}: {len(res.failed_rules)} of {len(res.outcomes)} expectations "
                    f"failed, {len(res.failing)} entities ({res.entity_type}) affected"
                    + (f", {len(res.withheld)} withheld from the publish" if res.withheld else "")
                )
            for o in res.failed_rules:
                ids = ", ".join(o.entity_ids[:MAX_IDS_IN_MESSAGE])
                more = len(o.entity_ids) - MAX_IDS_IN_MESSAGE
                lines.append(
                    f"    {o.rule} ({o.expectation} — {o.description}): "
                    f"{o.unexpected_count} rows"
                    + (f": {ids}" if ids else "")
                    + (f" and {more} more" if more > 0 else "")
                    + (f" [error: {o.details['error']}]" if o.details.get("error") else "")
                )
            if not res.fresh:
                lines.append(
                    f"- {res.suite}: previous extract was {res.extract_age_s / 3600:.1f} h old "
                    "(over the freshness limit)"
                )
        suites_sql = ", ".join(f"'{r.suite}'" for r in self.results)
        lines.append(
            "Failing rows were published with dq_passed = false (rows failing a blocking rule "
            "were withheld) and each failing entity has an open master_data_quality exception; "
            "only orders that use them are held. Fix the records in the source system: the next "
            "sync re-checks and auto-resolves."
        )
        lines.append(
            f"Full result: SELECT * FROM orderflow.dq_result WHERE run_id = '{self.run_id}' "
            f"AND suite IN ({suites_sql})" + (f"; data docs: {self.docs}" if self.docs else "")
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------- GX runner


class _GxRunner:
    """One ephemeral GX context per gate (per task run): suites, batches and results in
    memory; data docs written to a static folder when asked."""

    def __init__(self, run_id: str, docs_dir: Path | None):
        quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        from orderflow.dq import docs

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        if docs_dir is not None:
            # Results on disk so the data docs index spans runs; suites stay in memory (code).
            store = config.stores[config.validation_results_store_name]
            store["store_backend"] = docs.results_backend(docs_dir)
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        if docs_dir is not None:
            docs.add_site(self.context, docs_dir)
        self.source = self.context.data_sources.add_pandas("orderflow_masterdata")
        self.run_identifier = gx.RunIdentifier(
            run_name=re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id), run_time=datetime.now(UTC)
        )
        self._definitions: dict[str, Any] = {}
        quiet_gx()

    def suite(self, entity: str) -> Any:
        name = suites.suite_name(entity)
        if not any(s.name == name for s in self.context.suites.all()):
            return self.context.suites.add(suites.build_suite(entity))
        return self.context.suites.get(name)

    def add_all_suites(self) -> None:
        """Every suite in the context, so the data docs show all of them (GX drops pages of
        suites its store does not know)."""
        for entity in suites.SUITES:
            self.suite(entity)

    def validate(self, entity: str, df: pd.DataFrame) -> Any:
        import great_expectations as gx

        vd = self._definitions.get(entity)
        if vd is None:
            asset = self.source.add_dataframe_asset(name=entity)
            batch = asset.add_batch_definition_whole_dataframe(name=f"{entity}_batch")
            vd = self.context.validation_definitions.add(
                gx.ValidationDefinition(
                    name=suites.suite_name(entity), data=batch, suite=self.suite(entity)
                )
            )
            self._definitions[entity] = vd
        with warnings.catch_warnings():  # GX's own deprecation chatter, not our business
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return vd.run(
                batch_parameters={"dataframe": df},
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["entity_key", "row_no"],
                    "return_unexpected_index_query": False,
                },
                run_id=self.run_identifier,
            )


# ---------------------------------------------------------------------------- the gate


class QualityGate:
    """The ``gate`` callable of :func:`orderflow.masterdata.sync`.

    :param conn: the store (autocommit psycopg connection; the gate opens its own transactions).
    :param run_id: the run (Airflow ``run_id``): ``dq_result.run_id`` and exception details.
    :param max_extract_age: freshness limit: an entity whose previous extract is older than this
        when the next one runs is recorded as stale (default 2 h: two missed hourly runs).
    :param docs_dir: where to build GX data docs (default :func:`orderflow.dq.docs.docs_dir`).
    :param build_docs: build data docs in :meth:`finish` (default True).
    :param strict: raise :class:`MasterDataQualityFailed` inside the sync, before the entity is
        published (default False: publish and flag; the policy of OrderFlow).
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        run_id: str,
        max_extract_age: timedelta = timedelta(hours=2),
        docs_dir: Path | str | None = None,
        build_docs: bool = True,
        strict: bool = False,
    ) -> None:
        self.conn = conn
        self.run_id = run_id
        self.max_extract_age = max_extract_age
        self.build_docs = build_docs
        self.docs_dir = Path(docs_dir) if docs_dir is not None else None
        self.strict = strict
        self.results: dict[str, SuiteResult] = {}
        self.docs_uri: str | None = None
        self._gx: _GxRunner | None = None

    # -- the callable sync invokes ------------------------------------------------------------
    def __call__(
        self, entity: str, records: list[dict], duplicates: list[dict]
    ) -> SuiteResult | None:
        sd = suites.SUITES.get(entity)
        if sd is None:
            log.warning("no quality suite for master-data entity %s: published unchecked", entity)
            return None
        t0 = time.perf_counter()
        res = SuiteResult(
            entity, sd.name, sd.entity_type, self.run_id, len(records), len(duplicates)
        )
        fresh_row = self._freshness(sd, res)
        evaluated: set[str] = set()
        if records or duplicates:
            df = suites.frame(entity, records, duplicates)
            df = suites.prepare(entity, df, self._references(sd))
            vr = self._runner().validate(entity, df)
            withheld_rows = _interpret(sd, df, vr, len(records), res)
            evaluated = set(df["entity_key"])
            if withheld_rows:
                res.withheld = sorted({df.at[i, "entity_key"] for i in withheld_rows})
                records[:] = [r for i, r in enumerate(records) if i not in withheld_rows]
        with db.transaction(self.conn):
            _write_results(self.conn, res, fresh_row)
            if evaluated:
                res.opened, res.refreshed = _open_exceptions(self.conn, sd, res)
                res.resolved = _resolve_exceptions(
                    self.conn, sd, evaluated - set(res.failing), self.run_id
                )
        res.seconds = time.perf_counter() - t0
        self.results[entity] = res
        log.info("quality gate %s: %s", sd.name, res.summary())
        if self.strict and not res.success:
            raise MasterDataQualityFailed([res], docs=self.docs_uri)
        return res

    # -- after the sync -------------------------------------------------------------------------
    def flag_published(self) -> dict[str, int]:
        """Set ``dq_passed`` from the open exceptions; returns rows changed per table."""
        return flag_published(self.conn)

    def finish(self) -> dict[str, Any]:
        """Flag published rows, build data docs; returns the run's summary (small, for XCom)."""
        flagged = self.flag_published()
        if self.build_docs:
            from orderflow.dq import docs

            try:
                runner = self._runner()
                runner.add_all_suites()
                self.docs_uri = docs.build(runner.context, self._docs_dir(), runner.run_identifier)
            except Exception:  # docs are a convenience: never fail a sync over them
                log.exception("building data docs failed; results are in orderflow.dq_result")
        return self.summary(flagged=flagged)

    def failure(self) -> MasterDataQualityFailed | None:
        """The typed failure of this run (not raised), or None when every suite passed."""
        bad = [r for r in self.results.values() if not r.success or not r.fresh]
        return MasterDataQualityFailed(bad, docs=self.docs_uri) if bad else None

    def summary(self, flagged: dict[str, int] | None = None) -> dict[str, Any]:
        res = self.results.values()
        return {
            "run_id": self.run_id,
            "suites": {r.entity: r.summary() for r in res},
            "failed_suites": sorted(r.suite for r in res if not r.success),
            "stale": sorted(r.entity for r in res if not r.fresh),
            "exceptions_opened": sum(r.opened for r in res),
            "exceptions_resolved": sum(r.resolved for r in res),
            "withheld": sum(len(r.withheld) for r in res),
            "flag_changes": flagged or {},
            "validate_s": round(sum(r.seconds for r in res), 3),
            "docs": self.docs_uri,
        }

    # -- internals ------------------------------------------------------------------------------
    def _docs_dir(self) -> Path:
        from orderflow.dq import docs

        return self.docs_dir or docs.docs_dir()

    def _runner(self) -> _GxRunner:
        if self._gx is None:
            self._gx = _GxRunner(self.run_id, self._docs_dir() if self.build_docs else None)
        return self._gx

    def _references(self, sd: suites.SuiteDef) -> suites.References:
        refs = suites.References()
        if "customers" in sd.needs:
            refs.customers = repo.customer_ids(self.conn)
        if "items" in sd.needs:
            refs.items = repo.item_ids(self.conn)
        if "dcs" in sd.needs:
            refs.dcs = repo.dc_ids(self.conn)
        if "contracts" in sd.needs:
            import pandas as pd

            cols = ["contract_id", "customer_id", "item_id", "effective_from", "expires_on"]
            rows = repo.contracts(self.conn, cols)
            refs.contracts = pd.DataFrame.from_records(rows, columns=cols)
        return refs

    def _freshness(self, sd: suites.SuiteDef, res: SuiteResult) -> tuple:
        prev, age = repo.previous_extract(self.conn, sd.name, FRESHNESS, self.run_id)
        limit = self.max_extract_age.total_seconds()
        res.extract_age_s = float(age) if age is not None else None
        res.fresh = age is None or float(age) <= limit
        details = {
            "rule": f"The previous extract of {sd.entity} is at most {limit / 3600:g} h old",
            "previous_extract_at": prev.isoformat() if prev else None,
            "age_s": res.extract_age_s,
            "max_age_s": limit,
            "extracted": res.rows + res.duplicates,
        }
        return (res.fresh, res.rows + res.duplicates, 0 if res.fresh else 1, details)


# ---------------------------------------------------------------------------- interpretation


def _interpret(
    sd: suites.SuiteDef, df: pd.DataFrame, vr: Any, n_kept: int, res: SuiteResult
) -> set[int]:
    """Fill ``res.outcomes`` / ``res.failing`` from a GX result; returns the rows to withhold.

    Failures of a superseded duplicate count only for uniqueness rules: that version is not
    published, only its key collision is a finding."""
    withheld: set[int] = set()
    for r in vr.results:
        cfg = r.expectation_config
        rule = sd.rule((cfg.meta or {})["rule"])
        result = r.result or {}
        ids: list[str] = []
        ignored = 0
        for hit in result.get("unexpected_index_list") or []:
            if not isinstance(hit, dict) or "row_no" not in hit:
                continue
            row = int(hit["row_no"])
            superseded = row >= n_kept
            if superseded and not rule.unique_key:
                ignored += 1
                continue
            eid = str(df.at[row, "entity_key"])
            values = {c: jsonable(df.at[row, c]) for c in (rule.show or rule.columns)}
            res.failing.setdefault(eid, []).append(Finding(rule.name, values, superseded))
            if eid not in ids:
                ids.append(eid)
            if rule.blocking and not superseded:
                withheld.add(row)
        error = _exception_message(r)
        details: dict[str, Any] = {
            "type": cfg.type,
            "kwargs": jsonable({k: v for k, v in cfg.kwargs.items() if k != "batch_id"}),
            "description": rule.description,
            "blocking": rule.blocking,
            "entity_type": sd.entity_type,
            "unexpected_entity_ids": ids[:MAX_IDS_STORED],
            "unexpected_entity_ids_truncated": len(ids) > MAX_IDS_STORED,
            "unexpected_values": jsonable((result.get("partial_unexpected_counts") or [])[:20]),
        }
        if ignored:
            details["superseded_rows_ignored"] = ignored
        if "observed_value" in result:
            details["observed_value"] = jsonable(result["observed_value"])
        if error:
            details["error"] = error
        res.outcomes.append(
            RuleOutcome(
                rule=rule.name,
                expectation=cfg.type,
                description=rule.description,
                blocking=rule.blocking,
                success=bool(r.success),
                element_count=int(result.get("element_count") or len(df)),
                unexpected_count=int(result.get("unexpected_count") or 0),
                entity_ids=ids,
                details=details,
            )
        )
    return withheld


def _exception_message(r: Any) -> str | None:
    info = r.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception"):
            return str(c.get("exception_message") or "expectation raised")
    return None


def jsonable(value: Any) -> Any:
    """Values GX and pandas hand back (numpy scalars, NaN, NaT, Timestamps) as JSON values."""
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, float):  # numpy float64 included (a float subclass)
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "tolist") and not isinstance(value, datetime | date):  # numpy
        return jsonable(value.tolist())
    if isinstance(value, datetime):  # pandas Timestamp included
        try:
            if value != value:  # NaT
                return None
        except TypeError:
            pass
        if (value.hour, value.minute, value.second) == (0, 0, 0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


# ---------------------------------------------------------------------------- persistence


def _write_results(conn: psycopg.Connection, res: SuiteResult, fresh_row: tuple) -> None:
    """This run's rows of the suite, replacing earlier attempts' (retries do not double count).
    An empty incremental batch writes only its freshness row."""
    rows = [
        (o.rule, o.success, o.element_count, o.unexpected_count, json.dumps(o.details))
        for o in res.outcomes
    ]
    fresh, n, bad, details = fresh_row
    rows.append((FRESHNESS, fresh, n, bad, json.dumps(details)))
    repo.replace_results(conn, res.run_id, res.suite, rows)


def _label(entity_type: str) -> str:
    return entity_type.replace("_", " ")


def reason(sd: suites.SuiteDef, entity_id: str, findings: list[Finding], withheld: bool) -> str:
    """What failed, where, with which value, and what to do — for the person on the desk."""
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    parts = []
    for name, fs in by_rule.items():
        rule = sd.rule(name)
        vals: dict[str, list[str]] = {}
        for f in fs:
            for col, v in f.values.items():
                shown = "missing" if v is None else repr(v)
                if shown not in vals.setdefault(col, []):
                    vals[col].append(shown)
        shown = ", ".join(f"{col}={' / '.join(v)}" for col, v in vals.items())
        parts.append(f"{name} ({rule.description}): {shown}")
    n = len(by_rule)
    text = (
        f"{_label(sd.entity_type)} {entity_id} failed {n} master-data check{'s' if n > 1 else ''}"
        f": {'; '.join(parts)}. "
    )
    if withheld:
        text += "Not published: the store keeps its previous version (if any). "
    return text + (
        "Fix the record in the source system; the next master-data sync re-checks it and "
        "resolves this exception. Orders that use it are held meanwhile."
    )


def _open_exceptions(
    conn: psycopg.Connection, sd: suites.SuiteDef, res: SuiteResult
) -> tuple[int, int]:
    """One open exception per failing entity: insert, or refresh the reason when it changed.
    Returns (opened, refreshed)."""
    if not res.failing:
        return 0, 0
    withheld = set(res.withheld)
    ids, severities, reasons, details = [], [], [], []
    for eid, findings in res.failing.items():
        ids.append(eid)
        severities.append("high" if eid in withheld else "medium")
        reasons.append(reason(sd, eid, findings, eid in withheld))
        details.append(
            json.dumps(
                {
                    "suite": sd.name,
                    "entity": sd.entity,
                    "detected_in_run": res.run_id,
                    "rules": sorted({f.rule for f in findings}),
                    "findings": [
                        {"rule": f.rule, "values": f.values, "superseded": f.superseded}
                        for f in findings
                    ],
                    "withheld": eid in withheld,
                }
            )
        )
    inserted = repo.open_entity_exceptions(
        conn,
        entity_type=sd.entity_type,
        category=CATEGORY,
        entity_ids=ids,
        severities=severities,
        reasons=reasons,
        details=details,
    )
    opened = sum(1 for i in inserted if i)
    return opened, len(inserted) - opened


def _resolve_exceptions(
    conn: psycopg.Connection, sd: suites.SuiteDef, passing: set[str], run_id: str
) -> int:
    """Auto-resolve open exceptions of this entity type whose entity passed every rule now."""
    open_rows = repo.open_entity_exception_ids(conn, CATEGORY, sd.entity_type)
    ids = [xid for xid, eid in open_rows if eid in passing]
    if not ids:
        return 0
    return repo.auto_resolve(conn, ids, RESOLVER, f"passed every rule of {sd.name} in run {run_id}")


def flag_published(conn: psycopg.Connection) -> dict[str, int]:
    """``dq_passed`` on every master-data table that has the column: false where an open
    ``master_data_quality`` exception names the row, true elsewhere. Returns rows changed."""
    tables = repo.flagged_tables(conn)
    changed: dict[str, int] = {}
    for sd in suites.SUITES.values():
        if sd.entity_type not in tables:
            continue
        with db.transaction(conn):
            n = repo.set_dq_passed(conn, sd.entity_type, sd.key, CATEGORY)
        changed[sd.entity_type] = n
    return changed
