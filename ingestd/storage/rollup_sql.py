"""SQL text of the rollup refresher (pure: no I/O, unit-tested on its own).

One statement per resolution and refresh round, set-based; the touched (tag, bucket) pairs of a round
live in session temp tables. Each level is recomputed from the level below (1m from raw readings,
1h from 1m, 1d from 1h, gas day from 1h — or from 1m where the time zone is not whole-hour aligned)
with ``INSERT … ON CONFLICT DO UPDATE``: recomputing a bucket is idempotent, so a round that is
repeated (crash before the watermark moved) or overlaps another never double counts.

Two dialects produce identical results: TimescaleDB's ``first()``/``last()`` aggregates, and plain
PostgreSQL's ``min(ARRAY[epoch, value])`` (arrays compare element-wise; epoch seconds as float8 keep
µs timestamps distinct and ordered).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from .rollup_model import AGG_COLUMNS, GASDAY_COLUMNS, ROLLUP_COLUMNS, Resolution

__all__ = [
    "ORIGIN",
    "TEMP_TABLES",
    "TOUCHED_FROM_BATCHES",
    "TOUCHED_FROM_RANGE",
    "TOUCHED_GASDAY_FROM_1H",
    "TOUCHED_GASDAY_FROM_1M",
    "compress_candidates",
    "refresh_cagg",
    "upsert_gasday",
    "upsert_level",
]

ORIGIN: Final = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"
"""Bucket origin (TimescaleDB's default; any UTC midnight gives the same 1m/1h/1d buckets)."""

TEMP_TABLES: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS ingestd_touched_1m "
    "(tag_id integer NOT NULL, bucket timestamptz NOT NULL) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS ingestd_touched_gasday "
    "(tag_id integer NOT NULL, gas_day date NOT NULL) ON COMMIT DELETE ROWS",
)

TOUCHED_FROM_BATCHES: Final = (
    # $1/$2 seq range, $3/$4 ts range (lower bound already raised to the retention guard), $5 the
    # window's seqs. The seq range lets the BRIN index on batch_seq skip everything older (the
    # readings of a batch are appended together); the seq list (a constant in the custom plan, so
    # PostgreSQL hashes it) drops batches of other windows whose seqs fall in the range.
    "INSERT INTO pg_temp.ingestd_touched_1m (tag_id, bucket) "
    f"SELECT r.tag_id, date_bin(INTERVAL '1 minute', r.ts, {ORIGIN}) "
    "FROM readings r "
    "WHERE r.batch_seq BETWEEN $1 AND $2 AND r.ts >= $3 AND r.ts <= $4 AND r.batch_seq = ANY($5::bigint[]) "
    "GROUP BY 1, 2 ORDER BY 1, 2"
)

TOUCHED_FROM_RANGE: Final = (
    # Rebuild: every (tag, minute) with raw data in [$1, $2).
    "INSERT INTO pg_temp.ingestd_touched_1m (tag_id, bucket) "
    f"SELECT r.tag_id, date_bin(INTERVAL '1 minute', r.ts, {ORIGIN}) FROM readings r "
    "WHERE r.ts >= $1 AND r.ts < $2 GROUP BY 1, 2 ORDER BY 1, 2"
)

TOUCHED_GASDAY_FROM_1M: Final = (
    "INSERT INTO pg_temp.ingestd_touched_gasday (tag_id, gas_day) "
    "SELECT t.tag_id, ingestd_gas_day(t.bucket, $1::text, $2::integer) FROM pg_temp.ingestd_touched_1m t "
    "GROUP BY 1, 2 ORDER BY 1, 2"
)

TOUCHED_GASDAY_FROM_1H: Final = (
    # Gas-day rebuild of the 1h range [$3, $4): an hour may straddle two gas days in zones that are
    # not whole-hour aligned, so both ends of each hour count.
    "INSERT INTO pg_temp.ingestd_touched_gasday (tag_id, gas_day) "
    "SELECT h.tag_id, d.gas_day FROM readings_1h h CROSS JOIN LATERAL (VALUES "
    "(ingestd_gas_day(h.bucket, $1::text, $2::integer)), "
    "(ingestd_gas_day(h.bucket + INTERVAL '1 hour' - INTERVAL '1 microsecond', $1::text, $2::integer))) d(gas_day) "
    "WHERE h.bucket >= $3 AND h.bucket < $4 GROUP BY 1, 2 ORDER BY 1, 2"
)


