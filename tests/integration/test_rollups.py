"""Rollups on the ingestd-maintained tiers (TimescaleDB Apache, plain PostgreSQL), checked against the
NumPy reference (ingestd.storage.rollup_model.reference_rollups) on random data written through the
real write path: irregular timestamps, NULL/BAD and UNCERTAIN samples, batches written out of order,
late batches after a refresh, a replayed batch, two refreshers at once, the 2026 DST days with the
America/Chicago 09:00 gas day."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import pytest

from ingestd.config.model import StorageConfig, TenantConfig
from ingestd.model import Batch, Quality, now_us
from ingestd.storage.migrate import Tier, migrate
from ingestd.storage.rollup_model import (
    AGG_COLUMNS,
    GASDAY_COLUMNS,
    ROLLUP_COLUMNS,
    GasDay,
    Resolution,
    RollupRows,
    gas_day_of,
    gas_day_start,
    reference_rollups,
)
from ingestd.storage.rollups import LOCK_KEY, rebuild_rollups, refresh_rollups
from ingestd.storage.store import TagRow, upsert_tags, write_readings
from tests.conftest import TenantDb

US = 1_000_000
CHICAGO_9 = GasDay("America/Chicago", 9)
# Data around the 2026 DST changes in Chicago: spring forward 2026-03-08 02:00 CST,
# fall back 2026-11-01 02:00 CDT.
SPRING = (dt.datetime(2026, 3, 6, 12, tzinfo=dt.UTC), dt.datetime(2026, 3, 10, 6, tzinfo=dt.UTC))
FALL = (dt.datetime(2026, 10, 30, 12, tzinfo=dt.UTC), dt.datetime(2026, 11, 3, 6, tzinfo=dt.UTC))


def _ts(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / US, dt.UTC)


def tenant_cfg(gas: GasDay = CHICAGO_9, **retention: float | None) -> TenantConfig:
    keep: dict[str, float | None] = {"raw": None, "rollup_1m": None, "rollup_1h": None, "rollup_1d": None}
    keep.update(retention)
    return TenantConfig.model_validate({
        "slug": "acme", "dsn": "env:UNUSED", "retention": keep,
        "rollups": {"timezone": gas.timezone, "contract_hour": gas.contract_hour},
    })


@dataclass
class Samples:
    """Raw samples as written (database tag ids)."""

    tag: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray

    def take(self, idx: np.ndarray) -> Samples:
        return Samples(self.tag[idx], self.ts[idx], self.value[idx], self.quality[idx])

    def __len__(self) -> int:
        return len(self.tag)

    def concat(self, other: Samples) -> Samples:
        return Samples(*(np.concatenate([a, b]) for a, b in
                         zip((self.tag, self.ts, self.value, self.quality),
                             (other.tag, other.ts, other.value, other.quality), strict=True)))


def random_samples(rng: np.random.Generator, tag_ids: Sequence[int],
                   windows: Sequence[tuple[dt.datetime, dt.datetime]], mean_gap_s: float) -> Samples:
    """Irregular timestamps (exponential gaps, µs precision), ~10 % BAD (NULL), ~5 % UNCERTAIN."""
    tags, tss = [], []
    for tag in tag_ids:
        for lo, hi in windows:
            lo_us, hi_us = int(lo.timestamp() * US), int(hi.timestamp() * US)
            n = int((hi_us - lo_us) / (mean_gap_s * US) * 1.2) + 10
            t = lo_us + np.cumsum(rng.exponential(mean_gap_s * US, n).astype(np.int64) + 1)
            t = t[t < hi_us]
            tags.append(np.full(len(t), tag, np.int64))
            tss.append(t)
    tag = np.concatenate(tags)
    ts = np.concatenate(tss)
    value = np.round(rng.normal(100.0, 25.0, len(ts)), 3)
    quality = np.full(len(ts), Quality.GOOD, np.uint8)
    r = rng.random(len(ts))
    quality[r < 0.10] = Quality.BAD
    quality[(r >= 0.10) & (r < 0.15)] = Quality.UNCERTAIN
    value[quality == Quality.BAD] = np.nan
    return Samples(tag, ts, value, quality)


def batches_of(s: Samples, rng: np.random.Generator, n_batches: int) -> list[Samples]:
    """Shuffled rows cut into batches: each batch mixes tags and times (out-of-order arrival)."""
    order = rng.permutation(len(s))
    return [s.take(part) for part in np.array_split(order, n_batches) if len(part)]


async def write(conn: asyncpg.Connection, tier: Tier, s: Samples, key: uuid.UUID | None = None) -> None:
    batch = Batch.of(np.zeros(len(s), np.int32), s.ts, s.value, s.quality)
    await write_readings(conn, tier, key or uuid.uuid4(), "field", s.tag.astype(np.int32), batch)


async def fetch(conn: asyncpg.Connection, res: Resolution) -> RollupRows:
    cols = ROLLUP_COLUMNS
    sel = ", ".join(
        f"(extract(epoch FROM {c}) * 1000000)::int8" if c in ("bucket",) else
        f"coalesce((extract(epoch FROM {c}) * 1000000)::int8, -1)" if c in ("first_ts", "last_ts") else
        f"coalesce({c}, 'NaN')" if c in ("min", "max", "avg", "sum", "first", "last") else c
        for c in cols
    )
    rows = await conn.fetch(f"SELECT {sel} FROM {res.relation} ORDER BY tag_id, bucket")
    data = np.array([tuple(r) for r in rows], dtype=object).reshape(len(rows), len(cols))
    out = {}
    for i, c in enumerate(cols):
        kind = np.float64 if c in ("min", "max", "avg", "sum", "first", "last") else np.int64
        out[c] = data[:, i].astype(kind)
    return RollupRows(**out)


def assert_same(got: RollupRows, want: RollupRows, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for c in ROLLUP_COLUMNS:
        g, w = getattr(got, c), getattr(want, c)
        ok = np.isclose(g, w, rtol=1e-9, atol=1e-9, equal_nan=True) if g.dtype == np.float64 else g == w
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise AssertionError(f"{what}.{c} differs at tag {got.tag_id[i]} bucket "
                                 f"{dt.datetime.fromtimestamp(got.bucket[i] / US, dt.UTC)}: {g[i]!r} != {w[i]!r} "
                                 f"({int((~ok).sum())} rows differ)")


async def assert_matches_reference(conn: asyncpg.Connection, s: Samples, gas: GasDay) -> None:
    for res in Resolution:
        want = reference_rollups(s.tag, s.ts, s.value, s.quality, res, gas)
        assert_same(await fetch(conn, res), want, res.relation)


@pytest.fixture
async def db(tenant_db: TenantDb) -> AsyncIterator[tuple[asyncpg.Connection, Tier, TenantDb]]:
    conn = await asyncpg.connect(tenant_db.dsn)
    report = await migrate(conn, StorageConfig())
    yield conn, report.tier, tenant_db
    await conn.close()


async def tags(conn: asyncpg.Connection, n: int) -> list[int]:
    ids = await upsert_tags(conn, [TagRow(f"well{i}.pressure", source="field") for i in range(n)])
    return sorted(ids.values())


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [11, 29])
async def test_rollups_match_numpy_reference(db: tuple[asyncpg.Connection, Tier, TenantDb], seed: int) -> None:
    conn, tier, tdb = db
    rng = np.random.default_rng(seed)
    cfg = tenant_cfg()
    ids = await tags(conn, 4)
    data = random_samples(rng, ids, [SPRING, FALL], mean_gap_s=240.0)
    parts = batches_of(data, rng, 30)
    early, late = parts[:18], parts[18:]
    for p in early:
        await write(conn, tier, p)
    # Two refreshers at once (second connection): serialised by the advisory lock, no double counting.
    other = await asyncpg.connect(tdb.dsn)
    try:
        reports = await asyncio.gather(refresh_rollups(conn, tier, cfg, now_us()),
                                       refresh_rollups(other, tier, cfg, now_us()))
    finally:
        await other.close()
    assert sum(r.batches for r in reports) == len(early)
    written = early[0]
    for p in early[1:]:
        written = written.concat(p)
    await assert_matches_reference(conn, written, CHICAGO_9)

    # Late batches land in buckets that were already refreshed; one batch is replayed (same key).
    replay_key = uuid.uuid4()
    for i, p in enumerate(late):
        await write(conn, tier, p, key=replay_key if i == 0 else None)
    await write(conn, tier, late[0], key=replay_key)
    report = await refresh_rollups(conn, tier, cfg, now_us())
    assert report.caught_up and report.batches == len(late)  # the replay wrote no ledger row
    await assert_matches_reference(conn, data, CHICAGO_9)
    again = await refresh_rollups(conn, tier, cfg, now_us())
    assert again.batches == 0
    await assert_matches_reference(conn, data, CHICAGO_9)


async def test_small_rounds_fold_everything_once(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """A round is capped at max_rows readings; several rounds give the same result as one."""
    conn, tier, _ = db
    rng = np.random.default_rng(5)
    ids = await tags(conn, 3)
    data = random_samples(rng, ids, [FALL], mean_gap_s=600.0)
    for p in batches_of(data, rng, 12):
        await write(conn, tier, p)
    report = await refresh_rollups(conn, tier, tenant_cfg(), now_us(), max_rows=len(data) // 5)
    assert report.rounds >= 3 and report.caught_up
    assert report.rows == len(data)
    await assert_matches_reference(conn, data, CHICAGO_9)


async def test_batch_committed_out_of_seq_order_is_not_skipped(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """Batch A takes seq n but commits after batch B (seq n+1) was committed and refreshed: A must still
    be folded. A seq watermark would skip it; the txid/xmin horizon does not."""
    conn, tier, tdb = db
    ids = await tags(conn, 1)
    t0 = int(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC).timestamp() * US)
    a = Samples(np.array([ids[0]]), np.array([t0]), np.array([1.0]), np.array([0], np.uint8))
    b = Samples(np.array([ids[0]]), np.array([t0 + 1]), np.array([2.0]), np.array([0], np.uint8))
    # An earlier sample creates the chunk/partition first (creating one serialises writers).
    await write(conn, tier, Samples(np.array([ids[0]]), np.array([t0 - 1]), np.array([0.0]), np.array([0], np.uint8)))
    await refresh_rollups(conn, tier, tenant_cfg(), now_us())
    slow = await asyncpg.connect(tdb.dsn)
    try:
        tx = slow.transaction()
        await tx.start()
        await write(slow, tier, a)  # seq n, not committed yet
        await write(conn, tier, b)  # seq n+1, committed
        assert await conn.fetchval("SELECT count(*) FROM ingest_batches") == 2  # A is invisible so far
        first = await refresh_rollups(conn, tier, tenant_cfg(), now_us())
        assert first.batches == 0  # B's txid is above the horizon while A runs
        await tx.commit()
    finally:
        await slow.close()
    await refresh_rollups(conn, tier, tenant_cfg(), now_us())
    row = await conn.fetchrow("SELECT samples, first, last FROM readings_1m WHERE bucket = $1", _ts(t0))
    assert tuple(row) == (2, 1.0, 2.0)
    seq_a, seq_b = [r["seq"] for r in await conn.fetch("SELECT seq FROM ingest_batches ORDER BY txid")][1:]
    assert seq_a < seq_b


async def test_second_refresher_skips_while_one_holds_the_lock(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    conn, tier, tdb = db
    ids = await tags(conn, 1)
    t0 = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp() * US)
    await write(conn, tier, Samples(np.array(ids), np.array([t0]), np.array([3.0]), np.array([0], np.uint8)))
    holder = await asyncpg.connect(tdb.dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        busy = await refresh_rollups(conn, tier, tenant_cfg(), now_us())
        assert busy.busy and busy.batches == 0
        assert busy.facts()["skipped"]
        assert await conn.fetchval("SELECT count(*) FROM readings_1m") == 0
        await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await holder.close()
    done = await refresh_rollups(conn, tier, tenant_cfg(), now_us())
    assert done.batches == 1 and not done.busy
    assert await conn.fetchval("SELECT count(*) FROM readings_1m") == 1


async def test_gas_day_is_23_and_25_hours_on_dst_days(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """One GOOD sample every 10 minutes: the Chicago 09:00 gas day that contains the spring-forward
    night has 23 h × 6 samples, the one containing the fall-back night 25 h × 6."""
    conn, tier, _ = db
    ids = await tags(conn, 1)
    ts = []
    for lo, hi in (SPRING, FALL):
        ts.append(np.arange(int(lo.timestamp() * US), int(hi.timestamp() * US), 600 * US, dtype=np.int64))
    t = np.concatenate(ts)
    s = Samples(np.full(len(t), ids[0]), t, np.ones(len(t)), np.zeros(len(t), np.uint8))
    await write(conn, tier, s)
    await refresh_rollups(conn, tier, tenant_cfg(), now_us())
    rows = {r["gas_day"]: r for r in await conn.fetch(
        "SELECT gas_day, bucket, bucket_end, samples, sum FROM readings_gasday ORDER BY bucket")}
    spring, fall = rows[dt.date(2026, 3, 7)], rows[dt.date(2026, 10, 31)]
    assert spring["bucket"] == dt.datetime(2026, 3, 7, 15, tzinfo=dt.UTC)  # 09:00 CST
    assert spring["bucket_end"] == dt.datetime(2026, 3, 8, 14, tzinfo=dt.UTC)  # 09:00 CDT
    assert (spring["bucket_end"] - spring["bucket"], spring["samples"]) == (dt.timedelta(hours=23), 23 * 6)
    assert fall["bucket"] == dt.datetime(2026, 10, 31, 14, tzinfo=dt.UTC)  # 09:00 CDT
    assert (fall["bucket_end"] - fall["bucket"], fall["samples"]) == (dt.timedelta(hours=25), 25 * 6)
    normal = rows[dt.date(2026, 3, 8)]
    assert (normal["bucket_end"] - normal["bucket"], normal["samples"]) == (dt.timedelta(hours=24), 24 * 6)
    # The UTC daily rollup is unaffected by the zone: 24 h × 6 on full days.
    assert await conn.fetchval("SELECT samples FROM readings_1d WHERE bucket = '2026-03-08 00:00+00'") == 144


async def test_gas_day_settings_change_rebuilds_history(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    conn, tier, _ = db
    rng = np.random.default_rng(3)
    ids = await tags(conn, 2)
    data = random_samples(rng, ids, [SPRING], mean_gap_s=900.0)
    await write(conn, tier, data)
    await refresh_rollups(conn, tier, tenant_cfg(GasDay("UTC", 0)), now_us())
    utc = reference_rollups(data.tag, data.ts, data.value, data.quality, Resolution.GASDAY, GasDay("UTC", 0))
    assert_same(await fetch(conn, Resolution.GASDAY), utc, "gasday (UTC 00:00)")
    # Same data, new contract day: no new batches, the history is rebuilt from readings_1h.
    report = await refresh_rollups(conn, tier, tenant_cfg(CHICAGO_9), now_us())
    assert report.batches == 0 and report.caught_up
    await assert_matches_reference(conn, data, CHICAGO_9)
    gas_days = [r[0] for r in await conn.fetch("SELECT gas_day FROM readings_gasday ORDER BY bucket")]
    assert len(gas_days) == len(set(gas_days)) * 2  # two tags, one row per tag and gas day


async def test_half_hour_zone_gas_day_rolls_up_from_minutes(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """Asia/Kolkata (UTC+05:30): a 06:00 gas day starts at 00:30 UTC, so it is not a union of UTC hours."""
    conn, tier, _ = db
    rng = np.random.default_rng(8)
    ids = await tags(conn, 2)
    data = random_samples(rng, ids, [FALL], mean_gap_s=300.0)
    await write(conn, tier, data)
    kolkata = GasDay("Asia/Kolkata", 6)
    await refresh_rollups(conn, tier, tenant_cfg(kolkata), now_us())
    assert gas_day_start(dt.date(2026, 11, 1), kolkata) == dt.datetime(2026, 11, 1, 0, 30, tzinfo=dt.UTC)
    want = reference_rollups(data.tag, data.ts, data.value, data.quality, Resolution.GASDAY, kolkata)
    assert_same(await fetch(conn, Resolution.GASDAY), want, "gasday (Kolkata 06:00)")


async def test_relations_have_the_same_columns_on_every_tier(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    conn, _, _ = db
    for res in Resolution:
        cols = [r["attname"] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", res.relation)]
        assert tuple(cols) == (GASDAY_COLUMNS if res is Resolution.GASDAY else ROLLUP_COLUMNS), res
    types = {r["attname"]: r["t"] for r in await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute "
        "WHERE attrelid = 'readings_1h'::regclass AND attnum > 0")}
    assert types["count"] == types["samples"] == types["non_good"] == "bigint"
    assert types["bucket"] == types["first_ts"] == "timestamp with time zone"
    assert all(types[c] == "double precision" for c in AGG_COLUMNS if c in ("min", "max", "avg", "sum", "first"))


async def test_gas_day_sql_functions_match_python(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """ingestd_gas_day_start/ingestd_gas_day (SQL) and gas_day_start/gas_day_of (Python, used by the
    reference) agree for every contract hour on DST days, including skipped and repeated hours and a
    zone whose DST shift is 30 minutes."""
    conn, _, _ = db
    zones = ["America/Chicago", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London", "UTC"]
    days = [dt.date(2026, 3, 7), dt.date(2026, 3, 8), dt.date(2026, 3, 29), dt.date(2026, 4, 5),
            dt.date(2026, 10, 4), dt.date(2026, 10, 25), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]
    rows = await conn.fetch(
        "SELECT z, h, d, ingestd_gas_day_start(d, z, h) AS start FROM unnest($1::text[]) z, "
        "generate_series(0, 23) h, unnest($2::date[]) d", zones, days)
    for r in rows:
        gas = GasDay(r["z"], r["h"])
        assert r["start"] == gas_day_start(r["d"], gas), (r["z"], r["h"], r["d"])
    probes = [dt.datetime(2026, 3, 7, tzinfo=dt.UTC) + dt.timedelta(minutes=17 * i) for i in range(600)]
    probes += [dt.datetime(2026, 10, 31, tzinfo=dt.UTC) + dt.timedelta(minutes=17 * i) for i in range(300)]
    for zone, hour in (("America/Chicago", 1), ("America/Chicago", 2), ("America/Chicago", 9),
                       ("Australia/Lord_Howe", 2), ("Asia/Kolkata", 6)):
        got = await conn.fetch("SELECT t, ingestd_gas_day(t, $2, $3) AS d FROM unnest($1::timestamptz[]) t",
                               probes, zone, hour)
        gas = GasDay(zone, hour)
        assert [r["d"] for r in got] == [gas_day_of(r["t"], gas) for r in got], (zone, hour)


async def test_rebuild_repairs_a_range_from_raw(db: tuple[asyncpg.Connection, Tier, TenantDb]) -> None:
    """rebuild_rollups recomputes every bucket with raw data in a range (data that predates the ledger,
    or repairs), without the ledger."""
    conn, tier, _ = db
    rng = np.random.default_rng(13)
    ids = await tags(conn, 2)
    data = random_samples(rng, ids, [SPRING], mean_gap_s=400.0)
    await write(conn, tier, data)
    await refresh_rollups(conn, tier, tenant_cfg(), now_us())
    for res in Resolution:
        await conn.execute(f"DELETE FROM {res.relation} WHERE tag_id = $1", ids[0])
    await conn.execute("UPDATE readings_1h SET samples = 0")
    out = await rebuild_rollups(conn, tier, tenant_cfg(), int(SPRING[0].timestamp() * US),
                                int(SPRING[1].timestamp() * US), now_us())
    assert out["1m"] > 0 and out["gasday"] > 0
    await assert_matches_reference(conn, data, CHICAGO_9)
