"""Detection correctness (reference/alarms.md §6.2) and evaluator persistence."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import pytest

from alarms.clock import MonotonicClock
from alarms.model import US, AlarmPolicy, AlarmState, Condition, EventKind, IntentKind, Level, Operator
from alarms.rules import (
    DeviationEvaluator,
    Evaluator,
    LimitEvaluator,
    LimitParams,
    RateEvaluator,
    RateParams,
    Sample,
    admissible,
)
from alarms.signals import BadQualityEvaluator, BoolParams
from alarms.testing import T0, AlarmHarness
from ingestd.model import STATUS_COMM_LOSS, Quality


def activations(h: AlarmHarness) -> list[int]:
    return [e.at for e in h.journal if e.kind in (EventKind.ACTIVATED, EventKind.REACTIVATED)]


def test_s11_deadband_hysteresis_one_activation_per_limit_deadbands_differ() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0, deadband=4.0), LimitParams(Level.HIHI, 120.0, deadband=0.5)])
    h = AlarmHarness(AlarmPolicy(), ev)
    for k in range(60):  # 10 minutes of HI ± deadband/2 every 10 s
        h.feed(100.0 + (2.0 if k % 2 == 0 else -2.0))
        h.advance(10)
    assert len(activations(h)) == 1 and h.rec.state is AlarmState.UNACK_ACTIVE
    assert [c.active for c in h.conditions] == [True]
    # HIHI has a small deadband: the same ±2 swing around 120 re-crosses it every cycle
    conds: list[Condition] = []
    for k in range(6):
        conds += ev.update("pv", Sample(h.now + k * US, 120.0 + (2.0 if k % 2 == 0 else -2.0)), h.now + k * US)
    assert [c.level for c in conds] == [Level.HIHI, Level.HI, Level.HIHI, Level.HI, Level.HIHI, Level.HI]


def test_s12_on_delay_spike_ignored_sustained_alarm_stamped_at_delay_end() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0, on_delay_us=30 * US)])
    h = AlarmHarness(AlarmPolicy(), ev)
    h.feed(105.0)
    h.advance(20)
    h.feed(95.0)  # spike of 20 s < 30 s on-delay
    h.advance(60)
    assert h.journal == []
    h.feed(105.0)
    start = h.now
    h.advance(120)
    assert activations(h) == [start + 30 * US]  # activation time = end of the on-delay
    assert h.rec.active_since == start + 30 * US
    assert len(h.of(IntentKind.RAISE)) == 1


def test_s12_sample_arriving_after_the_deadline_still_stamps_the_deadline() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0, on_delay_us=30 * US, off_delay_us=0)])
    conds = ev.update("pv", Sample(T0, 105.0), T0)
    conds += ev.update("pv", Sample(T0 + 50 * US, 90.0), T0 + 50 * US)  # nobody ticked in between
    assert [(c.active, c.at) for c in conds] == [(True, T0 + 30 * US), (False, T0 + 50 * US)]
    assert conds[0].value == 105.0 and conds[1].value == 90.0


def test_s13_off_delay_keeps_alarm_through_brief_dips() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0, off_delay_us=30 * US)])
    h = AlarmHarness(AlarmPolicy(), ev)
    h.feed(105.0)
    for _ in range(5):
        h.advance(10)
        h.feed(95.0)  # dip of 10 s
        h.advance(10)
        h.feed(105.0)
    assert [e.kind for e in h.journal] == [EventKind.ACTIVATED]
    h.advance(1)
    h.feed(95.0)
    t = h.now
    h.advance(60)
    assert h.journal[-1].kind is EventKind.CLEARED and h.journal[-1].at == t + 30 * US


@pytest.mark.parametrize(("level", "inclusive", "value", "active"), [
    (Level.HI, True, 100.0, True), (Level.HI, False, 100.0, False), (Level.HI, False, 100.0001, True),
    (Level.LO, True, 10.0, True), (Level.LO, False, 10.0, False), (Level.LO, False, 9.9999, True),
])
def test_s14_inclusive_flag_at_the_setpoint(level: Level, inclusive: bool, value: float, active: bool) -> None:
    sp = 100.0 if level is Level.HI else 10.0
    ev = LimitEvaluator([LimitParams(level, sp, inclusive=inclusive)])
    assert bool(ev.update("pv", Sample(T0, value), T0)) is active


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_s14_non_finite_never_satisfies_a_limit_and_raises_a_bad_value_alarm(bad: float) -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0), LimitParams(Level.LO, 10.0)])
    assert ev.update("pv", Sample(T0, bad), T0) == []
    bq = BadQualityEvaluator()
    assert [c.active for c in bq.update("pv", Sample(T0, bad), T0)] == [True]


def ramp(ev: RateEvaluator, dts: Sequence[float], slope_per_min: float, t0: int = T0) -> list[Condition]:
    t, v, out = t0, 50.0, []
    for dt in dts:
        t += round(dt * US)
        v += slope_per_min * dt / 60
        out += ev.update("pv", Sample(t, v), t)
    return out


def test_s15_rate_of_change_irregular_sampling_uses_actual_dt() -> None:
    dts = [7, 13, 3, 20, 11, 2, 17, 9, 5, 14, 21, 6] * 3
    fast = ramp(RateEvaluator(RateParams(5.0, period_us=60 * US)), dts, 10.0)
    assert [c.active for c in fast] == [True]
    assert fast[0].value == pytest.approx(10.0)
    slow = ramp(RateEvaluator(RateParams(5.0, period_us=60 * US)), dts, 2.0)
    assert slow == []
    falling = ramp(RateEvaluator(RateParams(5.0, period_us=60 * US, direction="rise")), dts, -10.0)
    assert falling == []


def test_s15_duplicate_and_out_of_order_samples_are_deterministic_no_ops() -> None:
    clean = [(T0 + k * 10 * US, 50.0 + k * 2.0) for k in range(30)]
    noisy = []
    for k, (t, v) in enumerate(clean):
        noisy.append((t, v))
        noisy.append((t, v + 99.0))  # duplicate timestamp, different value: ignored
        if k > 2:
            noisy.append((clean[k - 2][0], 0.0))  # late, out of order: ignored
    a, b = RateEvaluator(RateParams(5.0)), RateEvaluator(RateParams(5.0))
    ca = [c for t, v in clean for c in a.update("pv", Sample(t, v), t)]
    cb = [c for t, v in noisy for c in b.update("pv", Sample(t, v), t)]
    assert ca == cb and [c.active for c in ca] == [True]
    assert a.snapshot() == b.snapshot()


def test_s16_deviation_with_moving_setpoint() -> None:
    """SP 10, +2/−1 → alarms above 12 or below 9; SP moves to 11 with PV 12.5 → re-evaluated against 10/13."""
    ev = DeviationEvaluator([LimitParams(Level.HI, 2.0), LimitParams(Level.LO, -1.0)])
    assert ev.update("sp", Sample(T0, 10.0), T0) == []
    c = ev.update("pv", Sample(T0, 12.5), T0)
    assert [(x.active, x.level, x.value, x.limit) for x in c] == [(True, Level.HI, 12.5, 12.0)]
    c = ev.update("sp", Sample(T0 + US, 11.0), T0 + US)
    assert [(x.active, x.value) for x in c] == [(False, 12.5)]
    c = ev.update("pv", Sample(T0 + 2 * US, 9.9), T0 + 2 * US)
    assert [(x.active, x.level, x.limit) for x in c] == [(True, Level.LO, 10.0)]
    # a bad setpoint freezes the alarm instead of comparing against garbage
    assert ev.update("sp", Sample(T0 + 3 * US, math.nan, Quality.BAD), T0 + 3 * US) == []
    assert ev.current.active


def test_s18_bad_quality_freezes_limits_and_raises_one_bad_quality_alarm() -> None:
    lim = LimitEvaluator([LimitParams(Level.LO, 10.0), LimitParams(Level.LOLO, 5.0)])
    bq = BadQualityEvaluator(BoolParams(on_delay_us=5 * US))
    t = T0
    for v in (50.0, 49.0):
        lim.update("pv", Sample(t, v), t)
        bq.update("pv", Sample(t, v), t)
        t += US
    conds = []
    bq_conds = []
    for k in range(10):  # device reports Bad with value 0/NaN
        s = Sample(t + k * US, 0.0 if k % 2 else math.nan, Quality.BAD, 0x80000000)
        conds += lim.update("pv", s, s.ts)
        bq_conds += bq.update("pv", s, s.ts)
    assert conds == [] and not lim.current.active  # no LOLO on a 0/NaN value
    assert [(c.active, c.at) for c in bq_conds] == [(True, t + 5 * US)]


def test_s18_comm_loss_status_does_not_raise_per_tag_bad_quality() -> None:
    bq = BadQualityEvaluator()
    assert bq.update("pv", Sample(T0, math.nan, Quality.BAD, STATUS_COMM_LOSS), T0) == []
    assert not bq.current.active


def test_s20_startup_no_limit_alarm_before_first_good_value() -> None:
    ev = LimitEvaluator([LimitParams(Level.LO, 10.0)])
    h = AlarmHarness(AlarmPolicy(), ev)
    for _ in range(5):
        h.feed(math.nan, quality=Quality.BAD)  # Bad_WaitingForInitialData
        h.advance(1)
    assert h.journal == []
    h.feed(5.0)
    assert [e.kind for e in h.journal] == [EventKind.ACTIVATED]


def test_s21_clock_steps_do_not_move_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine clock is wall time anchored at start and advanced by the monotonic clock."""
    clock = MonotonicClock()
    t1 = clock.now_us()
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 3600 * 10**9)  # NTP step / wrong DST handling
    t2 = clock.now_us()
    assert 0 <= t2 - t1 < 5 * US


