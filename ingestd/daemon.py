"""The ingestd process: tenants, sources, router, leases, metrics, signals, reload (DESIGN §1, §5, §8, §9).

One event loop and one task tree: a task per tenant sink, a task per source connection. SIGTERM
stops the sources, flushes every inbox to the database (or the spool) and exits; SIGHUP validates
the configuration file and applies only what changed (:meth:`Daemon.apply_config`), without
touching unaffected sources and without dropping buffered data. systemd is told READY, RELOADING,
STOPPING and fed WATCHDOG pings from a task of its own, so a stuck event loop is detected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import Gauge

from . import __version__
from .config.base import SourceConfig, TagConfig
from .config.load import IngestdConfig, load_config
from .config.model import TenantConfig
from .errors import ConfigError
from .gctune import freeze_long_lived
from .leases import LeaseManager
from .logs import apply_levels
from .metrics import Metrics, MetricsServer
from .pipeline.breaker import Backoff
from .pipeline.heartbeat import housekeeping_loop
from .pipeline.router import Router, SourceRoute
from .pipeline.supervisor import RunState, SourceRunner
from .pipeline.tags import TagMeta
from .pipeline.tenant import TenantPipeline
from .ports import AdapterRegistry, Point
from .reload import config_problems, restart_only_changes, restart_reason, secret_fingerprint
from .sdnotify import SdNotifier
from .sources import SourceHandle, SourceStatusImpl, make_context, mark_stale

if TYPE_CHECKING:
    from .api.alarm_service import AlarmService

__all__ = ["Daemon", "Extension", "config_problems", "run_daemon"]

log = logging.getLogger(__name__)

_SOURCE_STOP_TIMEOUT = 5.0


class Extension(Protocol):
    """Something started with the daemon (alarm engine, query API)."""

    async def start(self, daemon: Daemon) -> None: ...

    async def stop(self) -> None: ...

    async def reload(self, daemon: Daemon, old: IngestdConfig) -> None:
        """Called after every applied reload; ``daemon.cfg`` is the new configuration."""


class Daemon:
    def __init__(self, cfg: IngestdConfig, adapters: AdapterRegistry, *, metrics: Metrics | None = None,
                 config_path: Path | None = None, extensions: Iterable[Extension] = ()) -> None:
        self.cfg = cfg
        self.adapters = adapters
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.instance = cfg.daemon.instance_id or socket.gethostname()
        self.state_dir = Path(cfg.daemon.state_dir)
        self.router = Router(cfg.pipeline, self.metrics)
        self.tenants: dict[str, TenantPipeline] = {}
        self._tenant_tasks: dict[str, asyncio.Task[None]] = {}
        self.sources: dict[str, SourceHandle] = {}
        self.extensions: list[Extension] = list(extensions)
        self.system_event_listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.ready = asyncio.Event()
        self.metrics_port: int | None = None
        self.api_port: int | None = None
        self.generation = 0
        """Incremented by every applied reload (also in ``runtime.json``)."""
        self.last_reload: dict[str, Any] | None = None
        self.leases: LeaseManager | None = None
        self.lease_factory: Callable[[SourceConfig], Any] | None = None
        """Returns a source's ``lease`` hook (or None). Default: the built-in :class:`LeaseManager`
        when ``[coordination] dsn`` is set; tests may inject their own before :meth:`run`."""
        self._stop = asyncio.Event()
        self._reload_requested = False
        self._attention = asyncio.Event()
        self._metrics_server: MetricsServer | None = None
        self._notifier = SdNotifier()
        self._lease_gauge: Gauge | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._tenant_backoff: dict[str, Backoff] = {}
        self.alarm_service: AlarmService | None = None
        """Set by the alarm engine extension; the query API serves it."""
        self._tenant_secrets: dict[str, str] = {}
        self._started = time.time()

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        self._stop.set()
        self._attention.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._attention.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        watchdog = None
        if self._notifier.watchdog_interval:
            watchdog = asyncio.create_task(self._watchdog(self._notifier.watchdog_interval), name="watchdog")
        try:
            await self._start()
            freeze_long_lived()
            self.ready.set()
            self._notifier.ready(f"{len(self.tenants)} tenant(s), {len(self.sources)} source(s)")
            log.info("ingestd %s %s running: %d tenant(s), %d source(s)%s", __version__, self.instance,
                     len(self.tenants), len(self.sources),
                     f", metrics on :{self.metrics_port}" if self.metrics_port else "")
            await self._main_loop()
        finally:
            self._notifier.stopping()
            await self._shutdown()
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            self._notifier.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 at half of WatchdogSec for as long as the event loop runs tasks (incl. shutdown)."""
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)

    async def _main_loop(self) -> None:
        while True:
            await self._attention.wait()
            self._attention.clear()
            if self._stop.is_set():
                return
            if self._reload_requested:
                self._reload_requested = False
                try:
                    await self.reload_from_file()
                except Exception:  # a bug in applying a reload must not take the running daemon down
                    log.exception("reload failed part-way; running with what was applied")
                    self._notifier.ready("reload failed part-way; see the log")
            for slug, task in list(self._tenant_tasks.items()):
                if task.done() and not self._stop.is_set():
                    exc = task.exception() if not task.cancelled() else None
                    delay = self._tenant_backoff.setdefault(slug, Backoff(1.0, 30.0)).next()
                    log.error("tenant %s writer stopped unexpectedly (%r); restarting it in %.1fs", slug, exc, delay)
                    self._tenant_tasks[slug] = asyncio.create_task(self._respawn_later(slug, delay),
                                                                   name=f"tenant-restart:{slug}")

    async def _respawn_later(self, slug: str, delay: float) -> None:
        """Restart a crashed tenant writer after a capped, jittered delay (a crash loop never spins)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        tp = self.tenants.get(slug)
        if tp is not None and not self._stop.is_set():
            self._spawn_tenant(tp)

    async def _start(self) -> None:
        await self._start_metrics(self.cfg.daemon.metrics_listen)
        for t in self.cfg.tenants:
            self._add_tenant(t)
        await self._start_leases()
        for s in self.cfg.sources:
            if s.enabled:
                self._add_source(s)
        for ext in self.extensions:
            await ext.start(self)
        self._housekeeping = asyncio.create_task(housekeeping_loop(
            lambda: list(self.tenants.values()),
            lambda: [(h.route, h.cfg.stale_after) for h in self.sources.values()]), name="housekeeping")
        self._write_runtime_file()

    async def _start_metrics(self, listen: str | None) -> None:
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        server = MetricsServer(self.metrics, host or "0.0.0.0", int(port))  # noqa: S104
        self.metrics_port = await server.start()
        self._metrics_server = server

    async def _start_leases(self) -> None:
        if self.lease_factory is not None or self.cfg.coordination.dsn is None:
            return
        if self._lease_gauge is None:
            self._lease_gauge = Gauge("ingestd_lease_held", "1 while this process holds the lease of a source "
                                      "(and polls it)", ["source"], registry=self.metrics.registry)
        self.leases = LeaseManager(self.cfg.coordination, instance=self.instance, gauge=self._lease_gauge)
        await self.leases.start()
        self.lease_factory = self.leases.lease_for

    def _write_runtime_file(self) -> None:
        info = {"pid": os.getpid(), "instance": self.instance, "version": __version__,
                "metrics_port": self.metrics_port, "api_port": self.api_port, "generation": self.generation,
                "started_at": self._started, "config": str(self.config_path or ""), "last_reload": self.last_reload}
        path = self.state_dir / "runtime.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(info))
        tmp.replace(path)

    async def _shutdown(self) -> None:
        log.info("ingestd stopping: stopping sources, flushing inboxes")
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self._stop_sources(list(self.sources))
        if self.leases is not None:
            await self.leases.close()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:  # one extension failing to stop must not block the flush of readings
                log.exception("error while stopping %s", type(ext).__name__)
        timeout = self.cfg.daemon.shutdown_timeout
        await asyncio.gather(*(self._drain_tenant(slug, timeout) for slug in list(self.tenants)))
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        log.info("ingestd stopped")

    async def _drain_tenant(self, slug: str, timeout: float) -> None:
        tenant = self.tenants.pop(slug)
        task = self._tenant_tasks.pop(slug)
        await tenant.drain(task, timeout)
        await tenant.close()

    # ------------------------------------------------------------------ tenants
    def _add_tenant(self, cfg: TenantConfig) -> TenantPipeline:
        tp = TenantPipeline(cfg, self.cfg.pipeline, self.state_dir, self.metrics, instance=self.instance,
                            on_system_event=self._system_event)
        self.tenants[cfg.slug] = tp
        self._tenant_secrets[cfg.slug] = secret_fingerprint(cfg)
        self._spawn_tenant(tp)
        return tp

    def _spawn_tenant(self, tp: TenantPipeline) -> None:
        task = asyncio.create_task(tp.run(), name=f"tenant:{tp.slug}")
        task.add_done_callback(lambda _: self._attention.set())
        self._tenant_tasks[tp.slug] = task

    def _system_event(self, tenant: str, kind: str, details: dict[str, Any]) -> None:
        for listener in self.system_event_listeners:
            try:
                listener(tenant, kind, details)
            except Exception:  # a failing listener (e.g. the alarm engine) must never break the data path
                log.exception("system event listener failed for %s/%s", tenant, kind)

    # ------------------------------------------------------------------ sources
    def _route_for(self, cfg: SourceConfig) -> tuple[SourceRoute, dict[str, int]]:
        default = self.tenants[self.cfg.source_tenant(cfg)]
        route = SourceRoute(cfg.name, [default])
        by_name: dict[str, int] = {}
        for i, tag in enumerate(cfg.tags):
            tenant = self.tenants[tag.tenant] if tag.tenant else default
            key = tenant.ensure_tag(self._meta(cfg, tag), deadband=tag.deadband, heartbeat=tag.heartbeat)
            idx = route.add(tenant, key, Point(i, tenant.slug, tag.name, tag), tag.scale, tag.offset)
            by_name.setdefault(tag.name, idx)
        return route, by_name

    @staticmethod
    def _meta(cfg: SourceConfig, tag: TagConfig) -> TagMeta:
        return TagMeta(tag.name, cfg.name, tag.unit, tag.data_type, tag.description)

    def _add_source(self, cfg: SourceConfig, device_up: dict[str, bool] | None = None) -> SourceHandle:
        spec = self.adapters[cfg.protocol]
        route, by_name = self._route_for(cfg)
        handle = SourceHandle(cfg, route, by_name, secret_fingerprint(cfg), device_up=dict(device_up or {}))
        lease = self.lease_factory(cfg) if self.lease_factory is not None else None
        handle.leased = lease is not None
        handle.runner = SourceRunner(
            cfg, spec.factory(), lambda runner: make_context(self, handle, runner), self.metrics,
            mark_down=lambda reason: SourceStatusImpl(self, handle).down(reason), lease=lease,
        )
        self.sources[cfg.name] = handle
        handle.task = asyncio.create_task(self._run_source(handle), name=f"source:{cfg.name}")
        return handle

    async def _run_source(self, h: SourceHandle) -> None:
        runner = h.runner
        assert runner is not None
        if not h.leased:
            await runner.run()
            return
        while not self._stop.is_set():
            runner.state = RunState.STANDBY
            await runner.run()  # returns when the lease is lost, or at once when leasing is shutting down
            if runner.state is RunState.STANDBY:
                return
            mark_stale(self, h)
            h.device_up.clear()  # standing by is not an outage: the next holder reports the device

    async def _stop_sources(self, names: Iterable[str]) -> dict[str, SourceHandle]:
        """Cancel the sources and wait for them, each at most ``_SOURCE_STOP_TIMEOUT``: an adapter that
        does not honour cancellation is reported and left behind rather than hanging shutdown or reload."""
        stopped = {}
        for name in names:
            h = self.sources.pop(name, None)
            if h is not None:
                stopped[name] = h
                if h.task is not None:
                    h.task.cancel()
        tasks = {h.task: name for name, h in stopped.items() if h.task is not None}
        if tasks:
            _, hung = await asyncio.wait(tasks, timeout=_SOURCE_STOP_TIMEOUT)
            for task in tasks:
                if task in hung:
                    log.error("source %s did not stop within %gs of being cancelled (an adapter bug); "
                              "continuing without it", tasks[task], _SOURCE_STOP_TIMEOUT)
                elif not task.cancelled() and task.exception() is not None:
                    log.debug("source %s ended with an error while stopping", tasks[task], exc_info=task.exception())
        for h in stopped.values():
            mark_stale(self, h)
        return stopped

    # ------------------------------------------------------------------ reload
    async def reload_from_file(self) -> bool:
        """SIGHUP: load and validate the file; apply it, or keep running the old one and say why."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return False
        self._notifier.reloading()
        try:
            new = load_config(self.config_path, self.adapters)
            problems = config_problems(new)
            if problems:
                raise ConfigError(problems, file=str(self.config_path))
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration:\n%s", exc)
            self.last_reload = {"ok": False, "at": time.time(), "error": str(exc)}
            self._write_runtime_file()
            self._notifier.ready("reload rejected; running the previous configuration")
            return False
        await self.apply_config(new)
        self._notifier.ready(f"configuration reloaded: {len(self.tenants)} tenant(s), {len(self.sources)} source(s)")
        return True

    async def apply_config(self, new: IngestdConfig) -> None:
        """Apply a validated configuration: only what changed is touched; buffered data is kept.

        Order matters: sources that are removed or must restart stop first (so nothing routes to a
        tenant being removed), then tenants are added/reconfigured, leases follow the coordination
        settings, sources start, and removed tenants are drained to their database (or spool) last.
        """
        old = self.cfg
        later = restart_only_changes(old, new)
        if later:
            log.warning("reload: %s take(s) effect at the next restart", ", ".join(later))
        self.cfg = new
        self.router.cfg = new.pipeline
        if (old.daemon.log_level, old.daemon.log_levels) != (new.daemon.log_level, new.daemon.log_levels):
            apply_levels(new.daemon.log_level, new.daemon.log_levels)
        if old.daemon.metrics_listen != new.daemon.metrics_listen:
            await self._restart_metrics(new.daemon.metrics_listen)
        new_t = {t.slug: t for t in new.tenants}
        removed_t = [slug for slug in self.tenants if slug not in new_t]
        new_s = {s.name: s for s in new.sources if s.enabled}
        own_leases = self.leases is not None or self.lease_factory is None
        coordination_changed = own_leases and old.coordination != new.coordination

        reasons = {name: why for name, h in self.sources.items()
                   if (why := restart_reason(h, new, new_s.get(name), removed_t, coordination_changed))}
        if reasons:
            log.info("reload: stopping %s", ", ".join(f"{n} ({why})" for n, why in reasons.items()))
        stopped = await self._stop_sources(reasons)

        for slug, t in new_t.items():
            tp = self.tenants.get(slug)
            try:
                if tp is None:
                    log.info("reload: adding tenant %s", slug)
                    self._add_tenant(t)
                elif t != tp.cfg:
                    log.info("reload: tenant %s settings changed", slug)
                    await tp.reconfigure(t)
                    self._tenant_secrets[slug] = secret_fingerprint(t)
                elif secret_fingerprint(t) != self._tenant_secrets.get(slug):
                    log.info("reload: tenant %s: the secret behind its dsn changed; reconnecting", slug)
                    await tp.reconfigure(t, reconnect=True)
                    self._tenant_secrets[slug] = secret_fingerprint(t)
            except Exception:  # one tenant failing to (re)configure must not stop the others
                log.exception("reload: tenant %s could not be applied", slug)
        if old.pipeline != new.pipeline:
            self._apply_pipeline(new)
        if coordination_changed:
            await self._restart_leases()

        for name, s in new_s.items():
            if name not in self.sources:
                prev = stopped.get(name)
                log.info("reload: %s source %s", "restarting" if prev else "starting", name)
                try:
                    down = {d: False for d, up in prev.device_up.items() if not up} if prev else None
                    self._add_source(s, down)
                except Exception:  # e.g. an adapter that cannot be imported: keep the others running
                    log.exception("reload: source %s could not be started", name)
        for slug in removed_t:
            log.info("reload: removing tenant %s (flushing its data first)", slug)
            await self._drain_tenant(slug, new.daemon.shutdown_timeout)
            self._tenant_secrets.pop(slug, None)
        for ext in self.extensions:
            try:
                await ext.reload(self, old)
            except Exception:  # an extension's reload problem must not undo the rest of the reload
                log.exception("reload: %s failed to apply the new configuration", type(ext).__name__)
        self.generation += 1
        self.last_reload = {"ok": True, "at": time.time(), "error": None}
        self._write_runtime_file()
        log.info("reload: configuration applied (generation %d): %d tenant(s), %d source(s)", self.generation,
                 len(self.tenants), len(self.sources))

    def _apply_pipeline(self, new: IngestdConfig) -> None:
        p = new.pipeline
        for tp in self.tenants.values():
            tp.inbox.max_rows = p.inbox_max_rows
            tp.inbox.batch_rows = p.batch_max_rows
            tp.inbox.batch_age = p.batch_max_age
            self.metrics.inbox_capacity.labels(tp.slug).set(p.inbox_max_rows)
            if tp.cfg.spool_max_bytes is None:
                tp.spool.max_bytes = p.spool.max_bytes

    async def _restart_leases(self) -> None:
        if self.leases is not None:
            await self.leases.close()
        self.leases = None
        self.lease_factory = None
        await self._start_leases()

    async def _restart_metrics(self, listen: str | None) -> None:
        old, self._metrics_server, self.metrics_port = self._metrics_server, None, None
        if old is not None:
            await old.stop()
        try:
            await self._start_metrics(listen)
        except OSError as exc:
            log.error("reload: metrics endpoint %s could not be opened: %s", listen, exc)


async def run_daemon(cfg: IngestdConfig, adapters: AdapterRegistry, *, config_path: Path | None = None,
                     extensions: Iterable[Extension] = (),
                     on_ready: Callable[[Daemon], Awaitable[None]] | None = None) -> None:
    daemon = Daemon(cfg, adapters, config_path=config_path, extensions=extensions)
    if on_ready is None:
        await daemon.run()
        return
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    await on_ready(daemon)
    await task
