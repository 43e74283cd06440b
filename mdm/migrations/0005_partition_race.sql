-- mdm_ensure_partitions: two writers creating the same month at once. The advisory lock serialises
-- them, but the catalog cache of the second one may still miss the table the first one committed;
-- a duplicate table is then simply "already there".
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
            BEGIN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, p_table);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= $1 AND ts < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM moved', p_table || '_default', part) USING m, nxt;
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               p_table, part, m, nxt);
                made := made + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL;  -- created by a concurrent writer
            END;
        END IF;
        m := nxt;
    END LOOP;
    RETURN made;
END $$;
