"""Polling mode: the Read service on a fixed monotonic schedule.

Tick ``k`` is due at ``start + k × interval`` (no drift from the time a read takes). A read that
overruns its slot skips the missed ticks (counted as ``overrun``) instead of bursting to catch up.
Reads are split into requests of at most MaxNodesPerRead nodes, sent concurrently, and the answers
of one tick become one batch. With ``node_registration = "register"`` the nodes are registered once
per session (in chunks of MaxNodesPerRegisterNodes) and their aliases are read.

Every tick reads every resolved tag, so a node the server rejects yields a BAD sample with its status
each tick (logged once); tags whose ``nsu=`` namespace is not published are retried every
``bad_node_retry`` by re-reading the namespace array.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal

from ingestd.model import now_us
from ingestd.ports import SourceContext

from .client import OpcUaClient, ReadPlan
from .config import OpcUaSourceConfig
from .decode import STATUS_NODE_UNKNOWN, RawSamples
from .health import TagHealth, emit_raw
from .nodeid import NodeId, NodeRef
from .plan import OperationLimits, Resolution, chunked, resolve_points

__all__ = ["Poller"]

_NODE_ERRORS = frozenset({
    0x8033_0000,  # BadNodeIdInvalid
    0x8034_0000,  # BadNodeIdUnknown
    0x8035_0000,  # BadAttributeIdInvalid
    0x803A_0000,  # BadNotReadable
    0x801F_0000,  # BadUserAccessDenied
    0x803D_0000,  # BadNotSupported
})


class Poller:
    def __init__(self, ctx: SourceContext, cfg: OpcUaSourceConfig, client: OpcUaClient,
                 limits: OperationLimits, health: TagHealth) -> None:
        self.ctx, self.cfg, self.client, self.limits, self.health = ctx, cfg, client, limits, health
        self.nodes: dict[int, NodeId] = {}
        self.plans: list[ReadPlan] = []
        self.pending: dict[int, NodeRef] = {}
        """Points whose namespace URI is not published (retried periodically)."""

    async def setup(self, refs: Sequence[tuple[int, NodeRef]], resolution: Resolution) -> None:
        self.pending = dict(refs)
        await self._add(resolution, emit="all")

    async def _add(self, resolution: Resolution, emit: Literal["changed", "all"] = "changed") -> None:
        bad = [(p, STATUS_NODE_UNKNOWN, f"namespace {uri!r} not in the server's namespace array")
               for p, uri in resolution.unknown_namespace]
        new = dict(resolution.resolved)
        for p in new:
            self.pending.pop(p, None)
        if self.cfg.polling.node_registration == "register" and new:
            new = await self._register(new)
        self.nodes.update(new)
        keys = sorted(self.nodes)
        self.plans = [ReadPlan(chunk, [self.nodes[k] for k in chunk], self.cfg.polling.max_age)
                      for chunk in chunked(keys, self.limits.read)]
        self.ctx.metrics.gauge("polled_items", len(keys))
        batch = self.health.node_bad(self.ctx, bad, emit)
        if batch is not None:
            await self.ctx.emit(batch)

    async def _register(self, nodes: dict[int, NodeId]) -> dict[int, NodeId]:
        keys = sorted(nodes)
        out: dict[int, NodeId] = {}
        for chunk in chunked(keys, self.limits.register):
            registered = await self.client.register_nodes([nodes[k] for k in chunk])
            if len(registered) != len(chunk):  # a non-conforming answer: read the configured ids
                registered = [nodes[k] for k in chunk]
            out.update(zip(chunk, registered, strict=True))
        return out

    async def poll_once(self) -> int:
        t0 = time.perf_counter()
        parts: list[RawSamples] = await asyncio.gather(*(self.client.read(plan) for plan in self.plans))
        recv = now_us()
        self.ctx.metrics.observe("read", time.perf_counter() - t0)
        raw = _merge(parts)
        self._track_node_errors(raw)
        return await emit_raw(self.ctx, raw, self.cfg.timestamp, self.health, recv)

    def _track_node_errors(self, raw: RawSamples) -> None:
        failed = [(k, s) for k, s in zip(raw.key, raw.status, strict=True) if s & 0xFFFF_0000 in _NODE_ERRORS]
        if failed:
            self.health.node_bad(self.ctx, [(k, s, str(self.nodes.get(k, ""))) for k, s in failed])
        if self.health.bad_nodes:
            failed_keys = {k for k, _ in failed}
            self.health.node_ok(self.ctx, [k for k in list(self.health.bad_nodes)
                                           if k in self.nodes and k not in failed_keys])

    async def poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.polling.interval
        due = loop.time()
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.poll_once()
            self.ctx.metrics.count("poll")
            due += interval
            late = loop.time() - due
            if late >= 0:
                skipped = int(late // interval) + 1
                due += skipped * interval
                self.ctx.metrics.count("overrun", skipped)

    async def retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.bad_node_retry)
            if self.pending:
                self.ctx.metrics.count("bad_node_retry")
                namespaces = await self.client.namespace_array()
                await self._add(resolve_points(sorted(self.pending.items()), namespaces))


def _merge(parts: list[RawSamples]) -> RawSamples:
    if len(parts) == 1:
        return parts[0]
    out = RawSamples()
    for p in parts:
        out.key.extend(p.key)
        out.value.extend(p.value)
        out.status.extend(p.status)
        out.source_us.extend(p.source_us)
        out.server_us.extend(p.server_us)
    return out
