"""An order event's statuses are checked by a CHECK constraint, not by two foreign keys.

Every stage writes one ``order_event`` row per order it decides (≈ 10,000 rows for a
2,000-order partition set, more with fulfilment). Each row's ``from_status`` and
``to_status`` were checked against ``order_status`` by foreign keys: two lookups through
PostgreSQL's referential-integrity triggers per row, ≈ 13 µs a row — 2,044 events took
≈ 50 ms to insert with them and ≈ 22 ms without them. The statuses are a fixed list
(``order_status``'s rows, the domain's ``OrderStatus``), so the same rule is now a CHECK
constraint built from ``order_status`` when this migration runs: the same rows are
accepted and refused, without a trigger. ``order_status`` and the order's own ``status``
foreign key stay (an order's status update costs the same with or without it). A later
migration that adds a status adds it to ``order_status`` and to this constraint
(``tests/integration/test_store.py`` checks that they and ``OrderStatus`` agree).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from alembic import op
from sqlalchemy import text

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    statuses = [
        r[0]
        for r in op.get_bind().execute(
            text("SELECT status FROM orderflow.order_status ORDER BY rank")
        )
    ]
    listed = ", ".join("'" + s.replace("'", "''") + "'" for s in statuses)
    op.execute(
        f"""
        ALTER TABLE orderflow.order_event
          DROP CONSTRAINT order_event_from_status_fkey,
          DROP CONSTRAINT order_event_to_status_fkey,
          ADD CONSTRAINT order_event_status_check
              CHECK (from_status IN ({listed}) AND to_status IN ({listed})) NOT VALID
        """
    )
    # every row there was checked by the foreign keys; validating takes no write lock
    op.execute("ALTER TABLE orderflow.order_event VALIDATE CONSTRAINT order_event_status_check")


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE orderflow.order_event
          DROP CONSTRAINT order_event_status_check,
          ADD CONSTRAINT order_event_from_status_fkey
              FOREIGN KEY (from_status) REFERENCES orderflow.order_status (status),
          ADD CONSTRAINT order_event_to_status_fkey
              FOREIGN KEY (to_status) REFERENCES orderflow.order_status (status)
        """
    )
