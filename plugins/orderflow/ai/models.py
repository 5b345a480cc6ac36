"""Training, scoring and explaining a model over feature rows (scikit-learn, imported here only).

A :class:`Trained` model is a gradient-boosted tree classifier (scikit-learn's
``HistGradientBoostingClassifier``: missing values are native, so a feature that does not
apply is NaN) with its column order and classes. Its evidence for one prediction is
occlusion: each feature in turn set to its ordinary value (the training median, or "unknown"
where it is mostly missing), the drop in the predicted class's probability measured; the
largest drops are the top features.

Serialised with joblib to bytes (``dumps`` / ``loads``); ``loads`` is only ever called on
bytes OrderFlow wrote, after their SHA-256 matched (``orderflow.ai.governance``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

NAN = float("nan")


@dataclass
class Trained:
    estimator: Any
    columns: tuple[str, ...]
    classes: tuple[str, ...]
    #: per column, the training median (NaN where a column is mostly missing): the
    #: "ordinary value" a feature is replaced by when its weight is measured
    baseline: tuple[float, ...] = ()

    def predict(self, rows: list[dict[str, float]]) -> list[tuple[str, float, list[dict]]]:
        """Per row: (label, probability of that label, top features as evidence)."""
        import numpy as np

        if not rows:
            return []
        x = np.array([[r.get(c, NAN) for c in self.columns] for r in rows], dtype=float)
        proba = self.estimator.predict_proba(x)
        out = []
        for i, row in enumerate(rows):
            k = int(np.argmax(proba[i]))
            out.append(
                (self.classes[k], float(proba[i][k]), self._evidence(x[i], k, proba[i][k], row))
            )
        return out

    def labels(self, rows: list[dict[str, float]]) -> list[str]:
        """Per row the most probable label (no evidence: for evaluation)."""
        p = self.proba(rows)
        return [self.classes[int(i)] for i in p.argmax(axis=1)]

    def proba(self, rows: list[dict[str, float]]):
        import numpy as np

        x = np.array([[r.get(c, NAN) for c in self.columns] for r in rows], dtype=float)
        return self.estimator.predict_proba(x)

    def _evidence(self, x, k: int, p: float, row: dict[str, float], top: int = 3) -> list[dict]:
        import numpy as np

        present = [j for j in range(len(self.columns)) if not np.isnan(x[j])]
        if not present:
            return []
        occluded = np.repeat(x[None, :], len(present), axis=0)
        for n, j in enumerate(present):
            base = self.baseline[j] if self.baseline else NAN
            occluded[n, j] = NAN if base == x[j] else base
        drops = p - self.estimator.predict_proba(occluded)[:, k]
        order = np.argsort(-drops)[:top]
        return [
            {
                "feature": self.columns[present[n]],
                "value": round(float(row[self.columns[present[n]]]), 4),
                "weight": round(float(drops[n]), 4),
            }
            for n in order
            if drops[n] > 0.001
        ]


_CONTROLLER: Any = None


@contextmanager
def one_thread() -> Iterator[None]:
    """Predictions inside on one OpenMP thread (this thread only). A request's row or two gain
    nothing from scikit-learn's thread pool, and on a busy machine its threads' spin-waits
    cost far more than the work: the order check measured 366 ms of CPU per answer with the
    default pool against 7 ms on one thread (2 CPUs, load average 45). The controller is
    made once per process, on first use (after scikit-learn is loaded, never at import)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="openmp"):
        yield


def fit(rows: list[dict[str, float]], labels: list[str], columns: tuple[str, ...], seed: int = 0):
    """A classifier of ``labels`` from ``rows`` (class weights balanced: rare causes count)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.array([[r.get(c, NAN) for c in columns] for r in rows], dtype=float)
    y = np.array(labels)
    est = HistGradientBoostingClassifier(
        max_iter=60,
        learning_rate=0.15,
        max_leaf_nodes=15,
        min_samples_leaf=5,
        l2_regularization=1.0,
        class_weight="balanced",
        random_state=seed,
    )
    est.fit(x, y)
    with np.errstate(all="ignore"):
        present = (~np.isnan(x)).mean(axis=0) >= 0.5
        med = [float(np.nanmedian(x[:, j])) if present[j] else NAN for j in range(x.shape[1])]
    return Trained(est, tuple(columns), tuple(str(c) for c in est.classes_), tuple(med))


def macro_f1(truth: list[str], predicted: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def per_class_f1(truth: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    labels = sorted(set(truth))
    scores = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    return {lab: round(float(s), 4) for lab, s in zip(labels, scores, strict=True)}


def dumps(model: Trained) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    return buf.getvalue()


def loads(blob: bytes, sha256: str) -> Any:
    """The model in ``blob`` (a :class:`Trained` model, or a near-duplicate
    ``duplicates.Model``), only if its hash is ``sha256`` (bytes OrderFlow wrote)."""
    import joblib

    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError("model artifact does not match its recorded SHA-256; refusing to load it")
    from orderflow.ai.duplicates import Model as PairModel

    model = joblib.load(io.BytesIO(blob))
    if not isinstance(model, Trained | PairModel):
        raise TypeError(f"model artifact holds a {type(model).__name__}, not a Trained model")
    _one_thread_for_inference()
    return model


def _one_thread_for_inference() -> None:
    """Score on one OpenMP/BLAS thread in a process that loads a model (a task: the batch
    stages predict on the thread that loaded it): inference batches are small, and on a busy
    2-core worker the libraries' idle threads spin — measured in the tests: a 60-row fit cost
    1.5 s of CPU instead of 0.02 s. OpenMP's limit is per thread, so a threaded server (the
    order check) wraps its predictions in :func:`one_thread`; training and evaluation set
    the same limit around their own work."""
    global _LIMITED
    if os.getpid() != _LIMITED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        _LIMITED = os.getpid()


_LIMITED: int | None = None  # the process that set the limit (a forked child sets its own)


def library() -> str:
    import sklearn

    return f"scikit-learn {sklearn.__version__}"
