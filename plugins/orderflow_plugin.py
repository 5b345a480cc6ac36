"""Airflow plugin entry point for OrderFlow (the only module the plugin loader imports)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class OrderFlowPlugin(AirflowPlugin):
    """Registers OrderFlow with Airflow. The operations UI and listeners hang off this class."""

    name = "orderflow"
