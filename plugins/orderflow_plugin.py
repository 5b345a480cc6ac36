"""Airflow plugin entry point for OrderFlow (the only module the plugin loader imports)."""

from __future__ import annotations

import os
from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

# Where a browser reaches the sandbox (the compose file maps it to the host's 8090 too).
SANDBOX_PUBLIC_URL = os.environ.get("ORDERFLOW_SANDBOX_PUBLIC_URL", "http://localhost:8090")


class OrderFlowPlugin(AirflowPlugin):
    """Registers OrderFlow with Airflow: links in the navigation (the operations UI and
    listeners hang off this class as they are built)."""

    name = "orderflow"
    external_views: ClassVar[list[dict]] = [
        {
            "name": "Sandbox systems (API)",
            "href": f"{SANDBOX_PUBLIC_URL}/docs",
            "destination": "nav",
            "category": "browse",
            "url_route": "orderflow-sandbox",
        },
    ]
