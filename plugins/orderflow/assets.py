"""Assets that connect OrderFlow's DAGs (data-aware scheduling)."""

from airflow.sdk import Asset

#: New canonical orders are in the store (any channel). Order processing listens to it.
ORDERS_RECEIVED = Asset(name="orders_received", uri="orderflow://store/orders/received")
#: Master data published to the store after its quality gate.
MASTER_DATA_PUBLISHED = Asset(name="master_data_published", uri="orderflow://store/master_data")
#: Orders were released to the WMS (their milestones will follow). Fulfilment listens to it.
ORDERS_RELEASED = Asset(name="orders_released", uri="orderflow://store/orders/released")
#: A processing run finished (its orders' statuses are published). KPIs listen to it.
ORDERS_PROCESSED = Asset(name="orders_processed", uri="orderflow://store/orders/processed")
