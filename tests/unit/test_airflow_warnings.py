"""Airflow components load ``plugins/`` without the pathspec deprecation warning Airflow's
``.airflowignore`` handling raised once per pattern in every process (#18), while Airflow's
other deprecation warnings still show (``plugins/airflow_local_settings.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import warnings
import airflow  # settings.initialize(): imports airflow_local_settings from the plugins folder
from airflow import plugins_manager

plugins_manager.ensure_plugins_loaded()
names = sorted(p.name for p in plugins_manager._get_plugins()[0])
print("plugins:", names)
# Airflow shows its own modules' deprecation warnings: that must stay as it was.
warnings.warn_explicit("probe: something deprecated", DeprecationWarning, "probe.py", 1,
                       module="airflow.probe")
"""


def _load_plugins(tmp_path: Path, plugins_folder: Path) -> str:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def test_loading_our_plugins_logs_no_gitwildmatch_deprecation(tmp_path):
    output = _load_plugins(tmp_path, ROOT / "plugins")
    assert "plugins: ['orderflow']" in output
    assert "GitWildMatchPattern" not in output
    assert "probe: something deprecated" in output


def test_without_the_filter_the_same_walk_warns(tmp_path):
    # The same .airflowignore in a plugins folder without airflow_local_settings.py: the
    # warning this guards against is real (if Airflow stops raising it, drop the filter).
    bare = tmp_path / "plugins"
    bare.mkdir()
    (bare / ".airflowignore").write_text((ROOT / "plugins" / ".airflowignore").read_text())
    output = _load_plugins(tmp_path, bare)
    assert "GitWildMatchPattern ('gitwildmatch') is deprecated" in output