def _first_last(timescaledb: bool, value: str, ts: str, cond: str) -> tuple[str, str]:
    if timescaledb:
        return (f"first({value}, {ts}) FILTER (WHERE {cond})", f"last({value}, {ts}) FILTER (WHERE {cond})")
    pair = f"ARRAY[date_part('epoch', {ts}), {value}]"
    return (f"(min({pair}) FILTER (WHERE {cond}))[2]", f"(max({pair}) FILTER (WHERE {cond}))[2]")


def _raw_aggregates(timescaledb: bool) -> str:
    first, last = _first_last(timescaledb, "r.value", "r.ts", "r.value IS NOT NULL")
    return (
        "min(r.value) AS min, max(r.value) AS max, sum(r.value) AS sum, count(r.value) AS count, "
        f"{first} AS first, {last} AS last, "
        "count(*) FILTER (WHERE r.quality <> 0) AS non_good, count(*) AS samples, "
        "min(r.ts) FILTER (WHERE r.value IS NOT NULL) AS first_ts, "
        "max(r.ts) FILTER (WHERE r.value IS NOT NULL) AS last_ts"
    )


def _combined_aggregates(timescaledb: bool, alias: str) -> str:
    a = alias
    first = _first_last(timescaledb, f"{a}.first", f"{a}.first_ts", f"{a}.first_ts IS NOT NULL")[0]
    last = _first_last(timescaledb, f"{a}.last", f"{a}.last_ts", f"{a}.last_ts IS NOT NULL")[1]
    return (
        f"min({a}.min) AS min, max({a}.max) AS max, sum({a}.sum) AS sum, sum({a}.count)::bigint AS count, "
        f"{first} AS first, {last} AS last, "
        f"sum({a}.non_good)::bigint AS non_good, sum({a}.samples)::bigint AS samples, "
        f"min({a}.first_ts) AS first_ts, max({a}.last_ts) AS last_ts"
    )


_FINAL: Final = ("a.min, a.max, a.sum / nullif(a.count, 0), a.sum, a.count, a.first, a.last, "
                 "a.non_good, a.samples, a.first_ts, a.last_ts")
_UPDATE: Final = ", ".join(f"{c} = EXCLUDED.{c}" for c in AGG_COLUMNS)


def upsert_level(res: Resolution, *, timescaledb: bool) -> str:
    """Recompute the touched buckets of ``res`` (1m/1h/1d) from the level below.

    1m reads the touched pairs as they are; 1h and 1d widen them to their buckets. ``$1`` is the
    retention guard: buckets starting before it are left alone (their source rows may be gone)."""
    cols = ", ".join(ROLLUP_COLUMNS)
    if res is Resolution.M1:
        touched = "pg_temp.ingestd_touched_1m t"
        source = (f"SELECT {_raw_aggregates(timescaledb)} FROM readings r WHERE r.tag_id = t.tag_id "
                  "AND r.ts >= t.bucket AND r.ts < t.bucket + INTERVAL '1 minute'")
    elif res in (Resolution.H1, Resolution.D1):
        width, below = ("1 hour", "readings_1m") if res is Resolution.H1 else ("1 day", "readings_1h")
        touched = (f"(SELECT x.tag_id, date_bin(INTERVAL '{width}', x.bucket, {ORIGIN}) AS bucket "
                   "FROM pg_temp.ingestd_touched_1m x GROUP BY 1, 2 ORDER BY 1, 2) t")
        source = (f"SELECT {_combined_aggregates(timescaledb, 'm')} FROM {below} m WHERE m.tag_id = t.tag_id "
                  f"AND m.bucket >= t.bucket AND m.bucket < t.bucket + INTERVAL '{width}'")
    else:
        raise ValueError(f"upsert_level does not handle {res}")
    return (
        f"INSERT INTO {res.relation} AS d ({cols}) "
        f"SELECT t.tag_id, t.bucket, {_FINAL} FROM {touched} CROSS JOIN LATERAL ({source}) a "
        "WHERE a.samples > 0 AND t.bucket >= $1::timestamptz "
        f"ON CONFLICT (tag_id, bucket) DO UPDATE SET {_UPDATE}"
    )


