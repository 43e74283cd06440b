-- Meter data store: register reads, interval reads (load profile), superseded versions, consumption.
--
-- Storage mode is decided here, once, in SQL (one file, both paths):
--   * TimescaleDB when the extension is available and headend.timescaledb is auto/on: hypertables,
--     compression segmented by meter, continuous aggregates consumption_hourly/daily/monthly.
--   * Otherwise native declarative partitioning by month on ts (plus a DEFAULT partition so no row is
--     ever refused), partitions created ahead by mdm_ensure_partitions()/mdm_maintain(); plain views
--     with the same names and columns stand in for the continuous aggregates.
-- Both paths provide the same functions: mdm_ensure_partitions, mdm_maintain, mdm_apply_policies,
-- daily_consumption. The decision is stored in mdm_storage.
--
-- Reads tables hold the CURRENT value per (meter, quantity, ts); a different value arriving later
-- for the same key supersedes it and the previous one is kept in superseded_reads (never lost).
-- (read_versions, from VEE migration 0041, holds estimates and manual edits above the raw value.)
-- ts: when the value was measured; for interval quantities, the START of the interval.

CREATE TABLE IF NOT EXISTS superseded_reads (
    kind text NOT NULL,                 -- register | interval (which reads table)
    meter text COLLATE "C" NOT NULL,
    quantity text COLLATE "C" NOT NULL,
    ts timestamptz NOT NULL,
    version integer NOT NULL,          -- the version this value had while it was current
    value double precision NOT NULL,
    unit text NOT NULL DEFAULT '',
    quality integer NOT NULL DEFAULT 0,
    source text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL,
    superseded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, meter, quantity, ts, version)
);

DO $mdm$
DECLARE
    want text := coalesce(nullif(current_setting('headend.timescaledb', true), ''), 'auto');
    tz text := coalesce(nullif(current_setting('headend.timezone', true), ''), 'UTC');
    have boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    use_ts boolean := false;
    cols constant text := $c$
        meter text COLLATE "C" NOT NULL,
        quantity text COLLATE "C" NOT NULL,
        ts timestamptz NOT NULL,
        value double precision NOT NULL,
        unit text NOT NULL DEFAULT '',
        quality integer NOT NULL DEFAULT 0,
        source text NOT NULL DEFAULT '',
        received_at timestamptz NOT NULL DEFAULT now(),
        version integer NOT NULL DEFAULT 1,
        PRIMARY KEY (meter, quantity, ts)$c$;
    t text;
    b record;
