-- MQTT terminals (issue 5): dead letters, terminal status (Last Will), command responses.
-- Telemetry goes to the shared reads tables through the ingest path; events to meter_events.

-- Every message that failed validation (or could not be stored), kept byte for byte: never dropped silently.
CREATE TABLE IF NOT EXISTS mqtt_dead_letters (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL,                 -- json | schema | empty | topic | terminal_id | store_error ...
    detail text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS mqtt_dead_letters_received ON mqtt_dead_letters (received_at);

-- Current online/offline state per terminal (retained status; offline = Last Will or orderly shutdown).
CREATE TABLE IF NOT EXISTS mqtt_terminal_status (
    terminal text COLLATE "C" PRIMARY KEY,
    state text NOT NULL,                  -- online | offline
    since timestamptz NOT NULL,           -- when the state last changed (as seen by the head-end)
    updated_at timestamptz NOT NULL,
    status jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Every state change, for availability KPIs.
CREATE TABLE IF NOT EXISTS mqtt_status_log (
    id bigserial PRIMARY KEY,
    terminal text COLLATE "C" NOT NULL,
    state text NOT NULL,
    at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS mqtt_status_log_terminal ON mqtt_status_log (terminal, at);

-- Responses to commands by request id, including late ones: a command reported as unknown-outcome
-- is resolved by looking its request id up here (never by re-sending it under a new id).
CREATE TABLE IF NOT EXISTS mqtt_command_responses (
    request_id text PRIMARY KEY,
    terminal text COLLATE "C" NOT NULL,
    status text NOT NULL,                 -- accepted | rejected | error
    reason text NOT NULL DEFAULT '',
    "values" jsonb NOT NULL DEFAULT '{}'::jsonb,
    responded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    duplicates integer NOT NULL DEFAULT 0 -- repeats answered from the terminal's record
);
