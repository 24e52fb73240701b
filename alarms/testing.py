"""Test helpers: drive one alarm (evaluator + state machine) with a fake clock and record everything.

>>> h = AlarmHarness(policy, LimitEvaluator([LimitParams(Level.HI, 100.0)]))
>>> h.feed(101.0)              # sample at the harness clock
>>> h.advance(30)              # 30 s later: timers fire
>>> h.ack("jane")
>>> h.journal, h.intents       # every journal row / notification intent so far
>>> h.replayed() == h.rec      # the journal rebuilds the record

This is what the engine does per alarm, minus persistence and the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingestd.model import STATUS_OK, Quality

from . import state as sm
from .clock import FakeClock
from .model import (
    US,
    AlarmPolicy,
    AlarmRecord,
    Condition,
    IntentKind,
    JournalEvent,
    Level,
    NotificationIntent,
    Operator,
    Outcome,
    ShelveKind,
)
from .replay import replay_one
from .rules import Evaluator, Sample

__all__ = ["T0", "AlarmHarness"]

T0 = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z in µs."""


class AlarmHarness:
    def __init__(self, policy: AlarmPolicy | None = None, evaluator: Evaluator | None = None, *,
                 alarm_id: str = "rule@tag", tenant: str = "acme", clock: FakeClock | None = None) -> None:
        self.policy = policy or AlarmPolicy()
        self.evaluator = evaluator
        self.clock = clock or FakeClock(T0)
        self.rec = AlarmRecord(alarm_id, tenant)
        self.journal: list[JournalEvent] = []
        self.intents: list[NotificationIntent] = []
        self.conditions: list[Condition] = []

    @property
    def now(self) -> int:
        return self.clock.now_us()

    def _apply(self, out: Outcome) -> Outcome:
        self.rec = out.record
        self.journal.extend(out.events)
        self.intents.extend(out.intents)
        return out

    def _do(self, fn: Callable[..., Outcome], *args: Any, **kw: Any) -> Outcome:
        return self._apply(fn(self.rec, *args, **kw))

    # -- inputs ---------------------------------------------------------------------------------------
    def cond(self, active: bool, level: Level | None = None, value: float | None = None,
             limit: float | None = None) -> Outcome:
        """Feed a debounced condition directly (bypassing any evaluator)."""
        c = Condition(active, self.now, level, value, limit)
        self.conditions.append(c)
        return self._do(sm.on_condition, c, self.policy)

    def feed(self, value: float, *, role: str = "pv", quality: int = Quality.GOOD, status: int = STATUS_OK,
             ts: int | None = None) -> list[Outcome]:
        """A sample through the evaluator (timestamp = now unless given), then the state machine."""
        assert self.evaluator is not None
        conds = self.evaluator.update(role, Sample(self.now if ts is None else ts, value, quality, status), self.now)
        return self._conditions(conds)

    def _conditions(self, conds: list[Condition]) -> list[Outcome]:
        self.conditions.extend(conds)
        return [self._do(sm.on_condition, c, self.policy) for c in conds]

    def advance(self, seconds: float) -> list[Outcome]:
        """Move the clock, firing evaluator and state-machine timers in deadline order on the way."""
        target = self.clock.t + round(seconds * US)
        outs: list[Outcome] = []
        while True:
            dues = [d for d in (self.evaluator.next_deadline() if self.evaluator else None,
                                sm.next_deadline(self.rec, self.policy)) if d is not None and d <= target]
            if not dues:
                break
            self.clock.t = max(self.clock.t, min(dues))
            if self.evaluator is not None:
                outs += self._conditions(self.evaluator.tick(self.clock.t))
            outs.append(self._do(sm.tick, self.policy, self.clock.t))
        self.clock.t = target
        outs.append(self._do(sm.tick, self.policy, self.clock.t))
        return outs

    # -- operations -----------------------------------------------------------------------------------
    def ack(self, user: str = "op", comment: str = "", *, event_id: str | None = None) -> Outcome:
        return self._do(sm.acknowledge, Operator(user, comment), self.policy, self.now, event_id=event_id)

    def reset(self, user: str = "op", comment: str = "") -> Outcome:
        return self._do(sm.reset, Operator(user, comment), self.policy, self.now)

    def shelve(self, seconds: float | None = None, *, one_shot: bool = False, user: str = "op",
               reason: str = "nuisance") -> Outcome:
        kind = ShelveKind.ONE_SHOT if one_shot else ShelveKind.TIMED
        dur = None if seconds is None else round(seconds * US)
        return self._do(sm.shelve, Operator(user, reason), self.policy, self.now, kind=kind, duration_us=dur)

    def unshelve(self, user: str = "op") -> Outcome:
        return self._do(sm.unshelve, Operator(user), self.policy, self.now)

    def suppress(self, active: bool, group: str = "pump_off@well_1") -> Outcome:
        return self._do(sm.set_suppressed, group, active, self.policy, self.now)

    def remove_from_service(self, user: str = "tech", reason: str = "MOC-42 transmitter swap") -> Outcome:
        return self._do(sm.remove_from_service, Operator(user, reason), self.policy, self.now)

    def return_to_service(self, user: str = "tech") -> Outcome:
        return self._do(sm.return_to_service, Operator(user), self.policy, self.now)

    def inhibit(self, on: bool, source: str = "rtu_1") -> Outcome:
        return self._do(sm.set_inhibited, on, self.policy, self.now, source=source)

    def disable(self, user: str = "config") -> Outcome:
        return self._do(sm.disable, Operator(user), self.policy, self.now)

    def enable(self, user: str = "config") -> Outcome:
        return self._do(sm.enable, Operator(user), self.policy, self.now)

    # -- inspection -----------------------------------------------------------------------------------
    def of(self, kind: IntentKind) -> list[NotificationIntent]:
        return [i for i in self.intents if i.kind is kind]

    def replayed(self) -> AlarmRecord:
        return replay_one(self.rec.alarm_id, self.rec.tenant, self.journal)
