"""Operator actions and reads on one tenant's alarms — a mixin of :class:`alarms.runtime.AlarmCore`.

Each action runs the state machine on the alarm's record and hands the outcome to ``apply`` (write buffer,
timers, follow-ups); it returns the new record and the write-buffer sequence number to wait for. Refusals
raise :mod:`alarms.errors` types before anything is journaled (a refused reset is journaled and reported in
the outcome).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import state as sm
from .errors import InvalidOperation
from .instance import Alarm
from .model import AlarmRecord, Operator, Outcome, ShelveKind
from .replay import live, out_of_service, shelved, suppressed

__all__ = ["Operations"]


class Operations:
    alarms: dict[str, Alarm]

    def apply(self, a: Alarm, out: Outcome) -> int:
        raise NotImplementedError

    def alarm(self, alarm_id: str) -> Alarm:
        a = self.alarms.get(alarm_id)
        if a is None:
            raise KeyError(alarm_id)
        return a

    def ack(self, alarm_id: str, op: Operator, now: int, *, event_id: str | None = None) -> tuple[AlarmRecord, int]:
        a = self.alarm(alarm_id)
        seq = self.apply(a, sm.acknowledge(a.record, op, a.policy, now, event_id=event_id))
        return a.record, seq

    def reset(self, alarm_id: str, op: Operator, now: int) -> tuple[Outcome, int]:
        a = self.alarm(alarm_id)
        out = sm.reset(a.record, op, a.policy, now)
        return out, self.apply(a, out)

    def shelve(self, alarm_id: str, op: Operator, now: int, *, kind: ShelveKind,
               duration_us: int | None) -> tuple[AlarmRecord, int]:
        a = self.alarm(alarm_id)
        seq = self.apply(a, sm.shelve(a.record, op, a.policy, now, kind=kind, duration_us=duration_us))
        return a.record, seq

    def unshelve(self, alarm_id: str, op: Operator, now: int) -> tuple[AlarmRecord, int]:
        a = self.alarm(alarm_id)
        seq = self.apply(a, sm.unshelve(a.record, op, a.policy, now))
        return a.record, seq

    def set_out_of_service(self, alarm_id: str, op: Operator, now: int, *,
                           out_of_service: bool) -> tuple[AlarmRecord, int]:
        a = self.alarm(alarm_id)
        if a.record.disabled:
            raise InvalidOperation("the alarm is disabled")
        fn = sm.remove_from_service if out_of_service else sm.return_to_service
        seq = self.apply(a, fn(a.record, op, a.policy, now))
        return a.record, seq

    # ====================================================================================== reading
    def records(self) -> Mapping[str, AlarmRecord]:
        return {aid: a.record for aid, a in self.alarms.items()}

    def listed(self) -> list[AlarmRecord]:
        """Not NORMAL, plus shelved, suppressed and out-of-service ones (never disabled ones)."""
        recs = {aid: r for aid, r in self.records().items() if not r.disabled}
        out: dict[str, AlarmRecord] = {}
        for r in (*live(recs), *shelved(recs), *out_of_service(recs), *suppressed(recs)):
            out.setdefault(r.alarm_id, r)
        return list(out.values())
