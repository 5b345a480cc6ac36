"""Order processing: shipments, line decisions, release versions, processing claims.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

INSERT INTO exception_category VALUES
    ('no_carrier_service', 'No carrier service can take the shipment', 'logistics', 120, false)
ON CONFLICT DO NOTHING;

ALTER TABLE "order"
    ADD COLUMN release_version integer NOT NULL DEFAULT 0,  -- bumps on every re-release
    ADD COLUMN tax_amount      numeric(14, 2),
    ADD COLUMN priority        numeric(12, 3);
CREATE INDEX order_claim_idx ON "order" (claimed_by_run) WHERE claimed_by_run IS NOT NULL;

ALTER TABLE order_line
    ADD COLUMN contract_id        text,
    ADD COLUMN substitute_item_id text,
    ADD COLUMN backordered_qty    numeric(14, 3) NOT NULL DEFAULT 0;

-- One shipment per (order, DC, release version): what planning chose, what release sent.
CREATE TABLE shipment (
    shipment_id      text PRIMARY KEY,               -- order id, DC and release version
    order_id         text NOT NULL REFERENCES "order" (order_id),
    dc_id            text NOT NULL,
    release_version  integer NOT NULL,
    carrier_id       text NOT NULL,
    service_code     text NOT NULL,
    mode             text NOT NULL,
    weight_kg        numeric(12, 3) NOT NULL,
    hazmat           boolean NOT NULL DEFAULT false,
    freight_rate     numeric(12, 2) NOT NULL,
    ship_date        date NOT NULL,
    promise_met      boolean NOT NULL,
    status           text NOT NULL DEFAULT 'planned'
                     CHECK (status IN ('planned', 'released', 'picked', 'packed', 'shipped',
                                       'delivered', 'cancelled')),
    wms_release_id   text,
    tracking_number  text,
    rule_set_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipment_order_idx ON shipment (order_id);
CREATE INDEX reservation_order_idx ON reservation (order_id) WHERE status IN ('held', 'released');

ALTER TABLE order_exception ADD COLUMN stage text;   -- the stage that raised it (revalidate from)
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
ALTER TABLE order_exception DROP COLUMN stage;
DROP INDEX reservation_order_idx;
DROP TABLE shipment;
ALTER TABLE order_line DROP COLUMN contract_id, DROP COLUMN substitute_item_id,
    DROP COLUMN backordered_qty;
DROP INDEX order_claim_idx;
ALTER TABLE "order" DROP COLUMN release_version, DROP COLUMN tax_amount, DROP COLUMN priority;
DELETE FROM exception_category WHERE category = 'no_carrier_service';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
