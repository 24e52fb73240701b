"""The synchronous core of one tenant's alarm engine: bindings, evaluators, state machine, timers.

No I/O and no awaits here: the asynchronous shell (:mod:`alarms.tenant`) feeds it batches, the clock and
source status, and writes what it produces. Everything that changes an alarm goes through
:meth:`AlarmCore.apply`, which appends the outcome (journal rows + intents) to the ordered
:class:`~alarms.writer.WriteBuffer` — the next flush writes them with the alarm's state row in one
transaction.

* **Samples** — :class:`~alarms.feed.SlotTable` routes a batch to alarm inputs with NumPy; only
  non-quiet samples reach the evaluators (:meth:`AlarmCore.process`).
* **Timers** — one heap of ``min(evaluator.next_deadline(), state.next_deadline())`` per alarm
  (on/off delays, shelve expiry, grace, re-alarm, reminders, escalation, chatter, stale, comm-loss stale).
* **Comm loss** — per source with a ``comm_loss`` rule: the adapter's status (``daemon.sources[…].device_up``,
  read every second) and the newest receive time of its tags drive the source's
  :class:`~alarms.signals.CommLossEvaluator`; while it is active every tag alarm of the source is inhibited.
  When a source goes down, or one of its tags is marked stale, the tag alarms are *frozen* (a BAD sample
  with the comm-loss status cancels pending delays and keeps their state): no LOLO flood on missing data.
* **Suppression by design** — a group's condition tag is an input like any other; a change of its decision
  suppresses / releases every member alarm of the group.
* **System alarms** — ``system@db`` (tenant database down), ``system@notify:<route>`` (a Teams route failed),
  ``system@spool_full`` …, driven by :meth:`AlarmCore.system`.
* **Hot reload** — :meth:`AlarmCore.reconfigure` re-binds: unchanged fingerprints keep record and evaluator
  untouched; changed alarms are audited (RECONFIGURED) and re-evaluated; removed or disabled ones are
  closed in an orderly way (DISABLED, one RESOLVE if paged) and then stay silent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

import numpy as np

from ingestd.config.load import IngestdConfig
from ingestd.model import STATUS_COMM_LOSS, Batch, Quality
from ingestd.pipeline.tags import TagMeta, TagRegistry

from . import state as sm
from .binding import SYSTEM_RULE, AlarmBinding, TagInfo, TenantBindings, bind, system_binding
from .feed import SlotTable
from .instance import (
    CONFIG_OP,
    EVENT_KINDS,
    Alarm,
    CommSource,
    SourceState,
    SupGroup,
    Target,
    build_inputs,
    detached_binding,
    quiet_ranges,
    restore_evaluator,
    system_description,
)
from .metrics import AlarmMetrics
from .model import (
    AlarmRecord,
    AlarmState,
    Condition,
    NotificationIntent,
    Operator,
    Outcome,
    us,
)
from .operations import Operations
from .rules import Sample
from .signals import CommLossEvaluator
from .store import StateRow
from .writer import WriteBuffer

__all__ = ["AlarmCore"]

log = logging.getLogger(__name__)

_EVENT_ALARM_HOLD_US: Final = 600 * 1_000_000
"""Event-like system alarms (spool full, …) return to normal after this long without a new event."""


class AlarmCore(Operations):
    def __init__(self, slug: str, registry: TagRegistry, cfg: IngestdConfig, metrics: AlarmMetrics,
                 source_state: SourceState, register_tag: Callable[[TagMeta], int],
                 direct: Callable[[Sequence[NotificationIntent]], None], *, buffer_events: int = 100_000) -> None:
        self.slug = slug
        self.registry = registry
        self.cfg = cfg
        self.metrics = metrics
        self.source_state = source_state
        self.register_tag = register_tag
        self.direct = direct
        self.buffer = WriteBuffer(buffer_events, on_drop=lambda n: metrics.buffer_dropped.labels(slug).inc(n))
        self.alarms: dict[str, Alarm] = {}
        self.bindings = TenantBindings(slug, {}, (), {}, {}, {}, {})
        self.table = SlotTable(0, {}, 0)
        self._targets: list[tuple[Target, str]] = []
        self._groups: dict[str, SupGroup] = {}
        self._comm: dict[str, CommSource] = {}
        self._input_keys = np.empty(0, np.int32)
        self._prev_stale = np.empty(0, bool)
        self._heap: list[tuple[int, int, Alarm]] = []
        self._counter = itertools.count()
        self._loaded: dict[str, StateRow] = {}
        self._db_flags: dict[str, bool] = {}
        self._event_clear: dict[str, int] = {}
        self.db_down = False
        """The writer cannot reach the database: intents also go to the sender directly."""
        self.bound_keys = 0
        self._m_transitions = metrics.transitions
        self._fast = self._slow_n = 0
        self._skew = us(cfg.alarms.policy_for(slug).max_clock_skew)

    # ====================================================================================== binding
    @property
    def wants_samples(self) -> bool:
        """Whether any rule or suppression group can apply to this tenant (else batches are not queued)."""
        a = self.cfg.alarms
        return a.enabled and (any(r.tenant in (None, self.slug) for r in a.rules)
                              or any(g.tenant in (None, self.slug) for g in a.suppression_groups))

    def _feeding_sources(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for s in self.cfg.sources:
            if s.enabled and (self.cfg.source_tenant(s) == self.slug or any(t.tenant == self.slug for t in s.tags)):
                out[s.name] = s.stale_after
        return out

    def _bind(self) -> TenantBindings:
        reg = self.registry
        tags = {name: TagInfo(m.source or None, m.unit, m.description) for name, m in zip(reg.names, reg.meta,
                                                                                           strict=True)}
        self.bound_keys = len(reg)
        return bind(self.cfg.alarms, self.slug, tags, source_stale=self._feeding_sources())

    def attach(self, rows: Iterable[StateRow], now: int) -> None:
        """Start-up: the persisted states, then bind. Tags of persisted alarms that the registry does not know
        yet (dynamic MQTT tags before their first message) are registered so their alarms bind at once —
        reminders, shelve expiries and acks work before the tag reports again."""
        self._loaded = {r.alarm_id: r for r in rows}
        known = self.registry.index
        for r in self._loaded.values():
            if r.rule != SYSTEM_RULE and r.kind != "comm_loss" and r.subject not in known:
                self.register_tag(TagMeta(r.subject, r.source or "", configured=False))
        self._apply_bindings(self._bind(), now, Operator("config", "configuration changed while ingestd was stopped"))
        for aid, row in list(self._loaded.items()):  # left over: system alarms and removed rules
            self._loaded.pop(aid)
            if row.rule == SYSTEM_RULE:
                key = aid.partition("@")[2]
                a = Alarm(system_binding(self.cfg.alarms, self.slug, key, system_description(key)),
                          AlarmRecord.from_dict(row.record))
            else:
                a = Alarm(detached_binding(self.slug, row), AlarmRecord.from_dict(row.record))
            self.alarms[aid] = a
            if not a.binding.enabled and not a.record.disabled:
                self.apply(a, sm.disable(a.record, Operator("config", "rule removed from the configuration"),
                                         a.policy, now))
            self._schedule(a)
        self._refresh_system_bindings()

    def rebind(self, now: int, op: Operator = CONFIG_OP) -> None:
        self._apply_bindings(self._bind(), now, op)

    def reconfigure(self, cfg: IngestdConfig, now: int) -> None:
        self.cfg = cfg
        self._skew = us(cfg.alarms.policy_for(self.slug).max_clock_skew)
        self._apply_bindings(self._bind(), now, CONFIG_OP)
        self._refresh_system_bindings()

    def _refresh_system_bindings(self) -> None:
        for aid, a in self.alarms.items():
            if a.binding.rule == SYSTEM_RULE:
                key = aid.partition("@")[2]
                a.binding = system_binding(self.cfg.alarms, self.slug, key, system_description(key))

    def _apply_bindings(self, tb: TenantBindings, now: int, op: Operator) -> None:
        self._sync_notes()
        old = self.alarms
        self.alarms = alarms = {}
        self.bindings = tb
        for aid, b in tb.alarms.items():
            a = old.get(aid)
            if a is None:
                a = self._new_alarm(b, now, self._loaded.pop(aid, None), op)
            elif a.binding.fingerprint == b.fingerprint and a.binding.enabled == b.enabled:
                a.binding = b  # scenario 55: record, evaluator and timers untouched
            else:
                self._reconfigure(a, b, now, op)
            alarms[aid] = a
        for aid, a in old.items():
            if aid in alarms:
                continue
            alarms[aid] = a
            if a.binding.rule == SYSTEM_RULE or not a.binding.enabled:
                continue
            # removed from the configuration (scenario 54): orderly close, then silence
            if a.evaluator is not None:
                a.parked = a.evaluator.snapshot()
            a.evaluator = None
            a.binding = replace(a.binding, enabled=False)
            self.apply(a, sm.disable(a.record, op, a.policy, now))
        self._build_inputs(now)
        for a in alarms.values():
            self._schedule(a)
        self.metrics.configured.labels(self.slug).set(sum(1 for a in alarms.values() if a.binding.enabled))

    def _new_alarm(self, b: AlarmBinding, now: int, row: StateRow | None, op: Operator) -> Alarm:
        rec = AlarmRecord.from_dict(row.record) if row is not None else AlarmRecord(b.alarm_id, self.slug)
        ev = b.new_evaluator(now)
        a = Alarm(b, rec, ev)
        if row is not None and ev is not None and row.eval_state:
            restore_evaluator(ev, row.eval_state, b.alarm_id)
        if isinstance(ev, CommLossEvaluator):
            ev.resume(now)
        if not b.enabled:
            if ev is not None:
                a.parked = ev.snapshot()
            a.evaluator = None
            self.apply(a, sm.disable(rec, op, b.policy, now))
        elif rec.disabled:
            self.apply(a, sm.enable(rec, op, b.policy, now))
            self._reconcile(a, now)
        elif row is not None and row.fingerprint and row.fingerprint != b.fingerprint:
            self.apply(a, sm.reconfigured(rec, op, b.policy, now, "rule or route settings changed"))
            self._reevaluate(a, now)
        return a

    def _reconfigure(self, a: Alarm, b: AlarmBinding, now: int, op: Operator) -> None:
        old_ev = a.evaluator
        snap = old_ev.snapshot() if old_ev is not None else a.parked
        a.binding = b
        if not b.enabled:
            a.parked, a.evaluator = snap, None
            self.apply(a, sm.disable(a.record, op, b.policy, now))
            return
        if a.record.disabled:
            self.apply(a, sm.enable(a.record, op, b.policy, now))
        else:
            self.apply(a, sm.reconfigured(a.record, op, b.policy, now, "rule or route settings changed"))
        ev = b.new_evaluator(now)
        if ev is not None and snap and (old_ev is None or type(old_ev) is type(ev)):
            restore_evaluator(ev, snap, a.id)
        if isinstance(ev, CommLossEvaluator):
            ev.resume(now)
        a.evaluator, a.parked = ev, None
        self._reevaluate(a, now)

    def _reevaluate(self, a: Alarm, now: int) -> None:
        """Changed limits: re-evaluate the last value (scenario 53); then make record and evaluator agree."""
        ev = a.evaluator
        if ev is not None and hasattr(ev, "reconfigure") and hasattr(ev, "limits"):
            self._conditions(a, ev.reconfigure(ev.limits, now))
        self._reconcile(a, now)

    def _reconcile(self, a: Alarm, now: int) -> None:
        ev = a.evaluator
        if ev is None or a.binding.kind == "comm_loss":
            return
        cur: Condition = ev.current
        if cur.active != a.record.cond:
            self._conditions(a, [Condition(cur.active, now, cur.level, cur.value, cur.limit)])

    def _build_inputs(self, now: int) -> None:
        inp = build_inputs(self.registry, self.alarms, self.bindings, self._groups, self._comm)
        self._targets, self.table, self._groups, self._comm = inp.targets, inp.table, inp.groups, inp.comm
        self._input_keys, self._prev_stale = inp.input_keys, inp.prev_stale
        reg = self.registry
        for g in self._groups.values():  # the condition tag's current value decides from the start
            key = reg.index.get(g.binding.condition_tag)
            lv = reg.live(key) if key is not None else None
            if lv is not None and not lv.stale and lv.ts_us > g.last_ts:
                self._group_sample(g, Sample(lv.ts_us, math.nan if lv.value is None else lv.value, lv.quality,
                                             lv.status), now)

    # ====================================================================================== outcomes
    def apply(self, a: Alarm, out: Outcome) -> int:
        """Record an outcome: new record, journal rows + intents to the write buffer, follow-ups."""
        if not out.events and out.refused is None:
            return self.buffer.seq
        old = a.record
        a.record = out.record
        seq = self.buffer.add(a.id, out)
        for ev in out.events:
            self._m_transitions.labels(self.slug, ev.kind.value).inc()
        if out.intents and self.db_down:
            self.direct(out.intents)
        if a.binding.kind == "comm_loss" and old.cond != a.record.cond:
            self._inhibit(a, a.record.cond, out.events[-1].at if out.events else 0)
        self._schedule(a)
        return seq

    def _conditions(self, a: Alarm, conds: Sequence[Condition]) -> None:
        for c in conds:
            self.apply(a, sm.on_condition(a.record, c, a.policy))

    def _inhibit(self, comm: Alarm, active: bool, now: int) -> None:
        for aid in self.bindings.inhibits.get(comm.id, ()):
            a = self.alarms.get(aid)
            if a is not None:
                self.apply(a, sm.set_inhibited(a.record, active, a.policy, now, source=comm.binding.subject))

    def _schedule(self, a: Alarm) -> None:
        ev_due = a.evaluator.next_deadline() if a.evaluator is not None else None
        if ev_due != a.ev_due:
            a.ev_due = ev_due
            if a.binding.kind != "comm_loss":  # its stale deadline moves with every batch; resume() resets it
                self.buffer.touch(a.id)  # pending delays are persisted (scenario 37)
        st_due = sm.next_deadline(a.record, a.policy)
        dues = [d for d in (ev_due, st_due) if d is not None]
        due = min(dues) if dues else None
        if due != a.due:
            a.due = due
            if due is not None:
                heapq.heappush(self._heap, (due, next(self._counter), a))

    def next_due(self) -> int | None:
        while self._heap:
            due, _, a = self._heap[0]
            if a.due == due and self.alarms.get(a.id) is a:
                return due
            heapq.heappop(self._heap)
        return None

    def run_timers(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            due, _, a = heapq.heappop(self._heap)
            if a.due != due or self.alarms.get(a.id) is not a:
                continue
            a.due = None
            if a.evaluator is not None:
                self._sync(a)
                self._conditions(a, a.evaluator.tick(now))
                self._ranges(a)
            self.apply(a, sm.tick(a.record, a.policy, now))
            self._schedule(a)

    # ====================================================================================== samples
    def process(self, batch: Batch, now: int) -> None:
        """Evaluate one routed batch (tag keys of this tenant; the caller re-binds first on new tags)."""
        key, ts = batch.key, batch.ts
        skew = self._skew
        if key.shape[0] and int(ts.max()) > now + skew:
            ok = ts <= now + skew
            self.metrics.samples_dropped.labels(self.slug, "clock_skew").inc(int((~ok).sum()))
            batch = batch.take(ok)
            key, ts = batch.key, batch.ts
        r = self.table.route(key, ts, batch.value, batch.quality)
        self._fast += r.fast
        if not r.slow:
            return
        self._slow_n += r.slow
        value, quality, status = batch.value, batch.quality, batch.status
        targets = self._targets
        for row, slot in zip(r.rows.tolist(), r.slots.tolist(), strict=True):
            target, role = targets[slot]
            s = Sample(int(ts[row]), float(value[row]), int(quality[row]), int(status[row]))
            if isinstance(target, SupGroup):
                self._group_sample(target, s, now)
            else:
                self._sample(target, role, slot, s, now)

    def flush_counts(self) -> None:
        if self._fast:
            self.metrics.samples.labels(self.slug, "fast").inc(self._fast)
        if self._slow_n:
            self.metrics.samples.labels(self.slug, "slow").inc(self._slow_n)
        self._fast = self._slow_n = 0

    def _sample(self, a: Alarm, role: str, slot: int, s: Sample, now: int) -> None:
        ev = a.evaluator
        self._sync(a)
        conds = ev.update(role, s, now)
        self.table.seen(slot, s.ts)
        a.touched = True
        self._conditions(a, conds)
        self._ranges(a)
        self._schedule(a)

    def _sync(self, a: Alarm) -> None:
        """Hand quiet samples noted by the fast path to the evaluator before it is used."""
        for slot, role in a.slots:
            note = self.table.take_note(slot)
            if note is not None:
                a.evaluator.note(role, note[0], note[1])

    def _sync_notes(self) -> None:
        for slot in self.table.noted_slots().tolist():
            if slot < len(self._targets):
                t = self._targets[slot][0]
                if isinstance(t, Alarm) and t.evaluator is not None:
                    self._sync(t)

    def _ranges(self, a: Alarm) -> None:
        quiet_ranges(self.table, a)

    def _group_sample(self, g: SupGroup, s: Sample, now: int) -> None:
        if s.ts <= g.last_ts:
            return
        g.last_ts = s.ts
        active = g.binding.decide(s.value, s.usable, g.active)
        if active == g.active:
            return
        g.active = active
        for aid in g.binding.members:
            a = self.alarms.get(aid)
            if a is not None:
                self.apply(a, sm.set_suppressed(a.record, g.binding.group_id, active, a.policy, now))

    def _freeze(self, keys: Iterable[int], now: int) -> None:
        """No communication: a BAD sample with the comm-loss status freezes every input of these tags."""
        table, targets = self.table, self._targets
        for key in keys:
            if key >= table.n_keys or not table.has[key]:
                continue
            start, n = int(table.start[key]), int(table.count[key])
            for slot in table.flat[start:start + n].tolist():
                last = int(table.last_ts[slot])
                if last == np.iinfo(np.int64).min:
                    continue  # never received: nothing to freeze
                target, role = targets[slot]
                s = Sample(last + 1, math.nan, Quality.BAD, STATUS_COMM_LOSS)
                if isinstance(target, SupGroup):
                    self._group_sample(target, s, now)
                elif target.evaluator is not None:
                    self._sample(target, role, slot, s, now)

    # ====================================================================================== every second
    def tick(self, now: int) -> None:
        reg = self.registry
        for src, cs in self._comm.items():
            ev = cs.alarm.evaluator
            if ev is None:
                continue
            down = self.source_state(src)
            if down is not None and down != cs.down:
                if down:
                    self._freeze(cs.keys.tolist(), now)
                cs.down = down
                self._conditions(cs.alarm, ev.status(not down, now))
            if cs.keys.shape[0]:
                recv = int(reg.live_recv[cs.keys].max())
                if recv > cs.last_recv:
                    cs.last_recv = recv
                    self._conditions(cs.alarm, ev.seen(min(recv, now)))
            self._schedule(cs.alarm)
        if self._input_keys.shape[0]:
            stale = reg.stale[self._input_keys]
            newly = stale & ~self._prev_stale
            self._prev_stale = stale.copy()
            if newly.any():
                self._freeze(self._input_keys[newly].tolist(), now)
        for key, at in list(self._event_clear.items()):
            if at <= now:
                del self._event_clear[key]
                self.system(key, False, now)
        self.flush_counts()

    def export_gauges(self) -> None:
        active: dict[str, int] = dict.fromkeys(("critical", "high", "medium", "low"), 0)
        annunciated = dict(active)
        for a in self.alarms.values():
            r = a.record
            if r.state is AlarmState.NORMAL or r.disabled:
                continue
            p = (r.priority or a.policy.priority).value
            active[p] += 1
            if r.annunciating:
                annunciated[p] += 1
        for p, n in active.items():
            self.metrics.active.labels(self.slug, p).set(n)
            self.metrics.annunciated.labels(self.slug, p).set(annunciated[p])
        self.metrics.buffered.labels(self.slug).set(len(self.buffer))

    # ====================================================================================== system alarms
    def system(self, key: str, active: bool, now: int, value: float | None = None) -> None:
        """Raise (``active``) or clear ``system@<key>``."""
        aid = f"{SYSTEM_RULE}@{key}"
        a = self.alarms.get(aid)
        if a is None:
            if not active:
                return
            a = self.alarms[aid] = Alarm(system_binding(self.cfg.alarms, self.slug, key, system_description(key)),
                                         AlarmRecord(aid, self.slug))
        if a.record.cond == active:
            if active and key in EVENT_KINDS:
                self._event_clear[key] = now + _EVENT_ALARM_HOLD_US
            return
        self._conditions(a, [Condition(active, now, None, value, None)])
        if active and key in EVENT_KINDS:
            self._event_clear[key] = now + _EVENT_ALARM_HOLD_US

    def system_event(self, kind: str, now: int) -> None:
        """A daemon system event for this tenant (``database_down``/``database_up``/``spool_full``/…)."""
        if kind in ("database_down", "database_up"):
            self.set_db_flag("pipeline", kind == "database_down", now)
        elif kind in EVENT_KINDS:
            self.system(kind, True, now)

    def set_db_flag(self, source: str, down: bool, now: int) -> None:
        self._db_flags[source] = down
        self.system("db", any(self._db_flags.values()), now)

    def route_event(self, route: str, ok: bool, now: int) -> None:
        key = f"notify:{route}"
        if ok and f"{SYSTEM_RULE}@{key}" not in self.alarms:
            return
        self.system(key, not ok, now)

    # ====================================================================================== persistence
    def state_rows(self, ids: Iterable[str]) -> list[StateRow]:
        rows = []
        for aid in ids:
            a = self.alarms.get(aid)
            if a is None:
                continue
            snap: dict[str, Any] = {}
            if a.evaluator is not None:
                self._sync(a)
                snap = a.evaluator.snapshot()
            elif a.parked is not None:
                snap = a.parked
            b = a.binding
            rows.append(StateRow(aid, b.rule, b.kind, b.subject, b.source, a.record.to_dict(), snap, b.fingerprint,
                                 a.due))
            a.touched = False
        return rows

    def touched(self) -> list[str]:
        return [aid for aid, a in self.alarms.items() if a.touched]
