"""Outbound X12 control numbers from one sequence per partner (#12 part 5).

Numbers were a row of ``control_number`` updated in the caller's transaction: a
``release_to_wms`` partition queueing 855s held the row of every partner it had queued for
until it committed, and partitions meeting the same partners in different orders deadlocked
(``DeadlockDetected … relation "control_number"``). A sequence is taken without a lock any
other transaction waits for, so numbers never serialise or deadlock the partitions.

- ``x12_control_sequence(partner, kind)``: the sequence's name (``orderflow.x12cn_<md5>``,
  any partner id fits).
- ``ensure_x12_control_sequence(partner, kind, start)``: creates it (1 … 999999999,
  cycling: ISA13 is nine digits) and registers it in ``control_number``; safe when two
  transactions create the same one.
- Every trading partner gets its sequence when it is inserted (trigger), so the first busy
  run never creates one; a partner unknown to ``trading_partner`` gets it on first use.
- Existing counters continue where they were (``last_value + 1``); ``last_value`` goes,
  the sequence is the counter (``SELECT last_value FROM <sequence_name>``).

Numbers stay unique per partner. A number taken by a transaction that rolls back is not
reused: a gap, which X12 allows (ISA13 / GS06 / ST02 must be unique, not consecutive).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL search_path = orderflow;

CREATE FUNCTION x12_control_sequence(partner text, kind text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'orderflow.x12cn_' || md5(partner || chr(31) || kind) $$;

CREATE FUNCTION ensure_x12_control_sequence(p_partner text, p_kind text, p_start bigint DEFAULT 1)
RETURNS regclass LANGUAGE plpgsql AS $$
DECLARE
    seq text := orderflow.x12_control_sequence(p_partner, p_kind);
BEGIN
    IF to_regclass(seq) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE SEQUENCE %s AS bigint MINVALUE 1 MAXVALUE 999999999 START WITH %s '
                'CACHE 1 CYCLE', seq, greatest(1, least(p_start, 999999999)));
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;  -- another transaction created it first
        END;
    END IF;
    INSERT INTO orderflow.control_number (partner_id, kind, sequence_name)
    VALUES (p_partner, p_kind, seq)
    ON CONFLICT (partner_id, kind) DO UPDATE SET sequence_name = EXCLUDED.sequence_name
        WHERE orderflow.control_number.sequence_name IS DISTINCT FROM EXCLUDED.sequence_name;
    RETURN seq::regclass;
END
$$;

ALTER TABLE control_number ADD COLUMN sequence_name text;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT partner_id, kind, last_value FROM orderflow.control_number LOOP
        PERFORM orderflow.ensure_x12_control_sequence(
            r.partner_id, r.kind,
            CASE WHEN r.last_value >= 999999999 THEN 1 ELSE r.last_value + 1 END);
    END LOOP;
    FOR r IN SELECT partner_id FROM orderflow.trading_partner LOOP
        PERFORM orderflow.ensure_x12_control_sequence(r.partner_id, 'isa');
    END LOOP;
END
$$;
ALTER TABLE control_number DROP COLUMN last_value;
COMMENT ON TABLE control_number IS
    'X12 control-number sequences per partner (next: nextval(sequence_name))';

CREATE FUNCTION trading_partner_control_sequence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM orderflow.ensure_x12_control_sequence(NEW.partner_id, 'isa');
    RETURN NULL;
END
$$;
CREATE TRIGGER trading_partner_control_sequence AFTER INSERT ON trading_partner
    FOR EACH ROW EXECUTE FUNCTION trading_partner_control_sequence();
"""

DOWNGRADE = r"""
SET LOCAL search_path = orderflow;
DROP TRIGGER trading_partner_control_sequence ON trading_partner;
DROP FUNCTION trading_partner_control_sequence();
ALTER TABLE control_number ADD COLUMN last_value bigint NOT NULL DEFAULT 0;
DO $$
DECLARE
    r record;
    v bigint;
    called boolean;
BEGIN
    FOR r IN SELECT partner_id, kind, sequence_name FROM orderflow.control_number
              WHERE sequence_name IS NOT NULL LOOP
        EXECUTE format('SELECT last_value, is_called FROM %s', r.sequence_name) INTO v, called;
        UPDATE orderflow.control_number
           SET last_value = CASE WHEN called THEN v ELSE v - 1 END
         WHERE partner_id = r.partner_id AND kind = r.kind;
        EXECUTE format('DROP SEQUENCE %s', r.sequence_name);
    END LOOP;
END
$$;
ALTER TABLE control_number DROP COLUMN sequence_name;
COMMENT ON TABLE control_number IS NULL;
DROP FUNCTION ensure_x12_control_sequence(text, text, bigint);
DROP FUNCTION x12_control_sequence(text, text);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
