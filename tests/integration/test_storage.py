"""Storage layer on both tiers: migration and tier detection, idempotent writes, partitions, outages."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from ingestd.config.model import StorageConfig
from ingestd.model import Batch, Quality, now_us
from ingestd.storage.maintenance import PartitionsAhead, RawRetention
from ingestd.storage.migrate import Tier, migrate
from ingestd.storage.store import Outage, TagRow, upsert_tags, write_outages, write_readings
from tests.conftest import TenantDb

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000_000


async def connect(db: TenantDb) -> asyncpg.Connection:
    return await asyncpg.connect(db.dsn)


async def test_migrate_detects_tier_and_is_idempotent(tenant_db: TenantDb) -> None:
    conn = await connect(tenant_db)
    try:
        first = await migrate(conn, StorageConfig())
        assert first.tier.value == tenant_db.tier
        assert first.applied[:2] == ("001_base", "002_readings")
        second = await migrate(conn, StorageConfig())
        assert second.applied == ()
        assert second.tier == first.tier
        hyper = await conn.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        assert bool(hyper) == (first.tier is Tier.APACHE)
        if first.tier is Tier.APACHE:
            assert first.license == "apache"
            assert await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'") == 1
        else:
            assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'readings'") == "p"
    finally:
        await conn.close()


async def test_tier_never_changes_in_place(apache_db: TenantDb) -> None:
    conn = await connect(apache_db)
    try:
        await migrate(conn, StorageConfig(tier="apache"))
        from ingestd.errors import StorageSchemaError

        with pytest.raises(StorageSchemaError, match=r"storage\.tier is 'postgres' but the database is 'apache'"):
            await migrate(conn, StorageConfig(tier="postgres"))
    finally:
        await conn.close()


def batch(n: int, t0: int, tags: int = 3) -> Batch:
    k = (np.arange(n) % tags).astype(np.int32)
    ts = t0 + (np.arange(n) // tags).astype(np.int64) * 1_000_000
    v = np.arange(n, dtype=np.float64)
    v[5::11] = np.nan
    q = np.where(np.isnan(v), Quality.BAD, Quality.GOOD).astype(np.uint8)
    return Batch.of(k, ts, v, q)


async def test_same_batch_twice_and_overlapping_rows_never_duplicate(tenant_db: TenantDb) -> None:
    conn = await connect(tenant_db)
    try:
        report = await migrate(conn, StorageConfig())
        ids = await upsert_tags(conn, [TagRow(f"t{i}") for i in range(3)])
        tag_ids = np.array([ids["t0"], ids["t1"], ids["t2"]], np.int32)
        t0 = now_us() - 3 * DAY  # crosses day partitions on the plain tier
        b = batch(3000, t0)
        key = uuid.uuid4()
        r1 = await write_readings(conn, report.tier, key, "s", tag_ids[b.key], b)
        r2 = await write_readings(conn, report.tier, key, "s", tag_ids[b.key], b)  # replay of the same batch
        assert (r1.inserted, r1.duplicates) == (3000, 0)
        assert r2.already_committed and r2.inserted == 0
        # the same readings again under another batch key (e.g. an MQTT redelivery): deduplicated by (tag, ts)
        b2 = Batch.concat([batch(100, t0), batch(30, t0 + 10**9)])
        r3 = await write_readings(conn, report.tier, uuid.uuid4(), "s", tag_ids[b2.key], b2)
        assert (r3.inserted, r3.duplicates) == (30, 100)
        assert await conn.fetchval("SELECT count(*) FROM readings") == 3030
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE value IS NULL AND quality = 2") > 0
        assert await conn.fetchval("SELECT count(*) FROM ingest_batches") == 2
    finally:
        await conn.close()


async def test_plain_tier_partitions_ahead_and_retention(plain_db: TenantDb) -> None:
    from ingestd.config.model import TenantConfig

    conn = await connect(plain_db)
    try:
        await migrate(conn, StorageConfig())
        cfg = TenantConfig.model_validate({"slug": "x", "dsn": "env:X", "retention": {"raw": "2d"}})
        now = now_us()
        made = await PartitionsAhead().run(conn, Tier.POSTGRES, cfg, now)
        assert len(made["created"]) == 1 + 1 + 7  # yesterday, today, 7 ahead
        ids = await upsert_tags(conn, [TagRow("old")])
        old = Batch.of([0], [now - 10 * DAY], [1.0])
        await write_readings(conn, Tier.POSTGRES, uuid.uuid4(), "s", np.array([ids["old"]], np.int32), old)
        assert await conn.fetchval("SELECT count(*) FROM readings") == 1  # partition created on demand
        out = await RawRetention().run(conn, Tier.POSTGRES, cfg, now)
        assert out["dropped"], out
        assert await conn.fetchval("SELECT count(*) FROM readings") == 0
    finally:
        await conn.close()


async def test_outage_windows(tenant_db: TenantDb) -> None:
    conn = await connect(tenant_db)
    try:
        await migrate(conn, StorageConfig())
        t = now_us()
        await write_outages(conn, [
            Outage("plc1", "", t, down=True, reason="timeout"),
            Outage("plc1", "", t + 1, down=True, reason="again"),  # already open: ignored
            Outage("plc1", "", t + 5_000_000, down=False),
            Outage("plc1", "unit2", t, down=True, reason="gateway target failed"),
        ])
        rows = await conn.fetch(
            "SELECT source, device, reason, up_at - down_at AS d FROM source_status ORDER BY device")
        assert [(r["source"], r["device"], r["reason"]) for r in rows] == [
            ("plc1", "", "timeout"), ("plc1", "unit2", "gateway target failed")]
        assert rows[0]["d"].total_seconds() == pytest.approx(5, abs=0.01)
        assert rows[1]["d"] is None
    finally:
        await conn.close()


def test_migrate_cli_reports_tier(tenant_db: TenantDb, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[tenants]]\nslug = "acme"\ndsn = "env:T_DSN"\n')
    env = {**os.environ, "T_DSN": tenant_db.dsn}
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "ingestd", "migrate", "-c", str(cfg)], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
    assert f"acme: tier {2 if tenant_db.tier == 'apache' else 3} ({tenant_db.tier})" in r.stdout
    assert "applied: none (up to date)" in r.stdout


def test_migrate_cli_fails_clearly_without_leaking_the_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[tenants]]\nslug = "acme"\ndsn = "postgresql://u:hunter2secret@127.0.0.1:1/x"\n'
                   '[tenants.pool]\nconnect_timeout = "2s"\n')
    r = subprocess.run([sys.executable, "-m", "ingestd", "migrate", "-c", str(cfg)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 1
    assert "acme: FAILED" in r.stderr
    assert "hunter2secret" not in r.stderr + r.stdout
