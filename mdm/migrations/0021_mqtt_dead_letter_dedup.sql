-- MQTT ingest acknowledges a message only once it is stored, so after a crash the broker re-delivers
-- what was not acknowledged yet. Telemetry (reads: meter, quantity, ts) and events (meter, code, ts)
-- are idempotent already; this makes dead letters idempotent too: the same bytes on the same topic
-- are one dead letter, last_received_at says when they were seen last.

ALTER TABLE mqtt_dead_letters ADD COLUMN IF NOT EXISTS last_received_at timestamptz;

-- keep the first of any identical dead letters stored before this migration
DELETE FROM mqtt_dead_letters d
 USING mqtt_dead_letters e
 WHERE d.topic = e.topic AND d.payload = e.payload AND d.id > e.id;

CREATE UNIQUE INDEX IF NOT EXISTS mqtt_dead_letters_dedup ON mqtt_dead_letters (topic, sha256(payload));
