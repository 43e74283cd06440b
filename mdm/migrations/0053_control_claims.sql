-- Remote control: an executor claims a command for a while (a lease) instead of holding a database
-- session for the whole radio exchange; a crashed executor's claim expires and another resumes it.
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
