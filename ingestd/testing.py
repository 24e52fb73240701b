"""Test helpers for adapter authors: a recording :class:`~ingestd.ports.SourceContext`.

>>> ctx = RecordingContext.for_source(config)
>>> task = asyncio.create_task(source.run(ctx))
>>> await ctx.wait_rows(10)
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config.base import SourceConfig
from .errors import PayloadError
from .model import Batch
from .ports import Point, SourceContext

__all__ = ["RecordingContext", "StatusEvent"]


@dataclass(frozen=True, slots=True)
class StatusEvent:
    kind: str  # "up" | "down"
    device: str
    reason: str = ""
    points: tuple[int, ...] | None = None


@dataclass
class _Recorder:
    batches: list[Batch] = field(default_factory=list)
    status: list[StatusEvent] = field(default_factory=list)
    rejects: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    observations: dict[str, list[float]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        self.changed.set()


class _Status:
    def __init__(self, rec: _Recorder) -> None:
        self._rec = rec

    def up(self, device: str = "") -> None:
        self._rec.status.append(StatusEvent("up", device))
        self._rec.poke()

    def down(self, reason: str, device: str = "", points: Iterable[int] | None = None) -> None:
        self._rec.status.append(StatusEvent("down", device, reason, tuple(points) if points is not None else None))
        self._rec.poke()


class _Metrics:
    def __init__(self, rec: _Recorder) -> None:
        self._rec = rec

    def count(self, event: str, n: int = 1) -> None:
        self._rec.events[event] = self._rec.events.get(event, 0) + n
        self._rec.poke()

    def observe(self, op: str, seconds: float) -> None:
        self._rec.observations.setdefault(op, []).append(seconds)
        self._rec.poke()

    def gauge(self, name: str, value: float) -> None:
        self._rec.gauges[name] = value
        self._rec.poke()


class RecordingContext(SourceContext):
    """A SourceContext that records everything a source does, for adapter tests."""

    rec: _Recorder
    dynamic: dict[tuple[str, str], int]

    @classmethod
    def for_source(cls, config: SourceConfig, *, tenant: str = "t1", state_dir: Path | None = None,
                   known_tenants: Iterable[str] = ("t1",)) -> RecordingContext:
        rec = _Recorder()
        points = [Point(i, t.tenant or config.tenant or tenant, t.name, t) for i, t in enumerate(config.tags)]
        dynamic: dict[tuple[str, str], int] = {(p.tenant, p.tag): p.index for p in points}
        tenants = set(known_tenants) | {config.tenant or tenant}

        async def emit(batch: Batch) -> None:
            rec.batches.append(batch)
            batch.release()
            rec.poke()

        def register(ten: str | None, tag: str, meta: dict[str, Any]) -> int:
            ten = ten or config.tenant or tenant
            if ten not in tenants:
                raise PayloadError("unknown_tenant", f"tenant {ten!r} is not configured")
            key = (ten, tag)
            if key not in dynamic:
                dynamic[key] = len(points)
                points.append(Point(len(points), ten, tag, None))
            return dynamic[key]

        def reject(reason: str, detail: str, payload: bytes | None, key: str) -> None:
            rec.rejects.append((reason, detail, payload))
            rec.poke()

        ctx = cls(
            name=config.name, config=config, points=points, emit=emit, status=_Status(rec),
            metrics=_Metrics(rec), log=logging.getLogger(f"test.source.{config.name}"),
            state_dir=state_dir or Path(tempfile.mkdtemp(prefix="ingestd-src-")),
            _register=register, _reject=reject,
        )
        ctx.rec = rec
        ctx.dynamic = dynamic
        return ctx

    @property
    def rows(self) -> Batch:
        return Batch.concat(self.rec.batches)

    def values_by_tag(self) -> dict[str, list[float]]:
        b = self.rows
        out: dict[str, list[float]] = {}
        for k, v in zip(b.key.tolist(), b.value.tolist(), strict=True):
            out.setdefault(self.points[k].tag, []).append(v)
        return out

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` is true, re-checking whenever the source does something."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.rec.changed.clear()
                await self.rec.changed.wait()

    async def wait_rows(self, n: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda c: sum(len(b) for b in c.rec.batches) >= n, timeout)
