-- TimescaleDB mode: the continuous aggregate refresh policies reach back as far as the raw reads are
-- kept (all time without retention), not only 7 days (3 months for consumption_monthly).
--
-- The aggregates are real-time: buckets below the watermark come only from what a refresh
-- materialized. With the 7-day window, history imported or corrected more than 7 days back (reads
-- import, late backfill, superseded values) never reached daily_consumption(), while the
-- partitioned mode shows it at once. A policy run re-materializes only the ranges TimescaleDB has
-- logged as changed, so a wide window costs nothing in steady state; the first run after this
-- migration materializes the whole history once. With retention the window stops at the retention
-- age, so aggregates of days whose raw rows were dropped stay as they were (as before).
-- A no-op in partitioned mode.
DO $mdm$
BEGIN
    IF (SELECT mode FROM mdm_storage) <> 'timescaledb' THEN
        RETURN;
    END IF;

    EXECUTE $f$
    CREATE FUNCTION mdm_refresh_policies(p_retention interval)
    RETURNS void LANGUAGE plpgsql AS $b$
    DECLARE
        b record;
    BEGIN
        FOR b IN SELECT * FROM (VALUES ('consumption_hourly', INTERVAL '7 days'),
                                       ('consumption_daily', INTERVAL '7 days'),
                                       ('consumption_monthly', INTERVAL '3 months')) AS v(name, least_offset) LOOP
            PERFORM remove_continuous_aggregate_policy(b.name::regclass, if_exists => true);
            -- the least offset keeps the window the two buckets wide TimescaleDB requires
            PERFORM add_continuous_aggregate_policy(b.name::regclass,
                start_offset => CASE WHEN p_retention IS NOT NULL THEN greatest(p_retention, b.least_offset) END,
                end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
        END LOOP;
    END $b$$f$;

    EXECUTE $f$
    CREATE OR REPLACE FUNCTION mdm_apply_policies(p_compress_after_days integer, p_retention_days integer)
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
        PERFORM mdm_refresh_policies(make_interval(days => p_retention_days));
        RETURN 'timescaledb';
    END $b$$f$;

    -- the retention in force now (set by mdm_apply_policies), until the next mdm_apply_policies
    PERFORM mdm_refresh_policies((SELECT (j.config ->> 'drop_after')::interval
                                    FROM timescaledb_information.jobs j
                                   WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = 'interval_reads'
                                   LIMIT 1));
END
$mdm$;
