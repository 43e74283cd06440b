-- What completed work orders brought back when the store has no dedicated place for it (block 0040-0049).
CREATE TABLE IF NOT EXISTS work_order_feedback (
    id bigserial PRIMARY KEY,
    order_id bigint,
    meter text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    operator text NOT NULL DEFAULT '',
    at timestamptz NOT NULL DEFAULT now()
);
