-- Meter data store: minimal base tables that later areas extend with their own migrations
-- (VEE 0040-0049, work orders 0040-0049, remote control 0050-0059). Kept minimal on purpose:
-- no NOT NULL column without a default and no CHECK on status/type, so their ALTERs fit.

CREATE TABLE IF NOT EXISTS vee_exceptions (
    id bigserial PRIMARY KEY,
    meter text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS work_orders (
    id bigserial PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS control_commands (
    id bigserial PRIMARY KEY,
    meter text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Audit log: append-only. Who did what to what, when. UPDATE, DELETE and TRUNCATE are refused.
CREATE TABLE IF NOT EXISTS audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL DEFAULT '',
    action text NOT NULL DEFAULT '',
    target text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, at);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
