"""Subscription mode: one subscription per session, monitored items created in limit-sized chunks.

Data path (built for ~20,000 items changing every second): the publish loop hands each
PublishResponse to :class:`~.client.NotificationBuffer`, which only appends the notifications to a
list; a single emitter task wakes up, drains everything received since its last turn, builds one
columnar batch and emits it. Nothing per item allocates tasks or objects beyond asyncua's decoding.

Client handles are point indexes, so no lookup is needed to key a notification.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal

from ingestd.ports import SourceContext

from .client import NotificationBuffer, OpcUaClient, SubscriptionInfo, status_name
from .config import OpcUaSourceConfig
from .decode import STATUS_NODE_UNKNOWN
from .health import TagHealth, emit_raw
from .nodeid import NodeRef
from .plan import ItemSettings, OperationLimits, Resolution, chunked, resolve_points, tag_settings

__all__ = ["SubscriptionRunner"]


class SubscriptionRunner:
    def __init__(self, ctx: SourceContext, cfg: OpcUaSourceConfig, client: OpcUaClient,
                 limits: OperationLimits, health: TagHealth) -> None:
        self.ctx, self.cfg, self.client, self.limits, self.health = ctx, cfg, client, limits, health
        self.buffer = NotificationBuffer(cfg.subscription.max_buffered)
        self.settings: list[ItemSettings] = tag_settings(cfg.tags, cfg.subscription)
        self.info: SubscriptionInfo | None = None
        self.pending: dict[int, NodeRef] = {}
        """Points without a monitored item (rejected node or unknown namespace), retried periodically."""
        self.monitored = 0
        self._dropped_seen = 0
        self._overflowing = False

    async def setup(self, refs: Sequence[tuple[int, NodeRef]], resolution: Resolution) -> None:
        s = self.cfg.subscription
        self.info = await self.client.create_subscription(
            publishing_interval=s.publishing_interval, keepalive_count=s.keepalive_count,
            lifetime_count=s.lifetime_count, max_notifications=s.max_notifications_per_publish,
            priority=s.priority, buffer=self.buffer,
        )
        self.pending = dict(refs)
        await self._create(resolution, emit="all")

    async def _create(self, resolution: Resolution, emit: Literal["changed", "all"] = "changed") -> None:
        """Create monitored items for ``resolution``; report what the server (or the namespace
        array) rejected and keep it pending."""
        assert self.info is not None
        bad: list[tuple[int, int, str]] = [
            (p, STATUS_NODE_UNKNOWN, f"namespace {uri!r} not in the server's namespace array")
            for p, uri in resolution.unknown_namespace
        ]
        ok: list[int] = []
        items = [(p, node, self.settings[p]) for p, node in resolution.resolved]
        for chunk in chunked(items, self.limits.monitored_items):
            t0 = time.perf_counter()
            statuses = await self.client.create_monitored_items(self.info.subscription_id, chunk)
            self.ctx.metrics.observe("create_monitored_items", time.perf_counter() - t0)
            for (point, node, _), status in zip(chunk, statuses, strict=True):
                if status >> 31:
                    bad.append((point, status, str(node)))
                else:
                    ok.append(point)
                    self.pending.pop(point, None)
        self.monitored += len(ok)
        self.ctx.metrics.gauge("monitored_items", self.monitored)
        self.health.node_ok(self.ctx, ok)
        batch = self.health.node_bad(self.ctx, bad, emit)
        if batch is not None:
            await self.ctx.emit(batch)

    def stale_reason(self) -> str | None:
        """Why the subscription looks dead (server-side status change, or silence longer than the
        keep-alive period allows), else ``None``."""
        if self.buffer.status_error is not None:
            return f"subscription ended by the server ({status_name(self.buffer.status_error)})"
        if self.info is None:
            return None
        allowed = self.info.publishing_interval * max(self.info.keepalive_count, 1) * 2 + self.cfg.request_timeout
        silent = time.monotonic() - self.buffer.last_publish
        if silent > allowed:
            return f"no publish response (data or keep-alive) for {silent:.1f}s"
        return None

    async def emit_loop(self) -> None:
        mode = self.cfg.timestamp
        while True:
            await self.buffer.ready.wait()
            raw = self.buffer.drain()
            lost = self.buffer.dropped - self._dropped_seen
            if lost:
                self._dropped_seen = self.buffer.dropped
                self.ctx.metrics.count("buffer_overflow", lost)
                if not self._overflowing:
                    self.ctx.log.warning("OPC UA source %r: notification buffer full (%d) while the pipeline "
                                         "applies backpressure; dropping the oldest (counted as buffer_overflow)",
                                         self.ctx.name, self.buffer.capacity)
                self._overflowing = True
            elif self._overflowing:
                self._overflowing = False
                self.ctx.log.info("OPC UA source %r: notification buffer recovered", self.ctx.name)
            n = await emit_raw(self.ctx, raw, mode, self.health)
            if n:
                self.ctx.metrics.count("notifications", n)

    async def retry_loop(self) -> None:
        """Every ``bad_node_retry``: re-read the namespace array, re-resolve and retry pending points."""
        while True:
            await asyncio.sleep(self.cfg.bad_node_retry)
            if not self.pending:
                continue
            self.ctx.metrics.count("bad_node_retry")
            namespaces = await self.client.namespace_array()
            await self._create(resolve_points(sorted(self.pending.items()), namespaces))
