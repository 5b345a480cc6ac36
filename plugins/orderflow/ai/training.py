"""Training on the store's own history (the ``train_models`` DAG's work).

Per model of ``registry.MODELS``: read its labelled examples from the store (decisions people
reviewed — their corrections are the labels — and imported examples), oldest first; train on
the earlier 80 %, score on the latest 20 % (a period the version did not train on); store the
version with its window and metrics; then activate it only if it is not worse on that same
held-out period than the active version. The active version is never replaced by a worse one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: fewer labelled examples than this: no version is trained (reported, not failed)
MIN_EXAMPLES = 30
HOLDOUT_SHARE = 0.2


@dataclass
class TrainResult:
    model_name: str
    examples: int
    version: str | None = None
    activated: bool = False
    metrics: dict[str, Any] | None = None
    note: str = ""

    def as_xcom(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "examples": self.examples,
            "version": self.version,
            "activated": self.activated,
            "gate": (self.metrics or {}).get("gate"),
            "note": self.note,
        }


def _rows(features: list[dict[str, Any]]) -> list[dict[str, float]]:
    nan = float("nan")
    return [{k: (nan if v is None else float(v)) for k, v in f.items()} for f in features]


def train(conn: psycopg.Connection, model_name: str, *, seed: int = 0) -> TrainResult:
    from threadpoolctl import threadpool_limits

    from orderflow.ai import governance, models, registry
    from orderflow.store import ai as repo
    from orderflow.store import db

    spec = registry.get(model_name)
    data = repo.training_set(conn, model_name)
    result = TrainResult(model_name, len(data))
    labels = {d[2] for d in data}
    if len(data) < MIN_EXAMPLES or len(labels) < 2:
        result.note = f"not enough labelled examples ({len(data)}, {len(labels)} labels)"
        return result
    cut = int(len(data) * (1 - HOLDOUT_SHARE))
    train_rows, train_y = _rows([d[1] for d in data[:cut]]), [d[2] for d in data[:cut]]
    test_rows, test_y = _rows([d[1] for d in data[cut:]]), [d[2] for d in data[cut:]]
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with threadpool_limits(1):
        if spec.fit is None:
            model = models.fit(train_rows, train_y, spec.columns, seed=seed)
        else:
            model = spec.fit(
                train_rows,
                train_y,
                times=[d[0] for d in data[:cut]],
                subjects=[d[4] for d in data[:cut]],
                version=version,
                seed=seed,
            )
        metrics = spec.score(model, test_rows, test_y)
        active = governance.active_model(conn, model_name)
        old = spec.score(active[1], test_rows, test_y) if active else None
    gate = metrics[spec.gate_metric]
    metrics.update(
        gate={"metric": spec.gate_metric, "value": gate, "active": old and old[spec.gate_metric]},
        holdout_from=data[cut][0].isoformat(),
        sources=sorted({d[3] for d in data}),
    )
    with db.transaction(conn):
        vid = repo.add_version(
            conn,
            model_name=model_name,
            version=version,
            window=(data[0][0], data[cut - 1][0]),
            n_examples=cut,
            metrics=metrics,
            library=models.library(),
            artifact=models.dumps(model),
        )
        if old is None or gate >= old[spec.gate_metric]:
            why = (
                "first version" if old is None else f"not worse: {gate} >= {old[spec.gate_metric]}"
            )
            repo.activate(conn, vid, why)
            result.activated = True
        else:
            why = f"kept {active[0]}: {spec.gate_metric} {gate} < {old[spec.gate_metric]}"
            repo.note(conn, vid, why)
    result.version, result.metrics, result.note = version, metrics, why
    log.info("model %s version %s: %s", model_name, version, why)
    return result


def train_all(conn: psycopg.Connection, names: list[str] | None = None) -> list[TrainResult]:
    from orderflow.ai import registry

    return [train(conn, name) for name in (names or list(registry.MODELS))]
