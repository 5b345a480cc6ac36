"""Order bounds: the store refuses exactly what the canonical model refuses.

The numbers come from ``orderflow.domain.models`` (the one source): identifier and code
lengths (a btree entry must fit a page; nothing unbounded reaches an indexed column), the
ISO currency code, and — checked by ``tests/integration/test_intake_poison.py`` — the numeric
types of quantity, price and total, which already are ``numeric(14, 3)``, ``numeric(14, 4)``
and ``numeric(14, 2)``. The constraints are ``NOT VALID``: they hold for every row written
from now on without failing the upgrade over rows an earlier release let in.

Changing a bound in the domain module needs a new migration that drops and re-adds these
constraints (the test compares the live catalog with the module).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from alembic import op

from orderflow.domain.models import (
    CURRENCY_PATTERN,
    MAX_CODE_CHARS,
    MAX_ID_CHARS,
)

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: (table, constraint name, condition)
CHECKS = [
    ('"order"', "order_order_id_bounds", f"char_length(order_id) BETWEEN 1 AND {MAX_ID_CHARS}"),
    (
        '"order"',
        "order_po_number_bounds",
        f"char_length(po_number) BETWEEN 1 AND {MAX_ID_CHARS}",
    ),
    ('"order"', "order_customer_id_bounds", f"char_length(customer_id) <= {MAX_ID_CHARS}"),
    ('"order"', "order_partner_id_bounds", f"char_length(partner_id) <= {MAX_ID_CHARS}"),
    ('"order"', "order_ship_to_id_bounds", f"char_length(ship_to_id) <= {MAX_ID_CHARS}"),
    ('"order"', "order_currency_iso", f"currency ~ '{CURRENCY_PATTERN}'"),
    ("order_line", "order_line_uom_bounds", f"char_length(uom) BETWEEN 1 AND {MAX_CODE_CHARS}"),
    ("order_line", "order_line_item_id_bounds", f"char_length(item_id) <= {MAX_ID_CHARS}"),
    (
        "order_line",
        "order_line_customer_part_number_bounds",
        f"char_length(customer_part_number) <= {MAX_ID_CHARS}",
    ),
]


def upgrade() -> None:
    for table, name, condition in CHECKS:
        op.execute(
            f"ALTER TABLE orderflow.{table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID"
        )


def downgrade() -> None:
    for table, name, _ in reversed(CHECKS):
        op.execute(f"ALTER TABLE orderflow.{table} DROP CONSTRAINT {name}")
