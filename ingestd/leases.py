"""Leases: exactly one ingestd process polls a device when several share the work (DESIGN §9).

A leased source runs only while its process holds a PostgreSQL session-level advisory lock in the
coordination database (``[coordination] dsn``), keyed by a stable hash of the source name. Every
process configured with the same source competes for the same lock:

* the holder polls; the others stand by and retry every ``lease_check_interval``;
* the holder checks its coordination connection every ``lease_check_interval``; a failed or late
  check means every lock may be gone, so its leased sources are stopped at once (cancelled);
* a holder that dies (``kill -9``, power loss) loses its session and therefore its locks; a standby
  takes over at its next check (within ``lease_check_interval``, plus the server's TCP keepalive
  timeout of about 15 s when the holder vanished without closing its connection).

Which sources are leased: ``lease = "always"``; ``lease = "auto"`` (the default) for polled protocols
(:data:`POLLED_PROTOCOLS`) when a coordination database is configured; never with ``lease = "never"``.
Push sources (MQTT, Sparkplug) split their load with MQTT v5 shared subscriptions instead.

Used by the supervisor through ``async with lease() as held``: entering waits while standing by and
yields ``True`` once the lease is held (``False`` when the manager is closing); losing the lease
cancels the body, and the context manager absorbs that cancellation so the caller can stand by again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import Gauge

from .config.base import SourceConfig
from .config.load import IngestdConfig
from .config.model import CoordinationConfig
from .errors import ConfigProblem, StorageUnavailable
from .storage.leases import LeaseDb

__all__ = ["POLLED_PROTOCOLS", "LeaseManager", "lease_key", "lease_problems", "needs_lease"]

log = logging.getLogger(__name__)

POLLED_PROTOCOLS: Final = frozenset({"modbus", "opcua"})
"""Protocols leased by ``lease = "auto"``: one session per device, which only one process should hold."""

LeaseFactory = Callable[[], AbstractAsyncContextManager[bool]]


def lease_key(name: str) -> int:
    """The advisory-lock key of a source: a stable signed 64-bit hash of its name."""
    digest = hashlib.blake2b(f"ingestd/source/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def needs_lease(src: SourceConfig, coordination: CoordinationConfig) -> bool:
    if src.lease == "never":
        return False
    if src.lease == "always":
        return True
    return coordination.dsn is not None and src.protocol in POLLED_PROTOCOLS


def lease_problems(cfg: IngestdConfig) -> list[ConfigProblem]:
    """``lease = "always"`` without a coordination database is an error (nothing to lease from)."""
    if cfg.coordination.dsn is not None:
        return []
    return [ConfigProblem(f"sources[{i}].lease", 'lease = "always" needs coordination.dsn (the database '
                                                  "holding the leases)")
            for i, s in enumerate(cfg.sources) if s.lease == "always"]


@dataclass(eq=False)
class _Slot:
    """One source inside ``lease()``: standing by (``granted`` False) or running."""

    name: str
    key: int
    task: asyncio.Task[Any]
    event: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False
    active: bool = False
    lost: str | None = None
    announced: bool = False


class LeaseManager:
    def __init__(self, cfg: CoordinationConfig, *, instance: str, gauge: Gauge, db: LeaseDb | None = None) -> None:
        if cfg.dsn is None:
            raise ValueError("a LeaseManager needs coordination.dsn")
        self.cfg = cfg
        self.instance = instance
        self.interval = cfg.lease_check_interval
        self._gauge = gauge
        self._db = db or LeaseDb(cfg.dsn, application_name=f"ingestd-lease:{instance}"[:63],
                                 timeout=max(2.0, self.interval))
        self._slots: list[_Slot] = []
        self._held: set[int] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._down = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leases")

    async def close(self) -> None:
        """Stop: cancel sources still holding a lease, release every lock (closes the session)."""
        self._closed = True
        for slot in list(self._slots):
            if slot.active:
                self._lose(slot, "ingestd is stopping")
            slot.event.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._held.clear()
        await self._db.close()

    def lease_for(self, src: SourceConfig) -> LeaseFactory | None:
        """The ``lease`` hook of the source's supervisor, or ``None`` when the source is not leased."""
        if not needs_lease(src, self.cfg):
            return None
        return functools.partial(self.lease, src.name)

    def holds(self, name: str) -> bool:
        return any(s.name == name and s.granted for s in self._slots)

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[bool]:
        task = asyncio.current_task()
        assert task is not None
        slot = _Slot(name, lease_key(name), task)
        self._slots.append(slot)
        self._gauge.labels(name).set(0)
        self._wake.set()
        try:
            while not (slot.granted or self._closed):
                slot.event.clear()
                await slot.event.wait()
            if not slot.granted or self._closed:
                yield False
                return
            slot.active = True
            try:
                yield True
            except asyncio.CancelledError:
                if slot.lost is not None and task.uncancel() == 0:
                    log.warning("source %s: stopped, its lease is lost (%s); standing by", name, slot.lost)
                    return
                raise
        finally:
            slot.active = False
            self._slots.remove(slot)
            self._gauge.labels(name).set(0)
            self._wake.set()

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while not self._closed:
            try:
                if not self._db.connected:
                    await self._db.connect()
                    if self._down:
                        log.warning("coordination database is back; acquiring leases")
                        self._down = False
                await self._sync()
            except StorageUnavailable as exc:
                self._lose_all(str(exc))
                if not self._down:
                    log.error("%s; leased sources are stopped until it returns", exc)
                    self._down = True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                if self._down:
                    await asyncio.sleep(self.interval)  # retry pace while down, whatever enters or leaves
                else:
                    await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _sync(self) -> None:
        """Release unwanted locks, try the wanted ones, verify what the server says we hold."""
        wanted = {s.key for s in self._slots}
        release = self._held - wanted
        if release:
            await self._db.unlock(release)
            self._held -= release
        acquire = wanted - self._held
        if acquire:
            self._held |= await self._db.try_lock(acquire)
        server = await self._db.held()
        vanished = {k for k in self._held if LeaseDb.unsigned(k) not in server}
        self._held -= vanished
        for slot in list(self._slots):
            if slot.key in self._held and not slot.granted:
                slot.granted = True
                self._gauge.labels(slot.name).set(1)
                log.info("source %s: lease acquired by %s", slot.name, self.instance)
                slot.event.set()
            elif slot.key in vanished and slot.granted:
                self._lose(slot, "the coordination database no longer lists the lock")
            elif not slot.granted and not slot.announced:
                slot.announced = True
                log.info("source %s: standing by, another instance holds its lease", slot.name)

    def _lose(self, slot: _Slot, reason: str) -> None:
        slot.granted = False
        self._gauge.labels(slot.name).set(0)
        if slot.active and slot.lost is None:
            slot.lost = reason
            slot.task.cancel(f"lease lost: {reason}")

    def _lose_all(self, reason: str) -> None:
        self._held.clear()
        self._db.abort()
        for slot in list(self._slots):
            if slot.granted:
                self._lose(slot, reason)
