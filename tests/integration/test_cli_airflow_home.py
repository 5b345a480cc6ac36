"""The ``orderflow`` CLI reads the stack's Airflow (``.orderflow/airflow``, where ``orderflow
run`` puts AIRFLOW_HOME), not ``~/airflow``, when AIRFLOW_HOME is unset (#18)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.db]

# Runs a command the way the installed ``orderflow`` script does (``orderflow.cli:main``),
# then says which airflow.cfg the process's Airflow read.
PROBE = """
import sys
from orderflow.cli import main
assert "airflow" not in sys.modules, "airflow imported before the CLI could set its home"
main(sys.argv[1:], standalone_mode=False)
from airflow import configuration
print("AIRFLOW_CONFIG=" + configuration.AIRFLOW_CONFIG)
print("read=" + configuration.conf.get("orderflow_probe", "home", fallback="none"))
"""


def test_the_cli_default_is_the_home_the_stack_uses():
    from orderflow import cli, settings
    from orderflow.dev import stack

    assert cli.stack_airflow_home() == stack.airflow_home() == settings.STATE_DIR / "airflow"


def _cfg(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "airflow.cfg").write_text(f"[orderflow_probe]\nhome = {name}\n")
    return folder / "airflow.cfg"


def _cli(tmp_path: Path, *args: str, airflow_home: Path | None = None) -> str:
    env = {
        **os.environ,  # keeps the test store's AIRFLOW_CONN_ORDERFLOW_DB (store fixture)
        "HOME": str(tmp_path / "home"),
        "ORDERFLOW_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("AIRFLOW_HOME")
    if airflow_home is not None:
        env["AIRFLOW_HOME"] = str(airflow_home)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture
def homes(tmp_path):
    return {
        "stack": _cfg(tmp_path / "state" / "airflow", "stack"),
        "user": _cfg(tmp_path / "home" / "airflow", "user"),
        "explicit": _cfg(tmp_path / "explicit", "explicit"),
    }


def test_without_airflow_home_the_cli_reads_the_stacks_airflow_cfg(store, tmp_path, homes):
    # `outbox status` reaches the store through an Airflow hook: Airflow is imported and
    # configured by the command itself.
    out = _cli(tmp_path, "outbox", "status")
    assert f"AIRFLOW_CONFIG={homes['stack']}" in out
    assert "read=stack" in out


def test_an_explicit_airflow_home_wins(store, tmp_path, homes):
    out = _cli(tmp_path, "outbox", "status", airflow_home=homes["explicit"].parent)
    assert f"AIRFLOW_CONFIG={homes['explicit']}" in out
    assert "read=explicit" in out
