"""Intake: every channel's messages stored raw first, parsed, deduplicated and turned into
canonical orders — exactly one outcome per message. No Airflow imports: operators and the
CLI call these functions with a store connection and hooks."""
