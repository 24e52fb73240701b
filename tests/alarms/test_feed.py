"""The vectorised fast path (alarms/feed.py) is exact: routing batches through SlotTable (quiet samples only
noted) gives the same conditions, in the same order, and the same evaluator state as feeding every sample to
the evaluator."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.feed import SlotTable
from alarms.model import Condition, Level
from alarms.rules import LimitEvaluator, LimitParams, Sample
from alarms.signals import BadQualityEvaluator, BoolParams, DigitalEvaluator
from ingestd.model import Quality

T0 = 1_767_225_600_000_000
LIMITS = [LimitParams(Level.HIHI, 150.0, 5.0, 0, 0), LimitParams(Level.HI, 100.0, 10.0, 2_000_000, 1_000_000),
          LimitParams(Level.LO, 20.0, 0.0, 0, 0, inclusive=False), LimitParams(Level.LOLO, 5.0, 1.0, 500_000, 0)]
VALUES = [0.0, 4.0, 5.0, 6.0, 19.9, 20.0, 20.1, 50.0, 90.0, 99.9, 100.0, 100.1, 145.0, 150.0, 155.0, 1.0, math.nan]


def make(kind: str) -> Any:
    if kind == "limit":
        return LimitEvaluator(LIMITS)
    if kind == "digital":
        return DigitalEvaluator(1.0, BoolParams(1_000_000, 0))
    return BadQualityEvaluator(BoolParams(0, 500_000))


rows = st.tuples(st.sampled_from([*VALUES, 1.0, 0.0]), st.sampled_from([0, 0, 0, 1, 2]),
                 st.integers(min_value=-2, max_value=400_000))
batches = st.lists(st.tuples(st.lists(rows, min_size=1, max_size=8), st.integers(0, 3_000_000)), min_size=1,
                   max_size=25)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["limit", "digital", "bad_quality"]), data=batches)
def test_fast_path_equals_evaluating_every_sample(kind: str,
                                                  data: list[tuple[list[tuple[float, int, int]], int]]) -> None:
    ref, fast = make(kind), make(kind)
    table = SlotTable(1, {0: [0]}, 1)
    table.set_range(0, *fast.quiet_range())
    ref_out: list[Condition] = []
    fast_out: list[Condition] = []
    now, ts = T0, T0
    fast_n = 0
    for rws, advance in data:
        now += advance
        ref_out += ref.tick(now)
        fast_out += fast.tick(now)
        table.set_range(0, *fast.quiet_range())
        stamps, values, qualities = [], [], []
        for value, quality, dt in rws:
            ts += dt
            q = Quality.BAD if math.isnan(value) else quality
            stamps.append(ts)
            values.append(value)
            qualities.append(q)
        for t, v, q in zip(stamps, values, qualities, strict=True):
            ref_out += ref.update("pv", Sample(t, v, q), now)
        key = np.zeros(len(stamps), np.int32)
        r = table.route(key, np.asarray(stamps, np.int64), np.asarray(values), np.asarray(qualities, np.uint8))
        fast_n += r.fast
        for row in r.rows.tolist():
            note = table.take_note(0)
            if note is not None:
                fast.note("pv", *note)
            fast_out += fast.update("pv", Sample(stamps[row], values[row], qualities[row]), now)
            table.seen(0, stamps[row])
            table.set_range(0, *fast.quiet_range())
    note = table.take_note(0)
    if note is not None:
        fast.note("pv", *note)
    assert fast_out == ref_out
    assert fast.snapshot() == ref.snapshot()


def test_quiet_rows_never_reach_python_and_tags_without_rules_are_masked() -> None:
    table = SlotTable(4, {1: [0], 3: [1, 2]}, 3)
    for slot in range(3):
        table.set_range(slot, -10.0, 10.0)
    key = np.array([0, 1, 2, 3, 1, 3], np.int32)
    ts = T0 + np.arange(6, dtype=np.int64)
    value = np.array([99.0, 1.0, 99.0, 2.0, 3.0, 50.0])
    q = np.zeros(6, np.uint8)
    r = table.route(key, ts, value, q)
    # key 3's last row is outside the interval for both of its slots: every row of those slots goes slow
    assert r.fast == 2 and r.slow == 4
    assert r.rows.tolist() == [3, 3, 5, 5] and r.slots.tolist() == [1, 2, 1, 2]
    assert table.take_note(0) == (int(ts[4]), 3.0), "newest quiet sample of slot 0 noted"
    r2 = table.route(np.array([0, 2, 0], np.int32), ts + 10, value[:3], q[:3])
    assert r2.fast == 0 and r2.slow == 0


def test_limit_quiet_range_follows_the_evaluator_state() -> None:
    ev = LimitEvaluator(LIMITS)
    lo, hi = ev.quiet_range()
    assert lo == math.nextafter(20.0, math.inf) and hi == math.nextafter(100.0, -math.inf)
    ev.update("pv", Sample(T0, 120.0), T0)  # HI on-delay starts: nothing is quiet now
    assert ev.quiet_range()[0] > ev.quiet_range()[1]
    ev.tick(T0 + 2_000_000)  # active at HI: quiet between HI - deadband and HIHI
    assert ev.current.active and ev.current.level is Level.HI
    lo, hi = ev.quiet_range()
    assert lo == math.nextafter(90.0, math.inf) and hi == math.nextafter(150.0, -math.inf)
