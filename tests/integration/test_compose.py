"""docker-compose.yaml: valid for the compose CLI, and in agreement with the pinned versions.

No Docker engine runs here; `config` parses, interpolates and validates without one.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "POSTGRES_PASSWORD": "x",
    "AIRFLOW_FERNET_KEY": "x",
    "AIRFLOW_JWT_SECRET": "x",
    "AIRFLOW_API_SECRET_KEY": "x",
    "ORDERFLOW_PUSH_SECRET": "x",
}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}


def _compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail(
        "no compose CLI: install the docker compose plugin or Debian's docker-compose "
        "(.ci/run does)"
    )


def _config(env: dict[str, str]) -> dict:
    cli = _compose_cli()
    r = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def _lock_version(package: str) -> str:
    text = (ROOT / "requirements.lock").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M).group(1)


@pytest.fixture(scope="module")
def compose():
    return _config(SECRETS)


def test_compose_refuses_to_start_without_secrets():
    cli = _compose_cli()
    r = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD" in r.stderr or "AIRFLOW_" in r.stderr


def test_services_healthchecks_and_restart(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "sandbox"} <= set(services)
    for name, svc in services.items():
        if name == "airflow-init":
            continue
        assert "healthcheck" in svc, name
        assert svc.get("restart") == "always", name


def test_airflow_images_and_build_args_match_the_lock(compose):
    airflow = _lock_version("apache-airflow")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG AIRFLOW_VERSION={airflow}" in dockerfile
    for name in AIRFLOW_SERVICES:
        svc = compose["services"][name]
        assert svc["image"] == f"orderflow-airflow:{airflow}", name
        assert svc["build"]["args"]["AIRFLOW_VERSION"] == airflow, name


def test_celery_executor_with_redis_and_postgres(compose):
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["ORDERFLOW_DATABASE_URL"].endswith("/orderflow")
        mounts = json.dumps(compose["services"][name]["volumes"])
        for folder in ("dags", "plugins", "include"):
            assert f"/opt/airflow/{folder}" in mounts
    assert "apache-airflow-providers-celery" in (ROOT / "requirements.lock").read_text()


def test_a_killed_celery_worker_is_recovered_from_as_the_local_celery_stack_does(compose):
    """The settings that bound what a killed worker holds up (reserved messages, tasks left
    queued) are the ones ``orderflow run`` gives its Celery stack, the soak's."""
    from orderflow.dev.stack import CELERY_WORKER_LOSS

    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert {k: env.get(k) for k in CELERY_WORKER_LOSS} == CELERY_WORKER_LOSS, name


def test_the_scheduler_examines_every_running_run_each_loop(compose):
    """As ``orderflow run`` sets it (waiting approvals are running DAG runs; see
    ``settings.SCHEDULER_RUNS_PER_LOOP`` and the DAG test that checks the bound)."""
    from orderflow.settings import SCHEDULER_RUNS_PER_LOOP

    env = compose["services"]["airflow-scheduler"]["environment"]
    assert int(env["AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE"]) == (
        SCHEDULER_RUNS_PER_LOOP
    )


def test_no_secret_values_in_the_file():
    text = (ROOT / "docker-compose.yaml").read_text()
    for key in ("FERNET_KEY", "JWT_SECRET", "POSTGRES_PASSWORD", "PUSH_SECRET"):
        for line in text.splitlines():
            if (
                key in line
                and ":" in line
                and "${" not in line
                and not line.strip().startswith("#")
            ):
                pytest.fail(f"literal secret? {line.strip()}")


def test_pushed_events_are_wired(compose):
    services = compose["services"]
    push = json.loads(services["airflow-apiserver"]["environment"]["AIRFLOW_CONN_FULFILMENT_PUSH"])
    assert push["password"] == "x"  # from .env, never from the file
    assert json.loads(services["airflow-triggerer"]["environment"]["AIRFLOW_CONN_REDIS_DEFAULT"])
    sandbox = services["sandbox"]["environment"]
    assert sandbox["ORDERFLOW_SANDBOX_PUSH_URL"].startswith("http://airflow-apiserver:8080/")
    assert sandbox["ORDERFLOW_SANDBOX_PUSH_SECRET"] == "x"
