"""Helpers of the browser tests (``tests/browser``): where Chromium and the screenshots are,
the users the api-server is started with, logging in, and keeping a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("ORDERFLOW_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[1] / "test-artifacts"
)
#: Airflow users (simple auth manager: user → Airflow role) and their OrderFlow roles
USERS = {
    "admin": "admin",
    "pricing.pat": "op",
    "inventory.sam": "op",
    "cs.casey": "op",
    "rita.rules": "op",
    "ian.int": "op",
}
ROLES = {
    "admin": ["operations_manager"],  # everything on the desk, but not rule changes
    "pricing.pat": ["pricing"],
    "inventory.sam": ["inventory"],
    "cs.casey": ["customer_service"],
    "rita.rules": ["rule_approver"],
    "ian.int": ["integration"],
}


def login(browser, api_server, user: str, path: str = "/orderflow/"):
    """A new browser context logged in to Airflow as ``user``, on ``path``."""
    base, passwords = api_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}{path}", wait_until="networkidle")
    assert "/auth/login" in page.url  # not logged in: Airflow's own login page
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(passwords[user])
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/orderflow/**", timeout=30_000)
    return page


def shot(page, name: str) -> Path:
    """A full-page screenshot kept under ``test-artifacts/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
