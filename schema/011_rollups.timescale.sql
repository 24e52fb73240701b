-- Rollups on TimescaleDB with the timescale license: hierarchical continuous aggregates
-- (readings → readings_1m → readings_1h → readings_1d). ingestd's maintenance loop refreshes them
-- with refresh_continuous_aggregate (ingestd.storage.rollups), unless storage.use_timescale_policies
-- is set. Materialized-only: like the other tiers, rollups show what the last refresh folded in.
-- Columns and their order are identical on every tier (see 011_rollups.apache.sql for their meaning);
-- first/last keep their timestamps and avg is sum/count, so every level rolls up exactly.
-- tests/unit/test_rollup_sql.py runs each SELECT below as a plain query on the other tiers.

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT r.tag_id,
       time_bucket(INTERVAL '1 minute', r.ts) AS bucket,
       min(r.value) AS min,
       max(r.value) AS max,
       sum(r.value) / nullif(count(r.value), 0) AS avg,
       sum(r.value) AS sum,
       count(r.value) AS count,
       first(r.value, r.ts) FILTER (WHERE r.value IS NOT NULL) AS first,
       last(r.value, r.ts) FILTER (WHERE r.value IS NOT NULL) AS last,
       count(*) FILTER (WHERE r.quality <> 0) AS non_good,
       count(*) AS samples,
       min(r.ts) FILTER (WHERE r.value IS NOT NULL) AS first_ts,
       max(r.ts) FILTER (WHERE r.value IS NOT NULL) AS last_ts
FROM readings r
GROUP BY r.tag_id, time_bucket(INTERVAL '1 minute', r.ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT m.tag_id,
       time_bucket(INTERVAL '1 hour', m.bucket) AS bucket,
       min(m.min) AS min,
       max(m.max) AS max,
       sum(m.sum) / nullif(sum(m.count), 0) AS avg,
       sum(m.sum) AS sum,
       sum(m.count)::bigint AS count,
       first(m.first, m.first_ts) FILTER (WHERE m.first_ts IS NOT NULL) AS first,
       last(m.last, m.last_ts) FILTER (WHERE m.last_ts IS NOT NULL) AS last,
       sum(m.non_good)::bigint AS non_good,
       sum(m.samples)::bigint AS samples,
       min(m.first_ts) AS first_ts,
       max(m.last_ts) AS last_ts
FROM readings_1m m
GROUP BY m.tag_id, time_bucket(INTERVAL '1 hour', m.bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT h.tag_id,
       time_bucket(INTERVAL '1 day', h.bucket) AS bucket,
       min(h.min) AS min,
       max(h.max) AS max,
       sum(h.sum) / nullif(sum(h.count), 0) AS avg,
       sum(h.sum) AS sum,
       sum(h.count)::bigint AS count,
       first(h.first, h.first_ts) FILTER (WHERE h.first_ts IS NOT NULL) AS first,
       last(h.last, h.last_ts) FILTER (WHERE h.last_ts IS NOT NULL) AS last,
       sum(h.non_good)::bigint AS non_good,
       sum(h.samples)::bigint AS samples,
       min(h.first_ts) AS first_ts,
       max(h.last_ts) AS last_ts
FROM readings_1h h
GROUP BY h.tag_id, time_bucket(INTERVAL '1 day', h.bucket)
WITH NO DATA;

-- Compression of raw readings (compress_chunk by ingestd past storage.compress_after, or a compression
-- policy). The aggregates stay uncompressed: late data keeps being refreshed into them.
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'tag_id',
                          timescaledb.compress_orderby = 'ts DESC');

