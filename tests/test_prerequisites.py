"""`make test` checks the test prerequisites (tests/prerequisites.py) before running any test,
and stops naming what is missing and the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import prerequisites

ROOT = Path(__file__).resolve().parents[1]
# A machine without any of the tools on its PATH (the venv's Python is called by its path).
BARE = {
    **{k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    "PATH": "/nonexistent",
}


def test_the_check_names_what_is_missing_and_how_to_install_it():
    r = subprocess.run(
        [sys.executable, "tests/prerequisites.py"],
        cwd=ROOT,
        env=BARE,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "compose CLI (Debian: docker-compose)" in r.stderr
    assert "tesseract (Debian: tesseract-ocr)" in r.stderr
    assert "install them with: make deps" in r.stderr

    packages = subprocess.run(
        [sys.executable, "tests/prerequisites.py", "--packages"],
        cwd=ROOT,
        env=BARE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"docker-compose", "tesseract-ocr"} <= set(packages)


def test_chromium_is_looked_for_where_the_browser_tests_look(monkeypatch, tmp_path):
    monkeypatch.setattr(prerequisites, "CHROMIUM", tmp_path / "chromium")
    assert "chromium" in {p.package for p in prerequisites.missing()}
    (tmp_path / "chromium").touch()
    assert "chromium" not in {p.package for p in prerequisites.missing()}


def test_an_unreachable_test_database_is_named(monkeypatch):
    monkeypatch.setenv("ORDERFLOW_TEST_DATABASE_URL", "postgresql://postgres@/x?host=/nonexistent")
    assert "ORDERFLOW_TEST_DATABASE_URL is set but does not answer" in (
        prerequisites._database_problem() or ""
    )


def test_make_test_stops_before_running_any_test():
    make = shutil.which("make")
    assert make, "make is how the tests are run (`make test`)"
    r = subprocess.run(
        # -o: take the installed venv as it is (never reinstall it from here)
        [make, "--no-print-directory", "-o", ".venv/.installed", "test"],
        cwd=ROOT,
        env=BARE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "install them with: make deps" in r.stderr
    assert "test run" not in r.stdout  # pytest never started
