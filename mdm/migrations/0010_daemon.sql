-- Collection daemon (block 0010-0019): collection KPIs, channel leases, meter flags, clock syncs.

-- Collection success per meter, plan and (meter-local) day. One row is updated in place by the
-- daemon that owns the meter's channel; `due` counts scheduled slots, `ok` the ones read in their
-- window, `backfilled` the values recovered later from the meter's memory (补采).
CREATE TABLE IF NOT EXISTS collection_kpi (
    day date NOT NULL,
    meter text NOT NULL,
    plan text NOT NULL,
    channel text NOT NULL,
    due integer NOT NULL DEFAULT 0,
    ok integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    backfilled integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, meter, plan)
);
CREATE INDEX IF NOT EXISTS collection_kpi_channel_day ON collection_kpi (channel, day);

-- Channel leases: a bus is polled only by the daemon holding its unexpired lease.
CREATE TABLE IF NOT EXISTS channel_leases (
    channel text PRIMARY KEY,
    owner text NOT NULL,
    endpoint text,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Lease history: who held which bus when (audit, and the "no double reads" check).
CREATE TABLE IF NOT EXISTS channel_lease_log (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    owner text NOT NULL,
    event text NOT NULL,   -- acquired | released | lost
    at timestamptz NOT NULL DEFAULT now()
);

-- Flags the daemon raises on meters (clock that stays off after a sync, ...).
CREATE TABLE IF NOT EXISTS meter_flags (
    meter text NOT NULL,
    flag text NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    cleared_at timestamptz,
    PRIMARY KEY (meter, flag)
);

-- Broadcast time syncs sent to buses.
CREATE TABLE IF NOT EXISTS clock_syncs (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    owner text NOT NULL,
    at timestamptz NOT NULL,
    meters integer NOT NULL,
    max_offset double precision NOT NULL
);
