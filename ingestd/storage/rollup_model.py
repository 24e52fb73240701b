"""What a rollup is, independent of any database: resolutions, columns, gas-day calendar, and a NumPy
reference implementation of the aggregates (the executable specification the SQL is tested against).

Semantics of one rollup row (tag, bucket) — identical on every storage tier:

* ``min``/``max``/``sum``/``avg``/``count``/``first``/``last`` are computed over the samples whose value
  is not NULL. BAD samples always have a NULL value; UNCERTAIN samples keep their value and *are*
  included (they are flagged through ``non_good``). ``avg = sum / count``; all are NULL when
  ``count = 0``.
* ``first``/``last`` are the values with the smallest/largest timestamp among those samples, and
  ``first_ts``/``last_ts`` those timestamps (needed to roll a level up into the next one).
* ``non_good`` counts samples whose quality is not GOOD (UNCERTAIN + BAD), ``samples`` all samples.

Buckets are UTC: 1 minute, 1 hour, 1 day. The gas day ``D`` runs from the contract hour local time
on ``D`` to the contract hour on ``D + 1`` in the tenant's time zone (23/25 hours across DST).
Hour buckets are the same in every time zone whose UTC offset is a whole number of hours; for
half/quarter-hour zones (India, Newfoundland, Nepal, Adelaide…) a gas day is not a union of UTC
hours, so it is rolled up from 1-minute buckets instead.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ..config.model import RetentionConfig

__all__ = [
    "AGG_COLUMNS",
    "GASDAY_COLUMNS",
    "RELATIONS",
    "ROLLUP_COLUMNS",
    "GasDay",
    "Resolution",
    "RollupRows",
    "gas_day_of",
    "gas_day_start",
    "reference_rollups",
    "retention_of",
]

US: Final = 1_000_000


class Resolution(enum.StrEnum):
    M1 = "1m"
    H1 = "1h"
    D1 = "1d"
    GASDAY = "gasday"

    @property
    def relation(self) -> str:
        return RELATIONS[self]

    @property
    def width_us(self) -> int | None:
        """Fixed bucket width (µs); ``None`` for the gas day (23–25 hours)."""
        return {Resolution.M1: 60 * US, Resolution.H1: 3600 * US, Resolution.D1: 86400 * US}.get(self)


RELATIONS: Final = {
    Resolution.M1: "readings_1m",
    Resolution.H1: "readings_1h",
    Resolution.D1: "readings_1d",
    Resolution.GASDAY: "readings_gasday",
}
"""Relation per resolution: the same names on every tier (tables or continuous aggregates)."""

AGG_COLUMNS: Final = ("min", "max", "avg", "sum", "count", "first", "last", "non_good", "samples",
                      "first_ts", "last_ts")
ROLLUP_COLUMNS: Final = ("tag_id", "bucket", *AGG_COLUMNS)
"""Columns of readings_1m/1h/1d, in table order, on every tier."""
GASDAY_COLUMNS: Final = (*ROLLUP_COLUMNS, "gas_day", "bucket_end")
"""Columns of readings_gasday: those of readings_1d, then the gas day and the end of its bucket."""


def retention_of(res: Resolution | None, retention: RetentionConfig) -> float | None:
    """Seconds a level is kept (``None`` = forever); ``None`` resolution means raw readings.
    The gas-day rollups follow ``retention.rollup_1d``."""
    if res is None:
        return retention.raw
    return {
        Resolution.M1: retention.rollup_1m,
        Resolution.H1: retention.rollup_1h,
        Resolution.D1: retention.rollup_1d,
        Resolution.GASDAY: retention.rollup_1d,
    }[res]


# ---------------------------------------------------------------------------------------------- gas day


@dataclass(frozen=True, slots=True)
class GasDay:
    """A tenant's contract day: IANA time zone and local contract hour."""

    timezone: str = "UTC"
    contract_hour: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.contract_hour <= 23:
            raise ValueError(f"contract hour must be 0..23, got {self.contract_hour}")
        zoneinfo.ZoneInfo(self.timezone)  # raises for unknown zones


