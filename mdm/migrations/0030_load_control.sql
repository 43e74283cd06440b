-- Load monitoring and control (issue 5, Modbus/MQTT terminals).
-- load_limits: power and demand caps per terminal (kind 'device') or per customer.
-- load_events: limit crossings (exceeded / back under the limit), one row per crossing.
-- load_control_log: every load-control command with its operator, outcome and read-back
--   (append-only; frames as hex; load commands carry no passwords).
CREATE TABLE IF NOT EXISTS load_limits (
    target text NOT NULL,
    kind text NOT NULL DEFAULT 'device',
    power_kw double precision,
    demand_kw double precision,
    hysteresis double precision NOT NULL DEFAULT 0.05,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT '',
    PRIMARY KEY (target, kind)
);

CREATE TABLE IF NOT EXISTS load_events (
    id bigserial PRIMARY KEY,
    ts timestamptz NOT NULL,
    meter text NOT NULL,
    customer text,
    kind text NOT NULL,
    value double precision,
    limit_value double precision,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS load_events_meter_ts ON load_events (meter, ts);

CREATE TABLE IF NOT EXISTS load_control_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id text NOT NULL,
    phase text NOT NULL,
    device text NOT NULL,
    channel text NOT NULL DEFAULT '',
    protocol text NOT NULL DEFAULT '',
    command text NOT NULL,
    value double precision,
    circuit integer,
    operator text NOT NULL,
    accepted boolean,
    reason text NOT NULL DEFAULT '',
    readback jsonb NOT NULL DEFAULT '{}'::jsonb,
    tx_frame text,
    rx_frame text
);
CREATE INDEX IF NOT EXISTS load_control_log_request ON load_control_log (request_id, id);
CREATE INDEX IF NOT EXISTS load_control_log_device ON load_control_log (device, at);

CREATE OR REPLACE FUNCTION load_control_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'load_control_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER IF EXISTS load_control_log_no_change ON load_control_log;
CREATE TRIGGER load_control_log_no_change BEFORE UPDATE OR DELETE ON load_control_log
    FOR EACH ROW EXECUTE FUNCTION load_control_log_append_only();
