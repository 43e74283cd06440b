-- Meter data store (block 0001-0009): storage mode, quantity codes, customers, network and meter assets.

-- Which storage path migration 0002 took: 'timescaledb' (hypertables) or 'partitioned' (native).
CREATE TABLE IF NOT EXISTS mdm_storage (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    mode text NOT NULL,
    timezone text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- The one quantity code list (protocols/quantities.py); the migration runner syncs it after every run.
CREATE TABLE IF NOT EXISTS quantities (
    code text COLLATE "C" PRIMARY KEY,
    unit text NOT NULL DEFAULT '',
    kind text NOT NULL,            -- register | interval | instant | demand | state | counter | setting
    description text NOT NULL DEFAULT ''
);

-- Customers, accounts and service points (the premise where a meter is installed).
CREATE TABLE IF NOT EXISTS customers (
    id bigserial PRIMARY KEY,
    customer_no text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',
    kind text NOT NULL DEFAULT 'residential',   -- residential | commercial | industrial | ...
    phone text,
    address text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS accounts (
    id bigserial PRIMARY KEY,
    account_no text NOT NULL UNIQUE,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status text NOT NULL DEFAULT 'active',      -- active | arrears | closed | ...
    tariff text,
    keep_power boolean NOT NULL DEFAULT false,  -- 保电: protected supply
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS accounts_customer ON accounts (customer_id);

-- Network: feeders (with their feeder meter) and transformer areas 台区 (with their check meter).
CREATE TABLE IF NOT EXISTS feeders (
    id bigserial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',
    substation text,
    feeder_meter text COLLATE "C",              -- meters.address of the feeder-head meter
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS transformer_areas (
    id bigserial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',
    feeder_id bigint REFERENCES feeders (id),
    transformer_kva double precision,
    check_meter text COLLATE "C",               -- meters.address of the area's check (总表) meter
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS service_points (
    id bigserial PRIMARY KEY,
    sp_no text NOT NULL UNIQUE,
    account_id bigint REFERENCES accounts (id),
    transformer_area_id bigint REFERENCES transformer_areas (id),   -- which area supplies it
    feeder_id bigint REFERENCES feeders (id),                       -- when supplied directly by a feeder
    phase text,                                                     -- A | B | C | ABC
    address text,
    latitude double precision,
    longitude double precision,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS service_points_area ON service_points (transformer_area_id);
CREATE INDEX IF NOT EXISTS service_points_account ON service_points (account_id);

-- Channels (buses, TCP gateways) and terminals (concentrators 集中器, load-management terminals).
CREATE TABLE IF NOT EXISTS channels (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    url text NOT NULL DEFAULT '',
    protocol text NOT NULL DEFAULT 'dlt645',
    description text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS terminals (
    id bigserial PRIMARY KEY,
    address text COLLATE "C" NOT NULL UNIQUE,
    kind text NOT NULL DEFAULT 'concentrator',  -- concentrator | load_management | gateway
    protocol text NOT NULL DEFAULT '',
    channel text,                               -- channels.name
    vendor text, model text, firmware text,
    transformer_area_id bigint REFERENCES transformer_areas (id),
    status text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Meters as assets, identified by their address (DL/T 645: 12 digits; Modbus/MQTT: device id).
-- status: in_stock | installed | removed | retired | discovered (auto-registered by ingest, to review).
CREATE TABLE IF NOT EXISTS meters (
    id bigserial PRIMARY KEY,
    address text COLLATE "C" NOT NULL UNIQUE,
    protocol text NOT NULL DEFAULT 'dlt645',    -- dlt645 | modbus | mqtt | ...
    channel text,                               -- channels.name (bus it is read over)
    terminal text COLLATE "C",                  -- terminals.address when read through one
    vendor text, model text, firmware text,
    meter_class text,                           -- e.g. single_phase | three_phase | ct
    ct_ratio double precision NOT NULL DEFAULT 1,
    pt_ratio double precision NOT NULL DEFAULT 1,
    multiplier double precision NOT NULL DEFAULT 1,   -- usually ct_ratio * pt_ratio
    status text NOT NULL DEFAULT 'in_stock',
    time_zone text,                             -- IANA zone of the meter clock (NULL = system setting)
    notes text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS meters_status ON meters (status);
CREATE INDEX IF NOT EXISTS meters_channel ON meters (channel);

-- Install / exchange / removal. An exchange closes one meter's installation (removed_at, end_read)
-- and opens the next at the same service point (installed_at, start_read): register series are
-- continuous per installation, never across an exchange.
CREATE TABLE IF NOT EXISTS meter_installations (
    id bigserial PRIMARY KEY,
    meter text COLLATE "C" NOT NULL REFERENCES meters (address) ON UPDATE CASCADE,
    service_point_id bigint NOT NULL REFERENCES service_points (id),
    installed_at timestamptz NOT NULL,
    removed_at timestamptz,
    start_read double precision,                -- energy.active.import at installation
    end_read double precision,                  -- energy.active.import at removal
    start_reads jsonb NOT NULL DEFAULT '{}'::jsonb,   -- other registers (quantity code -> value)
    end_reads jsonb NOT NULL DEFAULT '{}'::jsonb,
    ct_ratio double precision NOT NULL DEFAULT 1,
    pt_ratio double precision NOT NULL DEFAULT 1,
    multiplier double precision NOT NULL DEFAULT 1,
    reason text NOT NULL DEFAULT 'install',     -- install | exchange | rotation | ...
    removal_reason text,                        -- removal | exchange | fault | ...
    replaces_id bigint REFERENCES meter_installations (id),
    work_order_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (removed_at IS NULL OR removed_at >= installed_at)
);
-- at most one open installation per meter and per service point
CREATE UNIQUE INDEX IF NOT EXISTS meter_installations_open_meter
    ON meter_installations (meter) WHERE removed_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS meter_installations_open_sp
    ON meter_installations (service_point_id) WHERE removed_at IS NULL;
CREATE INDEX IF NOT EXISTS meter_installations_meter ON meter_installations (meter, installed_at);

-- Exchange in one call: close the open installation at the service point, open the new one.
CREATE OR REPLACE FUNCTION exchange_meter(
    p_service_point bigint, p_new_meter text, p_at timestamptz,
    p_end_read double precision, p_start_read double precision,
    p_reason text DEFAULT 'exchange', p_work_order bigint DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    old meter_installations%ROWTYPE;
    had_old boolean;
    new_id bigint;
BEGIN
    SELECT * INTO old FROM meter_installations
     WHERE service_point_id = p_service_point AND removed_at IS NULL FOR UPDATE;
    had_old := FOUND;
    IF had_old THEN
        UPDATE meter_installations SET removed_at = p_at, end_read = p_end_read, removal_reason = p_reason
         WHERE id = old.id;
        UPDATE meters SET status = 'removed', updated_at = now() WHERE address = old.meter;
    END IF;
    INSERT INTO meter_installations (meter, service_point_id, installed_at, start_read, reason, replaces_id,
                                     work_order_id, ct_ratio, pt_ratio, multiplier)
    SELECT p_new_meter, p_service_point, p_at, p_start_read, CASE WHEN had_old THEN p_reason ELSE 'install' END,
           old.id, p_work_order, m.ct_ratio, m.pt_ratio, m.multiplier
      FROM meters m WHERE m.address = p_new_meter
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'unknown meter %', p_new_meter USING ERRCODE = 'foreign_key_violation';
    END IF;
    UPDATE meters SET status = 'installed', updated_at = now() WHERE address = p_new_meter;
    RETURN new_id;
END $$;

-- Exchanges as pairs (old meter closed, new meter opened at the same service point).
CREATE OR REPLACE VIEW meter_exchanges AS
SELECT o.meter AS old_meter, n.meter AS new_meter, n.installed_at AS ts,
       o.end_read AS old_final_read, n.start_read AS new_start_read,
       n.service_point_id, n.id AS installation_id, n.work_order_id
  FROM meter_installations n JOIN meter_installations o ON o.id = n.replaces_id;

-- Which meters each transformer area supplies now (open installations at its service points).
CREATE OR REPLACE VIEW transformer_area_meters AS
SELECT sp.transformer_area_id, ta.code AS area_code, i.meter, sp.id AS service_point_id
  FROM meter_installations i
  JOIN service_points sp ON sp.id = i.service_point_id
  JOIN transformer_areas ta ON ta.id = sp.transformer_area_id
 WHERE i.removed_at IS NULL;