def test_s21_a_spurious_future_timestamp_is_not_admitted() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0)])
    skew = 300 * US
    future = Sample(T0 + 3600 * US, 50.0)  # device clock jumped an hour ahead once
    assert not admissible(future, T0, skew)
    assert admissible(Sample(T0 - 86400 * US, 1.0), T0, skew) and admissible(Sample(T0 + skew, 1.0), T0, skew)
    for k in range(3):
        s = Sample(T0 + k * US, 105.0)
        assert admissible(s, T0 + k * US, skew)
        ev.update("pv", s, T0 + k * US)
    assert ev.current.active  # later, correct samples were not taken for out-of-order ones


def test_s37_restart_during_on_delay_resumes_from_persisted_pending_since() -> None:
    params = [LimitParams(Level.HI, 100.0, on_delay_us=60 * US)]
    ev = LimitEvaluator(params)
    h = AlarmHarness(AlarmPolicy(), ev)
    h.feed(105.0)
    start = h.now
    h.advance(40)
    snap = json.loads(json.dumps(ev.snapshot()))  # persisted with the alarm state
    ev2 = LimitEvaluator(params)
    ev2.restore(snap)
    h2 = AlarmHarness(AlarmPolicy(), ev2, clock=h.clock)
    h2.clock.advance(5)  # restart gap
    h2.advance(10)
    assert h2.journal == []  # no spurious activation
    h2.advance(10)
    assert activations(h2) == [start + 60 * US]