def _local_to_utc_pg(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Local wall time → UTC the way PostgreSQL's ``timestamp AT TIME ZONE`` resolves it: a time that
    exists twice gets the offset in force just *after* the transition (standard time, fold=1), a time
    that does not exist the offset in force just *before* it (which Python's fold=0 also gives)."""
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(dt.UTC)
    # Ambiguous or non-existent. Non-existent iff the round trip does not return the wall time.
    if first.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) == local:
        return second.astimezone(dt.UTC)  # ambiguous: the later (post-transition) offset
    return first.astimezone(dt.UTC)


def gas_day_start(day: dt.date, gas: GasDay) -> dt.datetime:
    """UTC start of gas day ``day`` (same rule as SQL ``ingestd_gas_day_start``)."""
    local = dt.datetime.combine(day, dt.time(gas.contract_hour))
    return _local_to_utc_pg(local, zoneinfo.ZoneInfo(gas.timezone))


def gas_day_of(ts: dt.datetime, gas: GasDay) -> dt.date:
    """The gas day containing ``ts`` (an aware datetime): start(D) <= ts < start(D + 1)."""
    local = ts.astimezone(zoneinfo.ZoneInfo(gas.timezone)).replace(tzinfo=None)
    d = (local - dt.timedelta(hours=gas.contract_hour)).date()
    if ts < gas_day_start(d, gas):
        return d - dt.timedelta(days=1)
    if ts >= gas_day_start(d + dt.timedelta(days=1), gas):
        return d + dt.timedelta(days=1)
    return d


# ---------------------------------------------------------------------------------------------- reference


@dataclass(frozen=True, slots=True)
class RollupRows:
    """Rollup rows as columns (one entry per (tag, bucket), sorted by tag then bucket).
    Timestamps are µs since the Unix epoch; NULL is NaN for floats and -1 for ``*_ts``."""

    tag_id: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    avg: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    first: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    non_good: npt.NDArray[np.int64]
    samples: npt.NDArray[np.int64]
    first_ts: npt.NDArray[np.int64]
    last_ts: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.tag_id.shape[0])


def _bucket_fixed(ts_us: npt.NDArray[np.int64], width_us: int) -> npt.NDArray[np.int64]:
    return np.asarray((ts_us // width_us) * width_us, dtype=np.int64)


def _bucket_gasday(ts_us: npt.NDArray[np.int64], gas: GasDay) -> npt.NDArray[np.int64]:
    lo = dt.datetime.fromtimestamp(int(ts_us.min()) / US, dt.UTC) - dt.timedelta(days=2)
    hi = dt.datetime.fromtimestamp(int(ts_us.max()) / US, dt.UTC) + dt.timedelta(days=2)
    days = [lo.date() + dt.timedelta(days=i) for i in range((hi.date() - lo.date()).days + 1)]
    starts = np.array([int(gas_day_start(d, gas).timestamp()) * US for d in days], dtype=np.int64)
    idx = np.searchsorted(starts, ts_us, side="right") - 1
    return np.asarray(starts[idx], dtype=np.int64)


def reference_rollups(
    tag_id: npt.ArrayLike, ts_us: npt.ArrayLike, value: npt.ArrayLike, quality: npt.ArrayLike,
    resolution: Resolution, gas: GasDay = GasDay(),
) -> RollupRows:
    """Compute rollups of raw samples with NumPy (vectorised; for tests, benchmarks and checks).
    ``value`` NaN means NULL. Bucket starts are µs (for the gas day: the UTC start of the day)."""
    tags = np.asarray(tag_id, dtype=np.int64)
    ts = np.asarray(ts_us, dtype=np.int64)
    val = np.asarray(value, dtype=np.float64)
    q = np.asarray(quality, dtype=np.int64)
    width = resolution.width_us
    bucket = _bucket_fixed(ts, width) if width is not None else _bucket_gasday(ts, gas)
    order = np.lexsort((ts, bucket, tags))
    tags, ts, val, q, bucket = tags[order], ts[order], val[order], q[order], bucket[order]
    n = len(tags)
    if n == 0:
        e_i, e_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return RollupRows(e_i, e_i, e_f, e_f, e_f, e_f, e_i, e_f, e_f, e_i, e_i, e_i, e_i)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (tags[1:] != tags[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    g = len(starts)
    valid = ~np.isnan(val)
    samples = np.bincount(group, minlength=g).astype(np.int64)
    count = np.bincount(group, weights=valid, minlength=g).astype(np.int64)
    non_good = np.bincount(group, weights=q != 0, minlength=g).astype(np.int64)
    s = np.where(valid, val, 0.0)
    total = np.add.reduceat(s, starts)
    mn = np.fmin.reduceat(np.where(valid, val, np.nan), starts)
    mx = np.fmax.reduceat(np.where(valid, val, np.nan), starts)
    # first/last valid sample per group: rows are sorted by ts inside a group.
    idx = np.arange(n)
    first_idx = np.full(g, n, dtype=np.int64)
    np.minimum.at(first_idx, group[valid], idx[valid])
    last_idx = np.full(g, -1, dtype=np.int64)
    np.maximum.at(last_idx, group[valid], idx[valid])
    has = count > 0
    safe_first = np.where(has, first_idx, 0)
    safe_last = np.where(has, last_idx, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(has, total / np.maximum(count, 1), np.nan)
    return RollupRows(
        tag_id=tags[starts],
        bucket=bucket[starts],
        min=mn,
        max=mx,
        avg=avg,
        sum=np.where(has, total, np.nan),
        count=count,
        first=np.where(has, val[safe_first], np.nan),
        last=np.where(has, val[safe_last], np.nan),
        non_good=non_good,
        samples=samples,
        first_ts=np.where(has, ts[safe_first], -1),
        last_ts=np.where(has, ts[safe_last], -1),
    )
