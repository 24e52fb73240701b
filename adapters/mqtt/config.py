"""Config model of the MQTT JSON source (no I/O, no protocol library imports)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ingestd.config.base import Frozen, SourceConfig, TagConfig
from ingestd.config.types import ByteSize, Duration, Port, Secret

__all__ = ["MqttConnection", "MqttSourceConfig", "MqttTagConfig", "Subscription", "TlsConfig", "parse_template"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JSON_PATH = re.compile(r"^\$?(\.?[A-Za-z0-9_\-]+|\[\d+\])*$")


def parse_template(topic: str) -> tuple[str, list[str | None]]:
    """Turn ``"{tenant}/wells/{well}/{tag}"`` into the MQTT filter ``"+/wells/+/+"`` and, per level,
    the placeholder name (or ``None`` for a literal level). A trailing ``#`` is kept as is."""
    if not topic or topic.startswith("$share/"):
        raise ValueError("topic must be a non-empty template (use `shared_group` for shared subscriptions)")
    levels = topic.split("/")
    names: list[str | None] = []
    out: list[str] = []
    for i, level in enumerate(levels):
        m = _PLACEHOLDER.fullmatch(level)
        if m:
            names.append(m.group(1))
            out.append("+")
        elif level == "#":
            if i != len(levels) - 1:
                raise ValueError(f"'#' must be the last level of {topic!r}")
            names.append(None)
            out.append("#")
        elif "{" in level or "}" in level:
            raise ValueError(f"level {level!r} of {topic!r}: a placeholder must fill a whole level, like {{well}}")
        elif "+" in level or "#" in level:
            raise ValueError(f"level {level!r} of {topic!r}: use {{name}} instead of MQTT wildcards")
        else:
            names.append(None)
            out.append(level)
    dup = {n for n in names if n is not None and names.count(n) > 1}
    if dup:
        raise ValueError(f"placeholder(s) {sorted(dup)} used twice in {topic!r}")
    return "/".join(out), names


def _check_path(v: str | None) -> str | None:
    if v is not None and v != "$" and not _JSON_PATH.fullmatch(v):
        raise ValueError(f"{v!r} is not a JSON path (use dotted keys like 'data.value' or 'items[0].v')")
    return v


class TlsConfig(Frozen):
    ca_file: str | None = None
    """CA bundle to verify the broker (default: the system store)."""
    cert_file: str | None = None
    key_file: str | None = None
    key_password: Secret | None = None
    verify: Literal["full", "insecure-no-verify"] = "full"

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConnection(Frozen):
    host: str = "127.0.0.1"
    port: Port = 1883
    transport: Literal["tcp", "websockets"] = "tcp"
    tls: TlsConfig | None = None
    username: str | None = None
    password: Secret | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Fixed client id (required for the persistent session). Default ``ingestd-<source>-<instance>``."""
    version: Literal["3.1.1", "5"] = "5"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry: Duration = 7 * 86400.0
    """MQTT 5: how long the broker keeps the session (and queued QoS 1 messages) while ingestd is away."""
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 2000
    """MQTT 5: unacknowledged QoS 1 messages the broker may have in flight to us."""
    connect_timeout: Duration = 10.0
    ack: Literal["after_commit", "on_receive"] = "after_commit"
    """``after_commit``: PUBACK only after the readings are in the database or the spool, so the
    broker redelivers anything ingestd had not secured. ``on_receive``: ack immediately (faster)."""

    def security_warnings(self) -> list[tuple[str, str]]:
        """``check-config`` findings (key path below the source, message): plain text, unverified TLS,
        inline password. Shared by every MQTT-based source."""
        out: list[tuple[str, str]] = []
        if self.tls is None:
            out.append(("connection.tls", "plain-text MQTT connection (no TLS)"))
        elif self.tls.verify != "full":
            out.append(("connection.tls.verify", "broker certificate is not verified"))
        if self.password is not None and self.password.is_inline:
            out.append(("connection.password", "secret is written inline; prefer env:, file: or credential:"))
        return out


class Subscription(Frozen):
    topic: str
    """Topic template; ``{name}`` captures one level, e.g. ``"{tenant}/wells/{well}/{tag}"``."""
    qos: Literal[0, 1] = 1
    shared_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")] | None = None
    """Subscribe as ``$share/<group>/<filter>`` so several ingestd processes split the messages."""
    tenant: str | None = None
    """Tenant template (e.g. ``"{tenant}"``) or literal; default: the source's tenant."""
    tag: str = "{tag}"
    """Tag name template over topic placeholders and ``{key}`` (the key of a multi-value payload)."""
    items_path: str | None = None
    """JSON path of an array of sample objects (``$`` for a top-level array)."""
    values_path: str | None = None
    """JSON path of an object mapping keys to values (several values per payload)."""
    key_path: str = "tag"
    """Inside each item of ``items_path``: where the key (``{key}``) is."""
    value_path: str = "value"
    """Where the value is: in the payload, or in each item. ``$`` means the payload itself."""
    timestamp_path: str | None = "ts"
    """Where the source timestamp is (payload level, or per item). Unset: receive time."""
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns", "iso8601"] = "auto"
    quality_path: str | None = None
    """Optional quality field: ``good``/``uncertain``/``bad``, booleans, or OPC UA-style numbers."""

    @field_validator("items_path", "values_path", "key_path", "value_path", "timestamp_path", "quality_path")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return _check_path(v)

    @model_validator(mode="after")
    def _check(self) -> Subscription:
        _, names = parse_template(self.topic)
        placeholders = {n for n in names if n}
        if self.items_path and self.values_path:
            raise ValueError("items_path and values_path are mutually exclusive")
        multi = bool(self.items_path or self.values_path)
        available = placeholders | ({"key"} if multi else set())
        for field, template in (("tag", self.tag), ("tenant", self.tenant or "")):
            used = set(_PLACEHOLDER.findall(template))
            unknown = used - available
            if unknown:
                raise ValueError(
                    f"{field} template {template!r} uses {sorted(unknown)}, which the topic "
                    f"{self.topic!r} does not capture (available: {sorted(available) or 'none'})"
                )
        if multi and "key" not in _PLACEHOLDER.findall(self.tag):
            raise ValueError("with items_path/values_path the tag template must use {key}")
        return self

    @property
    def mqtt_filter(self) -> str:
        flt = parse_template(self.topic)[0]
        return f"$share/{self.shared_group}/{flt}" if self.shared_group else flt


class MqttTagConfig(TagConfig):
    """Explicit tag metadata for MQTT (optional: tags can also be registered from topics)."""


class MqttSourceConfig(SourceConfig):
    protocol: Literal["mqtt"]
    connection: MqttConnection = MqttConnection()
    subscriptions: Annotated[list[Subscription], Field(min_length=1)]
    tags: list[MqttTagConfig] = Field(default_factory=list)  # type: ignore[assignment]
    auto_register: bool = True
    """Register tags named by topics/payloads that are not listed in ``tags``. When false, such
    readings are rejected (reason ``unknown_tag``) and dead-lettered."""
    max_payload: ByteSize = 1024 * 1024
    """Larger messages are rejected (reason ``oversized``)."""
    max_queued: Annotated[int, Field(ge=10)] = 10_000
    """Messages buffered between the MQTT client and the decoder."""

    def security_warnings(self) -> list[tuple[str, str]]:
        return self.connection.security_warnings()
