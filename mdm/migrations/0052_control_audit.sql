-- Remote control: the append-only audit trail (every transition, import, approval, frame).
-- Frames are stored as hex with the password and operator-code bytes masked ('**'): see
-- headend/control/secrets.py for the decision.
CREATE TABLE IF NOT EXISTS control_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    command_id bigint,
    plan_id bigint,
    meter text,
    account text,
    action text NOT NULL,
    from_state text,
    to_state text,
    operator text NOT NULL,
    approver text,
    reason text NOT NULL DEFAULT '',
    tx_frame text,
    rx_frame text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS control_audit_command ON control_audit (command_id, id);
CREATE INDEX IF NOT EXISTS control_audit_at ON control_audit (at);

CREATE OR REPLACE FUNCTION control_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'control_audit is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS control_audit_no_change ON control_audit;
CREATE TRIGGER control_audit_no_change BEFORE UPDATE OR DELETE ON control_audit
    FOR EACH ROW EXECUTE FUNCTION control_audit_append_only();
DROP TRIGGER IF EXISTS control_audit_no_truncate ON control_audit;
CREATE TRIGGER control_audit_no_truncate BEFORE TRUNCATE ON control_audit
    FOR EACH STATEMENT EXECUTE FUNCTION control_audit_append_only();
