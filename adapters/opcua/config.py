"""Config model of the OPC UA source (no I/O, no protocol library imports).

One source is one OPC UA session to one server endpoint. Tags name their node by id (``ns=``/``nsu=``
forms, see :mod:`adapters.opcua.nodeid`). Values are acquired by a subscription (default: monitored
items with server-side sampling and DataChangeFilter) or by polling with the Read service.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ingestd.config.base import Frozen, SourceConfig, TagConfig
from ingestd.config.types import Duration, Secret

from .nodeid import NodeRef, parse_node_id

__all__ = [
    "AuthConfig",
    "DeadbandType",
    "LimitsConfig",
    "MonitoringOverride",
    "OpcUaSourceConfig",
    "OpcUaTagConfig",
    "PollingConfig",
    "SecurityConfig",
    "SecurityMode",
    "SecurityPolicy",
    "SubscriptionConfig",
    "Trigger",
    "check_endpoint",
]

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
DeadbandType = Literal["none", "absolute", "percent"]
Trigger = Literal["status", "status_value", "status_value_timestamp"]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
DEFAULT_PORT = 4840


def check_endpoint(url: str) -> str:
    """Validate ``opc.tcp://host[:port][/path]``; add the default port 4840 when it is missing."""
    if not isinstance(url, str) or not url.startswith("opc.tcp://"):
        raise ValueError(f"{url!r} is not an OPC UA endpoint (expected opc.tcp://host:port[/path])")
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError("credentials in the endpoint URL are not allowed; use auth.username and auth.password")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number in 1..65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: missing host name")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an OPC UA endpoint has no query or fragment")
    if port is None:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"opc.tcp://{host}:{DEFAULT_PORT}{parts.path}"
    if port == 0:
        raise ValueError(f"{url!r}: port 0 is not a server port")
    return url


class SecurityConfig(Frozen):
    policy: SecurityPolicy = "None"
    mode: SecurityMode | None = None
    """``Sign`` or ``SignAndEncrypt`` (default when a policy is set); ``None`` only with policy None."""
    client_cert: str | None = None
    """Application instance certificate (DER or PEM). Unset: generated once into the source's state
    directory (``<state_dir>/pki/client_cert.der``) and reused on every start."""
    client_key: str | None = None
    """Private key of ``client_cert`` (PEM or DER)."""
    client_key_password: Secret | None = None
    server_cert: str | None = None
    """Trusted server certificate (DER or PEM). The session is refused when the server presents
    another one. Unset: the certificate the server presents is accepted (flagged by check-config)."""
    application_uri: str | None = None
    """Application URI of a generated certificate. Default ``urn:<hostname>:ingestd:<source>``.
    With ``client_cert`` the URI is read from the certificate."""

    @model_validator(mode="after")
    def _check(self) -> SecurityConfig:
        if self.policy == "None" and self.mode not in (None, "None"):
            raise ValueError(f"mode {self.mode!r} needs a security policy (policy = 'Basic256Sha256', ...)")
        if self.policy != "None" and self.mode == "None":
            raise ValueError(f"policy {self.policy!r} needs mode 'Sign' or 'SignAndEncrypt'")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be given together")
        if self.client_key_password is not None and self.client_key is None:
            raise ValueError("client_key_password is set but client_key is not")
        return self

    @property
    def effective_mode(self) -> SecurityMode:
        if self.policy == "None":
            return "None"
        return self.mode or "SignAndEncrypt"


class AuthConfig(Frozen):
    method: Literal["anonymous", "username"] = "anonymous"
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password: Secret | None = None

    @model_validator(mode="after")
    def _check(self) -> AuthConfig:
        if self.method == "username" and (self.username is None or self.password is None):
            raise ValueError("method 'username' needs username and password")
        if self.method == "anonymous" and (self.username is not None or self.password is not None):
            raise ValueError("username/password are set but method is 'anonymous' (set method = 'username')")
        return self


def _check_deadband(kind: DeadbandType | None, value: float | None) -> None:
    if kind == "percent" and value is not None and value > 100:
        raise ValueError(f"percent deadband {value} is outside 0..100")


