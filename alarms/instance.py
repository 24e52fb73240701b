"""The per-tenant objects of the engine's core (:mod:`alarms.runtime`) and how their inputs are wired.

* :class:`Alarm` — one bound alarm: binding (config), record (state), evaluator, input slots, timer key;
* :class:`SupGroup` — one suppression group with its current decision;
* :class:`CommSource` — one source with a comm-loss rule: its tags and last observed status;
* :func:`build_inputs` — the sample routing of a tenant (:class:`~alarms.feed.SlotTable` over the tag
  registry, slot → consumer) rebuilt after every (re)bind, keeping the per-input state of unchanged ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ingestd.pipeline.tags import TagRegistry

from .binding import AlarmBinding, SuppressionBinding, TenantBindings
from .feed import SlotTable
from .model import AlarmPolicy, AlarmRecord, Operator
from .store import StateRow

__all__ = [
    "CONFIG_OP",
    "EVENT_KINDS",
    "Alarm",
    "CommSource",
    "Inputs",
    "SourceState",
    "SupGroup",
    "Target",
    "build_inputs",
    "detached_binding",
    "quiet_ranges",
    "restore_evaluator",
    "system_description",
]

log = logging.getLogger(__name__)

CONFIG_OP: Final = Operator("config", "configuration reloaded")
_SYSTEM_KEYS: Final = {
    "db": "Tenant database unavailable: alarm transitions are kept in memory and written when it returns",
    "spool_full": "Disk spool full: the oldest buffered readings were dropped",
    "spool_error": "Cannot write the disk spool: readings are held in memory, sources slowed down",
    "spool_quarantine": "Readings rejected by the database were quarantined",
}
EVENT_KINDS: Final = frozenset({"spool_full", "spool_error", "spool_quarantine"})
"""System events without an "ended" event: their alarm returns to normal after a quiet period."""
_NEVER: Final = int(np.iinfo(np.int64).min)

SourceState = Callable[[str], bool | None]
"""Source name → True when it (or one of its devices) is down, False when up, None when unknown."""


def system_description(key: str) -> str:
    if key.startswith("notify:"):
        return f"Notification channel (route {key[7:]}) failed: cards go to its fallback route"
    return _SYSTEM_KEYS.get(key, f"ingestd: {key}")


@dataclass(eq=False)
class Alarm:
    """One bound alarm: its binding (config), record (state) and evaluator."""

    binding: AlarmBinding
    record: AlarmRecord
    evaluator: Any = None
    slots: list[tuple[int, str]] = field(default_factory=list)
    """(slot, role) of its inputs in the current :class:`SlotTable`."""
    due: int | None = None
    ev_due: int | None = None
    parked: dict[str, Any] | None = None
    """Evaluator snapshot kept while the alarm is disabled."""
    touched: bool = False

    @property
    def id(self) -> str:
        return self.binding.alarm_id

    @property
    def policy(self) -> AlarmPolicy:
        return self.binding.policy


@dataclass(eq=False)
class SupGroup:
    binding: SuppressionBinding
    active: bool = False
    last_ts: int = _NEVER


@dataclass(eq=False)
class CommSource:
    alarm: Alarm
    keys: npt.NDArray[np.int32]
    down: bool | None = None
    last_recv: int = 0


Target = Alarm | SupGroup


@dataclass
class Inputs:
    targets: list[tuple[Target, str]]
    """Slot → (consumer, role)."""
    table: SlotTable
    groups: dict[str, SupGroup]
    comm: dict[str, CommSource]
    input_keys: npt.NDArray[np.int32]
    prev_stale: npt.NDArray[np.bool_]


def quiet_ranges(table: SlotTable, a: Alarm) -> None:
    """Publish the evaluator's quiet interval for the fast path (single-input evaluators only)."""
    quiet = getattr(a.evaluator, "quiet_range", None)
    lo, hi = quiet() if quiet is not None and len(a.slots) == 1 else (math.inf, -math.inf)
    for slot, _ in a.slots:
        table.set_range(slot, lo, hi)


def build_inputs(reg: TagRegistry, alarms: Mapping[str, Alarm], tb: TenantBindings, old_groups: Mapping[str, SupGroup],
                 old_comm: Mapping[str, CommSource]) -> Inputs:
    """Tag key → slots for every enabled alarm input and every suppression-group condition tag. Evaluator
    notes must have been synced into the evaluators before (the old table is discarded)."""
    targets: list[tuple[Target, str]] = []
    inputs: dict[int, list[int]] = {}
    for a in alarms.values():
        a.slots = []
        if a.evaluator is None or not a.binding.enabled:
            continue
        for role, tag in a.binding.inputs.items():
            key = reg.index.get(tag)
            if key is None:
                continue
            inputs.setdefault(key, []).append(len(targets))
            a.slots.append((len(targets), role))
            targets.append((a, role))
    groups: dict[str, SupGroup] = {}
    for sb in tb.suppressions:
        g = old_groups.get(sb.group_id)
        if g is None:
            g = SupGroup(sb, any(sb.group_id in alarms[m].record.sbd_groups for m in sb.members if m in alarms))
        else:
            g.binding = sb
        groups[sb.group_id] = g
        key = reg.index.get(sb.condition_tag)
        if key is not None:
            inputs.setdefault(key, []).append(len(targets))
            targets.append((g, "cond"))
    table = SlotTable(len(reg), inputs, len(targets))
    for slot, (t, _) in enumerate(targets):
        if isinstance(t, SupGroup):
            table.last_ts[slot] = t.last_ts
        elif (last := getattr(t.evaluator, "last_ts", None)) is not None:
            table.last_ts[slot] = last
    for t, _ in targets:
        if isinstance(t, Alarm):
            quiet_ranges(table, t)
    input_keys = np.asarray(sorted(inputs), dtype=np.int32)
    by_source: dict[str, list[int]] = {}
    for key, m in enumerate(reg.meta):
        if m.source:
            by_source.setdefault(m.source, []).append(key)
    comm: dict[str, CommSource] = {}
    for src, aid in tb.comm_loss.items():
        a = alarms[aid]
        prev = old_comm.get(src)
        comm[src] = CommSource(a, np.asarray(by_source.get(src, ()), dtype=np.int32),
                               prev.down if prev is not None and prev.alarm is a else None,
                               prev.last_recv if prev is not None else 0)
    return Inputs(targets, table, groups, comm, input_keys, reg.stale[input_keys].copy())


def restore_evaluator(ev: Any, snap: dict[str, Any], alarm_id: str) -> None:
    try:
        ev.restore(snap)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        log.warning("alarm %s: persisted evaluator state not usable (%r); starting it fresh", alarm_id, exc)


def detached_binding(tenant: str, row: StateRow) -> AlarmBinding:
    """Binding of a persisted alarm whose rule is gone: disabled, default policy."""
    policy = AlarmPolicy(tag=row.subject, rule=row.rule, rule_kind=row.kind)
    return AlarmBinding(row.alarm_id, tenant, row.rule, row.kind, row.subject, {}, row.source, policy, enabled=False)