BEGIN
    PERFORM now() AT TIME ZONE tz;  -- validates the zone name
    IF want = 'on' AND NOT have THEN
        RAISE EXCEPTION 'database.timescaledb = on but the timescaledb extension is not available on this server';
    END IF;
    IF want <> 'off' AND have THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            use_ts := true;
        EXCEPTION WHEN others THEN
            IF want = 'on' THEN
                RAISE;
            END IF;
            RAISE NOTICE 'timescaledb is available but cannot be created (%); using native partitioning', SQLERRM;
        END;
    END IF;

    INSERT INTO mdm_storage (mode, timezone) VALUES (CASE WHEN use_ts THEN 'timescaledb' ELSE 'partitioned' END, tz);

    FOREACH t IN ARRAY ARRAY['register_reads', 'interval_reads'] LOOP
        IF use_ts THEN
            EXECUTE format('CREATE TABLE %I (%s)', t, cols);
            PERFORM create_hypertable(t::regclass, 'ts', chunk_time_interval => INTERVAL '7 days');
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                           'timescaledb.compress_orderby = %L)', t, 'meter', 'quantity, ts DESC');
            PERFORM add_compression_policy(t::regclass, INTERVAL '7 days');
        ELSE
            EXECUTE format('CREATE TABLE %I (%s) PARTITION BY RANGE (ts)', t, cols);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
            -- time-ordered arrival makes BRIN tiny and good for fleet-wide time-range scans
            EXECUTE format('CREATE INDEX %I ON %I USING brin (ts)', t || '_ts_brin', t);
        END IF;
    END LOOP;

    IF use_ts THEN
        FOR b IN SELECT * FROM (VALUES ('consumption_hourly', '1 hour'), ('consumption_daily', '1 day'),
                                       ('consumption_monthly', '1 month')) AS v(name, width) LOOP
            EXECUTE format($v$
                CREATE MATERIALIZED VIEW %I WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT meter, time_bucket(INTERVAL %L, ts, %L) AS bucket,
                       sum(value) AS kwh, count(*) AS intervals
                  FROM interval_reads WHERE quantity = 'interval.energy.active.import'
                 GROUP BY meter, time_bucket(INTERVAL %L, ts, %L)
                WITH NO DATA$v$, b.name, b.width, tz, b.width, tz);
            PERFORM add_continuous_aggregate_policy(b.name::regclass,
                start_offset => CASE b.width WHEN '1 month' THEN INTERVAL '3 months' ELSE INTERVAL '7 days' END,
                end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
        END LOOP;

        -- daily_consumption from the continuous aggregate (real-time: materialized + recent raw rows)
        EXECUTE $f$
        CREATE FUNCTION daily_consumption(p_from date, p_to date, p_meters text[] DEFAULT NULL)
        RETURNS TABLE (meter text, day date, kwh double precision, intervals bigint)
        LANGUAGE sql STABLE AS $b$
            WITH z AS (SELECT timezone AS tz FROM mdm_storage)
            SELECT c.meter::text, (c.bucket AT TIME ZONE z.tz)::date, c.kwh, c.intervals
              FROM consumption_daily c, z
             WHERE c.bucket >= (p_from::timestamp AT TIME ZONE z.tz)
               AND c.bucket < ((p_to + 1)::timestamp AT TIME ZONE z.tz)
               AND (p_meters IS NULL OR c.meter = ANY (p_meters))
             ORDER BY 1, 2
        $b$$f$;

        EXECUTE $f$
        CREATE FUNCTION mdm_apply_policies(p_compress_after_days integer, p_retention_days integer)
        RETURNS text LANGUAGE plpgsql AS $b$
        DECLARE t text;
        BEGIN
            FOREACH t IN ARRAY ARRAY['register_reads', 'interval_reads'] LOOP
                PERFORM remove_compression_policy(t::regclass, if_exists => true);
                PERFORM add_compression_policy(t::regclass, make_interval(days => p_compress_after_days));
                PERFORM remove_retention_policy(t::regclass, if_exists => true);
                IF p_retention_days IS NOT NULL THEN
                    PERFORM add_retention_policy(t::regclass, make_interval(days => p_retention_days));
                END IF;
            END LOOP;
            RETURN 'timescaledb';
        END $b$$f$;
    ELSE
        FOR b IN SELECT * FROM (VALUES ('consumption_hourly', 'hour'), ('consumption_daily', 'day'),
                                       ('consumption_monthly', 'month')) AS v(name, width) LOOP
            EXECUTE format($v$
                CREATE VIEW %I AS
                SELECT meter, date_trunc(%L, ts AT TIME ZONE %L) AT TIME ZONE %L AS bucket,
                       sum(value) AS kwh, count(*) AS intervals
                  FROM interval_reads WHERE quantity = 'interval.energy.active.import'
                 GROUP BY 1, 2$v$, b.name, b.width, tz, tz);
        END LOOP;

        -- the same answer straight from the partitions (the ts range prunes partitions and uses BRIN/PK)
        EXECUTE $f$
        CREATE FUNCTION daily_consumption(p_from date, p_to date, p_meters text[] DEFAULT NULL)
        RETURNS TABLE (meter text, day date, kwh double precision, intervals bigint)
        LANGUAGE plpgsql STABLE AS $b$
        DECLARE
            z text := (SELECT timezone FROM mdm_storage);
            lo timestamptz := p_from::timestamp AT TIME ZONE z;
            hi timestamptz := (p_to + 1)::timestamp AT TIME ZONE z;
        BEGIN
            RETURN QUERY
            SELECT r.meter::text, (r.ts AT TIME ZONE z)::date AS d, sum(r.value), count(*)
              FROM interval_reads r
             WHERE r.quantity = 'interval.energy.active.import' AND r.ts >= lo AND r.ts < hi
               AND (p_meters IS NULL OR r.meter = ANY (p_meters))
             GROUP BY 1, 2 ORDER BY 1, 2;
        END $b$$f$;

        EXECUTE $f$
        CREATE FUNCTION mdm_apply_policies(p_compress_after_days integer, p_retention_days integer)
        RETURNS text LANGUAGE plpgsql AS $b$
        DECLARE
            p record;
            cutoff timestamptz;
        BEGIN
            PERFORM mdm_maintain();
            IF p_retention_days IS NOT NULL THEN
                cutoff := now() - make_interval(days => p_retention_days);
                FOR p IN
                    SELECT c.relname, parent.relname AS parent
                      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      JOIN pg_class parent ON parent.oid = i.inhparent
                     WHERE parent.relname IN ('register_reads', 'interval_reads')
                       AND c.relname ~ '_p[0-9]{6}$'
                LOOP
                    -- partition _pYYYYMM holds [month, month + 1)
                    IF (to_timestamp(right(p.relname, 6), 'YYYYMM')::timestamp AT TIME ZONE 'UTC')
                       + INTERVAL '1 month' <= cutoff THEN
                        EXECUTE format('DROP TABLE %I', p.relname);
                    END IF;
                END LOOP;
                DELETE FROM register_reads_default WHERE ts < cutoff;
                DELETE FROM interval_reads_default WHERE ts < cutoff;
            END IF;
            RETURN 'partitioned';
        END $b$$f$;
    END IF;
END
$mdm$;

-- Monthly partitions (UTC months) covering [p_from, p_to]; rows already in the DEFAULT partition
-- for a new month are moved into it. A no-op (0) in timescaledb mode. Returns partitions created.
CREATE OR REPLACE FUNCTION mdm_ensure_partitions(p_table text, p_from timestamptz, p_to timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    m timestamptz;
    nxt timestamptz;
    part text;
    made integer := 0;
BEGIN
    IF (SELECT mode FROM mdm_storage) <> 'partitioned' THEN
        RETURN 0;
    END IF;
    IF p_table NOT IN ('register_reads', 'interval_reads') THEN
        RAISE EXCEPTION 'not a reads table: %', p_table;
    END IF;
    m := date_trunc('month', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE m <= p_to LOOP
        nxt := (date_trunc('month', m AT TIME ZONE 'UTC') + INTERVAL '1 month') AT TIME ZONE 'UTC';
        part := p_table || '_p' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass(part) IS NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext('mdm_partition:' || part));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, p_table);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= $1 AND ts < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM moved', p_table || '_default', part) USING m, nxt;
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               p_table, part, m, nxt);
                made := made + 1;
            END IF;
        END IF;
        m := nxt;
    END LOOP;
    RETURN made;
