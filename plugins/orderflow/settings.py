"""Process-level settings, read from the environment with sensible local defaults.

Layers of configuration: this module (defaults and paths), the environment
(`ORDERFLOW_*`, `AIRFLOW__*`), Airflow Connections (every endpoint and secret) and rule-set
files under ``include/`` (business policy). Nothing here does I/O at import.
"""

from __future__ import annotations

import os
from pathlib import Path

# plugins/orderflow/settings.py -> project root. In the compose deployment the same layout
# is mounted under /opt/airflow, so the relation holds there too.
PROJECT_ROOT = Path(os.environ.get("ORDERFLOW_HOME") or Path(__file__).resolve().parents[2])
INCLUDE_DIR = PROJECT_ROOT / "include"
MIGRATIONS_DIR = INCLUDE_DIR / "migrations"
DAGS_DIR = PROJECT_ROOT / "dags"
PLUGINS_DIR = PROJECT_ROOT / "plugins"

# Local state of a development install (git-ignored): embedded PostgreSQL data, Airflow home,
# logs and sandbox files.
STATE_DIR = Path(os.environ.get("ORDERFLOW_STATE_DIR") or PROJECT_ROOT / ".orderflow")

#: Airflow Connection id of the operational store (hooks own connections).
STORE_CONN_ID = "orderflow_db"
#: PostgreSQL schema holding every OrderFlow table.
STORE_SCHEMA = "orderflow"

#: How many approvals wait under Required Actions at once (one ``order_approval`` run each,
#: its human-in-the-loop task deferred: a trigger, not a worker slot). The dispatcher never
#: starts more than this, so no approval run queues behind the DAG's run limit; the rest are
#: on the desk (every open exception is) and reach Required Actions as places free, most
#: urgent SLA first. ``ORDERFLOW_APPROVAL_WINDOW`` overrides it (read at DAG parse: the
#: DAG's ``max_active_runs`` is the same number).
#:
#: Kept small because every waiting approval is a *running* DAG run: Airflow's scheduler
#: examines running runs in turn, ``max_dagruns_per_loop_to_schedule`` of them per loop,
#: oldest decision first. With 300 approvals waiting (the former default) each work run was
#: looked at once every ~15 loops, and every task-to-task hop of order processing waited
#: 8-10 s (measured on the real scheduler, docs/performance.md). See
#: :data:`SCHEDULER_RUNS_PER_LOOP`.
APPROVAL_WINDOW = int(os.environ.get("ORDERFLOW_APPROVAL_WINDOW") or 24)
#: Running DAG runs the scheduler examines per loop (Airflow's
#: ``[scheduler] max_dagruns_per_loop_to_schedule``, default 20), as ``orderflow run`` and
#: docker-compose set it: every approval the window allows, every scheduled DAG's
#: ``max_active_runs`` (16 today) and room for people's manual runs (reprocess, replays,
#: what-ifs), so every running run is looked at in every loop. Examining a run costs the
#: scheduler ≈ 6 ms of CPU.
SCHEDULER_RUNS_PER_LOOP = max(64, APPROVAL_WINDOW + 40)
#: Seconds between two looks at the store by a waiting approval (its exception resolved
#: anywhere else — the desk, the CLI, a reprocess, a rule — ends the Required Action within
#: about this long; one query per look for every approval waiting in a triggerer).
#: ``ORDERFLOW_APPROVAL_WATCH_S`` overrides it (read at DAG parse).
APPROVAL_WATCH_S = float(os.environ.get("ORDERFLOW_APPROVAL_WATCH_S") or 10)
#: Seconds between two reads of an approval's answer by its trigger: only a safety net, the
#: API's answer resumes the waiting task itself (Airflow submits the event on the answer).
#: With 300 approvals waiting, a read each every 60 s cost the triggerer and the API server
#: 5 calls a second. ``ORDERFLOW_APPROVAL_ANSWER_POLL_S``.
APPROVAL_ANSWER_POLL_S = float(os.environ.get("ORDERFLOW_APPROVAL_ANSWER_POLL_S") or 300)

#: Fixed list of DAG tags (the policy test enforces it).
DAG_TAGS = frozenset(
    {
        "orderflow",
        "platform",
        "intake",
        "master-data",
        "processing",
        "fulfilment",
        "exceptions",
        "kpi",
        "replay",
        "sandbox",
    }
)


def switched_on(name: str) -> bool:
    """An on/off environment switch, on unless set to ``off``, ``0`` or ``false``."""
    return os.environ.get(name, "on").lower() not in ("off", "0", "false")


def store_database_url() -> str | None:
    """The operational store's URL when given explicitly (``ORDERFLOW_DATABASE_URL``)."""
    return os.environ.get("ORDERFLOW_DATABASE_URL") or None


def rule_type_specs() -> list[str]:
    """Rule types to load beyond the core and the ``orderflow.rule_types`` entry points:
    ``ORDERFLOW_RULE_TYPES=module:attribute[,module:attribute…]`` (``orderflow.rules.registry``),
    for a module on the path that is not an installed package (e.g. under ``plugins/``)."""
    raw = os.environ.get("ORDERFLOW_RULE_TYPES") or ""
    return [s.strip() for s in raw.split(",") if s.strip()]
