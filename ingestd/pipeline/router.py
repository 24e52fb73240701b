"""Routing: source point → (tenant, tag), sanity checks, scaling, live cache, listeners, deadband.

The hot path works on whole NumPy columns; a batch that stays within one tenant (the usual case)
costs a handful of vector operations regardless of its size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from ..config.model import PipelineConfig
from ..metrics import Metrics
from ..model import STATUS_NOT_FINITE, Batch, Quality, now_us
from ..ports import Point
from .filter import apply_deadband
from .tenant import TenantPipeline

__all__ = ["Router", "SampleListener", "SourceRoute"]

log = logging.getLogger(__name__)

SampleListener = Callable[[TenantPipeline, Batch], None]
"""Called with every routed batch (tag keys, before deadband): alarm engine, live streams."""

_BAD: Final = np.uint8(Quality.BAD)


@dataclass
class SourceRoute:
    """The point table of one source: where each point goes and how it is scaled."""

    name: str
    tenants: list[TenantPipeline]
    points: list[Point] = field(default_factory=list)
    tenant_idx: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    tag_key: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    scale: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    offset: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    lookup: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, point_tenant: TenantPipeline, tag_key: int, point: Point, scale: float = 1.0,
            offset: float = 0.0) -> int:
        idx = len(self.points)
        if point_tenant not in self.tenants:
            self.tenants.append(point_tenant)
        t = self.tenants.index(point_tenant)
        self.points.append(point)
        self.tenant_idx = np.append(self.tenant_idx, np.int16(t))
        self.tag_key = np.append(self.tag_key, np.int32(tag_key))
        self.scale = np.append(self.scale, scale)
        self.offset = np.append(self.offset, offset)
        self.lookup[(point.tenant, point.tag)] = idx
        return idx

    def keys_for(self, tenant: TenantPipeline, points: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
        """Tag keys (in ``tenant``) of the given points, default all points of this source."""
        if tenant not in self.tenants:
            return np.empty(0, np.int32)
        t = self.tenants.index(tenant)
        sel = np.arange(len(self.points), dtype=np.int32) if points is None else points
        sel = sel[(sel >= 0) & (sel < len(self.points))]
        keys: npt.NDArray[np.int32] = self.tag_key[sel[self.tenant_idx[sel] == t]]
        return keys


class Router:
    def __init__(self, cfg: PipelineConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.listeners: list[SampleListener] = []
        self._warned: set[tuple[str, str]] = set()

    def _reject_rows(self, route: SourceRoute, reason: str, n: int, detail: str) -> None:
        self.metrics.malformed.labels(route.name, reason).inc(n)
        if (route.name, reason) not in self._warned:
            self._warned.add((route.name, reason))
            log.warning("source %s: %d reading(s) rejected (%s): %s [logged once per source and reason]",
                        route.name, n, reason, detail)

    async def route(self, route: SourceRoute, batch: Batch) -> None:
        n = len(batch)
        if n == 0:
            batch.release()
            return
        pts = batch.key
        if int(pts.min()) < 0 or int(pts.max()) >= len(route.points):
            bad = (pts < 0) | (pts >= len(route.points))
            self._reject_rows(route, "unknown_point", int(bad.sum()), "adapter emitted a point index out of range")
            batch = self._keep(batch, ~bad)
            pts = batch.key
        # absurd timestamps (clock skew beyond the configured window) are rejected
        now = now_us()
        lo, hi = now - int(self.cfg.max_past * 1e6), now + int(self.cfg.max_future * 1e6)
        ts = batch.ts
        if int(ts.min()) < lo or int(ts.max()) > hi:
            bad = (ts < lo) | (ts > hi)
            self._reject_rows(route, "timestamp_out_of_range", int(bad.sum()),
                              f"source timestamps outside now-{self.cfg.max_past:g}s..now+{self.cfg.max_future:g}s")
            batch = self._keep(batch, ~bad)
            pts = batch.key
        if len(batch) == 0:
            batch.release()
            return
        value = batch.value * route.scale[pts] + route.offset[pts]
        quality = batch.quality
        finite = np.isfinite(value)
        if not finite.all():
            # NaN/inf on a non-BAD sample: BAD with an explicit status; BAD samples carry NaN anyway
            wrong = ~finite & (quality != _BAD)
            if wrong.any():
                self._reject_rows(route, "not_finite", int(wrong.sum()), "NaN or infinite value stored as BAD")
                quality = quality.copy()
                quality[wrong] = _BAD
                status = batch.status.copy()
                status[wrong] = STATUS_NOT_FINITE
                batch.status = status
            value[~finite] = np.nan
        batch.value = value
        batch.quality = quality
        if len(route.tenants) == 1:
            await self._deliver(route, route.tenants[0], route.tag_key[pts], batch)
            return
        tix = route.tenant_idx[pts]
        present = np.unique(tix)
        if present.shape[0] > 1:
            for tok in batch.tokens:
                tok.hold(int(present.shape[0]) - 1)
        for t in present.tolist():
            sel = tix == t
            part = batch.take(sel)
            part.tokens = list(batch.tokens)
            await self._deliver(route, route.tenants[t], route.tag_key[pts[sel]], part)

    @staticmethod
    def _keep(batch: Batch, mask: npt.NDArray[np.bool_]) -> Batch:
        out = batch.take(mask)
        out.tokens = batch.tokens
        return out

    async def _deliver(self, route: SourceRoute, tenant: TenantPipeline, keys: npt.NDArray[np.int32],
                       batch: Batch) -> None:
        routed = Batch(keys, batch.ts, batch.value, batch.quality, batch.status, batch.recv_us, batch.tokens)
        if batch.historical:
            # backfill: stored as is; live cache, alarms and deadband state only follow live data
            self.metrics.points_received.labels(tenant.slug, route.name).inc(len(routed))
            routed.origin = {route.name: len(routed)}
            await tenant.inbox.put(routed)
            return
        reg = tenant.registry
        reg.update_live(keys, batch.ts, batch.value, batch.quality, batch.status, batch.recv_us)
        self.metrics.points_received.labels(tenant.slug, route.name).inc(len(routed))
        for listener in self.listeners:
            listener(tenant, routed)
        stored = apply_deadband(reg, routed)
        filtered = len(routed) - len(stored)
        if filtered:
            self.metrics.points_filtered.labels(tenant.slug, route.name).inc(filtered)
        if len(stored) == 0:
            stored.release()
            return
        stored.origin = {route.name: len(stored)}
        await tenant.inbox.put(stored)
