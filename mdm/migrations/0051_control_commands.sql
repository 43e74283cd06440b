-- Remote control: plans and the command lifecycle (states from headend/control/transitions.py).
CREATE TABLE IF NOT EXISTS control_plans (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    planned_for timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'planned',
    reason text NOT NULL DEFAULT '',
    needs_second boolean NOT NULL DEFAULT false,
    approved_by text,
    approved_at timestamptz,
    n_cut integer NOT NULL DEFAULT 0,
    n_blocked integer NOT NULL DEFAULT 0,
    decisions jsonb NOT NULL DEFAULT '[]'::jsonb
);

-- The store's base migration may already have created a control_commands table: extend it additively.
CREATE TABLE IF NOT EXISTS control_commands (
    id bigserial PRIMARY KEY
);
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS plan_id bigint REFERENCES control_plans (id);
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS account text;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS meter text;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS bus text NOT NULL DEFAULT '';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'disconnect';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS command text NOT NULL DEFAULT 'trip';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'planned';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS operator text NOT NULL DEFAULT '';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS approver text;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS reason text NOT NULL DEFAULT '';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS sent_at timestamptz;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS valid_until timestamptz;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS relay_state text;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS last_error text NOT NULL DEFAULT '';
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS work_order_id bigint;
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS undoes bigint REFERENCES control_commands (id);
ALTER TABLE control_commands ADD COLUMN IF NOT EXISTS payment_id bigint;

-- Idempotency: at most one command in flight per meter (planning twice cannot queue a second cut),
-- one command per account in a plan, one reconnect per disconnect.
CREATE UNIQUE INDEX IF NOT EXISTS control_commands_one_active
    ON control_commands (meter) WHERE state IN ('planned', 'approved', 'sent', 'failed', 'unknown');
CREATE UNIQUE INDEX IF NOT EXISTS control_commands_plan_account
    ON control_commands (plan_id, account) WHERE plan_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS control_commands_one_reconnect
    ON control_commands (undoes) WHERE undoes IS NOT NULL AND state <> 'cancelled';
CREATE INDEX IF NOT EXISTS control_commands_state ON control_commands (state, plan_id);
CREATE INDEX IF NOT EXISTS control_commands_account ON control_commands (account, created_at);
