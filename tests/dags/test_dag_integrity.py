"""DAG integrity and policy over one DagBag (the mozilla/telemetry-airflow pattern)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.settings import DAG_TAGS, DAGS_DIR

TASK_ID = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")  # verb_object


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_a_dag_named_after_it(dagbag):
    files = {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")}
    assert files, "no DAG files found"
    assert files == set(dagbag.dag_ids)


def test_dag_policy(dagbag):
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: no doc_md")
        if not dag.tags or not set(dag.tags) <= DAG_TAGS:
            problems.append(f"{dag_id}: tags {sorted(dag.tags)} not from {sorted(DAG_TAGS)}")
        for task in dag.tasks:
            if task.owner in (None, "", "airflow"):
                problems.append(f"{dag_id}.{task.task_id}: no owner")
            if (task.retries or 0) < 1:
                problems.append(f"{dag_id}.{task.task_id}: no retries")
            if not TASK_ID.match(task.task_id.split(".")[-1]):
                problems.append(f"{dag_id}.{task.task_id}: task id is not verb_object")
    assert problems == []


def test_dag_files_import_no_heavy_modules_at_parse_time():
    """Parse-time hygiene: no Great Expectations, pandas, httpx or DB drivers at module level."""
    files = [str(p) for p in DAGS_DIR.glob("*.py")]
    # Measured as a delta over what airflow.sdk itself imports (it uses httpx, for instance).
    code = (
        "import runpy, sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"for f in {files!r}: runpy.run_path(f)\n"
        "heavy = ('great_expectations', 'pandas', 'psycopg', 'httpx', 'reportlab', 'numpy',\n"
        "         'scipy', 'sklearn', 'joblib', 'orderflow_sandbox')\n"
        "new = set(sys.modules) - before\n"
        "bad = sorted({m.split('.')[0] for m in new if m.split('.')[0] in heavy})\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"imported at parse time: {r.stdout.strip()} {r.stderr[-800:]}"


def test_plugin_loader_sees_only_the_plugin_module():
    from airflow.utils.file import find_path_from_directory

    plugins = Path(DAGS_DIR).parent / "plugins"
    seen = [
        Path(p).relative_to(plugins).as_posix()
        for p in find_path_from_directory(str(plugins), ".airflowignore")
        if p.endswith(".py")
    ]
    assert seen == ["orderflow_plugin.py"]
