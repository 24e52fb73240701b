"""The spool side of a tenant pipeline (mixed into :class:`~ingestd.pipeline.tenant.TenantPipeline`).

* appending: a batch becomes one spool record, or several when it would not fit a segment; the
  append runs in a worker thread and completion tokens (MQTT acks) are released once the record is
  durable, on the event loop;
* when even the disk fails (full, I/O error) the writer keeps the batch and retries the database
  and the disk with capped backoff, while sources wait — data is held, never dropped;
* drops of a full spool are counted, logged and raised as the ``spool_full`` system event;
* replay: closed segments oldest first, in groups of up to ``replay_rows`` readings written between
  live writes (live data first), resumable, idempotent (batch keys, derived deterministically for
  groups), and a record the database rejects for its content is quarantined instead of blocking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import numpy as np
import pybreaker
from prometheus_client import Gauge

from ..errors import StorageError
from ..metrics import Metrics
from ..model import Batch, now_us
from ..spool import Spool, SpoolRecord, SpoolRef
from .breaker import Backoff, BreakerGate
from .tags import TagMeta, TagRegistry

__all__ = ["RETRY", "TRANSIENT", "SpoolingMixin"]

log = logging.getLogger("ingestd.pipeline.tenant")

TRANSIENT: tuple[type[BaseException], ...] = (StorageError, TimeoutError, OSError)
"""Failures that say "the database is not usable right now" (the breaker counts only these); anything
else raised by a write is the database rejecting this data and must not hold back other data."""
RETRY: tuple[type[BaseException], ...] = (*TRANSIENT, pybreaker.CircuitBreakerError)
"""Transient failures plus "the breaker is open": stop, retry later."""
_REPLAY_NS = uuid.UUID("6f1d1f0e-3c3a-4b8e-9a52-1c0ffee5f001")


class SpoolingMixin:
    # provided by TenantPipeline
    slug: str
    metrics: Metrics
    spool: Spool
    gate: BreakerGate
    registry: TagRegistry
    write_timeout: float
    fsync_interval: float
    replay_rows: int
    _db_ok: asyncio.Event
    _replay_wake: asyncio.Event
    _writer_idle: asyncio.Event
    _stalled: bool
    _spool_failing: bool
    _bad_exported: tuple[int, int]
    _m_spool_bytes: Gauge
    _m_spool_rows: Gauge
    _m_spool_age: Gauge

    def _event(self, kind: str, details: dict[str, Any]) -> None:
        raise NotImplementedError

    def _db_failed(self, exc: BaseException) -> None:
        raise NotImplementedError

    async def _attempt(self, batch: Batch, key: uuid.UUID) -> None:
        raise NotImplementedError

    async def _write(self, batch: Batch, *, batch_key: uuid.UUID | None = None, replay: bool = False,
                     origin: str | None = None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ append
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
            self._event("spool_error", {"error": str(exc)})

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
                    except RETRY as exc:
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
        self._event("spool_full", {"dropped_points": rows, "dropped_bytes": nbytes, "max_bytes": self.spool.max_bytes})

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

    # ------------------------------------------------------------------ replay
    async def _replay_loop(self) -> None:
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            if self.spool.empty or not self._db_ok.is_set() or self._stalled:
                continue
            try:
                await self._replay()
            except RETRY as exc:
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
        except RETRY:
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
            self._event("spool_quarantine", {"points": len(rec.batch), "error": repr(exc)})
