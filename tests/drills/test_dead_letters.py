"""Dead letters: bounded in memory (1000) and in the table (newest 10,000), kept with reason and
source, written even when no reading flows, listable with ``ingestd dead-letters``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import time
from pathlib import Path

import asyncpg
import orjson
import psycopg

from adapters.registry import REGISTRY
from ingestd.config.load import parse_config
from ingestd.config.model import PipelineConfig, TenantConfig
from ingestd.deadletters import add_arguments, run_listing
from ingestd.metrics import Metrics
from ingestd.model import now_us
from ingestd.pipeline.tenant import TenantPipeline
from ingestd.storage.store import DeadLetter, write_dead_letters
from tests.conftest import TenantDb
from tests.support.wait import eventually


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ingestd dead-letters")
    add_arguments(p)
    return p.parse_args(["-c", "x.toml", *argv])


def dead_letters(db: TenantDb) -> int:
    try:
        return int(db.query("SELECT count(*) FROM dead_letters")[0][0])  # type: ignore[call-overload]
    except psycopg.errors.UndefinedTable:
        return 0


def listing(db: TenantDb, *argv: str) -> tuple[int, str, str]:
    cfg = parse_config({"tenants": [{"slug": "acme", "dsn": db.dsn}]}, REGISTRY)
    out, err = io.StringIO(), io.StringIO()
    rc = run_listing(cfg, parse(*argv), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


async def test_dead_letters_are_written_without_readings_and_listed(apache_db: TenantDb, tmp_path: Path) -> None:
    tp = TenantPipeline(TenantConfig.model_validate({"slug": "acme", "dsn": apache_db.dsn}), PipelineConfig(),
                        tmp_path, Metrics())
    task = asyncio.create_task(tp.run())
    try:
        for i in range(1005):  # more than the in-memory bound before the database is ready
            tp.dead_letter(DeadLetter(now_us(), "field" if i % 2 else "plc", "bad_json" if i % 3 else "oversized",
                                      f"topic a/b/{i}: bad", b'{"v": ' + str(i).encode()))
        assert tp.metrics.registry.get_sample_value("ingestd_dead_letters_dropped_total", {"tenant": "acme"}) == 5
        await eventually(lambda: dead_letters(apache_db) == 1000, what="dead letters written with no reading flowing")
    finally:
        await tp.drain(task, 10)
        await tp.close()

    rc, out, err = await asyncio.to_thread(listing, apache_db, "--limit", "5")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("tenant\tid\treceived_at\tsource\treason")
    assert len(lines) == 6
    assert "a/b/999" in lines[1]  # newest first

    rc, out, _ = await asyncio.to_thread(listing, apache_db, "--source", "plc", "--reason", "oversized",
                                         "--format", "json", "--limit", "10000")
    rows = [orjson.loads(x) for x in out.splitlines()]
    assert rc == 0
    assert len(rows) == sum(1 for i in range(1000) if i % 2 == 0 and i % 3 == 0)
    assert {(r["source"], r["reason"], r["tenant"]) for r in rows} == {("plc", "oversized", "acme")}
    assert base64.b64decode(rows[0]["payload_b64"]).startswith(b'{"v": ')

    rc, out, _ = await asyncio.to_thread(listing, apache_db, "--summary")
    assert rc == 0
    assert sorted(line.split("\t")[3] for line in out.splitlines()) == ["167", "167", "333", "333"]


async def test_table_keeps_the_newest_10000(apache_db: TenantDb, tmp_path: Path) -> None:
    tp = TenantPipeline(TenantConfig.model_validate({"slug": "acme", "dsn": apache_db.dsn}), PipelineConfig(),
                        tmp_path, Metrics())
    task = asyncio.create_task(tp.run())
    await eventually(lambda: tp.db_healthy, what="migrated")
    await tp.drain(task, 10)
    await tp.close()
    conn = await asyncpg.connect(apache_db.dsn)
    try:
        t = now_us()
        for chunk in range(11):
            await write_dead_letters(conn, [DeadLetter(t + chunk * 1000 + i, "s", "r", str(chunk * 1000 + i), None)
                                            for i in range(1000)], 10_000)
    finally:
        await conn.close()
    n, lo = apache_db.query("SELECT count(*), min(detail::int) FROM dead_letters")[0]
    assert (n, lo) == (10_000, 1000)


def test_listing_arguments_and_errors(apache_db: TenantDb) -> None:
    args = parse("--tenant", "acme", "--source", "s", "--reason", "bad_json", "--limit", "7", "--format", "json")
    assert (args.tenant, args.source, args.reason, args.limit, args.format) == ("acme", "s", "bad_json", 7, "json")
    cfg = parse_config({"tenants": [{"slug": "acme", "dsn": apache_db.dsn}]}, REGISTRY)
    err = io.StringIO()
    assert run_listing(cfg, parse("--tenant", "nope"), out=io.StringIO(), err=err) == 2
    assert "unknown tenant" in err.getvalue()
    assert run_listing(cfg, parse("--limit", "0"), out=io.StringIO(), err=io.StringIO()) == 2
    err = io.StringIO()
    started = time.monotonic()
    assert run_listing(cfg, parse(), out=io.StringIO(), err=err) == 1  # database not migrated yet
    assert "not migrated" in err.getvalue()
    assert time.monotonic() - started < 10
