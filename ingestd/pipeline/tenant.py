"""One tenant's sink: inbox → batcher → database writer, with the disk spool and its replay.

Rules (DESIGN §4-5):

* every flushed batch is either committed (exactly once, via the batch ledger and the readings
  primary key) or appended to the spool; the writer never drops data on a database error;
* durability deadline: a reading accepted from a source is committed or in the spool within
  ``pipeline.durability_deadline`` even when the database hangs instead of refusing. While a write
  runs, inbox data reaching the deadline is moved to the spool, and the batch being written is
  copied there under the *same* batch key (if the write commits after all, the copy is known
  committed and replay skips it; after a crash the ledger makes its replay a no-op) — unless its
  source keeps it until acknowledged (MQTT QoS 1 after commit), where a copy would add nothing;
* a breaker guards the database (fail_max 1, jittered open period growing up to
  ``pipeline.db_retry_max``): while it is open, flushes go straight to the spool;
* when writes succeed again, closed spool segments are replayed oldest first, in groups of up to
  ``replay_rows`` readings between live writes (live data first), and deleted once committed; a record the
  database rejects permanently (not a connectivity problem) is quarantined instead of blocking replay;
* memory is bounded: the inbox holds at most ``inbox_max_rows`` (sources wait when it is full, also
  when the spool cannot keep up), the writer holds one flush, replay one segment;
* outage windows and dead letters are queued in memory (bounded) and written by a side task, so
  that bad side data never blocks readings;
* one tenant's dead database never slows another: each tenant has its own tasks, pool and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pybreaker

from ..config.model import PipelineConfig, TenantConfig
from ..errors import StorageError, StorageSchemaError
from ..metrics import Metrics
from ..model import Batch, now_us
from ..spool import Spool, SpoolRef
from ..storage.maintenance import MaintenanceJob, default_jobs
from ..storage.migrate import Tier, current_tier, migrate
from ..storage.pool import TenantDb
from ..storage.store import DeadLetter, Outage, TagRow, upsert_tags, write_readings
from .breaker import Backoff, BreakerGate
from .inbox import Inbox
from .sidedata import SideDataMixin
from .spooling import RETRY, TRANSIENT, SpoolingMixin
from .tags import TagMeta, TagRegistry

__all__ = ["SystemEvent", "TenantPipeline"]

log = logging.getLogger(__name__)

SystemEvent = Callable[[str, str, dict[str, Any]], None]
"""(tenant, kind, details) — system alarm hook (spool full, database down, ...)."""


class TenantPipeline(SpoolingMixin, SideDataMixin):
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
        self.deadline = max(0.05, pipeline.durability_deadline)
        # spool a little before the deadline: the append itself takes time
        self.spool_after = max(0.02, self.deadline - max(0.1, 0.2 * self.deadline))
        self.guard_tick = max(0.01, min(0.1, self.spool_after / 4))
        self.min_write = self.spool_after / 2
        self.replay_rows = max(20_000, 2 * pipeline.batch_max_rows)
        self.gate = BreakerGate(metrics, "tenant_db", cfg.slug, fail_max=1,
                                backoff=Backoff(1.0, max(1.0, pipeline.db_retry_max), floor=0.25), counts=TRANSIENT)
        self.breaker = self.gate.breaker
        self.tier: Tier | None = None
        self._prepared = False
        self._prepare_lock = asyncio.Lock()
        self._outages: deque[Outage] = deque()
        self._dead: deque[DeadLetter] = deque()
        self._side_wake = asyncio.Event()
        self._replay_wake = asyncio.Event()
        self._db_ok = asyncio.Event()
        self._stalled = False
        self._stall_started = 0.0
        self._spool_failing = False
        self._writing = False
        self._writer_idle = asyncio.Event()
        self._writer_idle.set()
        self.held_rows = 0
        """Rows the writer holds outside the inbox (the flush in flight)."""
        self.last_error: str | None = None
        self.last_commit_us = 0
        self.maintenance: list[MaintenanceJob] = default_jobs(cfg)
        self._job_due: dict[str, float] = {}
        self._bad_exported = (0, 0)
        m = metrics
        self._m_rows = m.inbox_rows.labels(self.slug)
        self._m_wait = m.inbox_waiting.labels(self.slug)
        m.inbox_capacity.labels(self.slug).set(self.inbox.max_rows)
        self._m_spool_bytes = m.spool_bytes.labels(self.slug)
        self._m_spool_rows = m.spool_rows.labels(self.slug)
        self._m_spool_age = m.spool_oldest_age.labels(self.slug)
        self._m_held = m.writer_held_rows.labels(self.slug)
        self._m_up = m.db_up.labels(self.slug)
        self._m_batch = m.batch_rows.labels(self.slug)
        self._m_write = m.write_seconds.labels(self.slug)
        self._m_latency = m.ingest_latency.labels(self.slug)
        self._export_spool()

    # ------------------------------------------------------------------ public API
    def ensure_tag(self, meta: TagMeta, *, deadband: float | None = None, heartbeat: float | None = None) -> int:
        return self.registry.ensure(meta, deadband=deadband, heartbeat_s=heartbeat)

    async def reconfigure(self, cfg: TenantConfig, *, reconnect: bool = False) -> None:
        """Apply changed tenant settings without losing queued or spooled data. ``reconnect`` rebuilds
        the database handle even when the config text is unchanged (the secret behind ``dsn`` rotated)."""
        old, self.cfg = self.cfg, cfg
        if reconnect or (old.dsn, old.pool) != (cfg.dsn, cfg.pool):
            db, self.db = self.db, TenantDb(cfg.slug, cfg.dsn, cfg.pool, application_name=self.db._app)
            self._prepared = False
            await db.close()
        if old.storage != cfg.storage:
            self._prepared = False
        if old.spool_max_bytes != cfg.spool_max_bytes and cfg.spool_max_bytes:
            self.spool.max_bytes = cfg.spool_max_bytes
        if (old.rollups, old.retention, old.storage) != (cfg.rollups, cfg.retention, cfg.storage):
            self.maintenance = default_jobs(cfg)
            self._job_due.clear()

    @property
    def db_healthy(self) -> bool:
        return self._db_ok.is_set()

    async def run(self) -> None:
        """Writer, replay, fsync, probe, side-data and maintenance loops. Returns once the inbox is
        closed and drained."""
        async with asyncio.TaskGroup() as tg:
            helpers = [
                tg.create_task(self._keep_running("replay", self._replay_loop), name=f"replay:{self.slug}"),
                tg.create_task(self._keep_running("fsync", self._fsync_loop), name=f"fsync:{self.slug}"),
                tg.create_task(self._keep_running("probe", self._probe_loop), name=f"probe:{self.slug}"),
                tg.create_task(self._keep_running("side", self._side_loop), name=f"side:{self.slug}"),
                tg.create_task(self._keep_running("maintenance", self._maintenance_loop),
                               name=f"maintenance:{self.slug}"),
            ]
            try:
                await self._writer_loop()
                if self._db_ok.is_set():
                    await self._flush_side()  # source status and dead letters of the last moments
            finally:
                for t in helpers:
                    t.cancel()

    async def close(self) -> None:
        try:
            self.spool.close()
        except OSError as exc:
            log.error("tenant %s: closing the spool failed: %s", self.slug, exc)
        self._export_spool()
        await self.db.close()

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a helper loop; a bug in it is logged and the loop restarted (capped backoff), so that
        it never takes the writer down with it."""
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                await loop()
                return
            except Exception:  # logged with traceback; the writer must keep running
                log.exception("tenant %s: %s loop failed; restarting it", self.slug, name)
            await asyncio.sleep(backoff.next())

    # ------------------------------------------------------------------ writer
    async def _writer_loop(self) -> None:
        inbox = self.inbox
        while True:
            self._m_rows.set(inbox.rows)
            self._m_wait.set(inbox.statistics().waiting_producers)
            batch = await inbox.take()
            if batch is None:
                return
            self.held_rows = len(batch)
            self._m_held.set(self.held_rows)
            try:
                await self._store(batch, inbox.last_put_at, held_upstream=inbox.last_held_upstream)
            finally:
                self.held_rows = 0
                self._m_held.set(0)

    async def _store(self, batch: Batch, put_at: float, *, held_upstream: bool = False) -> None:
        """Commit ``batch`` or spool it. While the write runs, the durability guard spools inbox data
        reaching the deadline, and a copy of ``batch`` itself once it reaches the deadline — but not
        before the write had ``min_write`` seconds (data that waited in the inbox, e.g. at shutdown or
        with ``batch_max_age`` above the deadline, is not copied for a write that takes milliseconds),
        and not when its source holds it until it is durable (``held_upstream``: MQTT QoS 1 messages
        are acknowledged only after the commit and redelivered after a crash, so a copy would add
        nothing but disk traffic — while data behind the write still moves to the spool)."""
        if not self.gate.ready():
            await self._spool_or_hold(batch, uuid.uuid4())
            return
        key = uuid.uuid4()
        write = asyncio.ensure_future(self._attempt(batch, key))
        refs: list[SpoolRef] | None = None
        spooled = False
        started = time.monotonic()
        copy_due = math.inf if held_upstream else max(put_at + self.spool_after, started + self.min_write)
        self._writing = True
        self._writer_idle.clear()
        try:
            while not write.done():
                now = time.monotonic()
                if self.inbox.closed and copy_due == math.inf:
                    copy_due = started + self.min_write  # shutting down: nobody waits for a hung write
                if not spooled and now >= copy_due:
                    self._stall_begins()
                    spooled = True  # before the await: a cancelled append still completes
                    refs = await self._to_spool(batch, key)
                    spooled = refs is not None
                    copy_due = now + self.guard_tick
                    continue
                if spooled and self.inbox.closed:
                    # shutting down: the batch is safe in the spool; do not wait for a hung database,
                    # and send what is left straight to the spool
                    write.cancel()
                    await asyncio.wait((write,), timeout=2.0)
                    self.gate.breaker.open()
                    break
                oldest = self.inbox.oldest_put_at()
                if oldest is not None and now >= oldest + self.spool_after:
                    self._stall_begins()
                    await self._spool_expired()
                    continue
                due = now + self.guard_tick
                if not spooled:
                    due = min(due, copy_due)
                if oldest is not None:
                    due = min(due, oldest + self.spool_after)
                await asyncio.wait((write,), timeout=max(0.001, due - now))
        except asyncio.CancelledError:
            write.cancel()
            if not spooled:
                self._to_spool_now(batch, key)
            raise
        finally:
            self._writing = False
            self._writer_idle.set()
        if self._stalled:
            self._stall_ends(write)
        if not write.done() or write.cancelled():
            if not spooled:
                self._to_spool_now(batch, key)
            return
        exc = write.exception()
        if exc is None:
            for ref in refs or ():
                self.spool.mark_committed(ref)
            self._export_spool()
            return
        if isinstance(exc, pybreaker.CircuitBreakerError):
            pass
        elif isinstance(exc, TRANSIENT):
            self._db_failed(exc)
        else:
            # the database rejected this data (or a bug): keep it; replay isolates and quarantines it
            log.error("tenant %s: writing a batch of %d readings failed; spooled for replay: %r", self.slug,
                      len(batch), exc, exc_info=exc)
        if not spooled:
            await self._spool_or_hold(batch, key)

    async def _attempt(self, batch: Batch, key: uuid.UUID) -> None:
        with self.gate.calling():
            await asyncio.wait_for(self._write(batch, batch_key=key), self.write_timeout)

    def _stall_begins(self) -> None:
        if not self._stalled:
            self.metrics.write_stalls.labels(self.slug).inc()
            self._stalled = True
            self._stall_started = time.monotonic()
            log.warning("tenant %s: database write not done within the durability deadline (%.2fs); spooling "
                        "readings until it returns", self.slug, self.deadline)

    def _stall_ends(self, write: asyncio.Future[None]) -> None:
        self._stalled = False
        took = time.monotonic() - self._stall_started
        if write.done() and not write.cancelled() and write.exception() is None:
            log.warning("tenant %s: stalled database write completed after %.1fs; writing directly again",
                        self.slug, took)
            self._replay_wake.set()

    async def _spool_expired(self) -> None:
        """While a write hangs: move inbox data that reached the deadline to the spool."""
        cutoff = time.monotonic() - self.spool_after
        while (b := self.inbox.take_expired(cutoff)) is not None:
            put_at = self.inbox.last_put_at
            if await self._to_spool(b, uuid.uuid4()) is None:
                self.inbox.put_front(b, put_at)
                return

    def _event(self, kind: str, details: dict[str, Any]) -> None:
        """Raise a system event (→ system alarm); a failing listener never disturbs the data path."""
        if self.on_system_event is None:
            return
        try:
            self.on_system_event(self.slug, kind, details)
        except Exception:  # logged with traceback; readings must keep flowing
            log.exception("tenant %s: system event listener failed on %s", self.slug, kind)

    # ------------------------------------------------------------------ database
    def _db_failed(self, exc: BaseException) -> None:
        msg = str(exc) or type(exc).__name__
        if self._db_ok.is_set() or self.last_error is None:
            log.error("tenant %s: database unavailable, spooling to disk: %s", self.slug, msg)
            self._event("database_down", {"error": msg})
        self.last_error = msg
        self._db_ok.clear()
        self._m_up.set(0)
        if isinstance(exc, StorageSchemaError):
            self._prepared = False

    def _db_succeeded(self) -> None:
        if not self._db_ok.is_set():
            if self.last_error is not None:
                log.warning("tenant %s: database is back", self.slug)
                self._event("database_up", {})
            self._db_ok.set()
            self._m_up.set(1)
            self.last_error = None
            if self._outages or self._dead:
                self._side_wake.set()
        self._replay_wake.set()

    async def _prepare(self, conn: Any) -> None:
        if self._prepared:
            return
        async with self._prepare_lock:  # writer, replay and probe may arrive together
            if not self._prepared:
                await self._prepare_now(conn)

    async def _prepare_now(self, conn: Any) -> None:
        if self.auto_migrate:
            report = await migrate(conn, self.cfg.storage)
            self.tier = report.tier
            log.info("tenant %s: %s", self.slug, report.describe())
        else:
            self.tier = await current_tier(conn)
        for t in Tier:
            self.metrics.storage_tier.labels(self.slug, t.value).set(t.numeric if t is self.tier else 0)
        self.registry.db_id[: len(self.registry)] = -1  # re-resolve every tag (database may be new)
        configured = [k for k, m in enumerate(self.registry.meta) if m.configured]
        try:
            await self._resolve_tags(conn, np.asarray(configured, dtype=np.int32))
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 -- tags are resolved again with each batch; never block on one
            log.error("tenant %s: registering configured tags failed: %r", self.slug, exc)
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

    async def _write(self, batch: Batch, *, batch_key: uuid.UUID | None = None, replay: bool = False,
                     origin: str | None = None) -> None:
        t0 = time.perf_counter()
        async with self.db.connection() as conn:
            await self._prepare(conn)
            assert self.tier is not None
            await self._resolve_tags(conn, batch.key)
            ids = self.registry.db_id[batch.key]
            if origin is None:
                origin = json.dumps(batch.origin, separators=(",", ":")) if batch.origin else ""
            result = await write_readings(conn, self.tier, batch_key or uuid.uuid4(), origin, ids, batch)
        elapsed = time.perf_counter() - t0
        self.last_commit_us = now_us()
        self._m_write.observe(elapsed)
        self._m_batch.observe(len(batch))
        if result.duplicates:
            self.metrics.points_duplicate.labels(self.slug).inc(result.duplicates)
        if replay:
            self.metrics.points_replayed.labels(self.slug).inc(result.inserted)
            self.metrics.points_written.labels(self.slug, "spool").inc(result.inserted)
        else:
            self._m_latency.observe(max(0.0, (self.last_commit_us - batch.recv_us) / 1e6))
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

    # ------------------------------------------------------------------ probe
    async def _probe_loop(self) -> None:
        """Prepare the database at start; afterwards, while it is down and something waits for it
        (spool, source status, dead letters) but no live data flows, probe it when the breaker allows,
        so that replay starts promptly when it returns. Never faster than the breaker's open period."""
        if not self.spool.empty:
            log.info("tenant %s: %d readings (%d bytes) waiting in the spool from a previous run", self.slug,
                     self.spool.stats.rows, self.spool.stats.bytes)
        await self._probe()
        while True:
            await asyncio.sleep(min(1.0, max(0.05, self.gate.remaining())))
            if self._db_ok.is_set() or self._writing or not self.gate.ready():
                continue
            await self._probe()

    async def _probe(self) -> None:
        try:
            with self.gate.calling():
                async with asyncio.timeout(self.write_timeout), self.db.connection() as conn:
                    await self._prepare(conn)
                    await conn.fetchval("SELECT 1")
            self._db_succeeded()
        except RETRY as exc:
            if not isinstance(exc, pybreaker.CircuitBreakerError):
                self._db_failed(exc)

    # ------------------------------------------------------------------ maintenance
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
            except TRANSIENT as exc:
                self._db_failed(exc)
            await asyncio.sleep(min([j.interval for j in self.maintenance] + [5.0]))

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
            self._to_spool_now(rest, uuid.uuid4())
        try:
            self.spool.sync()
        except OSError as exc:
            self._spool_failed(exc)
