"""One tenant's sink: inbox → batcher → database writer, with the disk spool and its replay.

Rules (DESIGN §4-5):

* every flushed batch is either committed (exactly once, via the batch ledger) or appended to the
  spool; the writer never drops data on a database error;
* a pybreaker breaker guards the database: while it is open, flushes go straight to the spool;
* when writes succeed again, closed spool segments are replayed oldest first, concurrently with
  live data, and deleted once committed;
* outage windows and dead letters are queued in memory (bounded) and written with the next batch;
* one tenant's dead database never slows another: each tenant has its own tasks, pool and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pybreaker

from ..config.model import PipelineConfig, TenantConfig
from ..errors import StorageError, StorageSchemaError
from ..metrics import Metrics
from ..model import Batch, now_us
from ..spool import Spool, SpoolRecord
from ..storage.maintenance import MaintenanceJob, default_jobs
from ..storage.migrate import Tier, current_tier, migrate
from ..storage.pool import TenantDb
from ..storage.store import DeadLetter, Outage, TagRow, upsert_tags, write_dead_letters, write_outages, write_readings
from .breaker import make_breaker
from .inbox import Inbox
from .tags import TagMeta, TagRegistry

__all__ = ["SystemEvent", "TenantPipeline"]

log = logging.getLogger(__name__)

SystemEvent = Callable[[str, str, dict[str, Any]], None]
"""(tenant, kind, details) — system alarm hook (spool full, database down, ...)."""

_DEAD_LETTER_MEMORY = 1000
_DEAD_LETTER_KEEP = 10_000


class TenantPipeline:
    def __init__(
        self,
        cfg: TenantConfig,
        pipeline: PipelineConfig,
        state_dir: Path,
        metrics: Metrics,
        *,
        instance: str = "",
        auto_migrate: bool = True,
        on_system_event: SystemEvent | None = None,
        write_timeout: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.slug = cfg.slug
        self.metrics = metrics
        self.instance = instance
        self.auto_migrate = auto_migrate
        self.on_system_event = on_system_event
        self.write_timeout = write_timeout
        self.registry = TagRegistry(cfg.slug)
        self.inbox = Inbox(pipeline.inbox_max_rows, pipeline.batch_max_rows, pipeline.batch_max_age)
        app = f"ingestd:{instance}" if instance else "ingestd"
        self.db = TenantDb(cfg.slug, cfg.dsn, cfg.pool, application_name=app)
        sp = pipeline.spool
        self.spool = Spool(
            state_dir / "spool" / cfg.slug,
            max_bytes=cfg.spool_max_bytes or sp.max_bytes,
            segment_bytes=sp.segment_bytes,
            fsync=sp.fsync,
            on_drop=self._spool_dropped,
        )
        self.fsync_interval = sp.fsync_interval
        self.breaker = make_breaker(metrics, "tenant_db", cfg.slug, fail_max=1, reset_timeout=2.0)
        self.tier: Tier | None = None
        self._prepared = False
        self._outages: deque[Outage] = deque(maxlen=10_000)
        self._dead: deque[DeadLetter] = deque()
        self._replay_wake = asyncio.Event()
        self._db_ok = asyncio.Event()
        self.last_error: str | None = None
        self.last_commit_us = 0
        self.maintenance: list[MaintenanceJob] = default_jobs(cfg)
        self._job_due: dict[str, float] = {}
        m = metrics
        self._m_rows = m.inbox_rows.labels(self.slug)
        self._m_wait = m.inbox_waiting.labels(self.slug)
        m.inbox_capacity.labels(self.slug).set(self.inbox.max_rows)
        self._m_spool_bytes = m.spool_bytes.labels(self.slug)
        self._m_spool_rows = m.spool_rows.labels(self.slug)
        self._m_up = m.db_up.labels(self.slug)
        self._m_batch = m.batch_rows.labels(self.slug)
        self._m_write = m.write_seconds.labels(self.slug)
        self._m_latency = m.ingest_latency.labels(self.slug)
        self._export_spool()

    # ------------------------------------------------------------------ public API
    def ensure_tag(self, meta: TagMeta, *, deadband: float | None = None, heartbeat: float | None = None) -> int:
        return self.registry.ensure(meta, deadband=deadband, heartbeat_s=heartbeat)

    def record_outage(self, event: Outage) -> None:
        self._outages.append(event)

    def dead_letter(self, item: DeadLetter) -> None:
        if len(self._dead) >= _DEAD_LETTER_MEMORY:
            self.metrics.dead_letters_dropped.labels(self.slug).inc()
            return
        self._dead.append(item)

    async def reconfigure(self, cfg: TenantConfig) -> None:
        """Apply changed tenant settings without losing queued or spooled data."""
        old, self.cfg = self.cfg, cfg
        if (old.dsn, old.pool) != (cfg.dsn, cfg.pool):
            db, self.db = self.db, TenantDb(cfg.slug, cfg.dsn, cfg.pool, application_name=self.db._app)
            self._prepared = False
            await db.close()
        if old.storage != cfg.storage:
            self._prepared = False
        if old.spool_max_bytes != cfg.spool_max_bytes and cfg.spool_max_bytes:
            self.spool.max_bytes = cfg.spool_max_bytes

    @property
    def db_healthy(self) -> bool:
        return self._db_ok.is_set()

    async def run(self) -> None:
        """Writer, replay and fsync loops. Returns once the inbox is closed and drained."""
        async with asyncio.TaskGroup() as tg:
            helpers = [
                tg.create_task(self._replay_loop(), name=f"replay:{self.slug}"),
                tg.create_task(self._fsync_loop(), name=f"fsync:{self.slug}"),
                tg.create_task(self._probe_loop(), name=f"probe:{self.slug}"),
                tg.create_task(self._maintenance_loop(), name=f"maintenance:{self.slug}"),
            ]
            try:
                await self._writer_loop()
            finally:
                for t in helpers:
                    t.cancel()

    async def close(self) -> None:
        self.spool.close()
        self._export_spool()
        await self.db.close()

    # ------------------------------------------------------------------ writer
    async def _writer_loop(self) -> None:
        while True:
            self._m_rows.set(self.inbox.rows)
            self._m_wait.set(self.inbox.statistics().waiting_producers)
            batch = await self.inbox.take()
            if batch is None:
                return
            await self._store(batch)

    async def _store(self, batch: Batch) -> None:
        if self.breaker.current_state == "open" and not self._breaker_ready():
            self._spool(batch)
            return
        try:
            with self.breaker.calling():
                await asyncio.wait_for(self._write(batch), self.write_timeout)
        except asyncio.CancelledError:
            # shutting down mid-write: keep the batch (a replay of committed rows is deduplicated)
            if batch.tokens or len(batch):
                self._spool(batch)
            raise
        except pybreaker.CircuitBreakerError:
            self._spool(batch)
        except (StorageError, TimeoutError) as exc:
            self._db_failed(exc)
            self._spool(batch)

    def _breaker_ready(self) -> bool:
        opened = self.breaker._state_storage.opened_at
        if opened is None:
            return True
        return bool((time.time() - opened.timestamp()) >= self.breaker.reset_timeout)

    def _db_failed(self, exc: BaseException) -> None:
        msg = str(exc) or type(exc).__name__
        if self._db_ok.is_set() or self.last_error is None:
            log.error("tenant %s: database unavailable, spooling to disk: %s", self.slug, msg)
            if self.on_system_event:
                self.on_system_event(self.slug, "database_down", {"error": msg})
        self.last_error = msg
        self._db_ok.clear()
        self._m_up.set(0)
        if isinstance(exc, StorageSchemaError):
            self._prepared = False

    def _db_succeeded(self) -> None:
        if not self._db_ok.is_set():
            if self.last_error is not None:
                log.warning("tenant %s: database is back", self.slug)
                if self.on_system_event:
                    self.on_system_event(self.slug, "database_up", {})
            self._db_ok.set()
            self._m_up.set(1)
            self.last_error = None
        self._replay_wake.set()

    async def _prepare(self, conn: Any) -> None:
        if self._prepared:
            return
        if self.auto_migrate:
            report = await migrate(conn, self.cfg.storage)
            self.tier = report.tier
            log.info("tenant %s: %s", self.slug, report.describe())
        else:
            self.tier = await current_tier(conn)
        for t in Tier:
            self.metrics.storage_tier.labels(self.slug, t.value).set(t.numeric if t is self.tier else 0)
        self.registry.db_id[: len(self.registry)] = -1  # re-resolve every tag (database may be new)
        await self._resolve_tags(conn, np.arange(len(self.registry), dtype=np.int32))
        self._prepared = True

    async def _resolve_tags(self, conn: Any, keys: npt.NDArray[np.int32]) -> None:
        reg = self.registry
        missing = np.unique(keys[reg.db_id[keys] < 0])
        if missing.shape[0] == 0:
            return
        rows = []
        for k in missing.tolist():
            m = reg.meta[k]
            rows.append(TagRow(m.name, m.source, m.unit, m.data_type, m.description))
        ids = await upsert_tags(conn, rows)
        for k in missing.tolist():
            reg.db_id[k] = ids[reg.names[k]]

    async def _write(self, batch: Batch, *, batch_key: uuid.UUID | None = None, replay: bool = False) -> None:
        t0 = time.perf_counter()
        async with self.db.connection() as conn:
            await self._prepare(conn)
            assert self.tier is not None
            await self._resolve_tags(conn, batch.key)
            ids = self.registry.db_id[batch.key]
            origin = json.dumps(batch.origin, separators=(",", ":")) if batch.origin else ""
            result = await write_readings(conn, self.tier, batch_key or uuid.uuid4(), origin, ids, batch)
            if self._outages:
                events = list(self._outages)
                await write_outages(conn, events)
                for _ in events:
                    self._outages.popleft()
            if self._dead:
                items = list(self._dead)
                await write_dead_letters(conn, items, _DEAD_LETTER_KEEP)
                for _ in items:
                    self._dead.popleft()
        elapsed = time.perf_counter() - t0
        self.last_commit_us = now_us()
        self._m_write.observe(elapsed)
        self._m_batch.observe(len(batch))
        self._m_latency.observe(max(0.0, (self.last_commit_us - batch.recv_us) / 1e6))
        if result.duplicates:
            self.metrics.points_duplicate.labels(self.slug).inc(result.duplicates)
        if replay:
            self.metrics.points_replayed.labels(self.slug).inc(result.inserted)
            self.metrics.points_written.labels(self.slug, "spool").inc(result.inserted)
        else:
            self._count_written(batch, result.inserted)
        batch.release()
        self._db_succeeded()

    def _count_written(self, batch: Batch, inserted: int) -> None:
        if not batch.origin:
            self.metrics.points_written.labels(self.slug, "").inc(inserted)
            return
        total = sum(batch.origin.values()) or 1
        for src, n in batch.origin.items():
            self.metrics.points_written.labels(self.slug, src).inc(round(inserted * n / total))

    # ------------------------------------------------------------------ spool
    def _spool(self, batch: Batch) -> None:
        uniq, inverse = np.unique(batch.key, return_inverse=True)
        names = [self.registry.names[k] for k in uniq.tolist()]
        local = Batch(inverse.astype(np.int32), batch.ts, batch.value, batch.quality, batch.status, batch.recv_us)
        source = json.dumps(batch.origin, separators=(",", ":")) if batch.origin else ""
        self.spool.append(SpoolRecord(uuid.uuid4(), source, names, local), batch.tokens)
        batch.tokens = []
        self.metrics.points_spooled.labels(self.slug).inc(len(batch))
        self._export_spool()

    def _spool_dropped(self, rows: int, nbytes: int) -> None:
        self.metrics.spool_dropped.labels(self.slug).inc(rows)
        self.metrics.points_dropped.labels(self.slug, "", "spool_full").inc(rows)
        if self.on_system_event:
            self.on_system_event(self.slug, "spool_full", {"dropped_points": rows, "dropped_bytes": nbytes})

    def _export_spool(self) -> None:
        self._m_spool_bytes.set(self.spool.stats.bytes)
        self._m_spool_rows.set(self.spool.stats.rows)

    async def _fsync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval)
            await self.spool.sync_async()
            self._export_spool()

    async def _probe_loop(self) -> None:
        """Prepare the database at start; while it is down and nothing flows, probe it so that
        replay starts promptly when it returns."""
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.breaker.reset_timeout)
            elif not self.spool.empty:
                log.info("tenant %s: %d readings (%d bytes) waiting in the spool from a previous run", self.slug,
                         self.spool.stats.rows, self.spool.stats.bytes)
            if not first and (self._db_ok.is_set() or self.spool.empty or self.inbox.rows):
                continue
            first = False
            if self.breaker.current_state == "open" and not self._breaker_ready():
                continue
            try:
                with self.breaker.calling():
                    async with self.db.connection() as conn:
                        await self._prepare(conn)
                        await conn.fetchval("SELECT 1")
                self._db_succeeded()
            except (pybreaker.CircuitBreakerError, StorageError, TimeoutError, OSError) as exc:
                self._db_failed(exc)

    async def run_maintenance(self, *, force: bool = False) -> dict[str, dict[str, Any]]:
        """Run the jobs that are due (all with ``force``); returns what each job reported."""
        results: dict[str, dict[str, Any]] = {}
        now = time.monotonic()
        due = [j for j in self.maintenance if force or now >= self._job_due.get(j.name, 0.0)]
        if not due:
            return results
        async with self.db.connection() as conn:
            await self._prepare(conn)
            assert self.tier is not None
            for job in due:
                t0 = time.perf_counter()
                try:
                    results[job.name] = await job.run(conn, self.tier, self.cfg, now_us())
                except StorageError as exc:
                    self.metrics.maintenance_errors.labels(self.slug, job.name).inc()
                    log.error("tenant %s: maintenance job %s failed: %s", self.slug, job.name, exc)
                    raise
                except Exception as exc:  # noqa: BLE001 -- one failing job (e.g. SQL error) must not stop the others
                    self.metrics.maintenance_errors.labels(self.slug, job.name).inc()
                    log.error("tenant %s: maintenance job %s failed: %s", self.slug, job.name, exc)
                    results[job.name] = {"error": str(exc)}
                self.metrics.maintenance_seconds.labels(self.slug, job.name).observe(time.perf_counter() - t0)
                for resolution, lag in (results[job.name].pop("lag_seconds", None) or {}).items():
                    self.metrics.rollup_lag.labels(self.slug, resolution).set(lag)
                self._job_due[job.name] = time.monotonic() + job.interval
                if results[job.name]:
                    log.info("tenant %s: %s: %s", self.slug, job.name, results[job.name])
        return results

    async def _maintenance_loop(self) -> None:
        while True:
            await self._db_ok.wait()
            try:
                await self.run_maintenance()
            except (StorageError, TimeoutError, OSError) as exc:
                self._db_failed(exc)
            await asyncio.sleep(min([j.interval for j in self.maintenance] + [5.0]))

    async def _replay_loop(self) -> None:
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            if self.spool.empty or not self._db_ok.is_set():
                continue
            if not self.spool.closed_segments():
                self.spool.rotate()
            try:
                await self._replay_closed()
            except (StorageError, TimeoutError, pybreaker.CircuitBreakerError) as exc:
                self._db_failed(exc)

    async def _replay_closed(self) -> None:
        for seg in self.spool.closed_segments():
            n = 0
            t0 = time.perf_counter()
            for rec in self.spool.read_segment(seg):
                keys = np.array([self.registry.ensure(TagMeta(name, configured=False)) for name in rec.names],
                                dtype=np.int32)
                b = rec.batch
                batch = Batch(keys[b.key] if len(b) else b.key, b.ts, b.value, b.quality, b.status, b.recv_us)
                with self.breaker.calling():
                    await asyncio.wait_for(self._write(batch, batch_key=rec.batch_key, replay=True),
                                           self.write_timeout)
                n += len(batch)
            self.spool.remove_segment(seg)
            self._export_spool()
            log.info("tenant %s: replayed %d readings from %s in %.2fs (%d bytes left in spool)", self.slug, n,
                     seg.path.name, time.perf_counter() - t0, self.spool.stats.bytes)

    # ------------------------------------------------------------------ shutdown
    async def drain(self, run_task: asyncio.Task[None], timeout: float) -> None:
        """Flush the inbox to the database, or to the spool when that does not finish in time."""
        self.inbox.close()
        try:
            await asyncio.wait_for(asyncio.shield(run_task), max(0.1, timeout))
        except TimeoutError:
            log.warning("tenant %s: database did not take the last data within %.1fs; spooling it", self.slug,
                        timeout)
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run_task
        except Exception:  # the writer crashed: whatever is left still goes to the spool below
            log.exception("tenant %s: writer failed during shutdown", self.slug)
        while (rest := self.inbox.take_nowait(max_rows=1 << 30)) is not None:
            self._spool(rest)
        self.spool.sync()
