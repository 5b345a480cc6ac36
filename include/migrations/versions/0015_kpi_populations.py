"""KPI populations (#12 part 7): ``order_fact`` says when an order reached its first
processing decision and its outcome, and counts only people's touches.

- ``decided_at``: the first time processing decided the order — released, held or rejected.
  The first-pass release rate is over every order decided in the period (held orders are
  its misses), not over released orders only (which always read 100 %).
- ``closed_at``: when the order reached its outcome — invoiced, rejected or cancelled. The
  touchless rate is over every closed order, not over invoiced ones only (a rejected order
  someone handled is a miss, not left out).
- ``delivery_outcome_at``: delivered, or the carrier reported a delivery exception. The
  perfect order rate counts a shipment that never arrived (lost, refused) as a miss; a
  delivery exception is never perfect, even if the order was delivered in the end.
- touches (``human_touches``, ``first_pass``): audit rows written by the system (SLA
  reminders and escalations, ``actor_role = 'system'``) and refused attempts
  (``…_refused``, which changed nothing) are no longer a person's touch.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;
DROP MATERIALIZED VIEW order_fact;
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
           bool_or(to_status = 'ON_HOLD')                          AS ever_held,
           -- the first processing decision: released, held or rejected
           min(occurred_at) FILTER (WHERE to_status IN ('RELEASED', 'ON_HOLD', 'REJECTED'))
                                                                   AS decided_at,
           -- the order's outcome: invoiced, rejected or cancelled
           min(occurred_at) FILTER (WHERE to_status IN ('INVOICED', 'REJECTED', 'CANCELLED'))
                                                                   AS closed_at
      FROM order_event GROUP BY order_id
), touch AS (
    SELECT order_id, sum(n) AS touches, min(first_at) AS first_touch_at FROM (
        SELECT e.order_id, count(*) AS n, min(a.occurred_at) AS first_at
          FROM audit_log a JOIN order_exception e
            ON a.object_type = 'order_exception' AND a.object_id = e.exception_id::text
         WHERE a.actor_role IS DISTINCT FROM 'system' AND a.action NOT LIKE '%\_refused'
         GROUP BY e.order_id
        UNION ALL
        SELECT a.object_id, count(*), min(a.occurred_at)
          FROM audit_log a WHERE a.object_type = 'order'
           AND a.actor_role IS DISTINCT FROM 'system' AND a.action NOT LIKE '%\_refused'
         GROUP BY a.object_id
        UNION ALL
        SELECT i.order_id, count(*), min(a.occurred_at)
          FROM audit_log a JOIN invoice i
            ON a.object_type = 'invoice' AND a.object_id = i.invoice_id
         WHERE a.actor_role IS DISTINCT FROM 'system' AND a.action NOT LIKE '%\_refused'
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
), lost AS (
    SELECT order_id, min(opened_at) AS delivery_exception_at
      FROM order_exception WHERE category = 'delivery_exception' GROUP BY order_id
), billing AS (
    SELECT order_id, count(*) AS mismatches
      FROM order_exception WHERE category = 'quantity_mismatch' GROUP BY order_id
)
SELECT o.order_id, o.channel, o.customer_id, o.partner_id, o.status, o.received_at,
       ev.released_at, ship.wms_released_at, ship.picked_at, ship.shipped_at,
       ship.delivered_at, ev.invoiced_at, ev.decided_at, ev.closed_at,
       -- when the delivery's outcome was known: delivered, or the carrier's exception
       coalesce(ship.delivered_at, lost.delivery_exception_at)         AS delivery_outcome_at,
       coalesce(ev.ever_held, false)                                   AS ever_held,
       coalesce(touch.touches, 0)::int                                 AS human_touches,
       -- released without a person touching it on the way (holds a rule resolved count)
       ev.released_at IS NOT NULL
           AND (touch.first_touch_at IS NULL OR touch.first_touch_at > ev.released_at)
                                                                       AS first_pass,
       ship.delivered_at IS NOT NULL AND lost.delivery_exception_at IS NULL
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
  LEFT JOIN lost USING (order_id)
  LEFT JOIN billing USING (order_id);
CREATE UNIQUE INDEX order_fact_pk ON order_fact (order_id);
CREATE INDEX order_fact_received_idx ON order_fact (received_at);
CREATE INDEX order_fact_decided_idx ON order_fact (decided_at);
CREATE INDEX order_fact_closed_idx ON order_fact (closed_at);
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP MATERIALIZED VIEW order_fact;
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
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
