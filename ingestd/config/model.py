"""The root configuration model: daemon, pipeline, API, tenants, sources, alarms."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator

from .base import Frozen
from .types import ByteSize, Duration, Identifier, Secret, Slug

__all__ = [
    "ApiConfig",
    "ApiToken",
    "CoordinationConfig",
    "DaemonConfig",
    "PipelineConfig",
    "PoolConfig",
    "RetentionConfig",
    "RollupConfig",
    "SpoolConfig",
    "StorageConfig",
    "TenantConfig",
]

Scope = Literal["read", "ack", "admin"]
Listen = Annotated[str, Field(pattern=r"^[^\s:]*:\d{1,5}$")]


class DaemonConfig(Frozen):
    state_dir: str = "/var/lib/ingestd"
    """Spool, certificates and other persistent state (systemd ``StateDirectory=``)."""
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(default_factory=dict)
    """Per-module levels, e.g. ``{"adapters.opcua" = "debug"}``."""
    metrics_listen: Listen | None = "127.0.0.1:9108"
    """Prometheus ``/metrics`` endpoint (``host:port``; port 0 picks a free port). Unset: off."""
    shutdown_timeout: Duration = 20.0
    """SIGTERM: how long to wait for inboxes to reach the database or spool."""
    instance_id: Identifier | None = None
    """Name of this process among several (leases, MQTT client ids). Default: the hostname."""


class SpoolConfig(Frozen):
    max_bytes: ByteSize = 1024**3
    """Per tenant. When full, the oldest segments are dropped (counted, logged, system alarm)."""
    segment_bytes: ByteSize = 16 * 1024**2
    fsync: Literal["interval", "always", "never"] = "interval"
    fsync_interval: Duration = 1.0
    """With ``fsync = "interval"``: spooled data is durable within this time."""


class PipelineConfig(Frozen):
    batch_max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    batch_max_age: Duration = 0.25
    inbox_max_rows: Annotated[int, Field(ge=1000)] = 200_000
    """Per tenant. Sources wait (backpressure) when the inbox is full."""
    spool: SpoolConfig = SpoolConfig()
    max_future: Duration = 300.0
    """Samples stamped further than this in the future are rejected as absurd (clock skew)."""
    max_past: Duration = 10 * 365 * 86400.0
    """Samples older than this are rejected as absurd."""
    durability_deadline: Duration = 1.0
    """A reading accepted from a source is committed or appended to the spool within this time, even
    while a database write hangs (the durability guard spools data older than this)."""
    db_retry_max: Duration = 5.0
    """Tenant database breaker: the open period grows (jittered) after failed retries up to this cap,
    so an outage ends at most this long before writes and replay resume."""


class PoolConfig(Frozen):
    max_size: Annotated[int, Field(ge=1, le=64)] = 4
    idle_timeout: Duration = 300.0
    """Close a tenant's pool when unused for this long."""
    connect_timeout: Duration = 5.0
    command_timeout: Duration = 30.0


class StorageConfig(Frozen):
    tier: Literal["auto", "timescale", "apache", "postgres"] = "auto"
    """``auto`` detects TimescaleDB and its license at migration time."""
    chunk_interval: Duration = 86400.0
    partitions_ahead: Annotated[int, Field(ge=1, le=365)] = 7
    """Plain PostgreSQL: daily partitions created this many days ahead."""
    compress_after: Duration | None = 7 * 86400.0
    """Timescale-licensed tier only: compress chunks older than this."""
    use_timescale_policies: bool = False
    """Let TimescaleDB's job scheduler run refresh/compression/retention instead of ingestd."""


class RetentionConfig(Frozen):
    raw: Duration | None = 90 * 86400.0
    rollup_1m: Duration | None = 365 * 86400.0
    rollup_1h: Duration | None = None
    rollup_1d: Duration | None = None
    """``None`` keeps data forever."""


class RollupConfig(Frozen):
    enabled: bool = True
    timezone: str = "UTC"
    """Gas-day time zone for daily rollups (IANA name, e.g. ``America/Chicago``)."""
    contract_hour: Annotated[int, Field(ge=0, le=23)] = 0
    """Local hour at which the gas day starts (e.g. 9 for 09:00)."""
    refresh_interval: Duration = 60.0

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a known IANA time zone") from None
        return v


class ApiToken(Frozen):
    name: Identifier
    hash: Annotated[str, Field(pattern=r"^(sha256|scrypt):[A-Za-z0-9+/=$:._-]+$")]
    """Hash of the bearer token (``ingestd token hash``); the token itself is never stored."""
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read"]))


class TenantConfig(Frozen):
    slug: Slug
    name: str = ""
    dsn: Secret
    """PostgreSQL DSN: ``env:VAR``, ``file:/path``, ``credential:NAME`` or inline (flagged)."""
    pool: PoolConfig = PoolConfig()
    storage: StorageConfig = StorageConfig()
    retention: RetentionConfig = RetentionConfig()
    rollups: RollupConfig = RollupConfig()
    spool_max_bytes: ByteSize | None = None
    """Override ``pipeline.spool.max_bytes`` for this tenant."""
    api_tokens: list[ApiToken] = Field(default_factory=list)


class ApiConfig(Frozen):
    listen: Listen | None = "127.0.0.1:8080"
    """Query API (``host:port``); unset disables it."""
    public_url: str | None = None
    """Base URL used in links sent to Teams cards (ack links)."""
    link_secret: Secret | None = None
    """Key signing acknowledge links. Required when alarm notifications are configured."""
    link_ttl: Duration = 24 * 3600.0
    metrics_auth: Literal["admin", "open"] = "admin"
    """``/metrics`` on the API: ``admin`` needs an admin token (series filtered to its tenant);
    ``open`` serves everything without a token (prefer ``daemon.metrics_listen`` on localhost)."""
    tenant_from_host: bool = True
    """If the Host header carries a tenant subdomain (``acme.api.example``) it must match the token."""


class CoordinationConfig(Frozen):
    dsn: Secret | None = None
    """Database holding advisory-lock leases for polled sources when several instances run."""
    lease_check_interval: Duration = 5.0