def upsert_gasday(*, timescaledb: bool) -> str:
    """Recompute the touched gas days. ``$1`` time zone, ``$2`` contract hour, ``$3``/``$4`` retention
    guards for days rolled up from 1h / from 1m. A day whose bounds are whole UTC hours is the union
    of its 1h buckets; otherwise (half-hour zones) it is rolled up from 1m buckets."""
    cols = ", ".join(GASDAY_COLUMNS)
    fields = ", ".join(f"{{a}}.{c}" for c in ("min", "max", "sum", "count", "first", "last", "non_good", "samples",
                                              "first_ts", "last_ts"))
    hourly = (f"date_bin(INTERVAL '1 hour', s.bucket, {ORIGIN}) = s.bucket "
              f"AND date_bin(INTERVAL '1 hour', s.bucket_end, {ORIGIN}) = s.bucket_end")
    return (
        f"INSERT INTO readings_gasday AS d ({cols}) "
        f"SELECT t.tag_id, t.bucket, {_FINAL}, t.gas_day, t.bucket_end FROM ("
        f"SELECT g.tag_id, g.gas_day, s.bucket, s.bucket_end, {hourly} AS hourly "
        "FROM (SELECT DISTINCT x.tag_id, x.gas_day FROM pg_temp.ingestd_touched_gasday x) g "
        "CROSS JOIN LATERAL (SELECT "
        "ingestd_gas_day_start(g.gas_day, $1::text, $2::integer) AS bucket, "
        "ingestd_gas_day_start(g.gas_day + 1, $1::text, $2::integer) AS bucket_end) s) t "
        f"CROSS JOIN LATERAL (SELECT {_combined_aggregates(timescaledb, 'u')} FROM ("
        f"SELECT {fields.format(a='h')} FROM readings_1h h WHERE t.hourly AND h.tag_id = t.tag_id "
        "AND h.bucket >= t.bucket AND h.bucket < t.bucket_end "
        "UNION ALL "
        f"SELECT {fields.format(a='m')} FROM readings_1m m WHERE NOT t.hourly AND m.tag_id = t.tag_id "
        "AND m.bucket >= t.bucket AND m.bucket < t.bucket_end) u) a "
        "WHERE a.samples > 0 AND t.bucket >= CASE WHEN t.hourly THEN $3::timestamptz ELSE $4::timestamptz END "
        f"ON CONFLICT (tag_id, bucket) DO UPDATE SET {_UPDATE}, gas_day = EXCLUDED.gas_day, "
        "bucket_end = EXCLUDED.bucket_end"
    )


# ---------------------------------------------------------------------------------------------- timescale


def _literal(ts: dt.datetime | None) -> str:
    if ts is None:
        return "NULL"
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return f"TIMESTAMPTZ '{ts.astimezone(dt.UTC).isoformat()}'"


def refresh_cagg(relation: str, start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``CALL refresh_continuous_aggregate`` with literal bounds: the procedure commits internally, so it
    must run outside a transaction block through the simple query protocol (no parameters)."""
    if relation not in ("readings_1m", "readings_1h", "readings_1d"):
        raise ValueError(f"not a continuous aggregate of ours: {relation!r}")
    return f"CALL refresh_continuous_aggregate('{relation}', {_literal(start)}, {_literal(end)})"


def compress_candidates(relation: str) -> str:
    """Uncompressed chunks of ``relation`` (a hypertable with compression enabled) entirely older than $1."""
    if relation != "readings":
        raise ValueError(f"compression is not configured for {relation!r}")
    return (
        f"SELECT c::text AS chunk FROM show_chunks('{relation}', older_than => $1::timestamptz) c "
        "JOIN timescaledb_information.chunks i "
        "ON format('%I.%I', i.chunk_schema, i.chunk_name)::regclass = c "
        "WHERE NOT i.is_compressed ORDER BY i.range_start"
    )
