"""The contract between the core and the protocol adapters (DESIGN §3).

An adapter provides a config model (subclass of :class:`ingestd.config.base.SourceConfig`) and a
factory returning a :class:`Source`. The core runs ``await source.run(ctx)`` under its supervisor:

* ``run`` loops until cancelled; it raises :class:`~ingestd.errors.SourceUnavailable` (retried with
  backoff, counted by the breaker), :class:`~ingestd.errors.SourceAuthError` (parked) or
  :class:`~ingestd.errors.SourceConfigError` (disabled). It never retries forever by itself.
* it hands decoded readings to ``await ctx.emit(batch)`` where ``batch.key`` is the point index in
  ``ctx.points`` (or an index returned by ``ctx.register_point`` for dynamic tags);
* it reports connectivity with ``ctx.status.up()/down()`` so the core can mark tags stale and record
  outage windows; and it hands undecodable input to ``ctx.reject()`` (counted, logged once, dead-lettered).

Adapters import only ``ingestd.model``, ``ingestd.ports``, ``ingestd.errors`` and ``ingestd.config``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .model import Batch

if TYPE_CHECKING:
    from .config.base import SourceConfig, TagConfig

__all__ = [
    "AdapterRegistry",
    "AdapterSpec",
    "Emit",
    "Point",
    "Source",
    "SourceContext",
    "SourceMetrics",
    "SourceStatus",
]


@dataclass(frozen=True, slots=True)
class Point:
    """One configured (or dynamically registered) tag of a source."""

    index: int
    tenant: str
    tag: str
    config: TagConfig | None
    """The adapter's tag config; ``None`` for dynamically registered points."""


class Emit(Protocol):
    async def __call__(self, batch: Batch, /) -> None:
        """Hand a batch to the pipeline. Awaits when the tenant inbox is full (backpressure)."""


class SourceStatus(Protocol):
    def up(self, device: str = "") -> None:
        """The connection (or one device behind it) works again; closes the outage window."""

    def down(self, reason: str, device: str = "", points: Iterable[int] | None = None) -> None:
        """The connection (or one device) is lost: its points go stale and an outage window opens.

        ``points`` defaults to every point of the source (``device=""``) — pass the affected point
        indexes when only one device behind a gateway is down. ``reason`` must not contain secrets.
        """


class SourceMetrics(Protocol):
    def count(self, event: str, n: int = 1) -> None:
        """Increment ``ingestd_source_events_total{source, event}`` (e.g. ``poll``, ``overrun``)."""

    def observe(self, op: str, seconds: float) -> None:
        """Record a request duration in ``ingestd_source_request_seconds{source, op}``."""

    def gauge(self, name: str, value: float) -> None:
        """Set ``ingestd_source_gauge{source, name}`` (e.g. ``monitored_items``)."""


@runtime_checkable
class Source(Protocol):
    async def run(self, ctx: SourceContext) -> None: ...


@dataclass(slots=True)
class SourceContext:
    """Everything a source may use. Built by the core for each (re)start of a source."""

    name: str
    config: SourceConfig
    points: Sequence[Point]
    emit: Emit
    status: SourceStatus
    metrics: SourceMetrics
    log: logging.Logger
    state_dir: Path
    """Per-source persistent directory (certificates, session state)."""
    _register: Callable[[str | None, str, dict[str, Any]], int]
    _reject: Callable[[str, str, bytes | None, str], None]

    def register_point(self, tenant: str | None, tag: str, **meta: Any) -> int:
        """Register (or look up) a dynamic tag and return its point index.

        ``tenant`` ``None`` means the source's default tenant. Raises
        :class:`~ingestd.errors.PayloadError` when the tenant is unknown or the tag name invalid.
        Known metadata keys: ``unit``, ``description``, ``data_type``.
        """
        return self._register(tenant, tag, meta)

    def reject(self, reason: str, detail: str, payload: bytes | None = None, *, key: str = "") -> None:
        """Count (per source and reason), log once per (source, reason, key) and dead-letter an
        undecodable input. ``key`` scopes the log-once rule, e.g. the MQTT topic or a tag name."""
        self._reject(reason, detail, payload, key)


SourceFactory = Callable[["SourceConfig"], Source]


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One adapter: its protocol name and where its config model and source factory live.

    Paths are ``"module:attribute"`` strings so that importing the registry never imports a
    protocol library; the source module is imported only when such a source is started.
    """

    protocol: str
    config: str
    source: str
    summary: str = ""

    def config_model(self) -> type[SourceConfig]:
        return _load(self.config)  # type: ignore[no-any-return]

    def factory(self) -> SourceFactory:
        return _load(self.source)  # type: ignore[no-any-return]


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class AdapterRegistry:
    def __init__(self, specs: Sequence[AdapterSpec]) -> None:
        self._specs = {s.protocol: s for s in specs}

    def __contains__(self, protocol: object) -> bool:
        return protocol in self._specs

    def __getitem__(self, protocol: str) -> AdapterSpec:
        return self._specs[protocol]

    def protocols(self) -> list[str]:
        return sorted(self._specs)
