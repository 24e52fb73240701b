"""Operator commands against a real database: dead-letters listing and rollups rebuild."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import numpy as np
import orjson

from ingestd.config.model import StorageConfig
from ingestd.model import Batch
from ingestd.storage.migrate import migrate
from ingestd.storage.store import DeadLetter, TagRow, upsert_tags, write_dead_letters, write_readings
from tests.conftest import TenantDb

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "T_DSN": dsn}, timeout=120, check=False)


def config(tmp: Path) -> Path:
    p = tmp / "c.toml"
    p.write_text('[[tenants]]\nslug = "acme"\ndsn = "env:T_DSN"\n')
    return p


async def test_dead_letters_listing(apache_db: TenantDb, tmp_path: Path) -> None:
    conn = await asyncpg.connect(apache_db.dsn)
    try:
        await migrate(conn, StorageConfig())
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1e6)
        await write_dead_letters(conn, [
            DeadLetter(now, "field", "bad_json", "topic a/b: not valid JSON", b"{oops"),
            DeadLetter(now + 1, "field", "oversized", "5000 bytes > max_payload", b"x" * 100),
            DeadLetter(now + 2, "plc1", "bad_json", "topic c: not valid JSON", None),
        ], keep=100)
    finally:
        await conn.close()
    cfg = config(tmp_path)
    r = cli("dead-letters", "-c", str(cfg), "--reason", "bad_json", "--format", "json", dsn=apache_db.dsn)
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [(x["source"], x["reason"]) for x in rows] == [("plc1", "bad_json"), ("field", "bad_json")]
    r = cli("dead-letters", "-c", str(cfg), "--summary", dsn=apache_db.dsn)
    assert r.returncode == 0
    assert "acme\tfield\toversized\t1" in r.stdout
    assert cli("dead-letters", "-c", str(cfg), "--limit", "0", dsn=apache_db.dsn).returncode == 2


async def test_rollups_rebuild_from_raw_data(tenant_db: TenantDb, tmp_path: Path) -> None:
    conn = await asyncpg.connect(tenant_db.dsn)
    try:
        report = await migrate(conn, StorageConfig())
        ids = await upsert_tags(conn, [TagRow("t")])
        t0 = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp() * 1e6)
        n = 180
        b = Batch.of([0] * n, t0 + np.arange(n, dtype=np.int64) * 60_000_000, np.arange(n, dtype=np.float64))
        await write_readings(conn, report.tier, uuid.uuid4(), "s", np.full(n, ids["t"], np.int32), b)
        # data that predates the ledger: the incremental refresh will never see it
        await conn.execute("DELETE FROM ingest_batches")
    finally:
        await conn.close()
    r = cli("rollups", "rebuild", "-c", str(config(tmp_path)), "--tenant", "acme", "--from", "2026-11-19",
            "--to", "2026-11-22", dsn=tenant_db.dsn)
    assert r.returncode == 0, r.stderr
    hours = tenant_db.query("SELECT bucket, count, min, max FROM readings_1h ORDER BY bucket")
    assert [(int(c), mn, mx) for _, c, mn, mx in hours] == [(60, 0.0, 59.0), (60, 60.0, 119.0),
                                                              (60, 120.0, 179.0)]
    assert int(tenant_db.query("SELECT sum(count) FROM readings_1m")[0][0]) == n  # type: ignore[call-overload]
    bad = cli("rollups", "rebuild", "-c", str(config(tmp_path)), "--tenant", "acme", "--from", "yesterday",
              dsn=tenant_db.dsn)
    assert bad.returncode == 2 and "--from" in bad.stderr
