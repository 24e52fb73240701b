"""Rebuild alarm records from the append-only journal (scenario 40).

Each journal row carries the record fields it changed, so replay is a fold of :func:`apply_event` over the
rows in per-alarm ``seq`` order. The engine uses it at start-up to check (or rebuild) ``alarm_state`` from
``alarm_journal``; the API uses :func:`shelved` / :func:`out_of_service` / :func:`live` for the lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .model import AlarmRecord, AlarmState, JournalEvent

__all__ = ["JournalGap", "apply_event", "live", "out_of_service", "replay", "replay_one", "shelved", "suppressed"]


class JournalGap(ValueError):
    """Journal rows of an alarm are missing or out of order (seq not consecutive)."""


def apply_event(rec: AlarmRecord, ev: JournalEvent) -> AlarmRecord:
    if ev.alarm_id != rec.alarm_id:
        raise ValueError(f"event of {ev.alarm_id!r} applied to {rec.alarm_id!r}")
    if ev.seq != rec.seq + 1:
        raise JournalGap(f"{rec.alarm_id}: expected seq {rec.seq + 1}, got {ev.seq}")
    d = rec.to_dict()
    d.update(ev.changes)
    d["seq"] = ev.seq
    return AlarmRecord.from_dict(d)


def replay_one(alarm_id: str, tenant: str, events: Iterable[JournalEvent]) -> AlarmRecord:
    rec = AlarmRecord(alarm_id, tenant)
    for ev in sorted((e for e in events if e.alarm_id == alarm_id), key=lambda e: e.seq):
        rec = apply_event(rec, ev)
    return rec


def replay(events: Iterable[JournalEvent]) -> dict[str, AlarmRecord]:
    """Records of every alarm that appears in ``events`` (any order across alarms)."""
    by_alarm: dict[str, list[JournalEvent]] = {}
    for ev in events:
        by_alarm.setdefault(ev.alarm_id, []).append(ev)
    return {a: replay_one(a, evs[0].tenant, evs) for a, evs in by_alarm.items()}


def live(records: Mapping[str, AlarmRecord]) -> list[AlarmRecord]:
    """The alarm list: every alarm not in NORMAL, annunciated or not, most recent first."""
    out = [r for r in records.values() if r.state is not AlarmState.NORMAL and not r.disabled]
    return sorted(out, key=lambda r: (-(r.episode_since or 0), r.alarm_id))


def shelved(records: Mapping[str, AlarmRecord]) -> list[AlarmRecord]:
    return sorted((r for r in records.values() if r.shelve is not None), key=lambda r: r.alarm_id)


def out_of_service(records: Mapping[str, AlarmRecord]) -> list[AlarmRecord]:
    return sorted((r for r in records.values() if r.oos is not None), key=lambda r: r.alarm_id)


def suppressed(records: Mapping[str, AlarmRecord]) -> list[AlarmRecord]:
    return sorted((r for r in records.values() if r.sbd_groups or r.sbd_grace_until is not None),
                  key=lambda r: r.alarm_id)
