"""Operators of decision support (``orderflow.ai``, #17)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orderflow.operators.operations import _StoreOperator


class TrainModelsOperator(_StoreOperator):
    """Train each model on the store's labelled history (``orderflow.ai.training``): a new
    version is stored with its window and metrics and activated only if it is not worse than
    the active one on the same held-out period. scikit-learn is imported here, in ``execute``.

    :param models: model names (templated; default: every model of ``orderflow.ai.registry``;
        a comma-separated string is accepted, as a DAG param renders it).
    :param store_conn_id: the store's Connection (templated).
    """

    template_fields: Sequence[str] = ("models", "store_conn_id")
    ui_color = "#e7f0f7"

    def __init__(self, *, models: Sequence[str] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = models

    def run(self, conn, context):
        from airflow.sdk.exceptions import AirflowFailException

        from orderflow.ai import registry, training

        names = self.models
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        names = list(names or registry.MODELS)
        unknown = sorted(set(names) - set(registry.MODELS))
        if unknown:
            raise AirflowFailException(
                f"unknown model(s) {', '.join(unknown)}; one of {', '.join(registry.MODELS)}"
            )
        return [r.as_xcom() for r in training.train_all(conn, names)]