END $$;

-- Keep partitions ahead of the data: last month .. p_months_ahead months ahead (call daily).
CREATE OR REPLACE FUNCTION mdm_maintain(p_months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := now() - INTERVAL '1 month';
    hi timestamptz := now() + make_interval(months => p_months_ahead);
BEGIN
    RETURN mdm_ensure_partitions('register_reads', lo, hi) + mdm_ensure_partitions('interval_reads', lo, hi);
END $$;

SELECT mdm_maintain();

-- Consumption per local day from a cumulative register (meters without load profile): the last value
-- of each day minus the last value of the day before. Both storage modes.
CREATE OR REPLACE FUNCTION daily_register_consumption(
    p_from date, p_to date, p_meters text[] DEFAULT NULL, p_quantity text DEFAULT 'energy.active.import'
) RETURNS TABLE (meter text, day date, kwh double precision, last_value double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    z text := (SELECT timezone FROM mdm_storage);
    lo timestamptz := (p_from - 1)::timestamp AT TIME ZONE z;
    hi timestamptz := (p_to + 1)::timestamp AT TIME ZONE z;
BEGIN
    RETURN QUERY
    WITH last_per_day AS (
        SELECT DISTINCT ON (r.meter, (r.ts AT TIME ZONE z)::date)
               r.meter::text AS meter, (r.ts AT TIME ZONE z)::date AS d, r.value
          FROM register_reads r
         WHERE r.quantity = p_quantity AND r.ts >= lo AND r.ts < hi
           AND (p_meters IS NULL OR r.meter = ANY (p_meters))
         ORDER BY r.meter, (r.ts AT TIME ZONE z)::date, r.ts DESC
    ), deltas AS (
        SELECT l.meter, l.d, l.value - lag(l.value) OVER (PARTITION BY l.meter ORDER BY l.d) AS kwh, l.value,
               lag(l.d) OVER (PARTITION BY l.meter ORDER BY l.d) AS prev_d
          FROM last_per_day l
    )
    SELECT x.meter, x.d, CASE WHEN x.prev_d = x.d - 1 THEN x.kwh END, x.value
      FROM deltas x
     WHERE x.d >= p_from AND x.d <= p_to
     ORDER BY 1, 2;
END $$;
