"""Store-and-forward of one tenant, in process, against a real PostgreSQL/TimescaleDB:

* durability guard: a hung database (a table lock: not refusing, just not answering) gets readings
  spooled within the durability deadline, and the hung write's spooled copy is not replayed twice;
* backpressure: when even the spool cannot keep up, sources wait; inbox and writer stay bounded;
* spool full: oldest dropped, counted, alarmed, the pipeline keeps running;
* replay is idempotent (twice the same spool → no duplicate), poison records are quarantined;
* the probe of a dead database is rate limited by the jittered, capped breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from ingestd.config.model import PipelineConfig, TenantConfig
from ingestd.metrics import Metrics
from ingestd.model import Batch, Durability
from ingestd.pipeline.tags import TagMeta
from ingestd.pipeline.tenant import TenantPipeline
from ingestd.spool import Spool, SpoolRecord
from tests.conftest import TenantDb
from tests.support.ports import free_port
from tests.support.wait import eventually

T0 = int(time.time() * 1e6) - 3_600_000_000


def make(tmp: Path, dsn: str, *, spool: dict[str, Any] | None = None, events: list[tuple[str, dict[str, Any]]]
         | None = None, **pipeline: Any) -> TenantPipeline:
    cfg = TenantConfig.model_validate({"slug": "acme", "dsn": dsn, "pool": {"connect_timeout": "1s"}})
    pipe = PipelineConfig.model_validate({"batch_max_age": "50ms", "spool": spool or {}, **pipeline})

    def on_event(tenant: str, kind: str, details: dict[str, Any]) -> None:
        if events is not None:
            events.append((kind, details))

    return TenantPipeline(cfg, pipe, tmp, Metrics(), on_system_event=on_event)


def rows(key: int, start: int, n: int) -> Batch:
    return Batch.of(np.full(n, key, np.int32), T0 + np.arange(start, start + n, dtype=np.int64),
                    np.arange(start, start + n, dtype=np.float64))


def dead_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"


@contextlib.asynccontextmanager
async def running(tp: TenantPipeline) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(tp.run())
    try:
        yield task
    finally:
        await tp.drain(task, 10)
        await tp.close()


def count(db: TenantDb) -> int:
    try:
        return int(db.query("SELECT count(*) FROM readings")[0][0])  # type: ignore[call-overload]
    except psycopg.errors.UndefinedTable:
        return 0


def metric(tp: TenantPipeline, name: str, **labels: str) -> float:
    value = tp.metrics.registry.get_sample_value(name, {"tenant": tp.slug, **labels})
    return float(value or 0.0)


def watch_spool(tp: TenantPipeline) -> dict[int, float]:
    """First time each reading (by its ts offset from T0) reached the spool."""
    spooled: dict[int, float] = {}
    real = tp.spool.append_many_async

    async def recording(records: list[SpoolRecord], tokens: Any = None) -> Any:
        refs = await real(records, tokens)
        now = time.monotonic()
        for r in records:
            for ts in (r.batch.ts - T0).tolist():
                spooled.setdefault(int(ts), now)
        return refs

    tp.spool.append_many_async = recording  # type: ignore[method-assign]
    return spooled


async def test_hung_database_gets_readings_spooled_within_the_deadline(apache_db: TenantDb, tmp_path: Path) -> None:
    """Readings nobody else keeps (polled values: no completion token) are secured within the deadline."""
    tp = make(tmp_path, apache_db.dsn)
    key = tp.ensure_tag(TagMeta("w1.p"))
    spooled = watch_spool(tp)
    async with running(tp):
        await tp.inbox.put(rows(key, 0, 10))
        await eventually(lambda: count(apache_db) == 10, what="first batch committed")
        async with await psycopg.AsyncConnection.connect(apache_db.dsn) as locker:
            await locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")  # COPY now hangs
            started: list[float] = []
            for i in range(6):
                started.append(time.monotonic())
                await tp.inbox.put(rows(key, 100 + i * 100, 100))
                await asyncio.sleep(0.3)  # a steady source, one batch every 300 ms
            await eventually(lambda: all(100 + i * 100 in spooled for i in range(6)), timeout=10,
                             what="every batch spooled")
            delays = [spooled[100 + i * 100] - t for i, t in enumerate(started)]
            assert max(delays) <= tp.deadline, delays
            assert metric(tp, "ingestd_write_stalls_total") == 1
            assert tp.held_rows <= tp.inbox.batch_rows
            await locker.rollback()  # the database answers again
        await eventually(lambda: count(apache_db) == 610 and tp.spool.empty, timeout=30, what="replay")
    assert apache_db.query("SELECT count(DISTINCT ts) FROM readings")[0][0] == 610
    # the hung write committed after all: its spooled copy was skipped, not written twice
    assert metric(tp, "ingestd_points_duplicate_total") == 0


async def test_hung_database_with_acknowledged_sources(apache_db: TenantDb, tmp_path: Path) -> None:
    """MQTT-like data (completion tokens: the broker keeps it until acknowledged): the hung write is not
    copied (its ack waits for the commit), the data behind it is spooled and acknowledged in time."""
    tp = make(tmp_path, apache_db.dsn, spool={"fsync": "always"})  # ack as soon as the append is durable
    key = tp.ensure_tag(TagMeta("w1.p"))
    async with running(tp):
        await tp.inbox.put(rows(key, 0, 10))
        await eventually(lambda: count(apache_db) == 10, what="first batch committed")
        async with await psycopg.AsyncConnection.connect(apache_db.dsn) as locker:
            await locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            acked: dict[int, float] = {}
            started: list[float] = []
            for i in range(5):
                b = rows(key, 100 + i * 100, 100)
                b.tokens = [Durability(lambda i=i: acked.setdefault(i, time.monotonic()))]  # type: ignore[misc]
                started.append(time.monotonic())
                await tp.inbox.put(b)
                await asyncio.sleep(0.3)
            await eventually(lambda: len(acked) == 4, timeout=10, what="batches behind the hung write acked")
            assert 0 not in acked  # in flight: acknowledged only once committed
            assert max(acked[i] - started[i] for i in range(1, 5)) <= tp.deadline
            await locker.rollback()
        await eventually(lambda: 0 in acked and count(apache_db) == 510 and tp.spool.empty, timeout=30,
                         what="hung write committed, rest replayed")
    assert metric(tp, "ingestd_points_duplicate_total") == 0


async def test_sources_wait_when_even_the_spool_cannot_keep_up(tmp_path: Path) -> None:
    tp = make(tmp_path, dead_dsn(), inbox_max_rows=1000, batch_max_rows=500)
    gate = threading.Event()
    real = tp.spool._append_locked

    def slow_disk(*args: Any) -> Any:
        gate.wait(30)
        return real(*args)

    tp.spool._append_locked = slow_disk  # type: ignore[method-assign]
    key = tp.ensure_tag(TagMeta("w1.p"))
    peak = {"inbox": 0, "held": 0}

    async def producer() -> None:
        for i in range(40):
            await tp.inbox.put(rows(key, i * 250, 250))
            peak["inbox"] = max(peak["inbox"], tp.inbox.rows)
            peak["held"] = max(peak["held"], tp.held_rows)

    async with running(tp):
        prod = asyncio.create_task(producer())
        await eventually(lambda: tp.inbox.statistics().waiting_producers == 1, what="producer blocked")
        assert not prod.done()
        assert tp.inbox.rows <= 1000
        assert tp.held_rows <= 500
        gate.set()
        await asyncio.wait_for(prod, 30)
        await eventually(lambda: tp.spool.stats.rows == 10_000, what="everything spooled")
    assert peak["inbox"] <= 1000
    assert peak["held"] <= 500
    assert metric(tp, "ingestd_points_spooled_total") == 10_000


async def test_full_spool_drops_oldest_counts_alarms_and_keeps_running(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    tp = make(tmp_path, dead_dsn(), events=events, spool={"max_bytes": "64KiB", "segment_bytes": "16KiB"})
    key = tp.ensure_tag(TagMeta("w1.p"))
    async with running(tp):
        for i in range(40):
            await tp.inbox.put(rows(key, i * 200, 200))
        await eventually(lambda: metric(tp, "ingestd_points_spooled_total") == 8000, what="all offered to spool")
        assert tp.spool.stats.bytes <= 64 * 1024
        dropped = tp.spool.stats.dropped_rows
        assert dropped > 0
        assert dropped + tp.spool.stats.rows == 8000
        assert metric(tp, "ingestd_spool_dropped_points_total") == dropped
        assert metric(tp, "ingestd_points_dropped_total", source="", reason="spool_full") == dropped
        full = [d for k, d in events if k == "spool_full"]
        assert sum(d["dropped_points"] for d in full) == dropped
        assert ("database_down" in {k for k, _ in events})
        await tp.inbox.put(rows(key, 9000, 10))  # still running
        await eventually(lambda: metric(tp, "ingestd_points_spooled_total") == 8010, what="still spooling")


def spool_records(tmp: Path, records: list[SpoolRecord]) -> Path:
    d = tmp / "spool" / "acme"
    sp = Spool(d, max_bytes=10**8, segment_bytes=4096)
    for r in records:
        sp.append(r)
    sp.close()
    return d


def record(names: list[str], start: int, n: int) -> SpoolRecord:
    k = (np.arange(n) % len(names)).astype(np.int32)
    return SpoolRecord(uuid.uuid4(), '{"field":1}', names,
                       Batch.of(k, T0 + np.arange(start, start + n, dtype=np.int64), np.ones(n)))


async def test_replaying_the_same_spool_twice_stores_every_reading_once(apache_db: TenantDb, tmp_path: Path) -> None:
    recs = [record(["a", "b", "c"], i * 300, 300) for i in range(20)]
    d = spool_records(tmp_path, recs)
    backup = tmp_path / "backup"
    shutil.copytree(d, backup)
    tp = make(tmp_path, apache_db.dsn)
    async with running(tp):
        await eventually(lambda: tp.spool.empty, timeout=30, what="spool replayed")
    assert count(apache_db) == 6000
    assert metric(tp, "ingestd_points_replayed_total") == 6000
    shutil.rmtree(d)
    shutil.copytree(backup, d)  # as if the process had died before deleting the replayed segments
    tp2 = make(tmp_path, apache_db.dsn)
    async with running(tp2):
        await eventually(lambda: tp2.spool.empty, timeout=30, what="spool replayed again")
    assert count(apache_db) == 6000
    assert metric(tp2, "ingestd_points_replayed_total") == 0
    assert metric(tp2, "ingestd_points_duplicate_total") == 6000
    assert apache_db.query("SELECT count(*) FROM tags")[0][0] == 3


async def test_a_record_the_database_rejects_is_quarantined_not_blocking(apache_db: TenantDb, tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    good1, bad, good2 = record(["a"], 0, 100), record(["bad\x00name"], 100, 7), record(["b"], 200, 100)
    spool_records(tmp_path, [good1, bad, good2])
    tp = make(tmp_path, apache_db.dsn, events=events)
    async with running(tp):
        await eventually(lambda: tp.spool.empty, timeout=30, what="spool replayed")
        assert tp.db_healthy
    assert count(apache_db) == 200
    assert metric(tp, "ingestd_spool_quarantined_points_total") == 7
    assert [k for k, _ in events] == ["spool_quarantine"]
    q = Spool(tmp_path / "spool" / "acme" / "quarantine", max_bytes=10**8)
    assert q.stats.rows == 7  # kept on disk, readable with the spool format


async def test_dead_database_is_probed_at_a_bounded_rate(tmp_path: Path) -> None:
    tp = make(tmp_path, dead_dsn(), db_retry_max="1s")
    attempts: list[float] = []
    real = tp.db.connection

    def counting() -> Any:
        attempts.append(time.monotonic())
        return real()

    tp.db.connection = counting  # type: ignore[method-assign]
    async with running(tp):
        await eventually(lambda: len(attempts) >= 4, timeout=10, what="a few probes")
        await eventually(lambda: time.monotonic() - attempts[0] >= 3, timeout=10, what="3 s of probing")
        window = list(attempts)
    gaps = np.diff(window)
    assert gaps.min() >= 0.2  # never a tight loop: at least the backoff floor between attempts
    assert len(window) <= 3 / 0.2 + 2
    assert tp.gate.state == "open"
    assert tp.metrics.registry.get_sample_value("ingestd_breaker_state", {"kind": "tenant_db", "name": "acme"}) == 2
    assert not tp.db_healthy


async def test_shutdown_with_a_hung_database_spools_promptly_and_loses_nothing(apache_db: TenantDb,
                                                                               tmp_path: Path) -> None:
    tp = make(tmp_path, apache_db.dsn)
    key = tp.ensure_tag(TagMeta("w1.p"))
    acked: list[int] = []
    task = asyncio.create_task(tp.run())
    await tp.inbox.put(rows(key, 0, 10))
    await eventually(lambda: count(apache_db) == 10, what="first batch committed")
    async with await psycopg.AsyncConnection.connect(apache_db.dsn) as locker:
        await locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        for i in range(5):
            b = rows(key, 100 + i * 100, 100)
            b.tokens = [Durability(lambda i=i: acked.append(i))]  # type: ignore[misc]
            await tp.inbox.put(b)
        await eventually(lambda: tp.held_rows > 0, what="a write hanging")
        started = time.monotonic()
        await tp.drain(task, 20)  # SIGTERM path
        await tp.close()
        took = time.monotonic() - started
        await locker.rollback()
    assert took < 5, took  # did not wait for the hung database or the shutdown timeout
    assert sorted(acked) == [0, 1, 2, 3, 4]  # everything durable in the spool: acknowledged
    tp2 = make(tmp_path, apache_db.dsn)
    async with running(tp2):
        await eventually(lambda: tp2.spool.empty and count(apache_db) == 510, timeout=30, what="replayed")
    assert apache_db.query("SELECT count(DISTINCT ts) FROM readings")[0][0] == 510
