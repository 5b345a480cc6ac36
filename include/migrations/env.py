"""Alembic environment for the OrderFlow operational store (schema ``orderflow``).

Run through ``orderflow db migrate`` (or ``orderflow.store.migrations.upgrade``), which passes
the store URL in ``config.attributes["url"]``; the URL comes from the ``orderflow_db``
Airflow Connection or ``ORDERFLOW_DATABASE_URL``.
"""

from alembic import context
from sqlalchemy import create_engine, text

SCHEMA = "orderflow"

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    context.configure(url=url, literal_binds=True, version_table_schema=SCHEMA)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=SCHEMA,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
