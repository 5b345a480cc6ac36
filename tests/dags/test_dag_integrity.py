"""DAG integrity and policy over one DagBag (the mozilla/telemetry-airflow pattern), built
once, in a fresh interpreter."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.settings import DAG_TAGS, DAGS_DIR

PLUGINS_DIR = Path(DAGS_DIR).parent / "plugins"
TASK_ID = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")  # verb_object


HEAVY = ("great_expectations", "pandas", "psycopg", "httpx", "reportlab", "numpy", "scipy",
         "sklearn", "joblib", "orderflow_sandbox")  # fmt: skip

# One fresh interpreter parses the DAG folder once for every test here: first each file run
# as it is (what it imports at parse time, measured as a delta over what airflow.sdk itself
# imports — it uses httpx, for instance), then the DagBag the scheduler would build, its
# import errors and what the policy looks at, as JSON. A fresh process, because the test
# run itself has long imported most of HEAVY by the time it gets here.
PROBE = r"""
import json, runpy, sys
import airflow.sdk
dags_dir, heavy = sys.argv[1], tuple(sys.argv[2].split(","))
before = set(sys.modules)
for f in sorted(__import__("glob").glob(dags_dir + "/*.py")):
    runpy.run_path(f)
new = set(sys.modules) - before
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=dags_dir)
from airflow.utils.file import find_path_from_directory
plugins = sys.argv[3]
print(json.dumps({
    "heavy": sorted({m.split(".")[0] for m in new if m.split(".")[0] in heavy}),
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {
        dag_id: {
            "doc_md": dag.doc_md or "",
            "tags": sorted(dag.tags or ()),
            "tasks": [[t.task_id, t.owner, t.retries] for t in dag.tasks],
        }
        for dag_id, dag in bag.dags.items()
    },
    "plugin_files": [p[len(plugins) + 1:] for p in find_path_from_directory(plugins, ".airflowignore")
                     if p.endswith(".py")],
}))
"""


@pytest.fixture(scope="module")
def dagbag() -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS_DIR), ",".join(HEAVY), str(PLUGINS_DIR)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_no_import_errors(dagbag):
    assert dagbag["import_errors"] == {}


def test_every_dag_file_defines_a_dag_named_after_it(dagbag):
    files = {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")}
    assert files, "no DAG files found"
    assert files == set(dagbag["dags"])


def test_dag_policy(dagbag):
    problems = []
    for dag_id, dag in dagbag["dags"].items():
        if not dag["doc_md"].strip():
            problems.append(f"{dag_id}: no doc_md")
        if not dag["tags"] or not set(dag["tags"]) <= DAG_TAGS:
            problems.append(f"{dag_id}: tags {dag['tags']} not from {sorted(DAG_TAGS)}")
        for task_id, owner, retries in dag["tasks"]:
            if owner in (None, "", "airflow"):
                problems.append(f"{dag_id}.{task_id}: no owner")
            if (retries or 0) < 1:
                problems.append(f"{dag_id}.{task_id}: no retries")
            if not TASK_ID.match(task_id.split(".")[-1]):
                problems.append(f"{dag_id}.{task_id}: task id is not verb_object")
    assert problems == []


def test_dag_files_import_no_heavy_modules_at_parse_time(dagbag):
    """Parse-time hygiene: no Great Expectations, pandas, httpx or DB drivers at module level."""
    assert dagbag["heavy"] == [], f"imported at parse time: {dagbag['heavy']}"


def test_plugin_loader_sees_only_the_plugin_module(dagbag):
    """The plugin loader's walk (``.airflowignore`` honoured) finds the plugin module only."""
    assert dagbag["plugin_files"] == ["orderflow_plugin.py"]
