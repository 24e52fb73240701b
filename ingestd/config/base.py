"""Base config models shared by the core and the adapters.

Every adapter's source config subclasses :class:`SourceConfig` (with ``protocol: Literal["<name>"]``)
and its tag config subclasses :class:`TagConfig`. All models are frozen and reject unknown keys.
Scaling (``value * scale + offset``), deadband and heartbeat are applied by the core for every
protocol; adapters deliver raw decoded values.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .types import Duration, Identifier, Slug, TagName

__all__ = ["Frozen", "SourceConfig", "TagConfig"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, hide_input_in_errors=True)


DataType = Literal["float", "int", "bool", "enum", "string"]


class TagConfig(Frozen):
    """One tag (a time series). Adapter tag models add their addressing fields."""

    name: TagName
    tenant: Slug | None = None
    """Write this tag to another tenant than the source's (rare; e.g. a shared gateway)."""
    description: str = ""
    unit: str = ""
    data_type: DataType = "float"
    scale: float = 1.0
    offset: float = 0.0
    deadband: Annotated[float, Field(ge=0)] | None = None
    """Store a new sample only when |value - last stored| > deadband (report by exception).
    ``0`` stores only changes; unset stores every sample."""
    heartbeat: Duration | None = None
    """With a deadband: store a sample at least this often even when unchanged."""

    @model_validator(mode="after")
    def _check_scaling(self) -> TagConfig:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.heartbeat is not None and self.heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        return self


class SourceConfig(Frozen):
    """Common fields of every source (one connection to a device, gateway or broker)."""

    name: Identifier
    protocol: str
    tenant: Slug | None = None
    """Tenant receiving this source's readings. May be omitted when exactly one tenant exists."""
    enabled: bool = True
    tags: list[TagConfig] = Field(default_factory=list)
    backoff_initial: Duration = 1.0
    backoff_max: Annotated[Duration, Field(gt=0)] = 30.0
    """Reconnect backoff cap (full jitter between 0 and the current step)."""
    breaker_fail_max: Annotated[int, Field(ge=1, le=1000)] = 5
    """Consecutive failures that open this source's circuit breaker."""
    breaker_reset: Duration = 30.0
    """How long an open breaker waits before letting one attempt through."""
    stale_after: Duration | None = None
    """Mark the source's tags stale when nothing arrives for this long (default: never for push
    sources; adapters may derive one from their poll interval)."""
    lease: Literal["auto", "always", "never"] = "auto"
    """Multi-instance leasing through a PostgreSQL advisory lock: ``auto`` leases polled sources
    when a coordination database is configured."""
