"""Resolve the alarm config against a tenant's tags: concrete alarms, their inputs, policies and groups.

This is the seam between config and engine. :func:`bind` is pure: given the ``[alarms]`` config, a tenant
and its known tags (with the source feeding each), it returns every alarm instance (``<rule>@<tag>``) with
its evaluator factory, the sample routing table (tag → alarm inputs), the suppression groups per asset and
the comm-loss inhibition map. ``fingerprint`` changes only when something that affects an alarm changes, so
a hot reload keeps the state and timers of unchanged alarms (scenario 55).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Final

from .config import AlarmsConfig
from .config_rules import (
    PRIORITY_NAMES,
    BadQualityRule,
    CommLossRule,
    DeviationRule,
    DigitalRule,
    DiscrepancyRule,
    LimitRule,
    LimitSpec,
    RateRule,
    SuppressionGroup,
)
from .model import AlarmPolicy, Level, NotifyTiming, Priority, us
from .rules import DeviationEvaluator, Evaluator, LimitEvaluator, LimitParams, RateEvaluator, RateParams
from .signals import BadQualityEvaluator, BoolParams, CommLossEvaluator, DigitalEvaluator, DiscrepancyEvaluator

__all__ = [
    "SYSTEM_RULE",
    "AlarmBinding",
    "SuppressionBinding",
    "TagInfo",
    "TenantBindings",
    "bind",
    "system_binding",
]

SYSTEM_RULE: Final = "system"
_LEVELS: Final = (("hihi", Level.HIHI), ("hi", Level.HI), ("lo", Level.LO), ("lolo", Level.LOLO))
_UP: Final = {Priority.LOW: Priority.MEDIUM, Priority.MEDIUM: Priority.HIGH, Priority.HIGH: Priority.CRITICAL,
              Priority.CRITICAL: Priority.CRITICAL}
AnyRule = LimitRule | DeviationRule | RateRule | DigitalRule | DiscrepancyRule | BadQualityRule | CommLossRule


@dataclass(frozen=True, slots=True)
class TagInfo:
    source: str | None = None
    """Name of the source feeding the tag (comm-loss inhibition)."""
    unit: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class AlarmBinding:
    alarm_id: str
    tenant: str
    rule: str
    kind: str
    subject: str
    """The alarmed tag (the source name for comm loss)."""
    inputs: Mapping[str, str]
    """Evaluator role → tag (``pv``, ``sp``, ``cmd``, ``fb``); empty for comm loss and system alarms."""
    source: str | None
    policy: AlarmPolicy
    enabled: bool = True
    fingerprint: str = ""
    rule_config: Any = field(default=None, compare=False, repr=False)
    stale_us: int | None = None

    def new_evaluator(self, now: int) -> Evaluator | CommLossEvaluator | None:
        """A fresh evaluator (restore its persisted snapshot afterwards). None for system alarms, which the
        engine drives with conditions directly."""
        return _evaluator(self.rule_config, self.stale_us, now)


@dataclass(frozen=True, slots=True)
class SuppressionBinding:
    group_id: str
    """``<group>@<asset>`` (or the group name for a tenant-wide group)."""
    tenant: str
    condition_tag: str
    config: SuppressionGroup = field(compare=False, repr=False)
    members: tuple[str, ...] = ()

    def decide(self, value: float, usable: bool, current: bool) -> bool:
        """Whether the group suppresses, given a condition-tag sample."""
        if not usable:
            policy = self.config.on_bad_quality
            return current if policy == "hold" else policy == "suppress"
        return self.config.holds(value)


@dataclass(frozen=True, slots=True)
class TenantBindings:
    tenant: str
    alarms: Mapping[str, AlarmBinding]
    suppressions: tuple[SuppressionBinding, ...]
    by_tag: Mapping[str, tuple[tuple[str, str], ...]]
    """Sample routing: tag → ((alarm_id, role), …)."""
    comm_loss: Mapping[str, str]
    """Source → its comm-loss alarm id."""
    inhibits: Mapping[str, tuple[str, ...]]
    """Comm-loss alarm id → the tag alarms it inhibits."""
    suppression_by_tag: Mapping[str, tuple[str, ...]]
    """Condition tag → suppression group ids."""
    unresolved: tuple[str, ...] = ()
    """Companion tags that do not exist (reported by the engine / check-config)."""


def _fp(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _priority_of(rule: AnyRule, name: str, spec: LimitSpec) -> Priority:
    if spec.priority is not None:
        return Priority(spec.priority)
    base = Priority(rule.priority)
    return _UP[base] if name in ("hihi", "lolo") else base


def _limits(rule: LimitRule | DeviationRule) -> list[LimitParams]:
    return [LimitParams(level, s.setpoint, s.deadband, us(s.on_delay), us(s.off_delay), s.inclusive)
            for name, level in _LEVELS if (s := getattr(rule, name)) is not None]


def _evaluator(rule: Any, stale_us: int | None, now: int) -> Evaluator | CommLossEvaluator | None:
    match rule:
        case LimitRule():
            return LimitEvaluator(_limits(rule))
        case DeviationRule():
            return DeviationEvaluator(_limits(rule))
        case RateRule():
            return RateEvaluator(RateParams(rule.rate, us(rule.period), rule.direction, rule.deadband,
                                            us(rule.on_delay), us(rule.off_delay)))
        case DigitalRule():
            return DigitalEvaluator(rule.normal, BoolParams(us(rule.on_delay), us(rule.off_delay)))
        case DiscrepancyRule():
            return DiscrepancyEvaluator(rule.tolerance, BoolParams(us(rule.tolerance_time), us(rule.off_delay)))
        case BadQualityRule():
            return BadQualityEvaluator(BoolParams(us(rule.on_delay), us(rule.off_delay)),
                                       include_uncertain=rule.include_uncertain)
        case CommLossRule():
            return CommLossEvaluator(stale_us, BoolParams(us(rule.on_delay), us(rule.off_delay)), created_at=now)
    return None


def _on_delay_us(rule: AnyRule) -> int:
    if isinstance(rule, LimitRule | DeviationRule):
        return max((us(s.on_delay) for n, _ in _LEVELS if (s := getattr(rule, n)) is not None), default=0)
    if isinstance(rule, DiscrepancyRule):
        return us(rule.tolerance_time)
    return us(getattr(rule, "on_delay", 0.0))


def _policy(cfg: AlarmsConfig, tenant: str, rule: AnyRule, subject: str, info: TagInfo) -> AlarmPolicy:
    d = cfg.policy_for(tenant)
    timing: dict[Priority, NotifyTiming] = {}
    for p in PRIORITY_NAMES:
        route = cfg.route_for(tenant, p)
        if route is not None:
            timing[Priority(p)] = NotifyTiming(
                reminder_us=us(route.repeat_interval) if route.repeat_interval else None,
                escalate_us=us(route.escalate_after) if route.escalate_to and route.escalate_after else None,
            )
    level_prio: dict[Level, Priority] = {}
    if isinstance(rule, LimitRule | DeviationRule):
        level_prio = {level: _priority_of(rule, n, s) for n, level in _LEVELS if (s := getattr(rule, n)) is not None}
    return AlarmPolicy(
        priority=Priority(rule.priority), level_priorities=level_prio, latching=rule.latching,
        realarm_us=us(rule.realarm) if rule.realarm else None, timing=timing,
        notify_rtn_unack=d.notify_rtn_unack, notify_ack=d.notify_ack, max_shelve_us=us(d.max_shelve),
        on_delay_us=_on_delay_us(rule), chatter_count=d.chatter.count, chatter_window_us=us(d.chatter.window),
        chatter_auto_shelve_us=us(d.chatter.auto_shelve) if d.chatter.auto_shelve else None,
        stale_us=us(d.stale_after), tag=subject, rule=rule.name, rule_kind=rule.kind,
        site=subject if isinstance(rule, CommLossRule) else cfg.asset_of(subject),
        unit=info.unit, description=rule.description or info.description,
    )


def _fill(template: str, tag: str, asset: str) -> str:
    return template.format(tag=tag, asset=asset)


def bind(cfg: AlarmsConfig, tenant: str, tags: Mapping[str, TagInfo], *,
         source_stale: Mapping[str, float | None] | None = None) -> TenantBindings:
    """Every alarm of ``tenant`` over ``tags`` (tag name → :class:`TagInfo`). ``source_stale`` gives each
    source's own ``stale_after`` (seconds), used by comm-loss rules without one."""
    source_stale = source_stale or {}
    alarms: dict[str, AlarmBinding] = {}
    unresolved: list[str] = []
    sources = sorted({i.source for i in tags.values() if i.source} | set(source_stale))
    rules = [r for r in cfg.rules if r.tenant in (None, tenant)] if cfg.enabled else []
    for rule in rules:
        if isinstance(rule, CommLossRule):
            for src in sources:
                if any(fnmatchcase(src, p) for p in rule.sources):
                    stale = rule.stale_after if rule.stale_after is not None else source_stale.get(src)
                    aid = f"{rule.name}@{src}"
                    alarms[aid] = AlarmBinding(
                        aid, tenant, rule.name, rule.kind, src, {}, None, _policy(cfg, tenant, rule, src, TagInfo()),
                        rule.enabled, _fp(rule.model_dump_json(), stale), rule, us(stale) if stale else None)
            continue
        for tag in sorted(tags):
            if not any(fnmatchcase(tag, p) for p in rule.tags):
                continue
            asset = cfg.asset_of(tag)
            inputs = {"pv": tag}
            if isinstance(rule, DeviationRule):
                inputs = {"pv": tag, "sp": _fill(rule.setpoint_tag, tag, asset)}
            elif isinstance(rule, DiscrepancyRule):
                inputs = {"fb": tag, "cmd": _fill(rule.command_tag, tag, asset)}
            missing = [t for t in inputs.values() if t not in tags]
            if missing:
                unresolved.append(f"rule {rule.name!r}, tag {tag!r}: companion tag {missing[0]!r} does not exist")
                continue
            aid = f"{rule.name}@{tag}"
            policy = _policy(cfg, tenant, rule, tag, tags[tag])
            alarms[aid] = AlarmBinding(aid, tenant, rule.name, rule.kind, tag, inputs, tags[tag].source, policy,
                                       rule.enabled, "", rule)
    groups = _suppression_groups(cfg, tenant, tags, alarms, unresolved)
    grace: dict[str, int] = {}
    for g in groups:
        for aid in g.members:
            grace[aid] = max(grace.get(aid, 0), us(g.config.grace))
    final: dict[str, AlarmBinding] = {}
    for aid, b in alarms.items():
        if aid in grace:
            b = replace(b, policy=replace(b.policy, sbd_grace_us=grace[aid]))
        if not b.fingerprint:
            b = replace(b, fingerprint=_fp(b.rule_config.model_dump_json(), sorted(b.inputs.items()), b.policy))
        final[aid] = b
    return _assemble(tenant, final, groups, unresolved)


