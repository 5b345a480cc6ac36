"""Decision support (#17): train the models of orderflow.ai on the store's own history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable, Param

from orderflow.operators.ai import TrainModelsOperator

with DAG(
    dag_id="train_models",
    schedule=CronTriggerTimetable("30 3 * * 1", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["orderflow", "processing"],
    params={
        "models": Param(
            "",
            type="string",
            description="comma-separated model names (empty: every model)",
        )
    },
    default_args={"owner": "orderflow-ops", "retries": 1, "retry_delay": timedelta(minutes=5)},
    doc_md="""
### Train the decision-support models
Weekly (Monday 03:30 UTC) and on demand (trigger with `models`, e.g. `exception_cause`).
**train_models** — per model of `orderflow.ai.registry`: its labelled examples from the store
(decisions people reviewed on the desk — their corrections are the labels — and imported
history), oldest first; trained on the earlier 80 %, scored on the latest 20 %; stored in
`orderflow.ai_model_version` with its training window and metrics; activated only if it is
not worse than the active version on the same period. Models are loaded by the flow at
inference (validation), never at parse time. Switch a model off in `include/rules/ai/`.
""",
):
    TrainModelsOperator(task_id="train_models", models="{{ params.models }}")
