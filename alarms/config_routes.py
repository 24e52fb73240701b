"""Notification routes (``[[alarms.routes]]``): tenant + priorities → one Teams Workflows webhook.

Office 365 connector webhooks (``*.webhook.office.com``, ``outlook.office.com/webhook``) are retired
(final shut-off May 2026): an inline connector URL is rejected at load, a referenced one (``env:``,
``file:``, ``credential:``) by ``AlarmsConfig.problems()`` when it can be resolved (check-config).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from ingestd.config.base import Frozen
from ingestd.config.types import ByteSize, Duration, Identifier, Secret, SecretField, Slug

from .config_rules import PRIORITY_NAMES, PriorityName

__all__ = ["RETIRED_CONNECTOR_MESSAGE", "Route", "webhook_url_problem"]

RETIRED_CONNECTOR_MESSAGE: Final = (
    "this is a retired Office 365 connector webhook (*.webhook.office.com / outlook.office.com/webhook; "
    "connectors were shut off in May 2026): create a Teams Workflows webhook (Teams → Workflows → "
    "\"When a Teams webhook request is received\") and use its URL"
)


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Teams Workflows webhook, or None. Never echoes the URL (it is a secret)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if host == "webhook.office.com" or host.endswith(".webhook.office.com"):
        return RETIRED_CONNECTOR_MESSAGE
    if host in ("outlook.office.com", "outlook.office365.com") and parts.path.lower().startswith("/webhook"):
        return RETIRED_CONNECTOR_MESSAGE
    if parts.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        return "must use https:// (plain http is only accepted for a loopback test endpoint)"
    return None


class Route(Frozen):
    """Where and how a tenant's alarm notifications go."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, hide_input_in_errors=True)

    name: Identifier
    tenant: Slug | None = None
    """Default: every tenant (a tenant-specific route matching the priority wins)."""
    priorities: list[PriorityName] = Field(default_factory=lambda: list(PRIORITY_NAMES))
    """Priorities routed here. Empty: only used as another route's fallback or escalation target."""
    webhook: SecretField
    """Teams Workflows webhook URL: ``env:VAR``, ``file:/path``, ``credential:NAME`` (or inline, flagged)."""
    fallback: Identifier | None = None
    """Route used when this one fails permanently (4xx other than 408/429) or exhausts its retry deadline."""
    escalate_to: Identifier | None = None
    """Route notified when an alarm stays unacknowledged for ``escalate_after``."""
    escalate_after: Duration | None = None
    repeat_interval: Duration | None = 4 * 3600.0
    """Remind about an unacknowledged alarm this often (unset: never)."""
    group_wait: Duration = 30.0
    """Collect alarms of a group this long before the first card (alarms resolved meanwhile are not sent)."""
    group_interval: Duration = 300.0
    """Later changes of a group are sent at most this often."""
    group_by: Literal["asset", "alarm", "tenant"] = "asset"
    send_resolved: bool = True
    send_updates: bool = True
    """Acknowledged / returned-unacknowledged / re-activated updates."""
    on_ack_before_send: Literal["drop", "send_in_order"] = "drop"
    """An alarm acknowledged before its raise card went out: drop both, or send raise then ack."""
    rate_per_second: Annotated[float, Field(gt=0, le=4)] = 1.0
    """Token-bucket rate per webhook (Teams throttles above 4/s)."""
    max_per_30s: Annotated[int, Field(ge=1, le=60)] = 60
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    """Per-request timeout."""
    retry_deadline: Annotated[Duration, Field(gt=0)] = 120.0
    """Give up retrying (then fail over) after this long."""
    max_card_bytes: Annotated[ByteSize, Field(ge=4096, le=28_000)] = 25_000
    """UTF-8 size budget of one request body (Teams rejects > 28 KB)."""
    ack_links: bool = True
    """Put a signed, expiring "Acknowledge" link in raise/reminder cards (needs ``api.public_url`` and
    ``api.link_secret``)."""

    @field_validator("webhook")
    @classmethod
    def _inline_url(cls, v: Secret) -> Secret:
        if v.is_inline:
            problem = webhook_url_problem(v.reveal())
            if problem is not None:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _escalation(self) -> Route:
        if (self.escalate_to is None) != (self.escalate_after is None):
            raise ValueError("escalate_to and escalate_after must be given together")
        if self.fallback == self.name:
            raise ValueError("a route cannot be its own fallback")
        if self.escalate_to == self.name:
            raise ValueError("a route cannot escalate to itself")
        return self
