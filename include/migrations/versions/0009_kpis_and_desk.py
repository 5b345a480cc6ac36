"""KPI facts per order (a materialized view the KPI DAG refreshes) and the exception desk.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

-- One row per order: when it reached each milestone, how many human touches it took (the
-- audit trail), and whether it was a perfect order. Our own decisions (released, invoiced)
-- are timed by the event log; warehouse and carrier milestones by the times the WMS and
-- carrier reported (the last shipment of an order decides when the order got there).
-- Every order KPI is an aggregate of these columns (orderflow.kpis), so each can be drilled
-- to the orders behind it.
CREATE MATERIALIZED VIEW order_fact AS
WITH ev AS (
    SELECT order_id,
           min(occurred_at) FILTER (WHERE to_status = 'RELEASED')  AS released_at,
           min(occurred_at) FILTER (WHERE to_status = 'INVOICED')  AS invoiced_at,
           bool_or(to_status = 'ON_HOLD')                          AS ever_held
      FROM order_event GROUP BY order_id
), touch AS (
    SELECT order_id, sum(n) AS touches, min(first_at) AS first_touch_at FROM (
        SELECT e.order_id, count(*) AS n, min(a.occurred_at) AS first_at
          FROM audit_log a JOIN order_exception e
            ON a.object_type = 'order_exception' AND a.object_id = e.exception_id::text
         GROUP BY e.order_id
        UNION ALL
        SELECT a.object_id, count(*), min(a.occurred_at)
          FROM audit_log a WHERE a.object_type = 'order' GROUP BY a.object_id
        UNION ALL
        SELECT i.order_id, count(*), min(a.occurred_at)
          FROM audit_log a JOIN invoice i
            ON a.object_type = 'invoice' AND a.object_id = i.invoice_id
         GROUP BY i.order_id
    ) t GROUP BY order_id
), ship AS (
    SELECT s.order_id,
           min(s.released_at)                                          AS wms_released_at,
           CASE WHEN bool_and(s.picked_at IS NOT NULL) THEN max(s.picked_at) END AS picked_at,
           CASE WHEN bool_and(s.shipped_at IS NOT NULL) THEN max(s.shipped_at) END AS shipped_at,
           CASE WHEN bool_and(s.delivered_at IS NOT NULL) THEN max(s.delivered_at) END
                                                                       AS delivered_at,
           bool_and(s.promise_met AND s.delayed_at IS NULL)            AS on_time,
           bool_or(s.delivery_exception IS NOT NULL)                   AS damaged,
           sum(s.expedite_cost)                                        AS expedite_cost
      FROM shipment s JOIN "order" o ON o.order_id = s.order_id
                                    AND s.release_version = o.release_version
     GROUP BY s.order_id
), filled AS (
    SELECT ol.order_id,
           bool_and(coalesce(x.shipped, 0) >= ol.quantity) AS complete
      FROM order_line ol
      LEFT JOIN (SELECT s.order_id, sl.line_no, sum(sl.quantity_shipped) AS shipped
                   FROM shipment_line sl JOIN shipment s USING (shipment_id)
                  GROUP BY 1, 2) x ON x.order_id = ol.order_id AND x.line_no = ol.line_no
     GROUP BY ol.order_id
), docs AS (
    SELECT order_id, bool_or(ack_status IN ('R', 'E', 'M', 'W', 'X')) AS rejected
      FROM outbound_document GROUP BY order_id
), billing AS (
    SELECT order_id, count(*) AS mismatches
      FROM order_exception WHERE category = 'quantity_mismatch' GROUP BY order_id
)
SELECT o.order_id, o.channel, o.customer_id, o.partner_id, o.status, o.received_at,
       ev.released_at, ship.wms_released_at, ship.picked_at, ship.shipped_at,
       ship.delivered_at, ev.invoiced_at,
       coalesce(ev.ever_held, false)                                   AS ever_held,
       coalesce(touch.touches, 0)::int                                 AS human_touches,
       -- released without a person touching it on the way (holds a rule resolved count)
       ev.released_at IS NOT NULL
           AND (touch.first_touch_at IS NULL OR touch.first_touch_at > ev.released_at)
                                                                       AS first_pass,
       ship.delivered_at IS NOT NULL
           AND coalesce(ship.on_time, false) AND coalesce(filled.complete, false)
           AND NOT coalesce(ship.damaged, false) AND NOT coalesce(docs.rejected, false)
           AND coalesce(billing.mismatches, 0) = 0                     AS perfect,
       coalesce(ship.on_time, false)                                   AS on_time,
       coalesce(filled.complete, false)                                AS complete,
       coalesce(ship.damaged, false)                                   AS damaged,
       coalesce(docs.rejected, false)                                  AS documents_rejected,
       coalesce(billing.mismatches, 0) > 0                             AS invoice_disputed,
       coalesce(ship.expedite_cost, 0)                                 AS expedite_cost
  FROM "order" o
  LEFT JOIN ev USING (order_id)
  LEFT JOIN touch USING (order_id)
  LEFT JOIN ship USING (order_id)
  LEFT JOIN filled USING (order_id)
  LEFT JOIN docs USING (order_id)
  LEFT JOIN billing USING (order_id);
CREATE UNIQUE INDEX order_fact_pk ON order_fact (order_id);
CREATE INDEX order_fact_received_idx ON order_fact (received_at);

-- The exception desk: every open exception, its SLA state and age. 'nearing' from 80% of
-- the SLA on (the owner is told), 'breached' past it (the escalation role is told).
CREATE VIEW exception_desk AS
SELECT e.exception_id, e.order_id, e.line_no, e.entity_type, e.entity_id, e.category,
       e.severity, e.owner_role, e.escalation_role, e.reason, e.stage, e.details,
       e.opened_at, e.sla_due_at, e.notified_at, e.escalated_at, e.retry_count,
       now() - e.opened_at                                            AS age,
       CASE WHEN now() >= e.sla_due_at THEN 'breached'
            WHEN now() >= e.opened_at + (e.sla_due_at - e.opened_at) * 0.8 THEN 'nearing'
            ELSE 'ok' END                                             AS sla_state,
       c.transient,
       o.status AS order_status, o.channel, o.customer_id, o.po_number, o.order_total
  FROM order_exception e
  JOIN exception_category c USING (category)
  LEFT JOIN "order" o USING (order_id)
 WHERE e.status = 'open';
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP VIEW exception_desk;
DROP MATERIALIZED VIEW order_fact;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
