"""Alarm rule models (``[[alarms.rules]]``) and suppression groups (``[[alarms.suppression_groups]]``).

A rule applies to tags selected by glob patterns (``well_*/casing_pressure``), in one tenant or in every
tenant. Companion tags are templates over ``{tag}`` (the matched tag) and ``{asset}`` (the well/pad the tag
belongs to, extracted by ``alarms.asset_pattern``): ``setpoint_tag = "{tag}_sp"``,
``command_tag = "{asset}/pump_cmd"``. No I/O here.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from ingestd.config.base import Frozen
from ingestd.config.types import Duration, Identifier, Slug

__all__ = [
    "PRIORITY_NAMES",
    "RULE_KINDS",
    "BadQualityRule",
    "CommLossRule",
    "DeviationRule",
    "DigitalRule",
    "DiscrepancyRule",
    "LimitRule",
    "LimitSpec",
    "PriorityName",
    "RateRule",
    "Rule",
    "SuppressionGroup",
    "TagPattern",
    "TagTemplate",
]

PriorityName = Literal["critical", "high", "medium", "low"]
PRIORITY_NAMES: tuple[PriorityName, ...] = ("critical", "high", "medium", "low")

_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:/#+\-*?\[\]!]{1,200}")
_TEMPLATE_FIELDS = {"tag", "asset"}


def _check_pattern(v: str) -> str:
    if not _PATTERN_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not a tag name or glob pattern (letters, digits, _.:/#+- and * ? [ ])")
    return v


def _check_template(v: str) -> str:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
    except ValueError:
        raise ValueError(f"{v!r} is not a valid template (use {{tag}} and {{asset}})") from None
    bad = names - _TEMPLATE_FIELDS
    if bad or "" in names:
        raise ValueError(f"{v!r}: unknown placeholder(s) {sorted(bad or {''})} (use {{tag}} and {{asset}})")
    return v


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


TagPattern = Annotated[str, AfterValidator(_check_pattern)]
"""A tag name or an fnmatch-style glob (case-sensitive)."""
TagTemplate = Annotated[str, AfterValidator(_check_template)]
"""A tag name with optional ``{tag}`` / ``{asset}`` placeholders."""
Finite = Annotated[float, AfterValidator(_finite)]
NonNeg = Annotated[float, Field(ge=0), AfterValidator(_finite)]


class LimitSpec(Frozen):
    """One limit of a HIHI/HI/LO/LOLO (or deviation) alarm."""

    setpoint: Finite
    deadband: NonNeg = 0.0
    """Hysteresis in engineering units: a HI clears below ``setpoint - deadband``, a LO above ``+``."""
    on_delay: Duration = 0.0
    """The value must stay beyond the limit this long before the alarm activates."""
    off_delay: Duration = 0.0
    """The value must stay normal this long before the alarm clears."""
    inclusive: bool = True
    """``value == setpoint`` is in alarm."""
    priority: PriorityName | None = None
    """Default: the rule's priority for HI/LO, one step higher for HIHI/LOLO."""


class _RuleBase(Frozen):
    name: Identifier
    """Unique rule name (part of the alarm id ``<rule>@<tag>``)."""
    tenant: Slug | None = None
    """Only this tenant's tags. Default: every tenant."""
    description: str = ""
    priority: PriorityName = "medium"
    latching: bool = False
    """Stay in alarm after the condition clears until an operator resets it."""
    realarm: Duration | None = None
    """Re-annunciate an acknowledged alarm still active after this long (ISA ReAlarmTime)."""
    enabled: bool = True


class _TagRule(_RuleBase):
    tags: Annotated[list[TagPattern], Field(min_length=1)]
    """Tag names or glob patterns this rule applies to."""


class _LimitsMixin(Frozen):
    hihi: LimitSpec | None = None
    hi: LimitSpec | None = None
    lo: LimitSpec | None = None
    lolo: LimitSpec | None = None

    def _present(self) -> list[tuple[str, LimitSpec]]:
        return [(n, s) for n in ("hihi", "hi", "lo", "lolo") if (s := getattr(self, n)) is not None]

    def _check_order(self) -> None:
        present = self._present()
        if not present:
            raise ValueError("at least one of hihi, hi, lo, lolo is required")
        for (n1, s1), (n2, s2) in itertools.pairwise(present):
            if not s1.setpoint > s2.setpoint:
                raise ValueError(f"{n1}.setpoint ({s1.setpoint:g}) must be above {n2}.setpoint ({s2.setpoint:g})")


class LimitRule(_TagRule, _LimitsMixin):
    """Absolute limits. Levels are exclusive (one active level); each has its own deadband and delays."""

    kind: Literal["limit"]

    @model_validator(mode="after")
    def _order(self) -> LimitRule:
        self._check_order()
        return self


