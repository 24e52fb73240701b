"""Property tests of the state machine: random operation sequences keep the ISA invariants.

* no notification intent is produced while the alarm is not annunciated (shelved, suppressed, out of
  service, inhibited, disabled) — except the one orderly RESOLVE of a disable;
* every accepted operator operation is journaled; journal ``seq`` is gap-free;
* replaying the journal rebuilds the record exactly, and the record survives a JSON round trip;
* the core state agrees with the condition, and an episode (event id) is open exactly when not NORMAL.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from alarms.errors import OperationError
from alarms.model import (
    US,
    AlarmPolicy,
    AlarmRecord,
    AlarmState,
    EventKind,
    Level,
    NotifyTiming,
    Outcome,
    Priority,
)
from alarms.replay import apply_event
from alarms.testing import AlarmHarness

S = AlarmState
_OP_EVENT = {
    "ack": {EventKind.ACKED}, "reset": {EventKind.RESET, EventKind.RESET_REFUSED}, "shelve": {EventKind.SHELVED},
    "unshelve": {EventKind.UNSHELVED}, "oos": {EventKind.REMOVED_FROM_SERVICE},
    "rts": {EventKind.RETURNED_TO_SERVICE},
}


class AlarmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h: AlarmHarness | None = None
        self.running: AlarmRecord | None = None
        self.annunciating_at: dict[int, bool] = {}

    @rule(latching=st.booleans(), realarm=st.sampled_from([None, 300]), chatter_shelve=st.sampled_from([None, 120]))
    @precondition(lambda self: self.h is None)
    def start(self, latching: bool, realarm: int | None, chatter_shelve: int | None) -> None:
        timing = {p: NotifyTiming(reminder_us=600 * US, escalate_us=900 * US) for p in Priority}
        policy = AlarmPolicy(priority=Priority.HIGH, level_priorities={Level.HIHI: Priority.CRITICAL},
                             latching=latching, realarm_us=realarm and realarm * US, timing=timing,
                             sbd_grace_us=60 * US, chatter_auto_shelve_us=chatter_shelve and chatter_shelve * US,
                             max_shelve_us=3600 * US, stale_us=7200 * US)
        self.h = AlarmHarness(policy)
        self.running = AlarmRecord(self.h.rec.alarm_id, self.h.rec.tenant)

    def _check(self, before: int, outs: list[Outcome], op: str | None = None) -> None:
        assert self.h is not None and self.running is not None
        new = self.h.journal[before:]
        for ev in new:
            self.running = apply_event(self.running, ev)
            self.annunciating_at[ev.seq] = self.running.annunciating
        for out in outs:
            for i in out.intents:
                assert self.annunciating_at[i.seq] or i.reason == "disabled", (i, self.running)
        if op is not None:
            assert any(ev.kind in _OP_EVENT[op] for ev in new), op

    def _op(self, op: str, fn: str, *args: object, **kw: object) -> None:
        assert self.h is not None
        before = len(self.h.journal)
        try:
            out = getattr(self.h, fn)(*args, **kw)
        except OperationError:
            assert len(self.h.journal) == before  # refused requests journal nothing
            return
        self._check(before, [out], op)

    @rule(level=st.sampled_from([None, Level.HI, Level.HIHI, Level.LO]))
    @precondition(lambda self: self.h is not None)
    def condition(self, level: Level | None) -> None:
        assert self.h is not None
        before = len(self.h.journal)
        out = self.h.cond(level is not None, level, 1.0, 0.0)
        self._check(before, [out])

    @rule(seconds=st.integers(min_value=1, max_value=4000))
    @precondition(lambda self: self.h is not None)
    def advance(self, seconds: int) -> None:
        assert self.h is not None
        before = len(self.h.journal)
        self._check(before, self.h.advance(seconds))

    @rule()
    @precondition(lambda self: self.h is not None)
    def ack(self) -> None:
        self._op("ack", "ack", "jane")

    @rule()
    @precondition(lambda self: self.h is not None)
    def reset(self) -> None:
        self._op("reset", "reset", "jane")

    @rule(seconds=st.sampled_from([None, 60, 1800, 7200]))
    @precondition(lambda self: self.h is not None)
    def shelve(self, seconds: int | None) -> None:
        self._op("shelve", "shelve", seconds, one_shot=seconds is None)

    @rule()
    @precondition(lambda self: self.h is not None)
    def unshelve(self) -> None:
        self._op("unshelve", "unshelve")

    @rule(active=st.booleans(), group=st.sampled_from(["g1", "g2"]))
    @precondition(lambda self: self.h is not None)
    def suppress(self, active: bool, group: str) -> None:
        self._sys("suppress", active, group)

    @rule(on=st.booleans())
    @precondition(lambda self: self.h is not None)
    def inhibit(self, on: bool) -> None:
        self._sys("inhibit", on)

    @rule()
    @precondition(lambda self: self.h is not None)
    def oos(self) -> None:
        self._op("oos", "remove_from_service")

    @rule()
    @precondition(lambda self: self.h is not None)
    def rts(self) -> None:
        self._op("rts", "return_to_service")

    @rule(on=st.booleans())
    @precondition(lambda self: self.h is not None)
    def disable(self, on: bool) -> None:
        self._sys("disable" if on else "enable")

    def _sys(self, fn: str, *args: object) -> None:
        assert self.h is not None
        before = len(self.h.journal)
        self._check(before, [getattr(self.h, fn)(*args)])

    @invariant()
    def consistent(self) -> None:
        if self.h is None:
            return
        rec = self.h.rec
        assert [e.seq for e in self.h.journal] == list(range(1, len(self.h.journal) + 1))
        assert self.running == rec
        assert AlarmRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
        if rec.disabled:
            assert rec.state is S.NORMAL
            return
        if rec.state in (S.NORMAL, S.RTN_UNACK):
            assert not rec.cond
        if rec.state in (S.UNACK_ACTIVE, S.ACK_ACTIVE):
            assert rec.cond
        assert (rec.state is not S.NORMAL) == (rec.event_id is not None)
        if not rec.annunciating:
            assert rec.reminder_at is None or rec.shelve is None


AlarmMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow])
TestAlarmStateMachine = AlarmMachine.TestCase
