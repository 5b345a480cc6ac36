"""The models of ``orderflow.ai``: one :class:`ModelSpec` per model in :data:`MODELS`.

A spec names the model (the name the ``ai`` rule set, the store and the decisions use), its
feature columns, the metric that decides whether a new version may replace the active one
(higher is better), and how a version is scored on held-out examples. Training, activation,
loading and the kill switch are the same for every model (``training``, ``governance``), so
a new model — delay risk (3), substitutes (4), sequencing (5) — plugs in
by adding its entry here and its feature code beside ``features``. Near-duplicates (2,
``duplicates``) score pairs of orders: their examples are labelled pairs, their model
``duplicates.Model`` (its own ``fit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orderflow.ai import delay as dl
from orderflow.ai import duplicates as nd
from orderflow.ai import features as fx
from orderflow.ai import substitutes as sb


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    columns: tuple[str, ...]
    #: the metric a new version must not be worse on than the active one
    gate_metric: str
    #: (trained model, held-out rows, their labels) → metrics, including ``gate_metric``
    score: Callable[[Any, list[dict[str, float]], list[str]], dict[str, Any]]
    #: a model that is not a classifier of ``models.fit``: (rows, labels, times=, subjects=,
    #: version=, seed=) → the trained model (``None``: ``models.fit``)
    fit: Callable[..., Any] | None = None


def _score_cause(model, rows, labels) -> dict[str, Any]:
    from orderflow.ai import models

    pred = model.labels(rows)
    return {
        "macro_f1": round(models.macro_f1(labels, pred), 4),
        "per_class_f1": models.per_class_f1(labels, pred),
        "n_eval": len(labels),
    }


def anomaly_scores(model, rows) -> list[float]:
    """Per row, the probability that the order is anomalous (1 − P(none))."""
    p = model.proba(rows)
    if "none" not in model.classes:
        return [1.0] * len(rows)
    k = model.classes.index("none")
    return [float(1 - x[k]) for x in p]


def _score_anomaly(model, rows, labels, threshold: float = 0.5) -> dict[str, Any]:
    scores = anomaly_scores(model, rows)
    flagged = [s >= threshold for s in scores]
    truth = [lab != "none" for lab in labels]
    tp = sum(f and t for f, t in zip(flagged, truth, strict=True))
    precision = tp / sum(flagged) if any(flagged) else 0.0
    recall = tp / sum(truth) if any(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "threshold": threshold,
        "n_eval": len(labels),
        "n_anomalous": sum(truth),
    }


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "exception_cause",
            "The cause of a held order (pricing first, then the other categories)",
            fx.CAUSE_FEATURES,
            "macro_f1",
            _score_cause,
        ),
        ModelSpec(
            "arrival_anomaly",
            "An arriving order far from the customer's history (quantity, ship-to, price)",
            fx.ANOMALY_FEATURES,
            "f1",
            _score_anomaly,
        ),
        ModelSpec(
            nd.MODEL_NAME,
            "An order re-submitted on another channel (the customer's orders of the window)",
            nd.FEATURES,
            "pair_f1",
            nd.score_examples,
            fit=nd.fit_examples,
        ),
        ModelSpec(
            sb.MODEL_NAME,
            "Substitutes of a short line ranked by how likely this customer accepts each",
            sb.FEATURES,
            "auc",
            sb.score_examples,
            fit=sb.fit_examples,
        ),
        ModelSpec(
            dl.MODEL_NAME,
            "The probability that a planned order misses its promised date (WMS and carrier "
            "history)",
            dl.FEATURES,
            "auc",
            dl.score,
            fit=dl.fit,
        ),
    )
}


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; one of {', '.join(MODELS)}") from None
