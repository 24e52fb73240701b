"""Poll grid: deterministic per-source phase, no drift, skipped slots after an overrun."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.schedule import first_deadline, next_deadline, phase_offset


def test_phase_is_deterministic_and_within_the_interval() -> None:
    assert phase_offset("pad12-plc", 1.0) == phase_offset("pad12-plc", 1.0)
    assert 0.0 <= phase_offset("pad12-plc", 1.0) < 1.0
    assert phase_offset("pad12-plc", 1.0) != phase_offset("pad13-plc", 1.0)
    # scales with the interval: same fraction of the period
    assert phase_offset("x", 10.0) == pytest.approx(10 * phase_offset("x", 1.0))


def test_500_sources_spread_over_the_interval() -> None:
    names = [f"well-{i:03d}-rtu" for i in range(500)]
    ms = Counter(int(phase_offset(n, 1.0) * 1000) for n in names)
    # a hash cannot guarantee 500 distinct milliseconds out of 1000, but no millisecond is crowded ...
    assert max(ms.values()) <= 4
    # ... and every 100 ms tenth of the second carries a fair share (uniform would be 50)
    tenths = Counter(int(phase_offset(n, 1.0) * 10) for n in names)
    assert len(tenths) == 10
    assert min(tenths.values()) >= 25
    assert max(tenths.values()) <= 80


def test_first_deadline_is_on_the_grid_and_not_in_the_past() -> None:
    assert first_deadline(now=100.2, interval=1.0, phase=0.5) == pytest.approx(100.5)
    assert first_deadline(now=100.7, interval=1.0, phase=0.5) == pytest.approx(101.5)
    assert first_deadline(now=100.5, interval=1.0, phase=0.5) == pytest.approx(100.5)


def test_no_drift_when_polls_take_time() -> None:
    deadline, interval = 10.0, 1.0
    for _k in range(1, 1001):
        finished = deadline + 0.3  # each poll takes 300 ms
        deadline, missed = next_deadline(deadline, interval, finished)
        assert missed == 0
    assert deadline == pytest.approx(10.0 + 1000 * interval)


def test_overrun_skips_missed_slots() -> None:
    # due at 10.0, finished at 12.4: slots 11.0 and 12.0 were missed; next is 13.0
    assert next_deadline(10.0, 1.0, 12.4) == (pytest.approx(13.0), 2)
    # finishing exactly on the next slot is not an overrun
    assert next_deadline(10.0, 1.0, 11.0) == (11.0, 0)
    # finishing just after it is: one missed slot
    assert next_deadline(10.0, 1.0, 11.001) == (pytest.approx(12.0), 1)


@given(st.floats(0, 1e6), st.floats(0.01, 3600), st.floats(0, 50))
def test_next_deadline_is_in_the_future_and_on_the_grid(previous: float, interval: float, took: float) -> None:
    now = previous + took * interval
    deadline, missed = next_deadline(previous, interval, now)
    assert deadline >= now
    assert missed >= 0
    assert deadline == pytest.approx(previous + (missed + 1) * interval)
