"""The timescale-licensed tier (continuous aggregates, compress_chunk, policies).

Here (TimescaleDB Apache edition only) the licensed path is verified as far as it can be:
* every statement of schema/011_rollups.timescale.sql gets past PostgreSQL's parser and stops at
  TimescaleDB's license check (a syntax error would stop earlier);
* each continuous aggregate's SELECT is then created as a plain view over the real readings hypertable
  (the 1h one over the 1m view, …) and its output checked against the NumPy reference: this is what
  the aggregates materialize;
* the gas-day fold of the timescale path runs on top of those views;
* every TimescaleDB call the refresher, compression and policy code issue resolves (names, named
  arguments, argument types) and stops at the license check.

The ``timescale_licensed`` tests run the whole thing for real when INGESTD_TEST_TIMESCALE_DSN points at
a TimescaleDB with the timescale license (a role allowed to CREATE DATABASE); they skip otherwise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from ingestd.config.model import StorageConfig, TenantConfig
from ingestd.model import now_us
from ingestd.storage.maintenance import RawRetention
from ingestd.storage.migrate import Tier, migrate
from ingestd.storage.rollup_model import ROLLUP_COLUMNS, GasDay, Resolution, reference_rollups
from ingestd.storage.rollup_retention import compress_old_chunks, policy_statements, sync_timescale_policies
from ingestd.storage.rollup_sql import compress_candidates, refresh_cagg
from ingestd.storage.rollups import rebuild_rollups, refresh_rollups
from tests.conftest import TenantDb
from tests.integration.test_rollups import (
    CHICAGO_9,
    FALL,
    SPRING,
    US,
    Samples,
    assert_matches_reference,
    assert_same,
    batches_of,
    fetch,
    random_samples,
    tags,
    tenant_cfg,
    write,
)

ROOT = Path(__file__).resolve().parents[2]
TIMESCALE_SQL = ROOT / "schema" / "011_rollups.timescale.sql"
CAGG = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+WITH \([^)]*\) AS\s+(SELECT .*?)\s+WITH NO DATA$",
                  re.DOTALL)
LICENSE = "not supported under the current \"apache\" license"


def statements(path: Path) -> list[str]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";\n") if s.strip().rstrip(";")]


def policy_cfg(**storage: object) -> TenantConfig:
    return TenantConfig.model_validate({
        "slug": "acme", "dsn": "env:UNUSED", "storage": {"use_timescale_policies": True, **storage},
        "rollups": {"timezone": "America/Chicago", "contract_hour": 9},
        "retention": {"raw": None, "rollup_1m": None, "rollup_1h": None, "rollup_1d": None},
    })


@pytest.fixture
async def emulated(apache_db: TenantDb) -> AsyncIterator[asyncpg.Connection]:
    """An Apache-tier database whose readings_1m/1h/1d are replaced by the timescale tier's definitions
    (as plain views: the continuous aggregates themselves need the license)."""
    conn = await asyncpg.connect(apache_db.dsn)
    await migrate(conn, StorageConfig())
    for rel in ("readings_1m", "readings_1h", "readings_1d"):
        await conn.execute(f"DROP TABLE {rel}")
    yield conn
    await conn.close()


async def test_timescale_schema_parses_and_its_aggregates_compute_the_reference(emulated: asyncpg.Connection) -> None:
    conn = emulated
    stmts = statements(TIMESCALE_SQL)
    caggs = 0
    for stmt in stmts:
        m = CAGG.match(stmt)
        if m:
            with pytest.raises(asyncpg.PostgresError, match=LICENSE):
                await conn.execute(stmt)  # parsed; creating a continuous aggregate needs the license
            await conn.execute(f"CREATE VIEW {m.group(1)} AS {m.group(2)}")
            caggs += 1
        else:
            with pytest.raises(asyncpg.PostgresError, match=LICENSE):
                await conn.execute(stmt)
    assert caggs == 3
    types = {"tag_id": "integer", "bucket": "timestamp with time zone", "first_ts": "timestamp with time zone",
             "last_ts": "timestamp with time zone", "count": "bigint", "non_good": "bigint", "samples": "bigint"}
    for rel in ("readings_1m", "readings_1h", "readings_1d"):
        cols = [(r[0], r[1]) for r in await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass "
            "AND attnum > 0 ORDER BY attnum", rel)]
        assert cols == [(c, types.get(c, "double precision")) for c in ROLLUP_COLUMNS], rel

    rng = np.random.default_rng(17)
    ids = await tags(conn, 3)
    data = random_samples(rng, ids, [SPRING, FALL], mean_gap_s=300.0)
    for p in batches_of(data, rng, 8):
        await write(conn, Tier.TIMESCALE, p)
    for res in (Resolution.M1, Resolution.H1, Resolution.D1):
        want = reference_rollups(data.tag, data.ts, data.value, data.quality, res)
        assert_same(await fetch(conn, res), want, f"{res.relation} (timescale definition)")
    # The timescale path's gas-day fold reads readings_1h/readings_1m, whatever they are.
    cfg = policy_cfg()
    out = await rebuild_rollups(conn, Tier.TIMESCALE, cfg, int(SPRING[0].timestamp() * US),
                                int(FALL[1].timestamp() * US), now_us())
    assert out["gasday"] > 0
    want = reference_rollups(data.tag, data.ts, data.value, data.quality, Resolution.GASDAY, CHICAGO_9)
    assert_same(await fetch(conn, Resolution.GASDAY), want, "readings_gasday (timescale path)")


async def test_timescale_calls_resolve_up_to_the_license_check(emulated: asyncpg.Connection) -> None:
    conn = emulated
    for stmt in statements(TIMESCALE_SQL):
        m = CAGG.match(stmt)
        if m:
            await conn.execute(f"CREATE VIEW {m.group(1)} AS {m.group(2)}")
    ids = await tags(conn, 1)
    old = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp() * US)
    await write(conn, Tier.TIMESCALE, Samples(np.array(ids), np.array([old]), np.array([1.0]), np.array([0], np.uint8)))
    now = dt.datetime.now(dt.UTC)
    day_ago = now - dt.timedelta(days=1)
    calls = [refresh_cagg(rel, day_ago, None) for rel in ("readings_1m", "readings_1h", "readings_1d")]
    calls.append(refresh_cagg("readings_1m", None, now))
    cfg = policy_cfg(compress_after="7d")
    applied = policy_statements(cfg, None)
    assert len(applied) == 3 + 1  # refresh policies for 3 aggregates, compression of readings
    calls += applied
    removal = policy_statements(policy_cfg().model_copy(update={"storage": StorageConfig()}), applied)
    assert removal and all("remove_" in s for s in removal)
    calls += removal
    for call in calls:
        with pytest.raises(asyncpg.PostgresError, match=LICENSE):
            await conn.execute(call)
    assert policy_statements(cfg, applied) == []  # nothing to do when unchanged
    # Compression candidates are found with Apache functions; compress_chunk itself is licensed.
    chunks = [r["chunk"] for r in await conn.fetch(compress_candidates("readings"), now)]
    assert len(chunks) == 1
    with pytest.raises(asyncpg.PostgresError, match=LICENSE):
        await conn.execute("SELECT compress_chunk($1::regclass, if_not_compressed => true)", chunks[0])


# ---------------------------------------------------------------------------------------------- licensed


def _with_db(dsn: str, name: str) -> str:
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))
    return f"{dsn} dbname={name}"


@pytest.fixture
async def licensed(timescale_licensed_dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    admin = await asyncpg.connect(timescale_licensed_dsn)
    name = f"ingestd_test_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_db(timescale_licensed_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        report = await migrate(conn, StorageConfig(tier="timescale"))
        assert report.tier is Tier.TIMESCALE
        yield conn, dsn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.timescale_licensed
async def test_licensed_continuous_aggregates_match_reference(licensed: tuple[asyncpg.Connection, str]) -> None:
    conn, dsn = licensed
    assert await conn.fetchval("SELECT count(*) FROM timescaledb_information.continuous_aggregates") == 3
    rng = np.random.default_rng(23)
    ids = await tags(conn, 4)
    data = random_samples(rng, ids, [SPRING, FALL], mean_gap_s=240.0)
    parts = batches_of(data, rng, 20)
    for p in parts[:12]:
        await write(conn, Tier.TIMESCALE, p)
    other = await asyncpg.connect(dsn)
    try:
        await asyncio.gather(refresh_rollups(conn, Tier.TIMESCALE, tenant_cfg(), now_us()),
                             refresh_rollups(other, Tier.TIMESCALE, tenant_cfg(), now_us()))
    finally:
        await other.close()
    for p in parts[12:]:
        await write(conn, Tier.TIMESCALE, p)  # late data in materialized buckets
    report = await refresh_rollups(conn, Tier.TIMESCALE, tenant_cfg(), now_us())
    assert report.caught_up
    await assert_matches_reference(conn, data, CHICAGO_9)


@pytest.mark.timescale_licensed
async def test_licensed_retention_and_compression(licensed: tuple[asyncpg.Connection, str]) -> None:
    conn, _ = licensed
    now = now_us()
    ids = await tags(conn, 1)
    ages = [now - 400 * 86400 * US, now - 100 * 86400 * US, now - 10 * 86400 * US]
    for at in ages:
        await write(conn, Tier.TIMESCALE, Samples(np.array(ids * 2), np.array([at, at + US]), np.array([1.0, 2.0]),
                                                  np.zeros(2, np.uint8)))
    await refresh_rollups(conn, Tier.TIMESCALE, tenant_cfg(GasDay()), now)
    keep = tenant_cfg(GasDay(), raw=90 * 86400.0, rollup_1m=30 * 86400.0, rollup_1h=200 * 86400.0)
    out = await RawRetention().run(conn, Tier.TIMESCALE, keep, now)
    assert out["dropped"] and out["rollups_dropped"], out
    assert await conn.fetchval("SELECT count(*) FROM readings_1d") == 3
    assert await conn.fetchval("SELECT count(*) FROM readings_1m") == 1
    squeeze = keep.model_copy(update={"storage": StorageConfig(compress_after=86400.0)})
    done = await compress_old_chunks(conn, Tier.TIMESCALE, squeeze, now)
    assert done["compressed"], done
    assert await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' AND is_compressed") == 1
    # Late data into a compressed chunk is still folded.
    await write(conn, Tier.TIMESCALE, Samples(np.array(ids), np.array([ages[2] + 2 * US]), np.array([3.0]),
                                              np.zeros(1, np.uint8)))
    await refresh_rollups(conn, Tier.TIMESCALE, keep, now)
    assert await conn.fetchval("SELECT max(samples) FROM readings_1m") == 3


@pytest.mark.timescale_licensed
async def test_licensed_policies_follow_the_setting(licensed: tuple[asyncpg.Connection, str]) -> None:
    conn, _ = licensed
    on = policy_cfg(compress_after="7d")
    assert await sync_timescale_policies(conn, Tier.TIMESCALE, on) == {"policies": 4}
    assert await sync_timescale_policies(conn, Tier.TIMESCALE, on) == {}
    jobs = await conn.fetch("SELECT proc_name, hypertable_name FROM timescaledb_information.jobs WHERE job_id >= 1000")
    assert sorted(r["proc_name"] for r in jobs).count("policy_refresh_continuous_aggregate") == 3
    off = on.model_copy(update={"storage": StorageConfig()})
    assert await sync_timescale_policies(conn, Tier.TIMESCALE, off) == {"policies": 0}
    assert await conn.fetchval("SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000") == 0
