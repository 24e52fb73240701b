"""Report-by-exception in the core: deadband, heartbeat, quality changes, late data."""

from __future__ import annotations

import numpy as np

from ingestd.model import Batch, Quality
from ingestd.pipeline.filter import apply_deadband
from ingestd.pipeline.tags import TagMeta, TagRegistry

S = 1_000_000


def reg(deadband: float | None, heartbeat: float | None = None) -> TagRegistry:
    r = TagRegistry("t")
    r.ensure(TagMeta("a"), deadband=deadband, heartbeat_s=heartbeat)
    r.ensure(TagMeta("b"), deadband=None)
    return r


def feed(r: TagRegistry, key: int, ts_s: float, value: float | None, q: int = Quality.GOOD) -> bool:
    b = Batch.of([key], [int(ts_s * S)], [np.nan if value is None else value], q)
    return len(apply_deadband(r, b)) == 1


def test_no_deadband_stores_everything() -> None:
    r = reg(None)
    assert all(feed(r, 0, t, 1.0) for t in range(5))


def test_deadband_stores_only_moves_beyond_it() -> None:
    r = reg(0.5)
    assert feed(r, 0, 0, 10.0)      # first sample
    assert not feed(r, 0, 1, 10.4)  # within deadband of the last *stored* value
    assert not feed(r, 0, 2, 10.5)  # equal to deadband: not beyond
    assert feed(r, 0, 3, 10.6)      # beyond
    assert not feed(r, 0, 4, 10.2)  # 0.4 from 10.6
    assert feed(r, 0, 5, 10.0)      # 0.6 from 10.6


def test_zero_deadband_stores_changes_only() -> None:
    r = reg(0.0)
    assert feed(r, 0, 0, 1.0)
    assert not feed(r, 0, 1, 1.0)
    assert feed(r, 0, 2, 1.000001)


def test_heartbeat_forces_a_sample() -> None:
    r = reg(1.0, heartbeat=60)
    assert feed(r, 0, 0, 5.0)
    assert not feed(r, 0, 30, 5.0)
    assert not feed(r, 0, 59.9, 5.0)
    assert feed(r, 0, 60, 5.0)
    assert not feed(r, 0, 61, 5.0)


def test_quality_change_and_null_always_stored() -> None:
    r = reg(10.0)
    assert feed(r, 0, 0, 5.0)
    assert feed(r, 0, 1, None, Quality.BAD)
    assert not feed(r, 0, 2, None, Quality.BAD)
    assert feed(r, 0, 3, 5.0)
    assert feed(r, 0, 4, 5.0, Quality.UNCERTAIN)


def test_late_data_is_stored_without_moving_state() -> None:
    r = reg(1.0)
    assert feed(r, 0, 100, 5.0)
    assert feed(r, 0, 50, 5.0)      # older than last stored: backfill, kept
    assert not feed(r, 0, 101, 5.2)  # still compared with the value stored at t=100


def test_vectorised_batch_and_duplicates_match_row_by_row() -> None:
    rng = np.random.default_rng(7)
    n = 400
    keys = rng.integers(0, 2, n).astype(np.int32)
    ts = np.sort(rng.integers(0, 10_000, n)).astype(np.int64) * S
    vals = np.round(rng.normal(0, 1, n), 1)
    r1, r2 = reg(0.3, heartbeat=500), reg(0.3, heartbeat=500)
    # one batch containing duplicates of the same tag (rare path) ...
    kept = apply_deadband(r1, Batch.of(keys, ts, vals))
    # ... equals feeding sample by sample
    expect = [i for i in range(n) if len(apply_deadband(r2, Batch.of(keys[i:i + 1], ts[i:i + 1], vals[i:i + 1])))]
    assert kept.ts.tolist() == ts[expect].tolist()


def test_heartbeat_synthesised_for_quiet_connected_tags_only() -> None:
    from ingestd.pipeline.heartbeat import heartbeat_batch, mark_stale

    r = reg(1.0, heartbeat=60)
    r.ensure(TagMeta("c"), deadband=1.0, heartbeat_s=60)
    b = Batch.of([0, 2], [0, 0], [5.0, 7.0])
    apply_deadband(r, b)
    r.update_live(b.key, b.ts, b.value, b.quality, b.status, 0)
    assert heartbeat_batch(r, 59 * S) is None
    r.stale[2] = True  # tag c's source went down: never re-emit its last value as current
    hb = heartbeat_batch(r, 60 * S)
    assert hb is not None and hb.key.tolist() == [0] and hb.value.tolist() == [5.0] and hb.ts.tolist() == [60 * S]
    assert heartbeat_batch(r, 61 * S) is None  # stored state advanced
    assert mark_stale(r, np.array([0], np.int32), 200 * S, 100 * S) == 1
    assert heartbeat_batch(r, 500 * S) is None
