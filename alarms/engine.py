"""The alarm engine as a daemon extension (``ingestd.extensions.default_extensions``).

``start``: one :class:`~alarms.tenant.TenantAlarms` per tenant, the router listener (O(1) per batch: a
dict lookup and a deque append), the system-event listener (database down/up, spool full …) and
``daemon.alarm_service`` for the query API. ``reload``: tenants added/removed, the alarm configuration
re-bound with fingerprints (unchanged alarms keep state and timers). ``stop``: the last batches are
evaluated, deliveries in flight finish (bounded) and the state is written.

Comm loss is read from ``daemon.sources[name].device_up`` every second (no hook needed from the core):
a source counts as down when its whole connection or any of its devices reports down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ingestd.config.load import IngestdConfig
from ingestd.model import Batch
from ingestd.pipeline.tenant import TenantPipeline

from .clock import Clock, MonotonicClock
from .metrics import AlarmMetrics
from .notifiers.teams import TeamsNotifier
from .service import EngineService
from .tenant import TenantAlarms

if TYPE_CHECKING:
    from ingestd.daemon import Daemon

__all__ = ["AlarmExtension"]

log = logging.getLogger(__name__)


class AlarmExtension:
    """Extension protocol: ``start(daemon)`` / ``stop()`` / ``reload(daemon, old_cfg)``."""

    def __init__(self, *, clock: Clock | None = None, notifier: TeamsNotifier | None = None) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self._notifier = notifier
        self._own_notifier = notifier is None
        self.notifier: TeamsNotifier | None = None
        self.tenants: dict[str, TenantAlarms] = {}
        self.daemon: Daemon | None = None
        self.metrics: AlarmMetrics | None = None
        self.service: EngineService | None = None

    # ------------------------------------------------------------------------------------------ protocol
    async def start(self, daemon: Daemon) -> None:
        self.daemon = daemon
        if not daemon.cfg.alarms.enabled:
            log.info("alarm engine disabled ([alarms] enabled = false)")
            return
        self.metrics = AlarmMetrics.of(daemon.metrics.registry)
        self.notifier = self._notifier or TeamsNotifier()
        for tp in daemon.tenants.values():
            await self._add(tp, daemon.cfg)
        daemon.router.listeners.append(self._listener)
        daemon.system_event_listeners.append(self._system_event)
        self.service = EngineService(self)
        daemon.alarm_service = self.service  # looked up by the query API

    async def stop(self) -> None:
        d = self.daemon
        if d is not None:
            if getattr(d, "alarm_service", None) is self.service:
                d.alarm_service = None
            for lst, fn in ((d.router.listeners, self._listener), (d.system_event_listeners, self._system_event)):
                if fn in lst:
                    lst.remove(fn)  # type: ignore[arg-type]
        tenants, self.tenants = list(self.tenants.values()), {}
        await asyncio.gather(*(t.stop() for t in tenants))
        if self.notifier is not None and self._own_notifier:
            await self.notifier.aclose()
        self.notifier = None
        self.service = None

    async def reload(self, daemon: Daemon, old: IngestdConfig) -> None:
        cfg = daemon.cfg
        if not cfg.alarms.enabled:
            if self.tenants or self.service is not None:
                log.info("reload: alarm engine disabled")
                await self.stop()
            return
        if self.service is None:
            await self.start(daemon)
            return
        for slug in [s for s in self.tenants if s not in daemon.tenants]:
            log.info("reload: alarm engine of tenant %s stopped (tenant removed)", slug)
            await self.tenants.pop(slug).stop()
        for slug, tp in daemon.tenants.items():
            rt = self.tenants.get(slug)
            if rt is None:
                await self._add(tp, cfg)
            else:
                await rt.reconfigure(tp, cfg)

    # ------------------------------------------------------------------------------------------ plumbing
    async def _add(self, tp: TenantPipeline, cfg: IngestdConfig) -> None:
        assert self.metrics is not None
        assert self.notifier is not None
        assert self.daemon is not None
        rt = TenantAlarms(tp, cfg, clock=self.clock, metrics=self.metrics, notifier=self.notifier,
                          source_state=self._source_down, instance=self.daemon.instance)
        self.tenants[tp.slug] = rt
        await rt.start()

    def _listener(self, tp: TenantPipeline, batch: Batch) -> None:
        rt = self.tenants.get(tp.slug)
        if rt is not None and rt.wants:
            rt.feed(batch)

    def _system_event(self, tenant: str, kind: str, details: dict[str, Any]) -> None:
        rt = self.tenants.get(tenant)
        if rt is not None:
            rt.system_event(kind)

    def _source_down(self, name: str) -> bool | None:
        d = self.daemon
        h = d.sources.get(name) if d is not None else None
        if h is None:
            return None
        states = h.device_up
        if any(up is False for up in states.values()):
            return True
        return False if states.get("") is True else None

    # ------------------------------------------------------------------------------------------ lookups
    def tenant(self, slug: str) -> TenantAlarms:
        rt = self.tenants.get(slug)
        if rt is None:
            raise KeyError(slug)
        return rt
