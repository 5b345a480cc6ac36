"""OrderFlow: Airflow-native order-to-cash orchestration for distributors.

Layers (dependencies point inward): dags → operators → store / integrations / channels → domain.
"""

__version__ = "0.1.0"
