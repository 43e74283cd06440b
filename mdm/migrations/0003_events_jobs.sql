-- Meter data store: meter events, read jobs and attempts (raw material of collection KPIs).

-- Events reported by meters/terminals (cover open, voltage loss, power down, relay trip, ...).
CREATE TABLE IF NOT EXISTS meter_events (
    id bigserial PRIMARY KEY,
    meter text COLLATE "C" NOT NULL,
    code text NOT NULL,                      -- e.g. cover_open, voltage_loss.a, power_down, erc27
    ts timestamptz NOT NULL,                 -- when it started (meter time)
    ended_at timestamptz,
    severity smallint NOT NULL DEFAULT 3,    -- 1 critical .. 5 info
    source text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meter, code, ts)         -- re-reading an event record does not duplicate it
);
CREATE INDEX IF NOT EXISTS meter_events_time ON meter_events (ts);

-- One job = one intent to read some quantities of one meter for one slot (scheduled, on-demand,
-- backfill); attempts are the tries on the wire. Success rate = jobs done / jobs due.
CREATE TABLE IF NOT EXISTS read_jobs (
    id bigserial PRIMARY KEY,
    meter text COLLATE "C" NOT NULL,
    plan text NOT NULL DEFAULT '',           -- read plan name (daily_freeze, load_profile, ...)
    kind text NOT NULL DEFAULT 'scheduled',  -- scheduled | on_demand | backfill
    channel text,
    slot timestamptz,                        -- the data time the job is for (freeze day, interval)
    quantities text[] NOT NULL DEFAULT '{}',
    priority smallint NOT NULL DEFAULT 3,
    status text NOT NULL DEFAULT 'pending',  -- pending | running | ok | failed | partial | cancelled
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    error text
);
CREATE INDEX IF NOT EXISTS read_jobs_meter_slot ON read_jobs (meter, slot);
CREATE INDEX IF NOT EXISTS read_jobs_status ON read_jobs (status, created_at);

CREATE TABLE IF NOT EXISTS read_attempts (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES read_jobs (id) ON DELETE CASCADE,
    attempt smallint NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text NOT NULL DEFAULT 'pending', -- ok | no_response | abnormal | bad_frame | transport | circuit_open
    error text,
    readings integer NOT NULL DEFAULT 0,
    round_trip_ms double precision
);
CREATE INDEX IF NOT EXISTS read_attempts_job ON read_attempts (job_id);
