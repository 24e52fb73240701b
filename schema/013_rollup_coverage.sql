-- Outage windows next to the rollups (all tiers): rollup_coverage() returns one row per tag and
-- bucket of a resolution ('1m', '1h', '1d' or 'gasday') in [from_ts, to_ts), including buckets
-- without any rollup row, with how long the tag's source was down during the bucket. `state`:
--   ok       samples in the bucket, source up the whole time
--   partial  samples in the bucket, source down for part of it
--   down     no samples, source down (for all or part of the bucket): "not collected"
--   no_data  no samples, source up: nothing was reported ("value unchanged" under report-by-
--            exception/deadband, or the data has not arrived/been folded yet)
-- A tag belongs to the source named in tags.source; an outage of a single device (source_status.device
-- <> '') applies to the tags whose tags.meta->>'device' names that device. down_seconds is capped at
-- the bucket length (overlapping source and device outages are not double counted beyond it).
CREATE OR REPLACE FUNCTION rollup_coverage(resolution text, from_ts timestamptz, to_ts timestamptz,
                                           tag_ids integer[] DEFAULT NULL)
RETURNS TABLE (tag_id integer, bucket timestamptz, bucket_end timestamptz, samples bigint, count bigint,
               non_good bigint, down_seconds double precision, state text)
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    v_rel     text;
    v_width   interval;
    v_tz      text;
    v_hour    integer;
    v_buckets text;
BEGIN
    CASE resolution
        WHEN '1m' THEN v_rel := 'readings_1m'; v_width := INTERVAL '1 minute';
        WHEN '1h' THEN v_rel := 'readings_1h'; v_width := INTERVAL '1 hour';
        WHEN '1d' THEN v_rel := 'readings_1d'; v_width := INTERVAL '1 day';
        WHEN 'gasday' THEN v_rel := 'readings_gasday';
        ELSE RAISE EXCEPTION 'unknown rollup resolution %', resolution
                 USING ERRCODE = 'invalid_parameter_value', HINT = 'use 1m, 1h, 1d or gasday';
    END CASE;
    IF from_ts IS NULL OR to_ts IS NULL OR to_ts <= from_ts THEN
        RETURN;
    END IF;
    IF v_width IS NOT NULL THEN
        v_buckets := 'SELECT g AS bucket, g + $4 AS bucket_end FROM generate_series('
                   'date_bin($4, $1, TIMESTAMPTZ ''2000-01-03 00:00:00+00''), '
                   '$2 - INTERVAL ''1 microsecond'', $4) g';
    ELSE
        SELECT coalesce(s.gasday_tz, 'UTC'), coalesce(s.gasday_hour, 0) INTO v_tz, v_hour
        FROM rollup_state s WHERE s.name = 'rollups';
        v_tz := coalesce(v_tz, 'UTC');
        v_hour := coalesce(v_hour, 0);
        v_buckets := 'SELECT ingestd_gas_day_start(d::date, $5, $6) AS bucket, '
                   'ingestd_gas_day_start(d::date + 1, $5, $6) AS bucket_end '
                   'FROM generate_series(ingestd_gas_day($1, $5, $6), '
                   'ingestd_gas_day($2 - INTERVAL ''1 microsecond'', $5, $6), INTERVAL ''1 day'') d';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH b AS (%s),
        t AS (
            SELECT tg.tag_id, tg.source, coalesce(tg.meta->>'device', '') AS device
            FROM tags tg WHERE $3 IS NULL OR tg.tag_id = ANY($3)
        )
        SELECT t.tag_id, b.bucket, b.bucket_end,
               coalesce(r.samples, 0)::bigint, coalesce(r.count, 0)::bigint, coalesce(r.non_good, 0)::bigint,
               d.down,
               CASE WHEN coalesce(r.samples, 0) > 0 THEN CASE WHEN d.down > 0 THEN 'partial' ELSE 'ok' END
                    WHEN d.down > 0 THEN 'down' ELSE 'no_data' END
        FROM t CROSS JOIN b
        LEFT JOIN %I r ON r.tag_id = t.tag_id AND r.bucket = b.bucket
        CROSS JOIN LATERAL (
            SELECT least(coalesce(sum(extract(epoch FROM
                       least(coalesce(s.up_at, now()), b.bucket_end) - greatest(s.down_at, b.bucket))), 0),
                   extract(epoch FROM b.bucket_end - b.bucket))::double precision AS down
            FROM source_status s
            WHERE t.source <> '' AND s.source = t.source AND (s.device = '' OR s.device = t.device)
              AND greatest(s.down_at, b.bucket) < least(coalesce(s.up_at, now()), b.bucket_end)
        ) d
        ORDER BY t.tag_id, b.bucket
    $q$, v_buckets, v_rel) USING from_ts, to_ts, tag_ids, v_width, v_tz, v_hour;
END
$fn$;
COMMENT ON FUNCTION rollup_coverage(text, timestamptz, timestamptz, integer[]) IS
    'per tag and rollup bucket: samples and source downtime, to tell "not collected" from "unchanged"';
