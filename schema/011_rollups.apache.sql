-- Rollups on TimescaleDB (Apache edition): plain hypertables that ingestd maintains incrementally
-- (ingestd.storage.rollups: ledger watermark, only touched buckets recomputed), so that retention
-- can use drop_chunks. Columns and their order are identical on every tier (see 011_rollups.*.sql):
--   min/max/avg/sum/count/first/last   over the non-NULL values (GOOD and UNCERTAIN; BAD is NULL)
--   non_good                           samples whose quality is not GOOD (UNCERTAIN + BAD)
--   samples                            all samples, NULL or not
--   first_ts/last_ts                   timestamps of `first`/`last` (what makes them roll up)
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
);
SELECT create_hypertable('readings_1m', by_range('bucket', INTERVAL '7 days'),
                         if_not_exists => TRUE, create_default_indexes => FALSE);

CREATE TABLE IF NOT EXISTS readings_1h (LIKE readings_1m INCLUDING ALL);
SELECT create_hypertable('readings_1h', by_range('bucket', INTERVAL '90 days'),
                         if_not_exists => TRUE, create_default_indexes => FALSE);

CREATE TABLE IF NOT EXISTS readings_1d (LIKE readings_1m INCLUDING ALL);
SELECT create_hypertable('readings_1d', by_range('bucket', INTERVAL '365 days'),
                         if_not_exists => TRUE, create_default_indexes => FALSE);

COMMENT ON TABLE readings_1m IS '1-minute rollups per tag (UTC buckets), maintained by ingestd';
COMMENT ON TABLE readings_1h IS '1-hour rollups per tag (UTC buckets), maintained by ingestd from readings_1m';
COMMENT ON TABLE readings_1d IS '1-day rollups per tag (UTC days), maintained by ingestd from readings_1h';
