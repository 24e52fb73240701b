-- Gas-day rollups on plain PostgreSQL (see 012_rollup_gasday.timescaledb.sql). Small: trimmed with DELETE.
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
CREATE INDEX IF NOT EXISTS readings_gasday_bucket ON readings_gasday (bucket);
CREATE INDEX IF NOT EXISTS readings_gasday_day ON readings_gasday (tag_id, gas_day);
COMMENT ON TABLE readings_gasday IS 'gas-day (contract hour, local time zone) rollups per tag, maintained by ingestd';
