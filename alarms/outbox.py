"""The outbox sender of one tenant: outbox rows → dispatcher (grouping, flood, silences) → Teams → mark.

* Rows come from ``notification_outbox`` (``status = 'pending'``, in id order), fetched when the writer
  commits and every few seconds; after a restart every pending row is submitted again (at-least-once).
* While the database is down the writer hands new intents over directly (:meth:`OutboxSender.direct`): a
  "database down" system alarm must reach Teams although the outbox cannot be written. Their final status
  is applied to the rows once they exist.
* A row is marked ``sent`` only after Teams answered 2xx (:func:`alarms.notifiers.sender.deliver`, with
  retries, ``Retry-After``, fail-over to the route's fallback); a crash between the POST and the mark
  resends the same card with the same ``evt-…#seq`` on restart.
* Permanent failure on every route of the chain → ``failed``; transient failure (retry deadline exhausted)
  → submitted again later; dropped by the dispatcher (superseded update, fleeting alarm, flood summary,
  silence, no route) → ``dropped`` with the reason.
* Each failing route raises ``system@notify:<route>`` (``on_route``), cleared by its next success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

from ingestd.errors import StorageError
from ingestd.storage.pool import TenantDb

from . import store
from .clock import Clock
from .config import AlarmsConfig
from .dispatch import Delivery, Dispatcher
from .links import AckLinks
from .metrics import AlarmMetrics
from .model import US, NotificationIntent
from .notifiers.sender import DeliveryReport, deliver
from .notifiers.teams import SendOutcome, TeamsNotifier

__all__ = ["OutboxSender"]

log = logging.getLogger(__name__)

Key = tuple[str, int]
RouteEvent = Callable[[str, bool, str], None]
"""(route, ok, detail): a route failed (ok=False) or delivered (ok=True)."""

_POLL_EVERY_S: Final = 5.0
_RETRY_LATER_US: Final = 30 * US
_MARK_GIVE_UP: Final = 120
"""Attempts (≈ seconds with the database up) after which a mark whose row never appeared is forgotten."""
_FETCH: Final = 500


class OutboxSender:
    def __init__(self, tenant: str, cfg: AlarmsConfig, db: TenantDb, notifier: TeamsNotifier,
                 links: AckLinks | None, clock: Clock, metrics: AlarmMetrics, on_route: RouteEvent) -> None:
        self.tenant = tenant
        self.cfg = cfg
        self.db = db
        self.notifier = notifier
        self.links = links
        self.clock = clock
        self.metrics = metrics
        self.on_route = on_route
        self.dispatcher = Dispatcher(cfg)
        self._known: set[Key] = set()
        self._marks: dict[Key, store.Mark] = {}
        self._mark_tries: dict[Key, int] = {}
        self._retry: list[tuple[int, NotificationIntent]] = []
        self._last_id = 0
        self._poll = True
        self._next_poll = 0.0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.sent = 0
        """Cards accepted by Teams (all routes), for tests and logs."""

    # ------------------------------------------------------------------------------------------ input
    def wake(self, *, poll: bool = True) -> None:
        self._poll = self._poll or poll
        self._wake.set()

    def direct(self, intents: Iterable[NotificationIntent]) -> None:
        """Intents whose outbox rows cannot be written now (database down): send from memory."""
        now = self.clock.now_us()
        for i in intents:
            key = (i.alarm_id, i.seq)
            if key not in self._known:
                self._known.add(key)
                self._submit(i, now)
        self._wake.set()

    def reconfigure(self, cfg: AlarmsConfig, links: AckLinks | None) -> None:
        self.cfg = cfg
        self.dispatcher.cfg = cfg
        self.links = links

    @property
    def busy(self) -> bool:
        """Something is being sent or waits for its group (tests wait for quiescence)."""
        return bool(self._inflight) or self.dispatcher.next_deadline() is not None or bool(self._retry)

    # ------------------------------------------------------------------------------------------ loop
    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now_us()
            try:
                if self._poll or time.monotonic() >= self._next_poll:
                    await self._fetch(now)
                self._resubmit(now)
                for d in self.dispatcher.tick(now):
                    self._launch(d)
                self._collect_dropped()
                if self._marks:
                    await self._apply_marks()
            except Exception:  # a bug (or a row the code cannot read) must not stop notifications: logged, retried
                log.exception("tenant %s: notification outbox pass failed; retrying", self.tenant)
                self._poll = True
            timeout = self._timeout(self.clock.now_us())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _timeout(self, now: int) -> float:
        dues = [_POLL_EVERY_S]
        if (d := self.dispatcher.next_deadline()) is not None:
            dues.append((d - now) / US)
        if self._retry:
            dues.append((min(t for t, _ in self._retry) - now) / US)
        if self._marks or self._poll:
            dues.append(1.0)
        return max(0.0, min(dues))

    async def _fetch(self, now: int) -> None:
        try:
            async with self.db.connection() as conn:
                while True:
                    rows = await store.fetch_pending(conn, self._last_id, _FETCH)
                    for r in rows:
                        self._last_id = max(self._last_id, r.id)
                        key = (r.alarm_id, r.seq)
                        if key in self._known:
                            continue
                        self._known.add(key)
                        try:
                            intent = NotificationIntent.from_dict(r.intent)
                        except (KeyError, TypeError, ValueError) as exc:  # e.g. written by another version
                            log.error("tenant %s: outbox row %d is not a readable intent (%r); marked failed",
                                      self.tenant, r.id, exc)
                            self._marks[key] = store.Mark(r.alarm_id, r.seq, "failed", None, 0, "unreadable intent")
                            continue
                        self._submit(intent, now)
                    if len(rows) < _FETCH:
                        break
                self.metrics.outbox_pending.labels(self.tenant).set(await store.outbox_depth(conn))
            self._poll = False
            self._next_poll = time.monotonic() + _POLL_EVERY_S
        except (StorageError, OSError, TimeoutError) as exc:
            log.debug("tenant %s: outbox not readable now: %s", self.tenant, exc)
            self._poll = True

    def _submit(self, i: NotificationIntent, now: int) -> None:
        for d in self.dispatcher.submit(i, now):
            self._launch(d)

    def _resubmit(self, now: int) -> None:
        if not self._retry:
            return
        due = [i for t, i in self._retry if t <= now]
        self._retry = [(t, i) for t, i in self._retry if t > now]
        for i in due:
            self._submit(i, now)

    def _collect_dropped(self) -> None:
        dropped, self.dispatcher.dropped = self.dispatcher.dropped, []
        for dr in dropped:
            i = dr.intent
            self._marks[(i.alarm_id, i.seq)] = store.Mark(i.alarm_id, i.seq, "dropped", dr.route or None, 0, dr.reason)
            self.metrics.notifications.labels(self.tenant, dr.route or "-", "dropped").inc()

    # ------------------------------------------------------------------------------------------ sending
    def _launch(self, d: Delivery) -> None:
        task = asyncio.create_task(self._deliver(d), name=f"alarms:notify:{self.tenant}:{d.route}")
        self._inflight.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not self._inflight:
            self._idle.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("tenant %s: notification delivery failed unexpectedly: %r", self.tenant, exc, exc_info=exc)
        self._wake.set()

    async def _deliver(self, d: Delivery) -> None:
        report = await deliver(d, self.cfg, self.notifier, links=self.links, now_us=self.clock.now_us())
        self._account(d, report)

    def _account(self, d: Delivery, report: DeliveryReport) -> None:
        for route, res in report.attempts:
            self.metrics.notifications.labels(self.tenant, route, res.outcome.value).inc()
        for route in report.failed_routes:
            detail = next((res.detail for r, res in report.attempts if r == route), "")
            self.on_route(route, False, detail)
        now = self.clock.now_us()
        attempts = sum(res.attempts for _, res in report.attempts)
        detail = report.attempts[-1][1].detail if report.attempts else "route not configured"
        if report.ok:
            assert report.delivered_via is not None
            self.sent += 1
            self.on_route(report.delivered_via, True, "")
            status = "sent"
        elif any(res.outcome is SendOutcome.EXHAUSTED for _, res in report.attempts):
            for i in d.intents:
                self._retry.append((now + _RETRY_LATER_US, i))
            return
        else:
            status = "failed"
        for i in d.intents:
            self._marks[(i.alarm_id, i.seq)] = store.Mark(i.alarm_id, i.seq, status, report.delivered_via, attempts,
                                                          detail, d.key, now)

    async def _apply_marks(self) -> None:
        marks = list(self._marks.values())
        try:
            async with self.db.connection() as conn:
                found = await store.mark(conn, marks)
                self.metrics.outbox_pending.labels(self.tenant).set(await store.outbox_depth(conn))
        except (StorageError, OSError, TimeoutError) as exc:
            log.debug("tenant %s: outbox marks not written yet: %s", self.tenant, exc)
            return
        for m in marks:
            if m.key in found:
                self._forget(m.key)
            else:  # the row is not written yet (database was down when the card went out)
                n = self._mark_tries[m.key] = self._mark_tries.get(m.key, 0) + 1
                if n >= _MARK_GIVE_UP:
                    log.warning("tenant %s: outbox row %s#%d never appeared; its status %r is forgotten",
                                self.tenant, m.alarm_id, m.seq, m.status)
                    self._forget(m.key)

    def _forget(self, key: Key) -> None:
        self._marks.pop(key, None)
        self._mark_tries.pop(key, None)
        self._known.discard(key)

    # ------------------------------------------------------------------------------------------ stop
    async def close(self, grace: float = 5.0) -> None:
        """Let deliveries in flight finish (bounded), then write their marks (best effort)."""
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        for t in list(self._inflight):
            t.cancel()
        for t in list(self._inflight):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._collect_dropped()
        if self._marks:
            await self._apply_marks()
