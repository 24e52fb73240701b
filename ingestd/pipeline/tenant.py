"""One tenant's sink: inbox → batcher → database writer, with the disk spool and its replay.

Rules (DESIGN §4-5):

* every flushed batch is either committed (exactly once, via the batch ledger and the readings
  primary key) or appended to the spool; the writer never drops data on a database error;
* durability deadline: a reading accepted from a source is committed or in the spool within
  ``pipeline.durability_deadline`` even when the database hangs instead of refusing. When a write
  has not finished by then, its batch is spooled under the *same* batch key (if the write commits
  after all, the spooled copy is known committed and replay skips it; after a crash the ledger makes
  its replay a no-op), and inbox data reaching the deadline is spooled too until the write returns;
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
from ..spool import Spool, SpoolRecord, SpoolRef
from ..storage.maintenance import MaintenanceJob, default_jobs
from ..storage.migrate import Tier, current_tier, migrate
from ..storage.pool import TenantDb
from ..storage.store import DeadLetter, Outage, TagRow, upsert_tags, write_dead_letters, write_outages, write_readings
from .breaker import Backoff, BreakerGate
from .inbox import Inbox
from .tags import TagMeta, TagRegistry

__all__ = ["SystemEvent", "TenantPipeline"]

log = logging.getLogger(__name__)

SystemEvent = Callable[[str, str, dict[str, Any]], None]
"""(tenant, kind, details) — system alarm hook (spool full, database down, ...)."""

_DEAD_LETTER_MEMORY = 1000
_DEAD_LETTER_KEEP = 10_000
_OUTAGE_MEMORY = 10_000
_REPLAY_NS = uuid.UUID("6f1d1f0e-3c3a-4b8e-9a52-1c0ffee5f001")
# Failures that say "the database is not usable right now" (the breaker counts only these); anything
# else raised by a write is the database rejecting this data and must not hold back other data.
_TRANSIENT: tuple[type[BaseException], ...] = (StorageError, TimeoutError, OSError)
_RETRY: tuple[type[BaseException], ...] = (*_TRANSIENT, pybreaker.CircuitBreakerError)
"""Transient failures plus "the breaker is open": stop, retry later."""


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
        self.inbox.set_limit(2 * pipeline.batch_max_rows)  # until the writer's throughput is known
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
                                backoff=Backoff(1.0, max(1.0, pipeline.db_retry_max), floor=0.25), counts=_TRANSIENT)
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
        self._write_rate = 0.0
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

    def record_outage(self, event: Outage) -> None:
        if len(self._outages) >= _OUTAGE_MEMORY:
            lost = self._outages.popleft()
            log.warning("tenant %s: too many unwritten source status events; oldest (%s) discarded", self.slug,
                        lost.source)
        self._outages.append(event)
        self._side_wake.set()

    def dead_letter(self, item: DeadLetter) -> None:
        if len(self._dead) >= _DEAD_LETTER_MEMORY:
            self.metrics.dead_letters_dropped.labels(self.slug).inc()
            return
        self._dead.append(item)
        self._side_wake.set()

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
                await self._store(batch, inbox.last_put_at)
            finally:
                self.held_rows = 0
                self._m_held.set(0)

    async def _store(self, batch: Batch, put_at: float) -> None:
        """Commit ``batch`` or spool it. While the write runs, the durability guard spools inbox data
        reaching the deadline, and a copy of ``batch`` itself once it reaches the deadline — but not
        before the write had ``min_write`` seconds (data that waited in the inbox, e.g. at shutdown or
        with ``batch_max_age`` above the deadline, is not copied for a write that takes milliseconds)."""
        if not self.gate.ready():
            await self._spool_or_hold(batch, uuid.uuid4())
            return
        key = uuid.uuid4()
        write = asyncio.ensure_future(self._attempt(batch, key))
        refs: list[SpoolRef] | None = None
        spooled = False
        copy_due = max(put_at + self.spool_after, time.monotonic() + self.min_write)
        self._writing = True
        self._writer_idle.clear()
        try:
            while not write.done():
                now = time.monotonic()
                if not spooled and now >= copy_due:
                    self._stall_begins()
                    spooled = True  # before the await: a cancelled append still completes
                    refs = await self._to_spool(batch, key)
                    spooled = refs is not None
                    copy_due = now + self.guard_tick
                    continue
                if spooled and self.inbox.closed:
                    # shutting down: the batch is safe in the spool; do not wait for a hung database
                    write.cancel()
                    await asyncio.wait((write,), timeout=2.0)
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
        elif isinstance(exc, _TRANSIENT):
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

    # ------------------------------------------------------------------ database
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
        except _TRANSIENT:
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
        if not replay:
            self._adapt_inbox(len(batch), elapsed)
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

    def _adapt_inbox(self, rows: int, seconds: float) -> None:
        """Size the inbox by time, not only by rows: at most what the writer commits in half the
        durability deadline (EWMA of its throughput), never below two flushes. A backlog then waits
        at the source (the broker, the poll schedule) instead of ageing past the deadline in memory."""
        if seconds <= 0 or rows < 1:
            return
        rate = rows / seconds
        self._write_rate = rate if self._write_rate == 0 else 0.8 * self._write_rate + 0.2 * rate
        self.inbox.set_limit(max(2 * self.inbox.batch_rows, int(self._write_rate * self.spool_after / 2)))

    def _count_written(self, batch: Batch, inserted: int) -> None:
        if not batch.origin:
            self.metrics.points_written.labels(self.slug, "").inc(inserted)
            return
        total = sum(batch.origin.values()) or 1
        for src, n in batch.origin.items():
            self.metrics.points_written.labels(self.slug, src).inc(round(inserted * n / total))

    # ------------------------------------------------------------------ spool
    def _records(self, batch: Batch, key: uuid.UUID) -> list[SpoolRecord]:
        """``batch`` as spool records: one, or several when it would not fit a segment (each then
        gets its own key derived from ``key``: a shared key would make the ledger skip the rest)."""
        per_record = max(1, self.spool.segment_bytes // 96)  # ≤ 96 bytes per row incl. its tag name
        n = len(batch)
        if n <= per_record:
            return [self._record(batch, key)]
        out = []
        for i, lo in enumerate(range(0, n, per_record)):
            part = batch.take(np.arange(lo, min(n, lo + per_record)))
            part.origin = batch.origin
            out.append(self._record(part, uuid.uuid5(key, str(i))))
        return out

    def _record(self, batch: Batch, key: uuid.UUID) -> SpoolRecord:
        uniq, inverse = np.unique(batch.key, return_inverse=True)
        names = [self.registry.names[k] for k in uniq.tolist()]
        local = Batch(inverse.astype(np.int32).reshape(-1), batch.ts, batch.value, batch.quality, batch.status,
                      batch.recv_us)
        source = json.dumps(batch.origin, separators=(",", ":")) if batch.origin else ""
        return SpoolRecord(key, source, names, local)

    async def _to_spool(self, batch: Batch, key: uuid.UUID) -> list[SpoolRef] | None:
        """Append ``batch`` to the spool (worker thread); its tokens are released once durable.
        None when the spool cannot take it (disk full, I/O error): the caller keeps the batch."""
        records = self._records(batch, key)
        tokens, batch.tokens = batch.tokens, []
        try:
            refs = await self.spool.append_many_async(records, tokens)
        except OSError as exc:
            batch.tokens = tokens + batch.tokens
            self._spool_failed(exc)
            return None
        self._spool_ok(len(batch))
        return refs

    def _to_spool_now(self, batch: Batch, key: uuid.UUID) -> None:
        """Blocking append (cancellation and shutdown paths); counts what cannot be kept."""
        records = self._records(batch, key)
        tokens, batch.tokens = batch.tokens, []
        try:
            self.spool.append_many(records, tokens)
        except OSError as exc:
            self._spool_failed(exc)
            self.metrics.points_dropped.labels(self.slug, "", "spool_error").inc(len(batch))
            log.error("tenant %s: %d readings lost at shutdown: neither the database nor the spool took them",
                      self.slug, len(batch))
            return
        self._spool_ok(len(batch))

    def _spool_ok(self, rows: int) -> None:
        self.metrics.points_spooled.labels(self.slug).inc(rows)
        if self._spool_failing:
            self._spool_failing = False
            log.warning("tenant %s: spool writes work again", self.slug)
        self._export_spool()

    def _spool_failed(self, exc: OSError) -> None:
        self.metrics.spool_errors.labels(self.slug).inc()
        if not self._spool_failing:
            self._spool_failing = True
            log.error("tenant %s: cannot append to the spool (%s); holding data in memory and blocking sources "
                      "until the database or the spool takes it", self.slug, exc)
            if self.on_system_event:
                self.on_system_event(self.slug, "spool_error", {"error": str(exc)})

    async def _spool_or_hold(self, batch: Batch, key: uuid.UUID) -> None:
        """Spool ``batch``; while the spool fails, keep it (the inbox fills up and sources wait) and
        retry the database and the spool with capped backoff — never drop it."""
        backoff: Backoff | None = None
        try:
            while await self._to_spool(batch, key) is None:
                backoff = backoff or Backoff(0.2, 5.0, floor=0.1)
                await asyncio.sleep(backoff.next())
                if self.gate.ready():
                    try:
                        await self._attempt(batch, key)
                    except _RETRY as exc:
                        if not isinstance(exc, pybreaker.CircuitBreakerError):
                            self._db_failed(exc)
                    else:
                        return
        except asyncio.CancelledError:
            if backoff is not None:  # shutting down while neither the database nor the spool takes it
                self.metrics.points_dropped.labels(self.slug, "", "spool_error").inc(len(batch))
                log.error("tenant %s: %d readings lost at shutdown: neither the database nor the spool took them",
                          self.slug, len(batch))
            raise

    def _spool_dropped(self, rows: int, nbytes: int) -> None:
        self.metrics.spool_dropped.labels(self.slug).inc(rows)
        self.metrics.points_dropped.labels(self.slug, "", "spool_full").inc(rows)
        if self.on_system_event:
            self.on_system_event(self.slug, "spool_full", {"dropped_points": rows, "dropped_bytes": nbytes,
                                                           "max_bytes": self.spool.max_bytes})

    def _export_spool(self) -> None:
        st = self.spool.stats
        self._m_spool_bytes.set(st.bytes)
        self._m_spool_rows.set(st.rows)
        self._m_spool_age.set(max(0.0, (now_us() - st.oldest_recv_us) / 1e6) if st.oldest_recv_us else 0.0)
        torn, corrupt = self._bad_exported
        if st.torn_records > torn:
            self.metrics.spool_bad_records.labels(self.slug, "torn").inc(st.torn_records - torn)
        if st.corrupt_records > corrupt:
            self.metrics.spool_bad_records.labels(self.slug, "corrupt").inc(st.corrupt_records - corrupt)
        self._bad_exported = (st.torn_records, st.corrupt_records)

    async def _fsync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval)
            try:
                await self.spool.sync_async()
            except OSError as exc:
                self._spool_failed(exc)  # tokens stay unreleased: those messages are not acknowledged
            self._export_spool()

    # ------------------------------------------------------------------ probe and side data
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
        except _RETRY as exc:
            if not isinstance(exc, pybreaker.CircuitBreakerError):
                self._db_failed(exc)

    async def _side_loop(self) -> None:
        backoff = Backoff(1.0, 30.0, floor=0.5)
        while True:
            await self._side_wake.wait()
            self._side_wake.clear()
            await self._db_ok.wait()
            await self._flush_side()
            if self._outages or self._dead:
                await asyncio.sleep(backoff.next())  # not written (database trouble): retry, capped backoff
                self._side_wake.set()
            else:
                backoff.reset()

    async def _flush_side(self) -> None:
        """Write queued source status events and dead letters; failures never touch readings."""
        if not self._outages and not self._dead:
            return
        try:
            async with asyncio.timeout(self.write_timeout), self.db.connection() as conn:
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
        except _TRANSIENT as exc:
            log.debug("tenant %s: source status/dead letters not written yet: %s", self.slug, exc)
        except Exception as exc:  # noqa: BLE001 -- data the database rejects must never block the queue
            log.error("tenant %s: the database rejected %d source status event(s) and %d dead letter(s); "
                      "discarded: %r", self.slug, len(self._outages), len(self._dead), exc)
            self.metrics.dead_letters_dropped.labels(self.slug).inc(len(self._dead))
            self._outages.clear()
            self._dead.clear()

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
            except _TRANSIENT as exc:
                self._db_failed(exc)
            await asyncio.sleep(min([j.interval for j in self.maintenance] + [5.0]))

    # ------------------------------------------------------------------ replay
    async def _replay_loop(self) -> None:
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            if self.spool.empty or not self._db_ok.is_set() or self._stalled:
                continue
            try:
                await self._replay()
            except _RETRY as exc:
                if not isinstance(exc, pybreaker.CircuitBreakerError):
                    self._db_failed(exc)

    def _replay_paused(self) -> bool:
        return not self._db_ok.is_set() or self._stalled

    async def _replay(self) -> None:
        """Replay closed segments oldest first; resumes where it stopped (in memory) or, after a
        restart, from the segment start (already committed groups are no-ops via the ledger)."""
        if not self.spool.closed_segments():
            await self.spool.rotate_async()
        for seg in self.spool.closed_segments():
            if self._replay_paused():
                return
            if seg.dropped:
                continue
            seg.replaying = True
            try:
                records = await self.spool.read_segment_async(seg) if seg.replay_pos < seg.records else []
                t0 = time.perf_counter()
                n = 0
                pos = seg.replay_pos
                while pos < len(records):
                    if seg.dropped or self._replay_paused():
                        return
                    end, rows = pos, 0
                    while end < len(records) and (end == pos or rows + len(records[end].batch) <= self.replay_rows):
                        rows += len(records[end].batch)
                        end += 1
                    todo = [r for r in records[pos:end] if r.batch_key not in seg.committed]
                    if todo:
                        await self._writer_idle.wait()  # live data first: replay fills the gaps between writes
                        await self._replay_group(todo)
                    self.spool.mark_replayed(seg, end - pos, sum(len(r.batch) for r in todo))
                    n += sum(len(r.batch) for r in todo)
                    pos = end
                    self._export_spool()
                records = []  # free this segment before reading the next one
            finally:
                seg.replaying = False
            await self.spool.remove_segment_async(seg)
            self._export_spool()
            took = time.perf_counter() - t0
            log.info("tenant %s: replayed %d readings from %s in %.2fs (%.0f/s; %d bytes left in spool)", self.slug,
                     n, seg.path.name, took, n / took if took > 0 else 0.0, self.spool.stats.bytes)

    def _local_batch(self, rec: SpoolRecord) -> Batch:
        index = self.registry.index
        keys = np.empty(len(rec.names), dtype=np.int32)
        for i, name in enumerate(rec.names):
            k = index.get(name)
            keys[i] = k if k is not None else self.registry.ensure(TagMeta(name, configured=False))
        b = rec.batch
        return Batch(keys[b.key] if len(b) else b.key, b.ts, b.value, b.quality, b.status, b.recv_us)

    async def _replay_group(self, records: list[SpoolRecord]) -> None:
        batch = Batch.concat([self._local_batch(r) for r in records])
        if len(records) == 1:
            key, origin = records[0].batch_key, records[0].source
        else:  # deterministic: the same group after a restart gets the same key (ledger no-op)
            key = uuid.uuid5(_REPLAY_NS, b"".join(r.batch_key.bytes for r in records).hex())
            origin = "spool"
        try:
            with self.gate.calling():
                await asyncio.wait_for(self._write(batch, batch_key=key, replay=True, origin=origin),
                                       self.write_timeout)
        except _RETRY:
            raise
        except Exception as exc:  # noqa: BLE001 -- the database rejects this data itself: isolate and quarantine
            if len(records) > 1:
                for r in records:
                    await self._replay_group([r])
                return
            rec = records[0]
            kept = await asyncio.to_thread(self.spool.quarantine, rec, repr(exc))
            self.metrics.spool_quarantined.labels(self.slug).inc(len(rec.batch))
            if not kept:
                self.metrics.points_dropped.labels(self.slug, "", "quarantine_full").inc(len(rec.batch))
            if self.on_system_event:
                self.on_system_event(self.slug, "spool_quarantine", {"points": len(rec.batch), "error": repr(exc)})

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