def test_s53_setpoint_change_while_active_clears_and_is_audited() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0)])
    h = AlarmHarness(AlarmPolicy(), ev)
    h.feed(110.0)
    h.ack("jane")
    from alarms import state as sm
    h._apply(sm.reconfigured(h.rec, Operator("eng", "MOC-7: HI 100 -> 120"), h.policy, h.now, "hi.setpoint 100->120"))
    h._conditions(ev.reconfigure([LimitParams(Level.HI, 120.0)], h.now))
    assert h.rec.state is AlarmState.NORMAL
    audit = next(e for e in h.journal if e.kind is EventKind.RECONFIGURED)
    assert (audit.user, audit.comment) == ("eng", "MOC-7: HI 100 -> 120")


def test_limit_reconfigure_removing_the_active_level() -> None:
    ev = LimitEvaluator([LimitParams(Level.HI, 100.0), LimitParams(Level.HIHI, 120.0)])
    ev.update("pv", Sample(T0, 125.0), T0)
    assert ev.current.level is Level.HIHI
    out = ev.reconfigure([LimitParams(Level.HI, 100.0)], T0 + US)
    assert out[-1].level is Level.HI and out[-1].active


def test_evaluator_snapshots_round_trip() -> None:
    lim = LimitEvaluator([LimitParams(Level.HI, 1.0, 0.5, 10 * US, 10 * US)])
    lim.update("pv", Sample(T0, 2.0), T0)
    dev = DeviationEvaluator([LimitParams(Level.HI, 1.0)])
    dev.update("sp", Sample(T0, 1.0), T0)
    dev.update("pv", Sample(T0, 3.0), T0)
    rate = RateEvaluator(RateParams(1.0))
    rate.update("pv", Sample(T0, 1.0), T0)
    rate.update("pv", Sample(T0 + US, 9.0), T0 + US)
    pairs: list[tuple[Evaluator, Evaluator]] = [
        (lim, LimitEvaluator(lim.limits)), (dev, DeviationEvaluator([LimitParams(Level.HI, 1.0)])),
        (rate, RateEvaluator(rate.params))]
    for ev, fresh in pairs:
        fresh.restore(json.loads(json.dumps(ev.snapshot())))
        assert fresh.snapshot() == ev.snapshot()
        assert fresh.current == ev.current
        assert fresh.next_deadline() == ev.next_deadline()
