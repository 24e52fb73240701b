"""Nuisance handling (reference/alarms.md §6.3) and flood detection (§6.5, scenario 33)."""

from __future__ import annotations

import pytest

from alarms.model import US, AlarmPolicy, EventKind, IntentKind, Level, Priority
from alarms.nuisance import FloodDetector, fleeting_episodes, flood_intervals, record_activation
from alarms.testing import T0, AlarmHarness

MIN = 60 * US


def chatter(h: AlarmHarness, cycles: int, period_s: float = 10) -> None:
    for _ in range(cycles):
        h.cond(True, Level.HI, 105.0, 100.0)
        h.advance(period_s / 2)
        h.cond(False)
        h.advance(period_s / 2)


def test_record_activation_window() -> None:
    times: tuple[int, ...] = ()
    flags = []
    for t in (0, 20, 50, 200, 210, 259):
        times, flag = record_activation(times, T0 + t * US, 3, 60 * US)
        flags.append(flag)
    assert flags == [False, False, True, False, False, True]
    assert len(times) == 3


def test_s22_chattering_flagged_and_notified_once() -> None:
    h = AlarmHarness(AlarmPolicy(priority=Priority.MEDIUM, notify_rtn_unack=False))
    chatter(h, 8)  # 8 activations in 80 s
    assert h.rec.chattering
    assert [e.kind for e in h.journal].count(EventKind.CHATTERING) == 1
    assert len(h.of(IntentKind.CHATTERING)) == 1
    # raise (1st), update (2nd re-activation) — then silence: no notification per cycle
    assert [i.kind for i in h.intents] == [IntentKind.RAISE, IntentKind.UPDATE, IntentKind.CHATTERING]
    h.advance(120)  # quiet for a window
    assert not h.rec.chattering and h.journal[-1].kind is EventKind.CHATTER_CLEARED
    assert h.replayed() == h.rec


def test_s22_chattering_auto_shelve_is_an_audited_system_action() -> None:
    h = AlarmHarness(AlarmPolicy(chatter_auto_shelve_us=15 * MIN))
    chatter(h, 3)
    shelve = next(e for e in h.journal if e.kind is EventKind.SHELVED)
    assert (shelve.user, shelve.reason) == ("system", "auto_shelve")
    assert h.rec.shelve is not None and h.rec.shelve.user == "system"
    n = len(h.intents)
    chatter(h, 5)
    assert len(h.intents) == n  # shelved: still journaled, not notified
    assert len(h.of(IntentKind.CHATTERING)) == 1


def test_s23_fleeting_alarm_counted() -> None:
    h = AlarmHarness(AlarmPolicy())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.advance(1)
    h.cond(False)  # active 1 s, cleared without operator action
    h.advance(600)
    h.cond(True, Level.HI, 105.0, 100.0)
    h.advance(30)
    h.cond(False)  # 30 s: not fleeting
    h.advance(600)
    h.cond(True, Level.HI, 105.0, 100.0)
    h.ack("jane")
    h.advance(1)
    h.cond(False)  # acked: not fleeting
    fleeting = list(fleeting_episodes(h.journal, 2 * US))
    assert [e.at for e in fleeting] == [T0]


def test_s24_stale_alarm_flagged_once_after_24h() -> None:
    h = AlarmHarness(AlarmPolicy())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.advance(23 * 3600)
    assert not h.rec.stale
    h.advance(2 * 3600)
    stale = [e for e in h.journal if e.kind is EventKind.STALE]
    assert [e.at for e in stale] == [T0 + 24 * 3600 * US] and h.rec.stale
    h.advance(48 * 3600)
    assert len([e for e in h.journal if e.kind is EventKind.STALE]) == 1


def test_s33_flood_starts_at_10_in_10min_and_ends_below_5() -> None:
    det = FloodDetector("acme")
    starts = []
    for k in range(10):
        starts += det.annunciated(T0 + k * 30 * US)  # 10 alarms in 4.5 min
    assert [(t.started, t.at, t.count) for t in starts] == [(True, T0 + 270 * US, 10)]
    assert det.in_flood and det.since == T0 + 270 * US
    # no more alarms: the flood ends when the 6th oldest (k=5) ages out, leaving 4 (< 5)
    assert det.advance(T0 + (4 * 30 + 600) * US) == []  # k=4 aged out: 5 left, still a flood
    ends = det.advance(T0 + 3600 * US)
    assert [(t.started, t.at, t.count) for t in ends] == [(False, T0 + (5 * 30 + 600) * US, 4)]
    assert not det.in_flood


def test_s33_late_advance_still_gives_the_exact_end_and_snapshot_round_trip() -> None:
    det = FloodDetector("acme", start=3, end=2, window_us=60 * US)
    for t in (0, 1, 2):
        det.annunciated(T0 + t * US)
    snap = det.snapshot()
    det2 = FloodDetector("acme", start=3, end=2, window_us=60 * US)
    det2.restore(snap)
    assert det2.in_flood and det2.next_deadline() == T0 + 60 * US
    assert [t.at for t in det2.advance(T0 + 999 * US)] == [T0 + 61 * US]


def test_flood_intervals_helper() -> None:
    times = [T0 + k * US for k in range(12)] + [T0 + 7200 * US + k * US for k in range(10)]
    ivs = flood_intervals(times, until=T0 + 7300 * US)
    assert [(iv.start - T0, None if iv.end is None else iv.end - T0) for iv in ivs] == [
        (9 * US, (7 + 600) * US), (7209 * US, 7300 * US)]  # a flood running at `until` is closed there
    assert flood_intervals(times[:12])[0].end is None


def test_flood_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        FloodDetector("acme", start=5, end=6)