def _suppression_groups(cfg: AlarmsConfig, tenant: str, tags: Mapping[str, TagInfo],
                        alarms: Mapping[str, AlarmBinding], unresolved: list[str]) -> list[SuppressionBinding]:
    out: list[SuppressionBinding] = []
    assets = sorted({a for t in tags if (a := cfg.asset_of(t))})
    for g in cfg.suppression_groups:
        if g.tenant not in (None, tenant) or not cfg.enabled:
            continue
        per_asset = "{asset}" in g.condition_tag or any("{asset}" in t for t in g.tags)
        for asset in assets if per_asset else [""]:
            patterns = [_fill(t, "", asset) for t in g.tags]
            members = tuple(sorted(
                aid for aid, b in alarms.items() if b.rule != SYSTEM_RULE
                and (not per_asset or cfg.asset_of(b.subject) == asset)
                and (b.rule in g.rules or any(fnmatchcase(b.subject, p) for p in patterns))
            ))
            if not members:
                continue
            cond_tag = _fill(g.condition_tag, "", asset)
            if cond_tag not in tags:
                unresolved.append(f"suppression group {g.name!r}: condition tag {cond_tag!r} does not exist")
                continue
            out.append(SuppressionBinding(f"{g.name}@{asset}" if per_asset else g.name, tenant, cond_tag, g, members))
    return out


