"""Config model of the Sparkplug B host source (no I/O, no protocol library imports)."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from adapters.mqtt.config import MqttConnection
from ingestd.config.base import SourceConfig, TagConfig
from ingestd.config.types import ByteSize, Duration

from .naming import check_template

__all__ = ["SparkplugConnection", "SparkplugSourceConfig", "SparkplugTagConfig"]

_ID_PATTERN = r"^[^/+#\s]{1,64}$"
"""Sparkplug ids (group, edge node, device, host): one MQTT topic level, no wildcards."""
SparkplugId = Annotated[str, Field(pattern=_ID_PATTERN)]


class SparkplugConnection(MqttConnection):
    """The broker connection of a Sparkplug host application.

    A Sparkplug host connects with Clean Start = true and Session Expiry = 0 (MQTT 5; Clean Session
    with 3.1.1) and acknowledges on receipt, so ``session_expiry`` and ``ack`` cannot be set here.
    """

    @model_validator(mode="after")
    def _host_session(self) -> SparkplugConnection:
        fixed = sorted({"session_expiry", "ack"} & self.model_fields_set)
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be set for a Sparkplug host: it always connects with "
                             "Clean Start and Session Expiry 0 (Sparkplug 3.0 host requirement; see README)")
        return self


class SparkplugTagConfig(TagConfig):
    """An explicit tag (units, deadband, scaling…). Matched either by ``metric`` (+ ``node``, optional
    ``group``/``device``) or, without ``metric``, by its ``name`` equal to the rendered tag name."""

    metric: str | None = None
    """Sparkplug metric name, exactly as in the BIRTH (e.g. ``"Pump/Speed"``)."""
    group: SparkplugId | None = None
    """Group id; unset matches any group."""
    node: SparkplugId | None = None
    """Edge node id (required with ``metric``)."""
    device: SparkplugId | None = None
    """Device id; unset means a metric of the edge node itself (NBIRTH/NDATA)."""

    @model_validator(mode="after")
    def _matcher(self) -> SparkplugTagConfig:
        if self.metric is None and (self.group or self.node or self.device):
            raise ValueError("group/node/device only apply together with `metric`")
        if self.metric is not None and self.node is None:
            raise ValueError("`node` is required with `metric` (the metric name alone is ambiguous)")
        return self


class SparkplugSourceConfig(SourceConfig):
    protocol: Literal["sparkplug"]
    connection: SparkplugConnection = SparkplugConnection()
    host_id: SparkplugId | None = None
    """Sparkplug Host Application id: STATE topic ``spBv1.0/STATE/<host_id>``. Default ``ingestd-<name>``."""
    groups: list[SparkplugId] = Field(default_factory=list)
    """Group ids to subscribe to (``spBv1.0/<group>/#`` each); empty: the whole namespace ``spBv1.0/#``."""
    reorder_timeout: Duration = 2.0
    """How long out-of-order messages of an edge node are held waiting for a missing seq before the
    host requests a rebirth. ``0``: request a rebirth on the first gap."""
    rebirth_interval: Annotated[Duration, Field(ge=0.1)] = 5.0
    """Minimum time between two rebirth requests (NCMD) to the same edge node."""
    tenant_template: str | None = None
    """Tenant from ``{group}``/``{node}`` (e.g. ``"{group}"``, lower-cased and sanitised). Default: ``tenant``."""
    tag: str = "{node}.{device}.{metric}"
    """Tag name template of device metrics (sanitised to the core's tag-name pattern, see README)."""
    node_tag: str = "{node}.{metric}"
    """Tag name template of edge-node metrics (NBIRTH/NDATA)."""
    auto_register: bool = True
    """Register metrics not listed in ``tags`` as tags. When false they are rejected (``unknown_tag``)."""
    exclude_metrics: list[str] = Field(default_factory=lambda: ["bdSeq", "Node Control/*", "Device Control/*"])
    """Metric names never stored (shell-style patterns, case-sensitive)."""
    historical: Literal["store", "drop"] = "store"
    """``is_historical`` metrics (store-and-forward backfill): store them, or drop them."""
    tags: list[SparkplugTagConfig] = Field(default_factory=list)  # type: ignore[assignment]
    max_payload: ByteSize = 1024 * 1024
    """Larger messages are rejected (reason ``oversized``)."""
    max_queued: Annotated[int, Field(ge=10)] = 10_000
    """Messages buffered between the MQTT client and the host state machine. Beyond it the MQTT client
    discards messages (logged); the seq gap this leaves makes the host request a rebirth."""

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        return check_template(v, ("group", "node", "device", "metric"), required=("metric",))

    @field_validator("node_tag")
    @classmethod
    def _node_tag(cls, v: str) -> str:
        return check_template(v, ("group", "node", "metric"), required=("metric",))

    @field_validator("tenant_template")
    @classmethod
    def _tenant(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v, ("group", "node"))

    @field_validator("exclude_metrics")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p:
                raise ValueError("empty pattern")
            fnmatch.translate(p)
        return v

    @property
    def host(self) -> str:
        return self.host_id or f"ingestd-{self.name}"[:64]

    def security_warnings(self) -> list[tuple[str, str]]:
        return self.connection.security_warnings()
