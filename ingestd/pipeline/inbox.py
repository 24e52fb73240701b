"""Bounded per-tenant inbox that doubles as the batcher.

Sources ``await put()``; a batch is queued only while the inbox then holds at most ``max_rows``
rows (a single batch larger than the bound is accepted into an empty inbox, so progress is always
possible, and handed to the writer in parts of at most ``max_rows``). Producers that do not fit
wait in FIFO order — backpressure, never a silent drop, and a large batch is not starved by a
stream of small ones.

The tenant writer ``await take()`` gets everything queued as one batch once it holds ``batch_rows``
rows or its oldest batch is ``batch_age`` old — the flush-on-size-or-age rule. The durability guard
uses :meth:`Inbox.take_expired` to move data older than its deadline to the spool while a database
write hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from ..model import Batch

__all__ = ["Inbox", "InboxStats"]


@dataclass(frozen=True, slots=True)
class InboxStats:
    rows: int
    max_rows: int
    batches: int
    waiting_producers: int


class Inbox:
    def __init__(self, max_rows: int, batch_rows: int, batch_age: float) -> None:
        self.max_rows = max_rows
        self.split_rows = max_rows
        """A single queued batch larger than this is handed out in parts of this size, so the writer
        never holds more than the inbox bound (big COPYs stay big: they make a backlog drain fast)."""
        self.batch_rows = batch_rows
        self.batch_age = batch_age
        self._items: deque[tuple[float, Batch]] = deque()
        self._rows = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._data = asyncio.Event()
        self._closed = False
        self.last_put_at = 0.0
        """Monotonic time at which the oldest batch of the last :meth:`take` was queued."""
        self.last_held_upstream = False
        """Every batch of the last :meth:`take` carried completion tokens: its source keeps the data
        until it is durable here (MQTT QoS 1 acknowledged after commit) and resends it after a crash."""

    @property
    def rows(self) -> int:
        return self._rows

    def statistics(self) -> InboxStats:
        return InboxStats(self._rows, self.max_rows, len(self._items), len(self._waiters))

    def oldest_age(self) -> float:
        return time.monotonic() - self._items[0][0] if self._items else 0.0

    def oldest_put_at(self) -> float | None:
        """Monotonic time at which the oldest queued batch arrived (None when empty)."""
        return self._items[0][0] if self._items else None

    def _fits(self, n: int) -> bool:
        return self._closed or self._rows == 0 or self._rows + n <= self.max_rows

    async def put(self, batch: Batch) -> None:
        """Queue a batch, waiting (FIFO among producers) until it fits within ``max_rows``."""
        n = len(batch)
        if n == 0:
            batch.release()
            return
        if self._waiters or not self._fits(n):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, fut)
            self._waiters.append(entry)
            try:
                await fut  # on success the space was reserved for us by _wake()
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._rows -= n  # granted and then cancelled: give the reservation back
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(entry)
                self._wake()
                raise
        else:
            self._rows += n
        self._items.append((time.monotonic(), batch))
        self._data.set()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._rows += n
            fut.set_result(None)

    def put_front(self, batch: Batch, put_at: float | None = None) -> None:
        """Requeue data at the head, ignoring the bound (data taken out that must go back);
        ``put_at`` keeps its original arrival time (default: due for a flush now)."""
        self._items.appendleft((time.monotonic() - self.batch_age if put_at is None else put_at, batch))
        self._rows += len(batch)
        self._data.set()

    def _ready(self) -> bool:
        if not self._items:
            return False
        return self._closed or self._rows >= self.batch_rows or self.oldest_age() >= self.batch_age

    async def take(self, *, max_rows: int | None = None) -> Batch | None:
        """Wait for a flush (size or age) and return it; None once closed and drained."""
        while not self._ready():
            if self._closed and not self._items:
                return None
            timeout = max(0.0, self.batch_age - self.oldest_age()) if self._items else None
            self._data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), timeout)
        return self._drain(max_rows or self.batch_rows)

    def take_nowait(self, max_rows: int | None = None) -> Batch | None:
        """Whatever is queued (up to ``max_rows``), without waiting."""
        return self._drain(max_rows or self.batch_rows)

    def take_expired(self, queued_before: float, max_rows: int | None = None) -> Batch | None:
        """Queued batches that arrived before the monotonic time ``queued_before`` (oldest first,
        up to ``max_rows``), without waiting; None if there are none."""
        if not self._items or self._items[0][0] > queued_before:
            return None
        return self._drain(max_rows or self.batch_rows, queued_before)

    def _drain(self, limit: int, queued_before: float | None = None) -> Batch | None:
        if not self._items:
            return None
        items = self._items
        self.last_put_at = items[0][0]
        if len(items[0][1]) > max(limit, self.split_rows):
            # one source batch larger than the bound: hand it out in parts of ``split_rows``
            put_at, big = items.popleft()
            self.last_held_upstream = bool(big.tokens)
            head, tail = _split(big, max(limit, self.split_rows))
            items.appendleft((put_at, tail))
            self._rows -= len(head)
            if self._waiters:
                self._wake()
            return head
        out: list[Batch] = []
        rows = 0
        upstream = True
        while items and (rows == 0 or rows + len(items[0][1]) <= limit):
            if queued_before is not None and items[0][0] > queued_before:
                break
            b = items.popleft()[1]
            out.append(b)
            rows += len(b)
            upstream = upstream and bool(b.tokens)
        self.last_held_upstream = upstream
        self._rows -= rows
        if self._waiters:
            self._wake()
        return Batch.concat(out)

    def close(self) -> None:
        """Stop waiting for more data: take() flushes what is queued, then returns None."""
        self._closed = True
        self._data.set()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed


def _split(batch: Batch, n: int) -> tuple[Batch, Batch]:
    """The first ``n`` rows and the rest (views, no copy). Completion tokens are shared: each gets
    one more hold, so a token completes only once both parts are durable."""
    head = Batch(batch.key[:n], batch.ts[:n], batch.value[:n], batch.quality[:n], batch.status[:n], batch.recv_us)
    tail = Batch(batch.key[n:], batch.ts[n:], batch.value[n:], batch.quality[n:], batch.status[n:], batch.recv_us)
    head.historical = tail.historical = batch.historical
    for t in batch.tokens:
        t.hold()
    head.tokens = list(batch.tokens)
    tail.tokens = batch.tokens
    total = len(batch)
    for src, rows in batch.origin.items():
        part = rows * n // total
        head.origin[src] = part
        tail.origin[src] = rows - part
    return head, tail
