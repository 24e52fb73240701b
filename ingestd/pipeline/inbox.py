"""Bounded per-tenant inbox that doubles as the batcher.

Sources ``await put()`` (waiting while the inbox holds ``max_rows``: backpressure, never a silent
drop). The tenant writer ``await take()`` gets everything queued as one batch once it holds
``batch_rows`` rows or its oldest batch is ``batch_age`` old — the flush-on-size-or-age rule.
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
        self.batch_rows = batch_rows
        self.batch_age = batch_age
        self._items: deque[tuple[float, Batch]] = deque()
        self._rows = 0
        self._space = asyncio.Event()
        self._space.set()
        self._data = asyncio.Event()
        self._waiting = 0
        self._closed = False

    @property
    def rows(self) -> int:
        return self._rows

    def statistics(self) -> InboxStats:
        return InboxStats(self._rows, self.max_rows, len(self._items), self._waiting)

    def oldest_age(self) -> float:
        return time.monotonic() - self._items[0][0] if self._items else 0.0

    async def put(self, batch: Batch) -> None:
        """Queue a batch, waiting while the inbox is full. A batch larger than the bound is
        accepted when the inbox is empty, so progress is always possible."""
        if len(batch) == 0:
            batch.release()
            return
        while self._rows >= self.max_rows and not self._closed:
            self._space.clear()
            self._waiting += 1
            try:
                await self._space.wait()
            finally:
                self._waiting -= 1
        self._items.append((time.monotonic(), batch))
        self._rows += len(batch)
        self._data.set()

    def put_front(self, batch: Batch) -> None:
        """Requeue data at the head, ignoring the bound (data the writer must retry)."""
        self._items.appendleft((time.monotonic() - self.batch_age, batch))
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

    def _drain(self, limit: int) -> Batch | None:
        if not self._items:
            return None
        out: list[Batch] = []
        rows = 0
        while self._items and (rows == 0 or rows + len(self._items[0][1]) <= limit):
            _, b = self._items.popleft()
            out.append(b)
            rows += len(b)
        self._rows -= rows
        if self._rows < self.max_rows:
            self._space.set()
        return Batch.concat(out)

    def close(self) -> None:
        """Stop waiting for more data: take() flushes what is queued, then returns None."""
        self._closed = True
        self._data.set()
        self._space.set()

    @property
    def closed(self) -> bool:
        return self._closed
