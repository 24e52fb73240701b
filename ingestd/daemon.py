"""The ingestd process: tenants, sources, router, metrics, signals, reload (DESIGN §1, §5, §8).

One event loop and one task tree: a task per tenant sink, a task per source connection. SIGTERM
stops the sources, flushes every inbox to the database (or the spool) and exits; SIGHUP reloads
the configuration without touching unchanged sources and without dropping buffered data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from .config.base import SourceConfig, TagConfig
from .config.load import IngestdConfig, load_config
from .config.types import TAG_RE
from .errors import ConfigError, PayloadError
from .metrics import Metrics, MetricsServer
from .model import Batch, now_us
from .pipeline.router import Router, SourceRoute
from .pipeline.supervisor import SourceRunner
from .pipeline.tags import TagMeta
from .pipeline.tenant import TenantPipeline
from .ports import AdapterRegistry, Point, SourceContext
from .sdnotify import SdNotifier
from .storage.store import DeadLetter, Outage

__all__ = ["Daemon", "Extension"]

log = logging.getLogger(__name__)

_TAG_PATTERN = re.compile(TAG_RE)
_MAX_DEAD_LETTER_PAYLOAD = 64 * 1024


class Extension(Protocol):
    """Something started with the daemon (alarm engine, query API, lease manager)."""

    async def start(self, daemon: Daemon) -> None: ...

    async def stop(self) -> None: ...

    async def reload(self, daemon: Daemon, old: IngestdConfig) -> None: ...


class _Status:
    """SourceStatus for one source: logs once per transition, marks tags stale, records outages."""

    def __init__(self, daemon: Daemon, handle: _SourceHandle) -> None:
        self._d = daemon
        self._h = handle

    def up(self, device: str = "") -> None:
        h = self._h
        if h.runner is not None:
            h.runner.healthy()
        was = h.device_up.get(device)
        h.device_up[device] = True
        self._d.metrics.source_up.labels(h.name, device).set(1)
        if was is False:
            log.info("source %s%s is back", h.name, f" device {device}" if device else "")
            for t in h.route.tenants:
                t.record_outage(Outage(h.name, device, now_us(), down=False, instance=self._d.instance))

    def down(self, reason: str, device: str = "", points: Iterable[int] | None = None) -> None:
        h = self._h
        was = h.device_up.get(device)
        h.device_up[device] = False
        self._d.metrics.source_up.labels(h.name, device).set(0)
        sel = None if points is None else np.fromiter(points, dtype=np.int32)
        for t in h.route.tenants:
            keys = h.route.keys_for(t, sel)
            t.registry.stale[keys] = True
        if was is not False:
            log.warning("source %s%s is down: %s", h.name, f" device {device}" if device else "", reason)
            for t in h.route.tenants:
                t.record_outage(Outage(h.name, device, now_us(), down=True, reason=reason, instance=self._d.instance))


class _Metrics:
    def __init__(self, m: Metrics, source: str) -> None:
        self._events = m.source_events
        self._req = m.source_request
        self._gauge = m.source_gauge
        self._s = source

    def count(self, event: str, n: int = 1) -> None:
        self._events.labels(self._s, event).inc(n)

    def observe(self, op: str, seconds: float) -> None:
        self._req.labels(self._s, op).observe(seconds)

    def gauge(self, name: str, value: float) -> None:
        self._gauge.labels(self._s, name).set(value)


@dataclass
class _SourceHandle:
    cfg: SourceConfig
    route: SourceRoute
    runner: SourceRunner | None = None
    task: asyncio.Task[None] | None = None
    device_up: dict[str, bool] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.cfg.name


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
        self.sources: dict[str, _SourceHandle] = {}
        self.extensions: list[Extension] = list(extensions)
        self.system_event_listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.metrics_port: int | None = None
        self.api_port: int | None = None
        self._metrics_server: MetricsServer | None = None
        self._notifier = SdNotifier()
        self.lease_factory: Callable[[SourceConfig], Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
            self.ready.set()
            self._notifier.ready(f"{len(self.tenants)} tenant(s), {len(self.sources)} source(s)")
            log.info("ingestd %s running: %d tenant(s), %d source(s)%s", self.instance, len(self.tenants),
                     len(self.sources), f", metrics on :{self.metrics_port}" if self.metrics_port else "")
            await self._main_loop()
        finally:
            self._notifier.stopping()
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _main_loop(self) -> None:
        watchdog = self._notifier.watchdog_interval
        while not self._stop.is_set():
            waiters = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._reload_requested.wait())]
            _, pending = await asyncio.wait(waiters, timeout=watchdog, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if watchdog:
                self._notifier.watchdog()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                await self.reload_from_file()
            for slug, task in list(self._tenant_tasks.items()):
                if task.done() and not self._stop.is_set():
                    exc = task.exception() if not task.cancelled() else None
                    log.error("tenant %s writer stopped unexpectedly (%r); restarting it", slug, exc)
                    self._tenant_tasks[slug] = asyncio.create_task(self.tenants[slug].run(), name=f"tenant:{slug}")

    async def _start(self) -> None:
        d = self.cfg.daemon
        if d.metrics_listen:
            host, _, port = d.metrics_listen.rpartition(":")
            self._metrics_server = MetricsServer(self.metrics, host or "0.0.0.0", int(port))  # noqa: S104
            self.metrics_port = await self._metrics_server.start()
        for t in self.cfg.tenants:
            self._add_tenant(t)
        for s in self.cfg.sources:
            if s.enabled:
                self._add_source(s)
        for ext in self.extensions:
            await ext.start(self)
        self._write_runtime_file()

    def _write_runtime_file(self) -> None:
        info = {"pid": os.getpid(), "instance": self.instance, "metrics_port": self.metrics_port,
                "api_port": self.api_port}
        path = self.state_dir / "runtime.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(info))
        tmp.replace(path)

    async def _shutdown(self) -> None:
        log.info("ingestd stopping: stopping sources, flushing inboxes")
        await self._stop_sources(list(self.sources))
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
    def _add_tenant(self, cfg: Any) -> TenantPipeline:
        tp = TenantPipeline(cfg, self.cfg.pipeline, self.state_dir, self.metrics, instance=self.instance,
                            on_system_event=self._system_event)
        self.tenants[cfg.slug] = tp
        self._tenant_tasks[cfg.slug] = asyncio.create_task(tp.run(), name=f"tenant:{cfg.slug}")
        return tp

    def _system_event(self, tenant: str, kind: str, details: dict[str, Any]) -> None:
        for listener in self.system_event_listeners:
            listener(tenant, kind, details)

    # ------------------------------------------------------------------ sources
    def _route_for(self, cfg: SourceConfig) -> SourceRoute:
        default = self.tenants[self.cfg.source_tenant(cfg)]
        route = SourceRoute(cfg.name, [default])
        for i, tag in enumerate(cfg.tags):
            tenant = self.tenants[tag.tenant] if tag.tenant else default
            key = tenant.ensure_tag(self._meta(cfg, tag), deadband=tag.deadband, heartbeat=tag.heartbeat)
            route.add(tenant, key, Point(i, tenant.slug, tag.name, tag), tag.scale, tag.offset)
        return route

    @staticmethod
    def _meta(cfg: SourceConfig, tag: TagConfig) -> TagMeta:
        return TagMeta(tag.name, cfg.name, tag.unit, tag.data_type, tag.description)

    def _add_source(self, cfg: SourceConfig) -> _SourceHandle:
        spec = self.adapters[cfg.protocol]
        handle = _SourceHandle(cfg, self._route_for(cfg))
        self.sources[cfg.name] = handle
        lease = self.lease_factory(cfg) if self.lease_factory is not None else None
        handle.runner = SourceRunner(
            cfg, spec.factory(), lambda runner: self._context(handle, runner), self.metrics,
            mark_down=lambda reason: _Status(self, handle).down(reason), lease=lease,
        )
        handle.task = asyncio.create_task(handle.runner.run(), name=f"source:{cfg.name}")
        return handle

    async def _stop_sources(self, names: list[str]) -> None:
        tasks = []
        for name in names:
            h = self.sources.pop(name, None)
            if h is not None and h.task is not None:
                h.task.cancel()
                tasks.append(h.task)
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await t
                except Exception:  # the source already failed; we are stopping it anyway
                    log.debug("source task ended with an error during stop", exc_info=True)

    def _context(self, handle: _SourceHandle, runner: SourceRunner) -> SourceContext:
        route = handle.route
        status = _Status(self, handle)
        router = self.router
        state = self.state_dir / "sources" / handle.name
        state.mkdir(parents=True, exist_ok=True)
        healthy = [False]

        async def emit(batch: Batch) -> None:
            if not healthy[0]:
                healthy[0] = True
                runner.healthy()
                if handle.device_up.get("") is False:
                    status.up()
            await router.route(route, batch)

        def register(tenant: str | None, tag: str, meta: dict[str, Any]) -> int:
            slug = tenant or route.tenants[0].slug
            idx = route.lookup.get((slug, tag))
            if idx is not None:
                return idx
            tp = self.tenants.get(slug)
            if tp is None:
                raise PayloadError("unknown_tenant", f"tenant {slug!r} is not configured")
            if not _TAG_PATTERN.fullmatch(tag):
                raise PayloadError("bad_tag_name", f"{tag!r} is not a valid tag name")
            key = tp.ensure_tag(TagMeta(tag, handle.name, str(meta.get("unit", "")),
                                        str(meta.get("data_type", "float")), str(meta.get("description", "")),
                                        configured=False))
            return route.add(tp, key, Point(len(route.points), slug, tag, None))

        def reject(reason: str, detail: str, payload: bytes | None, key: str) -> None:
            self.metrics.malformed.labels(handle.name, reason).inc()
            once = f"{reason}\x00{key}"
            if once not in handle.warned and len(handle.warned) < 10_000:
                handle.warned.add(once)
                log.warning("source %s: rejected input (%s)%s: %s [logged once per %s]", handle.name, reason,
                            f" from {key}" if key else "", detail, "key and reason" if key else "reason")
            if payload is not None and len(payload) > _MAX_DEAD_LETTER_PAYLOAD:
                payload = payload[:_MAX_DEAD_LETTER_PAYLOAD]
            route.tenants[0].dead_letter(DeadLetter(now_us(), handle.name, reason, detail, payload))

        return SourceContext(
            name=handle.name, config=handle.cfg, points=route.points, emit=emit, status=status,
            metrics=_Metrics(self.metrics, handle.name), log=logging.getLogger(f"ingestd.source.{handle.name}"),
            state_dir=state, _register=register, _reject=reject,
        )

    # ------------------------------------------------------------------ reload
    async def reload_from_file(self) -> bool:
        if self.config_path is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return False
        self._notifier.reloading()
        try:
            new = load_config(self.config_path, self.adapters)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration:\n%s", exc)
            self._notifier.ready("reload rejected; running the previous configuration")
            return False
        await self.apply_config(new)
        self._notifier.ready("configuration reloaded")
        return True

    async def apply_config(self, new: IngestdConfig) -> None:
        """Apply a validated configuration: only what changed is touched; buffered data is kept."""
        old = self.cfg
        self.cfg = new
        self.router.cfg = new.pipeline
        old_t = {t.slug: t for t in old.tenants}
        new_t = {t.slug: t for t in new.tenants}
        for slug, t in new_t.items():
            if slug not in old_t:
                log.info("reload: adding tenant %s", slug)
                self._add_tenant(t)
            elif t != old_t[slug]:
                log.info("reload: tenant %s settings changed", slug)
                await self.tenants[slug].reconfigure(t)
        old_s = {s.name: s for s in old.sources if s.enabled}
        new_s = {s.name: s for s in new.sources if s.enabled}
        changed = [n for n in old_s if n not in new_s or new_s[n] != old_s[n]]
        if changed:
            log.info("reload: stopping changed/removed sources %s", changed)
            await self._stop_sources(changed)
        removed_tenants = [slug for slug in old_t if slug not in new_t]
        for name, s in new_s.items():
            if name not in self.sources:
                log.info("reload: starting source %s", name)
                self._add_source(s)
        for slug in removed_tenants:
            log.info("reload: removing tenant %s (flushing its data first)", slug)
            await self._drain_tenant(slug, new.daemon.shutdown_timeout)
        for ext in self.extensions:
            await ext.reload(self, old)


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
