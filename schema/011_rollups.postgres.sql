-- Rollups on plain PostgreSQL: tables that ingestd maintains incrementally (ingestd.storage.rollups).
-- readings_1m and readings_1h are range-partitioned by month (partitions created ahead and on demand
-- by ingestd, dropped when expired); readings_1d is small and trimmed with DELETE.
-- Columns and their order are identical on every tier (see 011_rollups.apache.sql for their meaning).
CREATE TABLE IF NOT EXISTS readings_1m (
    tag_id    integer NOT NULL,
    bucket    timestamptz NOT NULL,
    min       double precision,
    max       double precision,
    avg       double precision,
    sum       double precision,
    count     bigint NOT NULL,
    first     double precision,
    last      double precision,
    non_good  bigint NOT NULL,
    samples   bigint NOT NULL,
    first_ts  timestamptz,
    last_ts   timestamptz,
    PRIMARY KEY (tag_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE IF NOT EXISTS readings_1h (LIKE readings_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

CREATE TABLE IF NOT EXISTS readings_1d (LIKE readings_1m INCLUDING ALL);
CREATE INDEX IF NOT EXISTS readings_1d_bucket ON readings_1d (bucket);

COMMENT ON TABLE readings_1m IS '1-minute rollups per tag (UTC buckets), maintained by ingestd';
COMMENT ON TABLE readings_1h IS '1-hour rollups per tag (UTC buckets), maintained by ingestd from readings_1m';
COMMENT ON TABLE readings_1d IS '1-day rollups per tag (UTC days), maintained by ingestd from readings_1h';
