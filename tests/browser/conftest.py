"""Fixtures of the browser tests: a real ``airflow api-server`` carrying our plugin (with the
users and OrderFlow roles of ``browser_support``) and headless Chromium. Each module decides
what is in its store before the api-server starts (``test_operations_ui`` lands a day)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from browser_support import CHROMIUM, ROLES, USERS
from tests_support import free_port


@pytest.fixture(scope="module")
def api_server(store_url, airflow_db, tmp_path_factory):
    """``airflow api-server`` with our plugin, the test users and the OrderFlow role mapping."""
    tmp = tmp_path_factory.mktemp("api")
    passwords = {u: secrets.token_urlsafe(10) for u in USERS}
    (tmp / "passwords.json").write_text(json.dumps(passwords))
    (tmp / "roles.yaml").write_text(json.dumps({"users": ROLES}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "ORDERFLOW_ROLES_FILE": str(tmp / "roles.yaml"),
    }
    log = (tmp / "api-server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(1)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail("api-server did not start: " + (tmp / "api-server.log").read_text()[-3000:])
    os.environ["ORDERFLOW_ROLES_FILE"] = env["ORDERFLOW_ROLES_FILE"]
    yield base, passwords
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.environ.pop("ORDERFLOW_ROLES_FILE", None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()
