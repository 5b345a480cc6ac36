"""Airflow plugin entry point for OrderFlow (the only module the plugin loader imports)."""

from __future__ import annotations

import os
from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

# Where a browser reaches the sandbox (the compose file maps it to the host's 8090 too).
SANDBOX_PUBLIC_URL = os.environ.get("ORDERFLOW_SANDBOX_PUBLIC_URL", "http://localhost:8090")


def _ui_app():
    # Built when the plugin is loaded (every component); the app itself is light: its
    # database and template work happens per request.
    from orderflow.ui.app import create_app

    return create_app()


class OrderFlowPlugin(AirflowPlugin):
    """Registers OrderFlow with Airflow: the operations UI (a FastAPI app the api-server
    mounts at /orderflow, behind Airflow's login) and its links in the navigation."""

    name = "orderflow"
    fastapi_apps: ClassVar[list[dict]] = [
        {"app": _ui_app(), "url_prefix": "/orderflow", "name": "OrderFlow operations"}
    ]
    external_views: ClassVar[list[dict]] = [
        {
            "name": "OrderFlow KPIs",
            "href": "/orderflow/",
            "destination": "nav",
            "url_route": "orderflow-kpis",
        },
        {
            "name": "Exception desk",
            "href": "/orderflow/desk",
            "destination": "nav",
            "url_route": "orderflow-desk",
        },
        {
            "name": "Integration health",
            "href": "/orderflow/integrations",
            "destination": "nav",
            "url_route": "orderflow-integrations",
        },
        {
            "name": "Rule governance",
            "href": "/orderflow/rules",
            "destination": "nav",
            "url_route": "orderflow-rules",
        },
        {
            "name": "Sandbox systems (API)",
            "href": f"{SANDBOX_PUBLIC_URL}/docs",
            "destination": "nav",
            "category": "browse",
            "url_route": "orderflow-sandbox",
        },
    ]
