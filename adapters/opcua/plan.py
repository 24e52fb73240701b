"""Pure planning: operation limits, request chunking, node resolution and monitored-item settings.

Servers publish per-service limits under ``Server/ServerCapabilities/OperationLimits``; a request
with more nodes than allowed fails as a whole (``BadTooManyOperations``), which is how large tag
lists break OPC UA clients at ~1,000 nodes. Every multi-node request is therefore split by
:func:`chunked` at the effective limit from :func:`effective_limits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from .config import LimitsConfig, MonitoringOverride, OpcUaTagConfig, SubscriptionConfig
from .nodeid import NodeId, NodeRef, UnknownNamespace

__all__ = [
    "LIMIT_NODES",
    "ItemSettings",
    "OperationLimits",
    "Resolution",
    "chunked",
    "effective_limits",
    "item_settings",
    "resolve_points",
    "tag_settings",
]

T = TypeVar("T")

LIMIT_NODES: Final = {
    "read": 11705,  # Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
    "browse": 11710,  # ..._MaxNodesPerBrowse
    "register": 11711,  # ..._MaxNodesPerRegisterNodes
    "monitored_items": 11714,  # ..._MaxMonitoredItemsPerCall
}
"""Namespace-0 numeric ids of the OperationLimits variables ingestd honours."""

_TRIGGERS: Final = {"status": 0, "status_value": 1, "status_value_timestamp": 2}
_DEADBANDS: Final = {"none": 0, "absolute": 1, "percent": 2}


@dataclass(frozen=True, slots=True)
class OperationLimits:
    read: int
    monitored_items: int
    register: int
    browse: int
    published: Mapping[str, int | None]
    """What the server published (``None``: not published or unreadable)."""


def effective_limits(published: Mapping[str, int | None], cfg: LimitsConfig) -> OperationLimits:
    """Per-request node counts: the server's limit (when > 0), lowered by a configured cap;
    ``cfg.fallback`` when the server publishes nothing usable."""
    caps = {
        "read": cfg.max_nodes_per_read,
        "monitored_items": cfg.max_monitored_items_per_call,
        "register": cfg.max_nodes_per_register,
        "browse": cfg.max_nodes_per_browse,
    }
    out: dict[str, int] = {}
    for name, cap in caps.items():
        server = published.get(name)
        candidates = [v for v in (server if server and server > 0 else None, cap) if v is not None]
        out[name] = min(candidates) if candidates else cfg.fallback
    return OperationLimits(out["read"], out["monitored_items"], out["register"], out["browse"], dict(published))


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (no empty slice)."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True, slots=True)
class Resolution:
    resolved: list[tuple[int, NodeId]]
    """(point index, wire node id)"""
    unknown_namespace: list[tuple[int, str]]
    """(point index, namespace URI missing from the server's namespace array)"""


def resolve_points(refs: Sequence[tuple[int, NodeRef]], namespace_array: Sequence[str]) -> Resolution:
    resolved: list[tuple[int, NodeId]] = []
    unknown: list[tuple[int, str]] = []
    index = {uri: i for i, uri in enumerate(namespace_array)}
    for point, ref in refs:
        if isinstance(ref.namespace, str):
            ns = index.get(ref.namespace)
            if ns is None:
                unknown.append((point, UnknownNamespace(ref.namespace).uri))
                continue
            resolved.append((point, NodeId(ns, ref.kind, ref.identifier)))
        else:
            resolved.append((point, NodeId(ref.namespace, ref.kind, ref.identifier)))
    return Resolution(resolved, unknown)


@dataclass(frozen=True, slots=True)
class ItemSettings:
    """Monitoring parameters of one monitored item, in OPC UA wire units."""

    sampling_interval_ms: float
    """``-1``: the subscription's publishing interval."""
    queue_size: int
    discard_oldest: bool
    trigger: int
    deadband_type: int
    deadband_value: float

    @property
    def needs_filter(self) -> bool:
        """False when the server default (StatusValue, no deadband) applies: send no filter."""
        return self.deadband_type != 0 or self.trigger != _TRIGGERS["status_value"]


def item_settings(sub: SubscriptionConfig, override: MonitoringOverride | None) -> ItemSettings:
    o = override or MonitoringOverride()
    sampling = o.sampling_interval if o.sampling_interval is not None else sub.sampling_interval
    deadband_type = o.deadband_type or sub.deadband_type
    deadband_value = o.deadband_value if o.deadband_value is not None else sub.deadband_value
    return ItemSettings(
        sampling_interval_ms=-1.0 if sampling is None else sampling * 1000.0,
        queue_size=o.queue_size or sub.queue_size,
        discard_oldest=sub.discard_oldest,
        trigger=_TRIGGERS[o.trigger or sub.trigger],
        deadband_type=_DEADBANDS[deadband_type],
        deadband_value=0.0 if deadband_type == "none" else deadband_value,
    )


def tag_settings(tags: Sequence[OpcUaTagConfig], sub: SubscriptionConfig) -> list[ItemSettings]:
    """Settings per tag, sharing one object between tags without overrides."""
    default = item_settings(sub, None)
    return [default if t.monitoring is None else item_settings(sub, t.monitoring) for t in tags]
