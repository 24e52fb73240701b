-- Readings on plain PostgreSQL: native range partitions by time, created ahead by ingestd
-- (ingestd.storage.partitions), dropped when expired. No default partition: a row outside every
-- partition makes the writer create the missing partition and retry.
CREATE TABLE IF NOT EXISTS readings (
    tag_id     integer NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision,
    quality    smallint NOT NULL DEFAULT 0,
    status     bigint NOT NULL DEFAULT 0,
    batch_seq  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tag_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS readings_batch_seq ON readings USING brin (batch_seq);
COMMENT ON COLUMN readings.quality IS '0 GOOD, 1 UNCERTAIN, 2 BAD';
COMMENT ON COLUMN readings.status IS 'raw protocol status (OPC UA StatusCode, Modbus exception code, Sparkplug quality)';
