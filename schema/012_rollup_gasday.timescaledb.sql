-- Gas-day rollups (both TimescaleDB tiers): one row per tag and gas day, aligned to the tenant's
-- contract hour and time zone (rollups.timezone / rollups.contract_hour), 23 or 25 hours long on
-- DST days. ingestd maintains it from readings_1h (or readings_1m where the zone's offset is not a
-- whole number of hours). It is a plain hypertable even on the timescale tier: TimescaleDB refuses a
-- continuous aggregate on top of readings_1h whose bucket origin (the contract hour) differs from
-- its parent's, and a gas-day aggregate over raw readings would re-read a whole day per refresh.
-- The first columns are those of readings_1d; `bucket`/`bucket_end` are the gas day's bounds.
CREATE TABLE IF NOT EXISTS readings_gasday (
    tag_id      integer NOT NULL,
    bucket      timestamptz NOT NULL,
    min         double precision,
    max         double precision,
    avg         double precision,
    sum         double precision,
    count       bigint NOT NULL,
    first       double precision,
    last        double precision,
    non_good    bigint NOT NULL,
    samples     bigint NOT NULL,
    first_ts    timestamptz,
    last_ts     timestamptz,
    gas_day     date NOT NULL,
    bucket_end  timestamptz NOT NULL,
    PRIMARY KEY (tag_id, bucket)
);
SELECT create_hypertable('readings_gasday', by_range('bucket', INTERVAL '365 days'),
                         if_not_exists => TRUE, create_default_indexes => FALSE);
CREATE INDEX IF NOT EXISTS readings_gasday_day ON readings_gasday (tag_id, gas_day);
COMMENT ON TABLE readings_gasday IS 'gas-day (contract hour, local time zone) rollups per tag, maintained by ingestd';
