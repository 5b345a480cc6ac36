"""Hooks to the distributor's external systems (ERP, WMS, carrier, tax, credit, screening,
portal, EDI gateway), built on the Airflow HTTP provider. Each owns its Connection."""
