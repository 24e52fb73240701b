"""The asynchronous shell of one tenant's alarm engine: queue, load, evaluation loop, writer, outbox sender.

Tasks per tenant (all on the daemon's event loop):

* ``load`` → ``eval``: waits for the tenant database (migrated), loads ``alarm_state`` (checked against the
  journal heads; an alarm whose journal is ahead of its state row is rebuilt by replay), binds, then runs
  the evaluation loop: queued batches (:meth:`TenantAlarms.feed` is the O(1) router listener), timers from
  the deadline heap, and a 1 s tick (comm loss, stale tags, gauges). Batches that arrive before the state
  is loaded wait in the (bounded) queue; beyond it they are counted
  (``ingestd_alarm_samples_dropped_total{reason="queue_full"}``), not evaluated.
* ``writer``: flushes the write buffer — immediately for transitions, at most once a second for evaluator
  snapshots only — in one transaction each. On failure the buffer keeps everything in order (bounded),
  ``system@db`` is raised and intents go to the sender directly until the database is back.
* ``sender``: :class:`~alarms.outbox.OutboxSender`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from ingestd.config.load import IngestdConfig
from ingestd.config.model import PoolConfig
from ingestd.config.types import SecretUnavailable
from ingestd.errors import StorageError, StorageUnavailable
from ingestd.model import Batch
from ingestd.pipeline.tenant import TenantPipeline
from ingestd.storage.pool import TenantDb

from . import store
from .clock import Clock
from .errors import InvalidOperation
from .instance import SourceState
from .links import AckLinks
from .metrics import AlarmMetrics
from .model import AlarmRecord, NotificationIntent, Operator, ShelveKind
from .notifiers.teams import TeamsNotifier
from .outbox import OutboxSender
from .replay import replay_one
from .runtime import AlarmCore

__all__ = ["TenantAlarms", "ack_links"]

log = logging.getLogger(__name__)

_MAX_QUEUED_ROWS: Final = 1_000_000
_REBIND_EVERY_S: Final = 0.25
_TOUCH_EVERY_S: Final = 1.0
_PASS_ROWS: Final = 500_000
_PERSIST_WAIT_S: Final = 5.0
_DB_TIMEOUT_S: Final = 30.0


def ack_links(cfg: IngestdConfig, tenant: str) -> AckLinks | None:
    """Signed Acknowledge links for cards, if ``api.public_url`` and ``api.link_secret`` are set."""
    api = cfg.api
    if api.public_url is None or api.link_secret is None:
        return None
    try:
        key = api.link_secret.reveal()
    except SecretUnavailable as exc:
        log.error("api.link_secret unavailable (%s): cards are sent without Acknowledge links", exc)
        return None
    ttl = cfg.alarms.policy_for(tenant).link_ttl or api.link_ttl
    return AckLinks(key, api.public_url, ttl_s=ttl)


class TenantAlarms:
    def __init__(self, tp: TenantPipeline, cfg: IngestdConfig, *, clock: Clock, metrics: AlarmMetrics,
                 notifier: TeamsNotifier, source_state: SourceState, instance: str = "") -> None:
        self.slug = tp.slug
        self.tp = tp
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.instance = instance
        self.db = self._make_db(tp)
        self.core = AlarmCore(tp.slug, tp.registry, cfg, metrics, source_state, tp.ensure_tag, self._direct)
        self.sender = OutboxSender(tp.slug, cfg.alarms, self.db, notifier, ack_links(cfg, tp.slug), clock, metrics,
                                   self._route_event)
        self.loaded = asyncio.Event()
        self.wants = self.core.wants_samples
        self._queue: deque[Batch] = deque()
        self._queued_rows = 0
        self._qwake = asyncio.Event()
        self._write_wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._written = asyncio.Condition()
        self._last_flush = 0.0
        self._next_bind = 0.0
        self._defer_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._sender_task: asyncio.Task[None] | None = None
        self._m_dropped = metrics.samples_dropped
        self._m_eval = metrics.eval_seconds.labels(self.slug)
        metrics.loaded.labels(self.slug).set(0)

    def _make_db(self, tp: TenantPipeline) -> TenantDb:
        c = tp.cfg.pool
        pool = PoolConfig(max_size=2, idle_timeout=c.idle_timeout, connect_timeout=c.connect_timeout,
                          command_timeout=c.command_timeout)
        app = f"ingestd-alarms:{self.instance}" if self.instance else "ingestd-alarms"
        return TenantDb(tp.slug, tp.cfg.dsn, pool, application_name=app)

    # ------------------------------------------------------------------------------------------ input
    def feed(self, batch: Batch) -> None:
        """Router listener path: O(1), never blocks."""
        n = len(batch)
        if self._queued_rows + n > _MAX_QUEUED_ROWS:
            self._m_dropped.labels(self.slug, "queue_full").inc(n)
            return
        # columns only: the pipeline owns the batch and its durability tokens
        self._queue.append(Batch(batch.key, batch.ts, batch.value, batch.quality, batch.status, batch.recv_us))
        self._queued_rows += n
        self._qwake.set()

    def system_event(self, kind: str) -> None:
        if not self.loaded.is_set():
            log.warning("tenant %s: %s before the alarm state was loaded: no system alarm", self.slug, kind)
            return
        self.core.system_event(kind, self.clock.now_us())
        self._wake_writer()
        if kind == "database_up":
            self._write_wake.set()
            self._urgent.set()

    def _route_event(self, route: str, ok: bool, detail: str) -> None:
        if self.loaded.is_set():
            self.core.route_event(route, ok, self.clock.now_us())
            self._wake_writer()

    def _direct(self, intents: Sequence[NotificationIntent]) -> None:
        self.sender.direct(intents)

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._main(), name=f"alarms:{self.slug}"),
                       asyncio.create_task(self._writer(), name=f"alarms:writer:{self.slug}")]

    async def _main(self) -> None:
        rows = await self._load()
        now = self.clock.now_us()
        self.core.attach(rows, now)
        self.loaded.set()
        self.metrics.loaded.labels(self.slug).set(1)
        self._wake_writer()
        log.info("tenant %s: alarm engine running: %d alarm(s), %d restored from the database", self.slug,
                 len(self.core.alarms), len(rows))
        self._sender_task = asyncio.create_task(self.sender.run(), name=f"alarms:sender:{self.slug}")
        await self._eval_loop()

    async def stop(self) -> None:
        """Evaluate what is queued, let deliveries in flight finish (bounded), write the state. Every wait is
        bounded: a stuck database or webhook never holds the daemon's shutdown."""
        main = self._tasks[0] if self._tasks else None
        await self._cancel(main, "evaluation")
        if self.loaded.is_set():
            now = self.clock.now_us()
            try:  # the last queued batches (sources are stopped already)
                self._drain(now, final=True)
                self.core.run_timers(now)
            except Exception:  # a bug here must not prevent writing the state below
                log.exception("tenant %s: evaluating the last batches at shutdown failed", self.slug)
            for aid in self.core.touched():
                self.core.buffer.touch(aid)
        if self._sender_task is not None:
            try:
                async with asyncio.timeout(_PERSIST_WAIT_S + 5.0):
                    await self.sender.close(_PERSIST_WAIT_S)
            except TimeoutError:
                log.error("tenant %s: notification outbox marks not written at shutdown (resent at start)", self.slug)
            await self._cancel(self._sender_task, "sender")
        await self._cancel(self._tasks[1] if len(self._tasks) > 1 else None, "writer")
        if self.loaded.is_set() and not self.core.buffer.empty:
            try:
                async with asyncio.timeout(_PERSIST_WAIT_S):
                    await self._flush_once()
            except (StorageError, OSError, TimeoutError) as exc:
                log.error("tenant %s: %d alarm journal event(s) not written at shutdown (database: %s)", self.slug,
                          len(self.core.buffer), exc)
        await self.db.close()

    async def _cancel(self, task: asyncio.Task[None] | None, what: str) -> None:
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_PERSIST_WAIT_S)
        if not done:
            log.error("tenant %s: alarm %s task did not stop in time", self.slug, what)
        elif not task.cancelled() and (exc := task.exception()) is not None:
            log.error("tenant %s: alarm %s task failed: %r", self.slug, what, exc, exc_info=exc)

    async def reconfigure(self, tp: TenantPipeline, cfg: IngestdConfig) -> None:
        old_db = None
        if (tp.cfg.dsn, tp.cfg.pool) != (self.tp.cfg.dsn, self.tp.cfg.pool):
            old_db, self.db = self.db, self._make_db(tp)
            self.sender.db = self.db
        self.tp = tp
        self.cfg = cfg
        self.sender.reconfigure(cfg.alarms, ack_links(cfg, self.slug))
        if self.loaded.is_set():
            self.core.reconfigure(cfg, self.clock.now_us())
            self._wake_writer()
            self._qwake.set()
        else:
            self.core.cfg = cfg  # bound with it once the state is loaded
        self.wants = self.core.wants_samples
        if old_db is not None:
            await old_db.close()

    # ------------------------------------------------------------------------------------------ load
    async def _load(self) -> list[store.StateRow]:
        delay, warned = 0.1, False
        while True:
            try:
                async with asyncio.timeout(_DB_TIMEOUT_S), self.db.connection() as conn:
                    if await store.tables_ready(conn):
                        return await self._load_rows(conn)
            except (StorageError, OSError, TimeoutError) as exc:
                if not warned:
                    warned = True
                    log.warning("tenant %s: alarm state not loaded yet (%s); evaluation starts when the database "
                                "is reachable", self.slug, exc)
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 1.5)

    async def _load_rows(self, conn: Any) -> list[store.StateRow]:
        rows = await store.load_states(conn)
        heads = await store.journal_heads(conn)
        behind = {r.alarm_id for r in rows if heads.get(r.alarm_id, 0) > int(r.record.get("seq", 0))}
        if not behind:
            return rows
        events = await store.journal_events(conn, self.slug, alarm_ids=sorted(behind))
        out = []
        for r in rows:
            if r.alarm_id in behind:
                rec = replay_one(r.alarm_id, self.slug, events)
                log.warning("tenant %s: alarm %s: state row behind its journal (seq %s < %d); rebuilt from the "
                            "journal", self.slug, r.alarm_id, r.record.get("seq"), rec.seq)
                r = replace(r, record=rec.to_dict(), eval_state={})
            out.append(r)
        return out

    # ------------------------------------------------------------------------------------------ evaluation
    async def _eval_loop(self) -> None:
        next_tick = time.monotonic() + 1.0
        gauges, exported = 0, -1
        while True:
            mono = time.monotonic()
            timeout = next_tick - mono
            due = self.core.next_due()
            if due is not None:
                timeout = min(timeout, (due - self.clock.now_us()) / 1e6)
            deferred = self._defer_until > mono
            if deferred:
                timeout = min(timeout, self._defer_until - mono)
            if not self._queue or deferred:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, timeout)):
                        await self._qwake.wait()
            self._qwake.clear()
            t0 = time.perf_counter()
            now = self.clock.now_us()
            had = self.core.buffer.seq
            try:
                self._drain(now)
                self.core.run_timers(now)
                if time.monotonic() >= next_tick:
                    next_tick = max(next_tick + 1.0, time.monotonic() + 0.5)
                    self.core.tick(now)
                    gauges += 1
                    if self.core.buffer.seq != exported or gauges % 5 == 0:
                        exported = self.core.buffer.seq
                        self.core.export_gauges()
            except Exception:  # a bug must not silence the tenant's alarms: logged, the loop goes on
                log.exception("tenant %s: alarm evaluation failed; continuing with the next batch", self.slug)
                self._m_dropped.labels(self.slug, "error").inc()
            if self.core.buffer.seq != had:
                self._wake_writer()
            self._m_eval.observe(time.perf_counter() - t0)
            await asyncio.sleep(0)

    def _drain(self, now: int, *, final: bool = False) -> None:
        core, budget = self.core, _PASS_ROWS
        while self._queue and budget > 0:
            b = self._queue[0]
            if b.key.shape[0] and int(b.key.max()) >= core.bound_keys:
                mono = time.monotonic()
                if mono < self._next_bind and not final:
                    self._defer_until = self._next_bind
                    return
                core.rebind(now)
                self._next_bind = mono + _REBIND_EVERY_S
            self._queue.popleft()
            self._queued_rows -= len(b)
            budget -= len(b)
            core.process(b, now)
        self._defer_until = 0.0
        if self._queue:
            self._qwake.set()  # more to do: yield to the loop, then continue

    # ------------------------------------------------------------------------------------------ writer
    def _wake_writer(self) -> None:
        if self.core.buffer.has_events:
            self._urgent.set()
        self._write_wake.set()

    async def _writer(self) -> None:
        backoff = 0.5
        while True:
            await self._write_wake.wait()
            self._write_wake.clear()
            if not self._urgent.is_set():
                delay = self._last_flush + _TOUCH_EVERY_S - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._urgent.wait()
            self._urgent.clear()
            if not self.loaded.is_set() or self.core.buffer.empty:
                continue
            try:
                await self._flush_once()
            except (StorageError, OSError, TimeoutError) as exc:
                self._db_failed(exc)
            except Exception:  # a bug or a row the database rejects: logged, kept, retried (bounded buffer)
                log.exception("tenant %s: writing alarm state failed; kept in memory and retried", self.slug)
                self._db_failed(StorageUnavailable("write rejected"))
            else:
                backoff = 0.5
                continue
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)
            self._write_wake.set()
            self._urgent.set()

    async def _flush_once(self) -> None:
        core = self.core
        p = core.buffer.take()
        if not p:
            return
        try:
            states = core.state_rows(p.dirty)
            async with asyncio.timeout(_DB_TIMEOUT_S), self.db.connection() as conn:
                await store.write(conn, states, p.events, p.intents)
        except BaseException:
            core.buffer.put_back(p)
            raise
        core.buffer.committed(p)
        self._last_flush = time.monotonic()
        async with self._written:
            self._written.notify_all()
        if core.db_down:
            core.db_down = False
            log.warning("tenant %s: alarm journal writes work again (%d buffered event(s) written)", self.slug,
                        len(p.events))
            core.set_db_flag("alarms", False, self.clock.now_us())
            self._wake_writer()
        self.sender.wake()
        if not core.buffer.empty:
            self._wake_writer()

    def _db_failed(self, exc: BaseException) -> None:
        core = self.core
        if core.db_down:
            return
        core.db_down = True
        log.error("tenant %s: alarm journal cannot be written (%s); evaluating in memory, notifications sent "
                  "directly, %d event(s) buffered", self.slug, exc, len(core.buffer))
        self.sender.direct(core.buffer.intents())
        core.set_db_flag("alarms", True, self.clock.now_us())

    async def persisted(self, seq: int) -> None:
        """Wait (bounded) until the write buffer up to ``seq`` is committed; at once while the DB is down."""
        self._wake_writer()
        deadline = time.monotonic() + _PERSIST_WAIT_S
        async with self._written:
            while self.core.buffer.written < seq and not self.core.db_down:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._written.wait()

    # ------------------------------------------------------------------------------------------ operations
    def _ready(self) -> None:
        if not self.loaded.is_set():
            raise StorageUnavailable(f"tenant {self.slug}: alarm state not loaded yet (database unreachable)")

    async def ack(self, alarm_id: str, op: Operator, *, event_id: str | None = None) -> AlarmRecord:
        self._ready()
        rec, seq = self.core.ack(alarm_id, op, self.clock.now_us(), event_id=event_id)
        await self.persisted(seq)
        return rec

    async def reset(self, alarm_id: str, op: Operator) -> AlarmRecord:
        self._ready()
        out, seq = self.core.reset(alarm_id, op, self.clock.now_us())
        await self.persisted(seq)
        if out.refused is not None:
            raise InvalidOperation(f"reset refused: {out.refused}")
        return out.record

    async def shelve(self, alarm_id: str, op: Operator, *, kind: ShelveKind, duration_us: int | None) -> AlarmRecord:
        self._ready()
        rec, seq = self.core.shelve(alarm_id, op, self.clock.now_us(), kind=kind, duration_us=duration_us)
        await self.persisted(seq)
        return rec

    async def unshelve(self, alarm_id: str, op: Operator) -> AlarmRecord:
        self._ready()
        rec, seq = self.core.unshelve(alarm_id, op, self.clock.now_us())
        await self.persisted(seq)
        return rec

    async def set_out_of_service(self, alarm_id: str, op: Operator, *, out_of_service: bool) -> AlarmRecord:
        self._ready()
        rec, seq = self.core.set_out_of_service(alarm_id, op, self.clock.now_us(), out_of_service=out_of_service)
        await self.persisted(seq)
        return rec