class SubscriptionConfig(Frozen):
    """Subscription parameters and the default monitoring parameters of every monitored item."""

    publishing_interval: Annotated[Duration, Field(gt=0)] = 0.25
    keepalive_count: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Publishing intervals without data after which the server sends a keep-alive."""
    lifetime_count: Annotated[int, Field(ge=3, le=1_000_000)] = 60
    """Publishing intervals without a publish request before the server drops the subscription
    (at least 3 × keepalive_count)."""
    max_notifications_per_publish: Annotated[int, Field(ge=0)] = 0
    """0: no limit."""
    priority: Annotated[int, Field(ge=0, le=255)] = 0
    sampling_interval: Duration | None = None
    """Server sampling interval of each item. Unset: the publishing interval."""
    queue_size: Annotated[int, Field(ge=1, le=65535)] = 10
    discard_oldest: bool = True
    trigger: Trigger = "status_value"
    deadband_type: DeadbandType = "none"
    """DataChangeFilter deadband evaluated by the server (``percent`` needs an EURange on the node)."""
    deadband_value: Annotated[float, Field(ge=0)] = 0.0
    max_buffered: Annotated[int, Field(ge=1000)] = 1_000_000
    """Notifications held while the pipeline applies backpressure; beyond this the oldest are
    dropped (counted as ``buffer_overflow`` and logged)."""

    @model_validator(mode="after")
    def _check(self) -> SubscriptionConfig:
        if self.lifetime_count < 3 * self.keepalive_count:
            raise ValueError(
                f"lifetime_count ({self.lifetime_count}) must be at least 3 × keepalive_count "
                f"({3 * self.keepalive_count})"
            )
        _check_deadband(self.deadband_type, self.deadband_value)
        return self


class MonitoringOverride(Frozen):
    """Per-tag monitored-item settings; unset keys inherit ``[sources.subscription]``."""

    sampling_interval: Duration | None = None
    queue_size: Annotated[int, Field(ge=1, le=65535)] | None = None
    trigger: Trigger | None = None
    deadband_type: DeadbandType | None = None
    deadband_value: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> MonitoringOverride:
        _check_deadband(self.deadband_type, self.deadband_value)
        return self


class PollingConfig(Frozen):
    interval: Annotated[Duration, Field(gt=0)] = 1.0
    """Read every tag at this interval, on a fixed monotonic schedule (overruns are skipped and
    counted, never queued)."""
    max_age: Duration = 0.0
    """Read service MaxAge: 0 asks the server for a fresh value from the device."""
    node_registration: Literal["register", "off"] = "register"
    """``register``: RegisterNodes once per session and read the registered aliases (faster on many
    servers); ``off``: read the configured ids."""


class LimitsConfig(Frozen):
    """Request sizes. The server's OperationLimits are read on every connect and always honoured;
    these settings apply when it publishes none (or 0) and may lower them further."""

    fallback: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Nodes per request when the server publishes no limit."""
    max_nodes_per_read: Annotated[int, Field(ge=1)] | None = None
    max_monitored_items_per_call: Annotated[int, Field(ge=1)] | None = None
    max_nodes_per_register: Annotated[int, Field(ge=1)] | None = None
    max_nodes_per_browse: Annotated[int, Field(ge=1)] | None = None


class OpcUaTagConfig(TagConfig):
    node_id: str
    """``ns=2;s=Tank1.Level``, ``ns=3;i=1001``, ``ns=2;g=<guid>``, ``ns=2;b=<base64>`` or
    ``nsu=<namespace uri>;s=…`` (resolved against the server's namespace array on every connect)."""
    monitoring: MonitoringOverride | None = None

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        parse_node_id(v)
        return v

    @field_validator("data_type")
    @classmethod
    def _data_type(cls, v: str) -> str:
        if v == "string":
            raise ValueError("OPC UA string values cannot be stored (readings are numbers); "
                             "use float, int, bool or enum")
        return v

    @property
    def node(self) -> NodeRef:
        return parse_node_id(self.node_id)


class OpcUaSourceConfig(SourceConfig):
    protocol: Literal["opcua"]
    endpoint: str
    """``opc.tcp://host:port[/path]`` (port 4840 when omitted)."""
    mode: Literal["subscription", "polling"] = "subscription"
    timestamp: Literal["source", "server", "receive"] = "source"
    """Which timestamp a reading carries. ``source`` falls back to the server timestamp, then to the
    receive time, when the server sends none; ``server`` falls back to the receive time."""
    security: SecurityConfig = SecurityConfig()
    auth: AuthConfig = AuthConfig()
    subscription: SubscriptionConfig = SubscriptionConfig()
    polling: PollingConfig = PollingConfig()
    limits: LimitsConfig = LimitsConfig()
    connect_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    request_timeout: Annotated[Duration, Field(gt=0)] = 5.0
    session_timeout: Annotated[Duration, Field(ge=10)] = 120.0
    watchdog_interval: Annotated[Duration, Field(gt=0)] = 5.0
    """Read Server_ServerStatus_State this often; a failed or late answer (or a state other than
    Running) ends the session so the supervisor reconnects."""
    bad_node_retry: Annotated[Duration, Field(gt=0)] = 60.0
    """Retry tags whose node was rejected (BadNodeIdUnknown, unknown namespace URI, ...) this often."""
    tags: Annotated[list[OpcUaTagConfig], Field(min_length=1)]  # type: ignore[assignment]

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return check_endpoint(v)

    @model_validator(mode="after")
    def _check(self) -> OpcUaSourceConfig:
        for tag in self.tags:
            m = tag.monitoring
            if m is None:
                continue
            kind = m.deadband_type or self.subscription.deadband_type
            value = m.deadband_value if m.deadband_value is not None else self.subscription.deadband_value
            try:
                _check_deadband(kind, value)
            except ValueError as exc:
                raise ValueError(f"tag {tag.name!r}: {exc}") from None
        return self

    def security_warnings(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        sec = self.security
        if sec.policy == "None":
            out.append(("security.policy", "unsecured OPC UA session (security policy None)"))
        else:
            if sec.effective_mode == "Sign":
                out.append(("security.mode", "messages are signed but not encrypted"))
            if sec.server_cert is None:
                out.append(("security.server_cert", "server certificate is not pinned; any certificate the "
                                                    "server presents is accepted"))
        if self.auth.password is not None:
            if self.auth.password.is_inline:
                out.append(("auth.password", "secret is written inline; prefer env:, file: or credential:"))
            if sec.effective_mode != "SignAndEncrypt":
                out.append(("auth.password", "the password is protected only if the server's user token "
                                             "policy encrypts it; prefer mode SignAndEncrypt"))
        return out
