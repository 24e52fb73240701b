-- Rollup bookkeeping and gas-day calendar functions, identical on every storage tier
-- (ingestd.storage.rollups). Rollup relations themselves: 011 (1m/1h/1d), 012 (gas day).

-- One row per refresher. Every ingest batch whose transaction id is below `watermark` has been
-- folded into the rollups; batches at or above it have not (or may not have) been. The watermark
-- only ever moves to pg_snapshot_xmin(pg_current_snapshot()) of an earlier snapshot, so a batch that
-- commits out of seq order is never skipped.
CREATE TABLE IF NOT EXISTS rollup_state (
    name          text PRIMARY KEY,
    watermark     xid8 NOT NULL DEFAULT '0',
    refreshed_at  timestamptz,
    batches       bigint NOT NULL DEFAULT 0,
    rows          bigint NOT NULL DEFAULT 0,
    gasday_tz     text,
    gasday_hour   smallint,
    gasday_rebuild_from  timestamptz,
    gasday_rebuild_to    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_state (name) VALUES ('rollups') ON CONFLICT (name) DO NOTHING;
COMMENT ON TABLE rollup_state IS 'ingestd rollup refresher state: ledger watermark (xid8) and gas-day settings';
COMMENT ON COLUMN rollup_state.gasday_tz IS 'time zone and contract hour readings_gasday was computed with';
COMMENT ON COLUMN rollup_state.gasday_rebuild_to IS 'after a gas-day settings change: rebuilt back from here to gasday_rebuild_from';

-- Gas day (contract day): the day D starts at contract hour H local time on D in time zone TZ and
-- ends at H local time on D + 1, so it lasts 23 or 25 hours across DST changes. A local time that
-- does not exist (spring forward) or exists twice (fall back) is resolved as PostgreSQL does for
-- `timestamp AT TIME ZONE`.
CREATE OR REPLACE FUNCTION ingestd_gas_day_start(day date, tz text, contract_hour integer)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (day + make_interval(hours => contract_hour)) AT TIME ZONE tz $$;

-- The gas day containing `ts`: the D with start(D) <= ts < start(D + 1). The local-time guess is
-- corrected by one day where a contract hour falls into a DST gap or overlap.
CREATE OR REPLACE FUNCTION ingestd_gas_day(ts timestamptz, tz text, contract_hour integer)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN ts < ingestd_gas_day_start(g.d, tz, contract_hour) THEN g.d - 1
        WHEN ts >= ingestd_gas_day_start(g.d + 1, tz, contract_hour) THEN g.d + 1
        ELSE g.d END
    FROM (SELECT ((ts AT TIME ZONE tz) - make_interval(hours => contract_hour))::date AS d) g
$$;
