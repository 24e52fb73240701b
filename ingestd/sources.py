"""What the daemon keeps per running source, and the :class:`~ingestd.ports.SourceContext` it hands
to the adapter: status that logs once per transition, metrics, dynamic tag registration, rejects."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config.base import SourceConfig
from .config.types import TAG_RE
from .errors import PayloadError
from .metrics import Metrics
from .model import Batch, now_us
from .pipeline.router import Router, SourceRoute
from .pipeline.supervisor import SourceRunner
from .pipeline.tags import TagMeta
from .pipeline.tenant import TenantPipeline
from .ports import Point, SourceContext
from .storage.store import DeadLetter, Outage

__all__ = ["SourceHandle", "SourceHost", "SourceStatusImpl", "make_context", "mark_stale"]

log = logging.getLogger("ingestd.daemon")

_TAG_PATTERN = re.compile(TAG_RE)
_MAX_DEAD_LETTER_PAYLOAD = 64 * 1024


class SourceHost(Protocol):
    """The parts of the daemon a source's context uses."""

    metrics: Metrics
    router: Router
    instance: str
    state_dir: Path
    tenants: dict[str, TenantPipeline]


@dataclass
class SourceHandle:
    cfg: SourceConfig
    route: SourceRoute
    by_name: dict[str, int] = field(default_factory=dict)
    """Configured tag name → point, for adapters that name a tag without its tenant."""
    secrets: str = ""
    """:func:`ingestd.reload.secret_fingerprint` of ``cfg`` when the source started."""
    runner: SourceRunner | None = None
    task: asyncio.Task[None] | None = None
    leased: bool = False
    device_up: dict[str, bool] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.cfg.name


class SourceStatusImpl:
    """SourceStatus for one source: logs once per transition, marks tags stale, records outages."""

    def __init__(self, host: SourceHost, handle: SourceHandle) -> None:
        self._d = host
        self._h = handle

    def up(self, device: str = "") -> None:
        h = self._h
        if h.runner is not None:
            h.runner.healthy()
        was = h.device_up.get(device)
        h.device_up[device] = True
        self._d.metrics.source_up.labels(h.name, device).set(1)
        if was is True:
            return
        if was is False:
            log.info("source %s%s is back", h.name, f" device {device}" if device else "")
        # the first contact of this process also closes an outage window left open by a previous run
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


def mark_stale(host: SourceHost, h: SourceHandle) -> None:
    """The source no longer collects here (stopped, restarting, standing by): its values are stale."""
    for device in h.device_up:
        host.metrics.source_up.labels(h.name, device).set(0)
    for t in h.route.tenants:
        t.registry.stale[h.route.keys_for(t)] = True


def make_context(host: SourceHost, handle: SourceHandle, runner: SourceRunner) -> SourceContext:
    route = handle.route
    status = SourceStatusImpl(host, handle)
    router = host.router
    state = host.state_dir / "sources" / handle.name
    state.mkdir(parents=True, exist_ok=True)
    healthy = [False]

    async def emit(batch: Batch) -> None:
        if not healthy[0]:
            healthy[0] = True
            runner.healthy()
            if not handle.device_up.get(""):
                status.up()
        await router.route(route, batch)

    def register(tenant: str | None, tag: str, meta: dict[str, Any]) -> int:
        slug = tenant or route.tenants[0].slug
        idx = route.lookup.get((slug, tag))
        if idx is None and tenant is None:
            idx = handle.by_name.get(tag)  # a configured tag routed to another tenant (tags[].tenant)
        if idx is not None:
            return idx
        tp = host.tenants.get(slug)
        if tp is None:
            raise PayloadError("unknown_tenant", f"tenant {slug!r} is not configured")
        if not _TAG_PATTERN.fullmatch(tag):
            raise PayloadError("bad_tag_name", f"{tag!r} is not a valid tag name")
        key = tp.ensure_tag(TagMeta(tag, handle.name, str(meta.get("unit", "")), str(meta.get("data_type", "float")),
                                    str(meta.get("description", "")), configured=False))
        return route.add(tp, key, Point(len(route.points), slug, tag, None))

    def reject(reason: str, detail: str, payload: bytes | None, key: str) -> None:
        host.metrics.malformed.labels(handle.name, reason).inc()
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
        metrics=_Metrics(host.metrics, handle.name), log=logging.getLogger(f"ingestd.source.{handle.name}"),
        state_dir=state, _register=register, _reject=reject,
    )

