"""Rollup retention per resolution, the retention guard, the ledger guard, outage coverage next to
the rollups, and the maintenance jobs end to end — on the TimescaleDB Apache and plain tiers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from ingestd.config.model import StorageConfig, TenantConfig
from ingestd.model import Batch, now_us
from ingestd.storage.maintenance import Compression, PartitionsAhead, RawRetention, RollupRefresh, default_jobs
from ingestd.storage.migrate import Tier, migrate
from ingestd.storage.rollups import refresh_rollups
from ingestd.storage.store import Outage, TagRow, upsert_tags, write_outages, write_readings
from tests.conftest import TenantDb
from tests.integration.test_mqtt_to_db import mqtt_source, publish, wait_rows
from tests.support.daemon import make_config, running_daemon, scrape
from tests.support.mosquitto import Mosquitto

US = 1_000_000
DAY = 86_400 * US
MIN = 60 * US


def cfg(**retention: float | None) -> TenantConfig:
    keep: dict[str, float | None] = {"raw": None, "rollup_1m": None, "rollup_1h": None, "rollup_1d": None}
    keep.update(retention)
    return TenantConfig.model_validate({"slug": "acme", "dsn": "env:UNUSED", "retention": keep})


def utc(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / US, dt.UTC)


@pytest.fixture
async def db(tenant_db: TenantDb) -> AsyncIterator[tuple[asyncpg.Connection, Tier]]:
    conn = await asyncpg.connect(tenant_db.dsn)
    report = await migrate(conn, StorageConfig())
    yield conn, report.tier
    await conn.close()


async def write(conn: asyncpg.Connection, tier: Tier, tag: int, ts: list[int], value: float = 1.0) -> None:
    batch = Batch.of(np.zeros(len(ts), np.int32), np.array(ts, np.int64), np.full(len(ts), value))
    await write_readings(conn, tier, uuid.uuid4(), "field", np.full(len(ts), tag, np.int32), batch)


async def count(conn: asyncpg.Connection, rel: str, at_us: int) -> int:
    return int(await conn.fetchval(
        f"SELECT count(*) FROM {rel} WHERE bucket <= $1 AND bucket > $1::timestamptz - INTERVAL '2 days'", utc(at_us)))


async def test_retention_per_resolution_and_guard(db: tuple[asyncpg.Connection, Tier]) -> None:
    conn, tier = db
    now = now_us()
    tag = (await upsert_tags(conn, [TagRow("well1.flow", source="plc1")]))["well1.flow"]
    ages = {"400d": now - 400 * DAY, "100d": now - 100 * DAY, "10d": now - 10 * DAY}
    for at in ages.values():
        await write(conn, tier, tag, [at, at + 1 * US])
    await refresh_rollups(conn, tier, cfg(), now)  # keep everything while folding
    for at in ages.values():
        for rel in ("readings_1m", "readings_1h", "readings_1d", "readings_gasday"):
            assert await count(conn, rel, at) == 1, (rel, at)

    keep = cfg(raw=90 * 86400.0, rollup_1m=30 * 86400.0, rollup_1h=200 * 86400.0, rollup_1d=None)
    out = await RawRetention().run(conn, tier, keep, now)
    assert out["dropped"] and out["rollups_dropped"], out
    expected = {  # rel -> ages still present
        "readings": {"10d"},
        "readings_1m": {"10d"},
        "readings_1h": {"100d", "10d"},
        "readings_1d": {"400d", "100d", "10d"},
        "readings_gasday": {"400d", "100d", "10d"},
    }
    for rel, present in expected.items():
        for name, at in ages.items():
            if rel == "readings":
                n = await conn.fetchval("SELECT count(*) FROM readings WHERE ts BETWEEN $1 AND $2",
                                        utc(at), utc(at + US))
            else:
                n = await count(conn, rel, at)
            assert (n > 0) == (name in present), (rel, name, n)

    # Late data older than the raw retention: stored raw, not folded — folding it would replace the
    # 1d bucket (whose 1h/1m sources are gone) by one computed from this single sample.
    late = ages["400d"] + 5 * MIN
    await write(conn, tier, tag, [late], value=99.0)
    await refresh_rollups(conn, tier, keep, now)
    assert await conn.fetchval("SELECT samples FROM readings_1d WHERE bucket <= $1 ORDER BY bucket DESC LIMIT 1",
                               utc(late)) == 2
    assert await count(conn, "readings_1m", late) == 0


async def test_ledger_is_not_trimmed_past_unfolded_batches(db: tuple[asyncpg.Connection, Tier]) -> None:
    conn, tier = db
    now = now_us()
    tag = (await upsert_tags(conn, [TagRow("well2.flow")]))["well2.flow"]
    await write(conn, tier, tag, [now - 9 * DAY])
    await conn.execute("UPDATE ingest_batches SET committed_at = now() - INTERVAL '8 days'")
    out = await RawRetention().run(conn, tier, cfg(), now)
    assert "ledger_rows_deleted" not in out
    assert await conn.fetchval("SELECT count(*) FROM ingest_batches") == 1
    await refresh_rollups(conn, tier, cfg(), now)
    out = await RawRetention().run(conn, tier, cfg(), now)
    assert out["ledger_rows_deleted"] == 1
    assert await conn.fetchval("SELECT samples FROM readings_1d") == 1


async def test_rollup_partitions_on_plain_postgres(plain_db: TenantDb) -> None:
    conn = await asyncpg.connect(plain_db.dsn)
    try:
        await migrate(conn, StorageConfig())
        now = now_us()
        made = await PartitionsAhead().run(conn, Tier.POSTGRES, cfg(), now)
        this_month = utc(now).strftime("%Y%m")
        assert f"readings_1m_p{this_month}" in made["rollup_partitions"]
        assert f"readings_1h_p{this_month}" in made["rollup_partitions"]
        assert len(made["rollup_partitions"]) == 4  # this month and the next, two tables
        # Late data in an old month creates that month's partitions on demand.
        tag = (await upsert_tags(conn, [TagRow("t")]))["t"]
        old = int(dt.datetime(2025, 2, 14, 12, tzinfo=dt.UTC).timestamp() * US)
        await write(conn, Tier.POSTGRES, tag, [old])
        await refresh_rollups(conn, Tier.POSTGRES, cfg(), now)
        parts = {r[0] for r in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent IN ('readings_1m'::regclass, 'readings_1h'::regclass)")}
        assert {"readings_1m_p202502", "readings_1h_p202502"} <= parts
        assert await conn.fetchval("SELECT count(*) FROM readings_1m_p202502") == 1
    finally:
        await conn.close()


async def test_coverage_tells_not_collected_from_unchanged(db: tuple[asyncpg.Connection, Tier]) -> None:
    conn, tier = db
    day = dt.datetime(2026, 11, 18, tzinfo=dt.UTC)

    def at(h: int, m: int = 0) -> int:
        return int((day + dt.timedelta(hours=h, minutes=m)).timestamp() * US)

    ids = await upsert_tags(conn, [TagRow("a", source="plc1"), TagRow("b", source="plc1"), TagRow("c", source="")])
    await conn.execute("UPDATE tags SET meta = '{\"device\": \"unit2\"}' WHERE name = 'b'")
    a_ts = list(range(at(8), at(10, 20), MIN)) + list(range(at(12, 10), at(15), MIN))
    await write(conn, tier, ids["a"], a_ts)
    await write(conn, tier, ids["b"], list(range(at(8), at(9), MIN)))
    await write_outages(conn, [
        Outage("plc1", "", at(10, 20), down=True, reason="timeout"),
        Outage("plc1", "", at(12, 10), down=False),
        Outage("plc1", "unit2", at(13), down=True, reason="gateway target failed"),
        Outage("plc1", "unit2", at(14), down=False),
    ])
    await refresh_rollups(conn, tier, cfg(), now_us())
    rows = await conn.fetch("SELECT tag_id, bucket, samples, down_seconds, state FROM rollup_coverage('1h', $1, $2) "
                            "ORDER BY tag_id, bucket", utc(at(8)), utc(at(16)))
    got = {(r["tag_id"], r["bucket"].hour): (r["state"], r["down_seconds"], r["samples"]) for r in rows}
    a, b, c = ids["a"], ids["b"], ids["c"]
    assert got[a, 8] == ("ok", 0.0, 60)
    assert got[a, 10] == ("partial", 40 * 60.0, 20)  # data until 10:20, then down
    assert got[a, 11] == ("down", 3600.0, 0)  # not collected
    assert got[a, 12] == ("partial", 600.0, 50)
    assert got[a, 13] == ("ok", 0.0, 60)  # the unit2 outage is not a's device
    assert got[a, 15] == ("no_data", 0.0, 0)  # source up, nothing reported: unchanged
    assert got[b, 9] == ("no_data", 0.0, 0)
    assert got[b, 11] == ("down", 3600.0, 0)
    assert got[b, 13] == ("down", 3600.0, 0)  # its device was down
    assert got[b, 14] == ("no_data", 0.0, 0)
    assert {got[c, h][0] for h in range(8, 16)} == {"no_data"}  # no source, no outage
    assert len(rows) == 3 * 8
    minutes = await conn.fetch("SELECT state FROM rollup_coverage('1m', $1, $2, $3) ORDER BY bucket",
                               utc(at(10, 18)), utc(at(10, 22)), [a])
    assert [r[0] for r in minutes] == ["ok", "ok", "down", "down"]
    gas = await conn.fetch("SELECT bucket, bucket_end, samples FROM rollup_coverage('gasday', $1, $2, $3)",
                           utc(at(0)), utc(at(24)), [a])
    assert [(r[0], r[1], r[2]) for r in gas] == [(day, day + dt.timedelta(days=1), len(a_ts))]
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown rollup resolution"):
        await conn.fetch("SELECT * FROM rollup_coverage('5m', now() - INTERVAL '1 hour', now())")


async def test_maintenance_jobs_drive_rollups(db: tuple[asyncpg.Connection, Tier]) -> None:
    conn, tier = db
    jobs = {j.name: j for j in default_jobs(cfg())}
    assert list(jobs) == ["partitions", "rollups", "retention", "compression"]
    assert isinstance(jobs["rollups"], RollupRefresh) and jobs["rollups"].interval == 60.0
    tag = (await upsert_tags(conn, [TagRow("t")]))["t"]
    now = now_us()
    await write(conn, tier, tag, [now - 5 * MIN, now - MIN])
    if tier is Tier.POSTGRES:
        await PartitionsAhead().run(conn, tier, cfg(), now)
    facts = await jobs["rollups"].run(conn, tier, cfg(), now)
    assert facts["batches"] == 1 and facts["rows"] == 2
    assert set(facts["lag_seconds"]) == {"1m", "1h", "1d", "gasday"}
    assert await Compression().run(conn, tier, cfg(), now) == {}  # only on the timescale tier
    disabled = TenantConfig.model_validate({"slug": "acme", "dsn": "env:U", "rollups": {"enabled": False}})
    assert await jobs["rollups"].run(conn, tier, disabled, now) == {}


async def test_daemon_refreshes_rollups_and_exports_lag(tenant_db: TenantDb, mosquitto: Mosquitto,
                                                        state_dir: Path) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}"
    config = make_config(
        state_dir=state_dir,
        tenants=[{"slug": "acme", "dsn": tenant_db.dsn,
                  "rollups": {"timezone": "America/Chicago", "contract_hour": 9}}],
        sources=[mqtt_source(mosquitto, prefix)],
    )
    async with running_daemon(config) as d:
        ts = int(time.time() * 1000)
        await publish(mosquitto, [(f"{prefix}/acme/wells/w1/tubing_pressure", {"ts": ts - i * 1000, "value": 800.0 + i})
                                  for i in range(5)])
        await wait_rows(tenant_db, 5)
        # The tenant's maintenance loop may be refreshing at the same moment (then this call skips the
        # round): run it until the rollups hold all five samples.
        deadline = time.monotonic() + 20
        while True:
            results = await d.tenants["acme"].run_maintenance(force=True)
            assert "error" not in results["rollups"], results
            rows = await asyncio.to_thread(tenant_db.query,
                                           "SELECT sum(samples)::int, min(min), max(max) FROM readings_1h")
            if rows == [(5, 800.0, 804.0)] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert rows == [(5, 800.0, 804.0)]
        assert d.metrics_port is not None
        text = await asyncio.to_thread(scrape, d.metrics_port)
    assert tenant_db.query("SELECT count(*) FROM readings_gasday") == [(1,)]
    lag = [line for line in text.splitlines()
           if line.startswith("ingestd_rollup_refresh_lag_seconds{") and 'tenant="acme"' in line]
    assert {line.split('resolution="')[1].split('"')[0] for line in lag} == {"1m", "1h", "1d", "gasday"}