def _assemble(tenant: str, alarms: dict[str, AlarmBinding], groups: list[SuppressionBinding],
              unresolved: list[str]) -> TenantBindings:
    by_tag: dict[str, list[tuple[str, str]]] = {}
    comm: dict[str, str] = {}
    for aid, b in alarms.items():
        for role, tag in b.inputs.items():
            by_tag.setdefault(tag, []).append((aid, role))
        if b.kind == "comm_loss":
            comm.setdefault(b.subject, aid)
    inhibits: dict[str, list[str]] = {}
    for aid, b in alarms.items():
        if b.source is not None and b.source in comm:
            inhibits.setdefault(comm[b.source], []).append(aid)
    sup_by_tag: dict[str, list[str]] = {}
    for g in groups:
        sup_by_tag.setdefault(g.condition_tag, []).append(g.group_id)
    return TenantBindings(
        tenant, alarms, tuple(groups), {t: tuple(v) for t, v in by_tag.items()}, comm,
        {k: tuple(v) for k, v in inhibits.items()}, {k: tuple(v) for k, v in sup_by_tag.items()}, tuple(unresolved),
    )


def system_binding(cfg: AlarmsConfig, tenant: str, key: str, description: str,
                   priority: Priority | None = None) -> AlarmBinding:
    """An ingestd self-monitoring alarm (``system@<key>``: notification channel failed, spool full, DB down …).
    No evaluator: the engine feeds :func:`alarms.state.on_condition` directly."""
    d = cfg.policy_for(tenant)
    prio = priority or Priority(cfg.system_priority)
    timing = {}
    route = cfg.route_for(tenant, prio.value)
    if route is not None and route.repeat_interval:
        timing[prio] = NotifyTiming(reminder_us=us(route.repeat_interval))
    policy = AlarmPolicy(priority=prio, timing=timing, max_shelve_us=us(d.max_shelve), stale_us=us(d.stale_after),
                         tag=key, rule=SYSTEM_RULE, rule_kind=SYSTEM_RULE, site="ingestd", description=description,
                         notify_rtn_unack=d.notify_rtn_unack, notify_ack=d.notify_ack)
    aid = f"{SYSTEM_RULE}@{key}"
    return AlarmBinding(aid, tenant, SYSTEM_RULE, SYSTEM_RULE, key, {}, None, policy, True, _fp(aid, policy))


