"""The ``[alarms]`` config table: rules, suppression groups, nuisance/flood policy, notification routes.

An empty ``[alarms]`` table is valid (every field has a default). Loading does no I/O; cross-references
(tenants, rule and route names) and secrets that can be resolved (retired Office 365 connector URLs behind
``env:``/``file:``) are checked by :meth:`AlarmsConfig.problems`, which ``ingestd check-config`` calls with
the configured tenant slugs and reports as ``alarms.routes[0].webhook: …``.

.. code-block:: toml

    [alarms.defaults]                       # every tenant; [alarms.tenants.<slug>] overrides per key
    max_shelve = "8h"
    chatter = { count = 3, window = "60s", auto_shelve = "15m" }
    flood = { start = 10, end = 5, window = "10m", bypass = ["critical"] }

    [[alarms.rules]]
    name = "casing_pressure"
    kind = "limit"
    tags = ["well_*/casing_pressure"]
    hi = { setpoint = 1400, deadband = 20, on_delay = "10s" }
    hihi = { setpoint = 1450, deadband = 20, priority = "critical" }

    [[alarms.routes]]
    name = "acme_oncall"
    tenant = "acme"
    webhook = "env:ACME_TEAMS_WEBHOOK"
    fallback = "acme_backup"
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from ingestd.config.base import Frozen
from ingestd.config.types import Duration, Secret, SecretUnavailable, Slug
from ingestd.errors import ConfigProblem

from .config_routes import Route, webhook_url_problem
from .config_rules import (
    PRIORITY_NAMES,
    BadQualityRule,
    CommLossRule,
    DeviationRule,
    DigitalRule,
    DiscrepancyRule,
    LimitRule,
    LimitSpec,
    PriorityName,
    RateRule,
    Rule,
    SuppressionGroup,
)

__all__ = [
    "AlarmDefaults",
    "AlarmsConfig",
    "BadQualityRule",
    "ChatterPolicy",
    "CommLossRule",
    "DeviationRule",
    "DigitalRule",
    "DiscrepancyRule",
    "FloodPolicy",
    "LimitRule",
    "LimitSpec",
    "RateRule",
    "Route",
    "Rule",
    "SuppressionGroup",
]


def _priorities(*names: PriorityName) -> list[PriorityName]:
    return list(names)


class ChatterPolicy(Frozen):
    count: Annotated[int, Field(ge=2, le=1000)] = 3
    """Activations within ``window`` that flag an alarm as chattering."""
    window: Annotated[Duration, Field(gt=0)] = 60.0
    auto_shelve: Duration | None = None
    """Timed-shelve a chattering alarm for this long (audited as a system action). Unset: only flag it."""


class FloodPolicy(Frozen):
    start: Annotated[int, Field(ge=2, le=10_000)] = 10
    """Annunciated alarms within ``window`` that start a flood."""
    end: Annotated[int, Field(ge=1, le=10_000)] = 5
    """The flood ends when the count in the trailing window drops below this."""
    window: Annotated[Duration, Field(gt=0)] = 600.0
    bypass: list[PriorityName] = Field(default_factory=lambda: _priorities("critical"))
    """Priorities still sent as individual cards during a flood."""
    summary_interval: Annotated[Duration, Field(ge=60)] = 300.0
    """During a flood, one summary card, then an updated summary at most this often."""

    @model_validator(mode="after")
    def _thresholds(self) -> FloodPolicy:
        if self.end > self.start:
            raise ValueError(f"end ({self.end}) must not exceed start ({self.start})")
        return self


class AlarmDefaults(Frozen):
    """Tenant-wide alarm behaviour (``[alarms.defaults]``, overridden per key by ``[alarms.tenants.<slug>]``)."""

    max_shelve: Annotated[Duration, Field(gt=0)] = 8 * 3600.0
    """Longest timed shelve an operator may request (ISA MaxTimeShelved); also bounds one-shot shelving."""
    stale_after: Annotated[Duration, Field(gt=0)] = 24 * 3600.0
    """An alarm active longer than this is stale (KPI: < 5 per day)."""
    fleeting: Annotated[Duration, Field(gt=0)] = 2.0
    """Active shorter than this and cleared without an ack: fleeting (KPI)."""
    chatter: ChatterPolicy = ChatterPolicy()
    flood: FloodPolicy = FloodPolicy()
    notify_rtn_unack: bool = True
    """Send an update when an unacknowledged alarm returns to normal."""
    notify_ack: bool = True
    """Send an update when an alarm is acknowledged."""
    link_ttl: Duration = 24 * 3600.0
    """Validity of the signed Acknowledge links in cards."""
    max_clock_skew: Duration = 300.0
    """Samples stamped further ahead of the engine clock are not evaluated (see ``rules.admissible``)."""


class AlarmsConfig(Frozen):
    enabled: bool = True
    asset_pattern: str = r"^(?P<asset>[^/.:]+)[/.:]"
    """Regex with a named group ``asset``: the well/pad a tag belongs to (``well_12/casing_pressure`` →
    ``well_12``). Used for ``{asset}`` templates, suppression groups, card "site" and grouping."""
    defaults: AlarmDefaults = AlarmDefaults()
    tenants: dict[Slug, AlarmDefaults] = Field(default_factory=dict)
    """Per-tenant overrides of ``defaults`` (only the keys written are overridden)."""
    rules: list[Rule] = Field(default_factory=list)
    suppression_groups: list[SuppressionGroup] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    system_priority: PriorityName = "high"
    """Priority of ingestd's own alarms (notification channel failed, spool full, …)."""

    @field_validator("asset_pattern")
    @classmethod
    def _asset_re(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if "asset" not in rx.groupindex:
            raise ValueError("needs a named group (?P<asset>...)")
        return v

    def summary(self) -> str:
        """One line for ``ingestd check-config``."""
        if not self.enabled:
            return "disabled"
        kinds = Counter(r.kind for r in self.rules)
        rules = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return (f"{len(self.rules)} rule(s) ({rules}), {len(self.suppression_groups)} suppression group(s), "
                f"{len(self.routes)} route(s)")

    # ------------------------------------------------------------------------------------------ lookups
    def policy_for(self, tenant: str) -> AlarmDefaults:
        """``defaults`` with the keys written under ``[alarms.tenants.<tenant>]`` overridden."""
        override = self.tenants.get(tenant)
        return self.defaults if override is None else _merge(self.defaults, override)

    def asset_of(self, tag: str) -> str:
        m = re.search(self.asset_pattern, tag)
        return m.group("asset") if m and m.group("asset") else ""

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def route_for(self, tenant: str, priority: str) -> Route | None:
        """First route of the tenant for this priority, else the first tenant-agnostic one."""
        for scoped in (True, False):
            for r in self.routes:
                if (r.tenant == tenant if scoped else r.tenant is None) and priority in r.priorities:
                    return r
        return None

    # --------------------------------------------------------------------------------------- validation
    def problems(self, tenant_slugs: Collection[str], *, resolve_secrets: bool = True,
                 link_secret: Secret | bool | None = True,
                 public_url: str | bool | None = True) -> list[ConfigProblem]:
        """Cross-checks for ``check-config`` (key paths start with ``alarms.``).

        ``link_secret``/``public_url``: pass ``cfg.api.link_secret`` / ``cfg.api.public_url`` to require them
        when a route sends Acknowledge links (``True`` skips the check). With ``resolve_secrets`` webhook
        secrets given as ``env:``/``file:``/``credential:`` are resolved when possible and checked like inline
        ones (an unresolvable secret is not a problem here: it may exist only on the target host).
        """
        out: list[ConfigProblem] = []

        def add(path: str, msg: str) -> None:
            out.append(ConfigProblem(f"alarms.{path}", msg))

        slugs = set(tenant_slugs)
        for slug in self.tenants:
            if slug not in slugs:
                add(f"tenants.{slug}", f"unknown tenant {slug!r}")
        rule_names = [r.name for r in self.rules]
        for name, n in Counter(rule_names).items():
            if n > 1:
                add(f"rules[{rule_names.index(name)}].name", f"duplicate rule name {name!r}")
        for i, r in enumerate(self.rules):
            if r.tenant is not None and r.tenant not in slugs:
                add(f"rules[{i}].tenant", f"unknown tenant {r.tenant!r}")
        group_names = [g.name for g in self.suppression_groups]
        for i, g in enumerate(self.suppression_groups):
            if group_names.index(g.name) != i:
                add(f"suppression_groups[{i}].name", f"duplicate suppression group {g.name!r}")
            if g.tenant is not None and g.tenant not in slugs:
                add(f"suppression_groups[{i}].tenant", f"unknown tenant {g.tenant!r}")
            for j, rn in enumerate(g.rules):
                if rn not in rule_names:
                    add(f"suppression_groups[{i}].rules[{j}]", f"unknown rule {rn!r}")
        out += [ConfigProblem(f"alarms.{p}", m) for p, m in self._route_problems(slugs, resolve_secrets)]
        sends_links = any(r.ack_links for r in self.routes)
        if sends_links and link_secret is None:
            add("routes", "cards carry signed Acknowledge links: set api.link_secret (or ack_links = false)")
        if sends_links and public_url is None:
            add("routes", "cards carry Acknowledge links: set api.public_url (or ack_links = false)")
        return out

    def _route_problems(self, slugs: set[str], resolve: bool) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        names = [r.name for r in self.routes]
        for i, r in enumerate(self.routes):
            if names.index(r.name) != i:
                out.append((f"routes[{i}].name", f"duplicate route name {r.name!r}"))
            if r.tenant is not None and r.tenant not in slugs:
                out.append((f"routes[{i}].tenant", f"unknown tenant {r.tenant!r}"))
            for key in ("fallback", "escalate_to"):
                target_name = getattr(r, key)
                target = self.route(target_name) if target_name else None
                if target_name and target is None:
                    out.append((f"routes[{i}].{key}", f"unknown route {target_name!r}"))
                elif target is not None and target.tenant not in (None, r.tenant):
                    out.append((f"routes[{i}].{key}", f"route {target_name!r} belongs to tenant {target.tenant!r}"))
            if self._fallback_loops(r):
                out.append((f"routes[{i}].fallback", "fallback routes form a loop"))
            if resolve and not r.webhook.is_inline:
                try:
                    problem = webhook_url_problem(r.webhook.reveal())
                except SecretUnavailable:
                    problem = None
                if problem is not None:
                    out.append((f"routes[{i}].webhook", f"{r.webhook.describe()}: {problem}"))
        return out

    def _fallback_loops(self, r: Route) -> bool:
        seen = {r.name}
        cur = r
        while cur.fallback is not None:
            nxt = self.route(cur.fallback)
            if nxt is None:
                return False
            if nxt.name in seen:
                return True
            seen.add(nxt.name)
            cur = nxt
        return False

    def warnings(self, tenant_slugs: Collection[str] = ()) -> list[ConfigProblem]:
        """Non-fatal findings: inline webhook secrets, tenants with rules but no route for a priority."""
        inline = "secret is written inline; prefer env:, file: or credential:"
        out = [ConfigProblem(f"alarms.routes[{i}].webhook", inline) for i, r in enumerate(self.routes)
               if r.webhook.is_inline]
        if self.rules and self.routes:
            for slug in tenant_slugs:
                missing = [p for p in PRIORITY_NAMES if self.route_for(slug, p) is None]
                if missing:
                    out.append(ConfigProblem("alarms.routes",
                                             f"tenant {slug!r} has no route for priorities {missing}: not notified"))
        return out


def _merge(base: BaseModel, override: BaseModel) -> Any:
    """``base`` with the fields explicitly written in ``override`` (recursively for nested tables)."""
    updates: dict[str, Any] = {}
    for name in override.model_fields_set:
        b, o = getattr(base, name), getattr(override, name)
        updates[name] = _merge(b, o) if isinstance(b, BaseModel) and isinstance(o, BaseModel) else o
    return base.model_copy(update=updates)
