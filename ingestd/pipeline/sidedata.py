"""Source status events (outage windows) and dead letters of a tenant: queued in memory (bounded),
written by their own task when the database works, never in the way of readings (mixed into
:class:`~ingestd.pipeline.tenant.TenantPipeline`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ..metrics import Metrics
from ..storage.pool import TenantDb
from ..storage.store import DeadLetter, Outage, write_dead_letters, write_outages
from .breaker import Backoff
from .spooling import TRANSIENT

__all__ = ["DEAD_LETTER_KEEP", "DEAD_LETTER_MEMORY", "SideDataMixin"]

log = logging.getLogger("ingestd.pipeline.tenant")

DEAD_LETTER_MEMORY = 1000
"""Dead letters waiting in memory for the database; more are counted and dropped."""
DEAD_LETTER_KEEP = 10_000
"""Dead letters kept in the table (newest)."""
_OUTAGE_MEMORY = 10_000


class SideDataMixin:
    # provided by TenantPipeline
    slug: str
    metrics: Metrics
    db: TenantDb
    write_timeout: float
    _db_ok: asyncio.Event
    _side_wake: asyncio.Event
    _outages: deque[Outage]
    _dead: deque[DeadLetter]

    def record_outage(self, event: Outage) -> None:
        if len(self._outages) >= _OUTAGE_MEMORY:
            lost = self._outages.popleft()
            log.warning("tenant %s: too many unwritten source status events; oldest (%s) discarded", self.slug,
                        lost.source)
        self._outages.append(event)
        self._side_wake.set()

    def dead_letter(self, item: DeadLetter) -> None:
        if len(self._dead) >= DEAD_LETTER_MEMORY:
            self.metrics.dead_letters_dropped.labels(self.slug).inc()
            return
        self._dead.append(item)
        self._side_wake.set()

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
                    await write_dead_letters(conn, items, DEAD_LETTER_KEEP)
                    for _ in items:
                        self._dead.popleft()
        except TRANSIENT as exc:
            log.debug("tenant %s: source status/dead letters not written yet: %s", self.slug, exc)
        except Exception as exc:  # noqa: BLE001 -- data the database rejects must never block the queue
            log.error("tenant %s: the database rejected %d source status event(s) and %d dead letter(s); "
                      "discarded: %r", self.slug, len(self._outages), len(self._dead), exc)
            self.metrics.dead_letters_dropped.labels(self.slug).inc(len(self._dead))
            self._outages.clear()
            self._dead.clear()
