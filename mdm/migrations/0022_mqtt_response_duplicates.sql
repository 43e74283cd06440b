-- The ingest acknowledges a message only once it is stored, so after a crash the broker re-delivers what was
-- not acknowledged yet. mqtt_command_responses.duplicates counted every "duplicate": true answer it saw, a
-- re-delivered one too. Each duplicate answer carries the time it was sent (ts -> responded_at): the times
-- already counted are kept here, and an answer whose time is among them is a re-delivery, not counted again.

ALTER TABLE mqtt_command_responses ADD COLUMN IF NOT EXISTS duplicate_ts timestamptz[] NOT NULL DEFAULT '{}';
