-- VEE (block 0040-0049): runs, exceptions, and estimated / edited versions of reads.
-- The store's raw reads are never written by VEE: every estimate or manual edit is a row here.

CREATE TABLE IF NOT EXISTS vee_runs (
    id bigserial PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    from_ts timestamptz NOT NULL,
    to_ts timestamptz NOT NULL,
    meters integer NOT NULL DEFAULT 0,
    intervals bigint NOT NULL DEFAULT 0,
    exceptions integer NOT NULL DEFAULT 0,
    estimates integer NOT NULL DEFAULT 0,
    work_orders integer NOT NULL DEFAULT 0,
    operator text NOT NULL DEFAULT ''
);

-- The store's base migration may have created a minimal vee_exceptions: extend it additively.
CREATE TABLE IF NOT EXISTS vee_exceptions (
    id bigserial PRIMARY KEY
);
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS run_id bigint;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS rule text;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS severity text NOT NULL DEFAULT 'warning';
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS meter text;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS quantity text NOT NULL DEFAULT '';
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS start_ts timestamptz;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS end_ts timestamptz;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS vals jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS explanation text NOT NULL DEFAULT '';
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'open';
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS first_seen timestamptz NOT NULL DEFAULT now();
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS last_seen timestamptz NOT NULL DEFAULT now();
ALTER TABLE vee_exceptions ADD COLUMN IF NOT EXISTS work_order_id bigint;
-- a re-run over the same range finds the same exception again: one row, last_seen updated
CREATE UNIQUE INDEX IF NOT EXISTS vee_exceptions_identity
    ON vee_exceptions (meter, rule, quantity, start_ts, end_ts);
CREATE INDEX IF NOT EXISTS vee_exceptions_open ON vee_exceptions (status, severity, last_seen);

-- Versions above the raw read: estimates (method, run) and manual edits (operator, reason).
-- version 1.. counts per (meter, quantity, ts); the highest version is the final value.
CREATE TABLE IF NOT EXISTS read_versions (
    meter text NOT NULL,
    quantity text NOT NULL,
    ts timestamptz NOT NULL,
    version integer NOT NULL,
    value double precision,
    quality integer NOT NULL,
    method text NOT NULL,
    reason text NOT NULL DEFAULT '',
    operator text NOT NULL DEFAULT '',
    run_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    superseded boolean NOT NULL DEFAULT false,
    PRIMARY KEY (meter, quantity, ts, version)
);
CREATE INDEX IF NOT EXISTS read_versions_range ON read_versions (quantity, meter, ts);