class DeviationRule(_TagRule, _LimitsMixin):
    """PV − SP against offsets: ``hi``/``hihi`` positive, ``lo``/``lolo`` negative (never zero)."""

    kind: Literal["deviation"]
    setpoint_tag: TagTemplate
    """Tag holding the (moving) setpoint, e.g. ``"{tag}_sp"``."""

    @model_validator(mode="after")
    def _signs(self) -> DeviationRule:
        self._check_order()
        for n, s in self._present():
            if n in ("hi", "hihi") and s.setpoint <= 0:
                raise ValueError(f"{n}.setpoint must be a positive offset from the setpoint tag")
            if n in ("lo", "lolo") and s.setpoint >= 0:
                raise ValueError(f"{n}.setpoint must be a negative offset from the setpoint tag")
        return self


class RateRule(_TagRule):
    """Rate of change in engineering units per minute, over ``period`` with the actual Δt."""

    kind: Literal["rate"]
    rate: Annotated[float, Field(gt=0), AfterValidator(_finite)]
    """Alarm at this many units per minute."""
    period: Annotated[Duration, Field(gt=0)] = 60.0
    direction: Literal["both", "rise", "fall"] = "both"
    deadband: NonNeg = 0.0
    """Units per minute below ``rate`` needed to clear."""
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0


class DigitalRule(_TagRule):
    """Off-normal: active while the value differs from ``normal`` (pump stopped, ESD closed …)."""

    kind: Literal["digital"]
    normal: Finite
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0


class DiscrepancyRule(_TagRule):
    """Command vs feedback: ``tags`` are the feedback tags; active when they differ from the command by more
    than ``tolerance`` for longer than ``tolerance_time``."""

    kind: Literal["discrepancy"]
    command_tag: TagTemplate
    tolerance: NonNeg = 0.0
    tolerance_time: Annotated[Duration, Field(gt=0)]
    off_delay: Duration = 0.0


class BadQualityRule(_TagRule):
    """One alarm per tag while its quality is BAD (or UNCERTAIN with ``include_uncertain``)."""

    kind: Literal["bad_quality"]
    include_uncertain: bool = False
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0


class CommLossRule(_RuleBase):
    """One comm-loss alarm per source (RTU, PLC, broker): the source reports down, or nothing arrived for
    ``stale_after``. While active it inhibits the notifications of that source's tag alarms."""

    kind: Literal["comm_loss"]
    sources: Annotated[list[TagPattern], Field(min_length=1)]
    """Source names or glob patterns."""
    stale_after: Duration | None = None
    """Default: the source's own ``stale_after``; unset on both: only the adapter's down status counts."""
    priority: PriorityName = "high"
    on_delay: Duration = 0.0
    """Ride through short reconnects."""
    off_delay: Duration = 0.0


RULE_KINDS: tuple[str, ...] = ("limit", "deviation", "rate", "digital", "discrepancy", "bad_quality", "comm_loss")
"""Values of the ``kind`` discriminator (for loaders that want to drop it from error key paths)."""

Rule = Annotated[
    LimitRule | DeviationRule | RateRule | DigitalRule | DiscrepancyRule | BadQualityRule | CommLossRule,
    Field(discriminator="kind"),
]

Comparison = Literal["eq", "ne", "lt", "le", "gt", "ge"]


class SuppressionGroup(Frozen):
    """Suppressed by design: while ``condition_tag <when> value`` holds (e.g. ``{asset}/pump_running eq 0``),
    the listed rules / tag patterns *of the same asset* are suppressed (still evaluated and journaled, not
    notified). When it ends, ``grace`` (start-up grace) runs before they annunciate again."""

    name: Identifier
    tenant: Slug | None = None
    condition_tag: TagTemplate
    """With ``{asset}``: one group per asset (well); without: one group for the tenant."""
    when: Comparison = "eq"
    value: Finite = 0.0
    rules: list[Identifier] = Field(default_factory=list)
    """Names of the rules it suppresses."""
    tags: list[TagTemplate] = Field(default_factory=list)
    """Tag patterns it suppresses (templates over ``{asset}``, globs allowed)."""
    grace: Duration = 0.0
    on_bad_quality: Literal["hold", "suppress", "release"] = "hold"
    """Condition tag BAD: keep the last decision (hold), suppress, or release."""

    @field_validator("condition_tag")
    @classmethod
    def _no_tag_placeholder(cls, v: str) -> str:
        if "{tag}" in v:
            raise ValueError("condition_tag may use {asset} but not {tag}")
        return v

    @model_validator(mode="after")
    def _members(self) -> SuppressionGroup:
        if not self.rules and not self.tags:
            raise ValueError("a suppression group needs `rules` and/or `tags` to suppress")
        return self

    def holds(self, v: float) -> bool:
        c = self.value
        return {"eq": v == c, "ne": v != c, "lt": v < c, "le": v <= c, "gt": v > c, "ge": v >= c}[self.when]
