-- Readings on TimescaleDB (both license tiers): a hypertable partitioned by time.
CREATE TABLE IF NOT EXISTS readings (
    tag_id     integer NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision,
    quality    smallint NOT NULL DEFAULT 0,
    status     bigint NOT NULL DEFAULT 0,
    batch_seq  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tag_id, ts)
);
SELECT create_hypertable('readings', by_range('ts', INTERVAL '{{chunk_interval}}'),
                         if_not_exists => TRUE, create_default_indexes => FALSE);
CREATE INDEX IF NOT EXISTS readings_batch_seq ON readings USING brin (batch_seq);
COMMENT ON COLUMN readings.quality IS '0 GOOD, 1 UNCERTAIN, 2 BAD';
COMMENT ON COLUMN readings.status IS 'raw protocol status (OPC UA StatusCode, Modbus exception code, Sparkplug quality)';
