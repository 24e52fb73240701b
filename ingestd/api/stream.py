"""Live values to WebSocket clients: one router listener, one fan-out task, a bounded queue per client.

Ingest path cost (the :class:`~ingestd.pipeline.router.SampleListener`, called for every routed
batch): one dictionary lookup when nobody of that tenant listens; else one NumPy lookup of the batch's
tag keys in the tenant's per-tag subscriber count and, if any row is wanted, a copy of those rows into
a pending list (bounded) and an ``Event.set()``. Never an await, never a client's socket.

The fan-out task takes the pending rows, selects each client's rows with its boolean mask over tag
keys, serialises one columnar JSON message per client with orjson and appends it to the client's
queue. A queue holds ``ws_queue`` messages; when full the *oldest* is dropped and counted, and the
client gets ``{"type": "dropped", "count": n}`` before its next message. Each client has its own
sender task, so a slow or stalled client only ever delays itself.

Pattern subscriptions also cover tags that appear later (MQTT topics seen for the first time): when
the registry grew, new names are matched against every client's patterns before fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from ..model import Batch, now_us
from ..pipeline.tenant import TenantPipeline
from .context import ApiMetrics

__all__ = ["StreamClient", "StreamHub"]

log = logging.getLogger(__name__)

_MAX_PENDING_ROWS: Final = 1_000_000
Sender = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class StreamClient:
    tenant: str
    principal_id: str
    queue_max: int
    names: set[str] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)
    mask: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    queue: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    dropped_total: int = 0
    sent: int = 0
    closed: bool = False
    close_code: int = 1001
    """WebSocket close code once ``closed``: 1001 server going away, 1008 access revoked."""

    def push(self, msg: bytes) -> bool:
        """Queue a message; drop the oldest when full. Returns False when a message was dropped."""
        ok = True
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.dropped += 1
            self.dropped_total += 1
            ok = False
        self.queue.append(msg)
        self.wake.set()
        return ok

    def matcher(self) -> re.Pattern[str] | None:
        if not self.patterns:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))


@dataclass(eq=False)
class _TenantStreams:
    clients: set[StreamClient] = field(default_factory=set)
    counts: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    known: int = 0
    """Registry size the masks were computed for."""
    pending: list[tuple[npt.NDArray[Any], ...]] = field(default_factory=list)
    pending_rows: int = 0


class StreamHub:
    def __init__(self, metrics: ApiMetrics, *, queue_max: int = 256, flush_interval: float = 0.02) -> None:
        self._metrics = metrics
        self.queue_max = queue_max
        self.flush_interval = flush_interval
        """Fan-out runs at most this often: batches arriving meanwhile go out together, which bounds the
        per-client message rate (and its per-message cost) whatever the number of source batches."""
        self._tenants: dict[str, _TenantStreams] = {}
        self._registries: dict[str, TenantPipeline] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._fanout_loop(), name="api:stream-fanout")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for st in self._tenants.values():
            for c in st.clients:
                c.closed = True
                c.wake.set()

    @property
    def client_count(self) -> int:
        return sum(len(st.clients) for st in self._tenants.values())

    def clients(self) -> Iterable[StreamClient]:
        for st in self._tenants.values():
            yield from st.clients

    # ------------------------------------------------------------------ ingest side (hot path)
    def listener(self, tenant: TenantPipeline, batch: Batch) -> None:
        st = self._tenants.get(tenant.slug)
        if st is None or not st.clients:
            return
        keys = batch.key
        n = keys.shape[0]
        if n == 0:
            return
        if int(keys.max()) >= st.known:
            sel: npt.NDArray[np.bool_] | None = None  # new tags: let the fan-out match them
        else:
            sel = st.counts[keys] > 0
            if not sel.any():
                return
        rows = (keys, batch.ts, batch.value, batch.quality, batch.status)
        taken = tuple(a.copy() if sel is None else a[sel] for a in rows)
        recv = np.full(taken[0].shape[0], batch.recv_us, np.int64)
        st.pending.append((*taken, recv))
        st.pending_rows += taken[0].shape[0]
        while st.pending_rows > _MAX_PENDING_ROWS and len(st.pending) > 1:
            st.pending_rows -= st.pending.pop(0)[0].shape[0]  # fan-out far behind: keep the newest
        self._registries[tenant.slug] = tenant
        self._wake.set()

    # ------------------------------------------------------------------ subscriptions
    def add(self, tenant: TenantPipeline, principal_id: str) -> StreamClient:
        st = self._tenants.setdefault(tenant.slug, _TenantStreams())
        self._registries[tenant.slug] = tenant
        self._sync(st, tenant)
        c = StreamClient(tenant.slug, principal_id, self.queue_max, mask=np.zeros(st.counts.shape[0], np.bool_))
        st.clients.add(c)
        self._metrics.ws_clients.labels(tenant.slug).set(len(st.clients))
        return c

    def remove(self, c: StreamClient) -> None:
        st = self._tenants.get(c.tenant)
        c.closed = True
        c.wake.set()
        if st is None or c not in st.clients:
            return
        st.counts[: c.mask.shape[0]] -= c.mask.astype(np.int32)
        st.clients.discard(c)
        self._metrics.ws_clients.labels(c.tenant).set(len(st.clients))

    def subscribe(self, c: StreamClient, tenant: TenantPipeline, names: Iterable[str], patterns: Iterable[str],
                  *, add: bool = True) -> tuple[int, list[str]]:
        """Change a client's subscription; returns (tags subscribed now, requested names not yet known)."""
        st = self._tenants[c.tenant]
        self._sync(st, tenant)
        names, patterns = list(names), list(patterns)
        if add:
            c.names.update(names)
            c.patterns.extend(p for p in patterns if p not in c.patterns)
        else:
            c.names.difference_update(names)
            c.patterns = [p for p in c.patterns if p not in patterns]
        self._set_mask(st, c, self._mask_for(c, tenant, 0, st.known))
        reg = tenant.registry
        unknown = [n for n in names if n not in reg.index] if add else []
        return int(c.mask.sum()), unknown

    def unsubscribe_all(self, c: StreamClient) -> None:
        st = self._tenants[c.tenant]
        c.names.clear()
        c.patterns.clear()
        self._set_mask(st, c, np.zeros(st.counts.shape[0], np.bool_))

    def subscribed_keys(self, c: StreamClient) -> npt.NDArray[np.intp]:
        return np.flatnonzero(c.mask)

    def _mask_for(self, c: StreamClient, tenant: TenantPipeline, lo: int, hi: int) -> npt.NDArray[np.bool_]:
        reg = tenant.registry
        mask = np.zeros(hi - lo, np.bool_)
        for n in c.names:
            k = reg.index.get(n)
            if k is not None and lo <= k < hi:
                mask[k - lo] = True
        rx = c.matcher()
        if rx is not None:
            for i, name in enumerate(reg.names[lo:hi]):
                if rx.match(name):
                    mask[i] = True
        return mask

    def _set_mask(self, st: _TenantStreams, c: StreamClient, new: npt.NDArray[np.bool_]) -> None:
        old = c.mask
        st.counts[: old.shape[0]] -= old.astype(np.int32)
        c.mask = new
        st.counts[: new.shape[0]] += new.astype(np.int32)

    def _sync(self, st: _TenantStreams, tenant: TenantPipeline) -> None:
        """Extend counts and masks to tags registered since the last call (matching patterns/names)."""
        size = len(tenant.registry)
        if size <= st.known:
            return
        lo = st.known
        if st.counts.shape[0] < size:
            counts = np.zeros(max(size, 2 * st.counts.shape[0], 64), np.int32)
            counts[: st.counts.shape[0]] = st.counts
            st.counts = counts
        for c in st.clients:
            grown = np.zeros(st.counts.shape[0], np.bool_)
            grown[: c.mask.shape[0]] = c.mask
            if c.names or c.patterns:
                grown[lo:size] = self._mask_for(c, tenant, lo, size)
                st.counts[lo:size] += grown[lo:size].astype(np.int32)
            c.mask = grown
        st.known = size

    # ------------------------------------------------------------------ fan-out
    async def _fanout_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._wake.wait()
            pause = last + self.flush_interval - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)  # coalesce: at most one fan-out per flush_interval
            self._wake.clear()
            last = loop.time()
            for slug, st in list(self._tenants.items()):
                if not st.pending:
                    continue
                chunks, st.pending, st.pending_rows = st.pending, [], 0
                tp = self._registries.get(slug)
                if tp is None or not st.clients:
                    continue
                try:
                    self._fanout(st, tp, chunks)
                except Exception:  # a bug here must not end live streaming for everybody; logged with traceback
                    log.exception("query API: stream fan-out failed for tenant %s", slug)

    def _fanout(self, st: _TenantStreams, tp: TenantPipeline, chunks: list[tuple[npt.NDArray[Any], ...]]) -> None:
        self._sync(st, tp)
        cols = [np.concatenate([ch[i] for ch in chunks]) for i in range(6)]
        keys = cols[0]
        ok = keys < st.known
        if not ok.all():
            cols = [c[ok] for c in cols]
            keys = cols[0]
        names = tp.registry.names
        dropped = 0
        sent_us = now_us()
        for c in st.clients:
            if c.closed:
                continue
            sel = c.mask[keys]
            if not sel.any():
                continue
            k = keys[sel]
            msg = orjson.dumps(
                {"type": "values", "tags": [names[i] for i in k.tolist()], "ts_us": cols[1][sel],
                 "value": cols[2][sel], "quality": cols[3][sel], "status": cols[4][sel], "recv_us": cols[5][sel],
                 "sent_us": sent_us},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            c.sent += int(k.shape[0])
            if not c.push(msg):
                dropped += 1
        if dropped:
            self._metrics.ws_dropped.labels(tp.slug).inc(dropped)

    def close_tenant(self, slug: str) -> None:
        st = self._tenants.pop(slug, None)
        self._registries.pop(slug, None)
        if st is not None:
            for c in st.clients:
                c.closed = True
                c.close_code = 1008
                c.wake.set()
            self._metrics.ws_clients.labels(slug).set(0)
