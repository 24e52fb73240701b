"""Rollup semantics without a database: gas-day calendar (DST, PostgreSQL's resolution of skipped and
repeated local times), the NumPy reference aggregates, retention mapping."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pytest

from ingestd.config.model import RetentionConfig
from ingestd.model import Quality
from ingestd.storage.rollup_model import (
    GASDAY_COLUMNS,
    ROLLUP_COLUMNS,
    GasDay,
    Resolution,
    gas_day_of,
    gas_day_start,
    reference_rollups,
    retention_of,
)

US = 1_000_000
CHICAGO_9 = GasDay("America/Chicago", 9)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * US)


@pytest.mark.parametrize(("day", "start", "hours"), [
    (dt.date(2026, 3, 7), utc(2026, 3, 7, 15), 23),   # 09:00 CST → 09:00 CDT: spring forward inside
    (dt.date(2026, 3, 8), utc(2026, 3, 8, 14), 24),
    (dt.date(2026, 10, 31), utc(2026, 10, 31, 14), 25),  # 09:00 CDT → 09:00 CST: fall back inside
    (dt.date(2026, 11, 1), utc(2026, 11, 1, 15), 24),
])
def test_chicago_gas_day_bounds_on_dst_days(day: dt.date, start: dt.datetime, hours: int) -> None:
    assert gas_day_start(day, CHICAGO_9) == start
    assert gas_day_start(day + dt.timedelta(days=1), CHICAGO_9) - start == dt.timedelta(hours=hours)
    assert gas_day_of(start, CHICAGO_9) == day
    assert gas_day_of(start - dt.timedelta(microseconds=1), CHICAGO_9) == day - dt.timedelta(days=1)


def test_skipped_and_repeated_contract_hours_follow_postgresql() -> None:
    # 02:00 does not exist on 2026-03-08 in Chicago: PostgreSQL uses the offset before the change (CST).
    assert gas_day_start(dt.date(2026, 3, 8), GasDay("America/Chicago", 2)) == utc(2026, 3, 8, 8)
    # 01:00 exists twice on 2026-11-01: PostgreSQL takes the later one (CST).
    gas = GasDay("America/Chicago", 1)
    assert gas_day_start(dt.date(2026, 11, 1), gas) == utc(2026, 11, 1, 7)
    # 01:30 CDT (06:30 UTC) is before that start, so it still belongs to the previous gas day.
    assert gas_day_of(utc(2026, 11, 1, 6, 30), gas) == dt.date(2026, 10, 31)


def test_gas_day_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="contract hour"):
        GasDay("UTC", 24)
    with pytest.raises(zoneinfo.ZoneInfoNotFoundError, match="Nowhere"):
        GasDay("Nowhere/Atlantis", 9)


def test_reference_semantics_on_a_hand_computed_example() -> None:
    t0 = us(utc(2026, 11, 1, 14, 0))
    tag = [7, 7, 7, 7, 8]
    ts = [t0 + 40 * US, t0 + 10 * US, t0 + 20 * US, t0 + 70 * US, t0]
    value = [5.0, np.nan, 2.0, np.nan, -1.0]
    quality = [Quality.GOOD, Quality.BAD, Quality.UNCERTAIN, Quality.BAD, Quality.GOOD]
    r = reference_rollups(tag, ts, value, quality, Resolution.M1)
    assert list(r.tag_id) == [7, 7, 8]
    assert list(r.bucket) == [t0, t0 + 60 * US, t0]
    # tag 7, first minute: values 2.0 (UNCERTAIN, counts) and 5.0; one BAD sample.
    assert (r.min[0], r.max[0], r.sum[0], r.avg[0], r.count[0]) == (2.0, 5.0, 7.0, 3.5, 2)
    assert (r.first[0], r.last[0], r.first_ts[0], r.last_ts[0]) == (2.0, 5.0, t0 + 20 * US, t0 + 40 * US)
    assert (r.non_good[0], r.samples[0]) == (2, 3)
    # tag 7, second minute: BAD only — no value aggregates, but the sample is counted.
    assert np.isnan([r.min[1], r.max[1], r.sum[1], r.avg[1], r.first[1], r.last[1]]).all()
    assert (r.count[1], r.non_good[1], r.samples[1], r.first_ts[1], r.last_ts[1]) == (0, 1, 1, -1, -1)
    day = reference_rollups(tag, ts, value, quality, Resolution.GASDAY, CHICAGO_9)
    assert list(day.bucket) == [us(utc(2026, 10, 31, 14)), us(utc(2026, 10, 31, 14))]
    assert list(day.samples) == [4, 1]


def test_hierarchy_of_the_reference_is_exact() -> None:
    """Rolling 1m rows up (sum of sums, first by first_ts) gives the 1h rows computed from raw."""
    rng = np.random.default_rng(4)
    n = 5000
    ts = us(utc(2026, 3, 8)) + np.sort(rng.integers(0, 6 * 3600 * US, n))
    tag = rng.integers(1, 4, n)
    value = rng.normal(size=n)
    value[rng.random(n) < 0.2] = np.nan
    quality = np.where(np.isnan(value), 2, 0)
    m1 = reference_rollups(tag, ts, value, quality, Resolution.M1)
    h1 = reference_rollups(tag, ts, value, quality, Resolution.H1)
    hour = m1.bucket // (3600 * US) * (3600 * US)
    for i in range(len(h1)):
        sel = (m1.tag_id == h1.tag_id[i]) & (hour == h1.bucket[i])
        assert m1.samples[sel].sum() == h1.samples[i]
        assert m1.count[sel].sum() == h1.count[i]
        assert np.isclose(np.nansum(m1.sum[sel]), h1.sum[i])
        has = sel & (m1.count > 0)
        j = np.flatnonzero(has)[np.argmin(m1.first_ts[has])]
        assert (m1.first[j], m1.first_ts[j]) == (h1.first[i], h1.first_ts[i])


def test_columns_and_retention_mapping() -> None:
    assert ROLLUP_COLUMNS[:2] == ("tag_id", "bucket")
    assert GASDAY_COLUMNS[: len(ROLLUP_COLUMNS)] == ROLLUP_COLUMNS
    assert [r.relation for r in Resolution] == ["readings_1m", "readings_1h", "readings_1d", "readings_gasday"]
    keep = RetentionConfig(raw=1.0, rollup_1m=2.0, rollup_1h=None, rollup_1d=4.0)
    assert [retention_of(r, keep) for r in (None, *Resolution)] == [1.0, 2.0, None, 4.0, 4.0]
