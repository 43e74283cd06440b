-- VEE / work orders (block 0040-0049): field work orders with one open order per meter and type.
-- The store's base migration may already have created a minimal work_orders table: extend it additively.
CREATE TABLE IF NOT EXISTS work_orders (
    id bigserial PRIMARY KEY
);

ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS meter text;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS type text;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'open';
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 3;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS evidence jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT '';
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS summary text NOT NULL DEFAULT '';
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS due_at timestamptz;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS dispatched_at timestamptz;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS closed_at timestamptz;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS assignee text;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS closed_by text;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS outcome jsonb;
ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS published_at timestamptz;

-- One open (open or dispatched) order per meter and type: raise_work_order() upserts against this.
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open
    ON work_orders (meter, type) WHERE status IN ('open', 'dispatched');
CREATE INDEX IF NOT EXISTS work_orders_status ON work_orders (status, priority, created_at);

-- Every lifecycle step, append-only (who moved which order from where to where, and why).
CREATE TABLE IF NOT EXISTS work_order_transitions (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES work_orders (id),
    from_status text,
    to_status text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    operator text NOT NULL DEFAULT '',
    note text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS work_order_transitions_order ON work_order_transitions (order_id, at);
