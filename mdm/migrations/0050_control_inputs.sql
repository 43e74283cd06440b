-- Remote control (block 0050-0059): billing inputs for disconnection and reconnection.
-- Account -> meter link and utility as billing knows it (the store's base accounts table, where
-- present, may hold the same link; the control module reads this one).
CREATE TABLE IF NOT EXISTS control_accounts (
    account text PRIMARY KEY,
    meter text,
    utility text NOT NULL DEFAULT 'default',
    customer_class text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS control_accounts_meter ON control_accounts (meter);

-- Current arrears per account (an import replaces the account's row; history is in control_audit).
CREATE TABLE IF NOT EXISTS arrears (
    account text PRIMARY KEY,
    amount numeric(14, 2) NOT NULL,
    days_overdue integer NOT NULL,
    as_of timestamptz NOT NULL DEFAULT now(),
    cleared_at timestamptz,
    cleared_by_payment bigint,
    imported_by text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL DEFAULT ''
);

-- Disconnection notices and re-notices with their delivery.
CREATE TABLE IF NOT EXISTS notices (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    kind text NOT NULL DEFAULT 'notice',
    sent_at timestamptz,
    delivered_at timestamptz,
    method text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (account, kind, sent_at, delivered_at, method)
);
CREATE INDEX IF NOT EXISTS notices_account ON notices (account);

-- Payments and clearances (reference is billing's id: importing a file twice adds nothing).
CREATE TABLE IF NOT EXISTS payments (
    id bigserial PRIMARY KEY,
    reference text NOT NULL UNIQUE,
    account text NOT NULL,
    amount numeric(14, 2) NOT NULL DEFAULT 0,
    paid_at timestamptz NOT NULL,
    clears boolean NOT NULL DEFAULT false,
    imported_by text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_account ON payments (account, paid_at);

-- Exemptions: medical, life_support, critical, keep_power (保电), dispute, payment_plan.
CREATE TABLE IF NOT EXISTS exemptions (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    kind text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    until timestamptz,
    note text NOT NULL DEFAULT '',
    imported_by text NOT NULL DEFAULT '',
    UNIQUE (account, kind, since)
);
CREATE INDEX IF NOT EXISTS exemptions_account ON exemptions (account);
