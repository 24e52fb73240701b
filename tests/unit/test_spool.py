"""Disk spool: round trip, order, torn tail after kill -9, corrupt records, bounded with drop-oldest."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from ingestd.model import Batch, Durability, Quality
from ingestd.spool import Spool, SpoolRecord


def rec(n: int, start: int = 0, names: tuple[str, ...] = ("a", "b")) -> SpoolRecord:
    k = (np.arange(n) % len(names)).astype(np.int32)
    ts = np.arange(start, start + n, dtype=np.int64) * 1000
    v = np.arange(n, dtype=np.float64)
    v[::7] = np.nan
    q = np.where(np.isnan(v), Quality.BAD, Quality.GOOD).astype(np.uint8)
    return SpoolRecord(uuid.uuid4(), "src", list(names), Batch.of(k, ts, v, q, 5))


def read_all(sp: Spool) -> list[SpoolRecord]:
    return [r for seg in sp.closed_segments() for r in sp.read_segment(seg)]


def test_round_trip_preserves_everything_in_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    written = [rec(50, i * 50) for i in range(5)]
    for r in written:
        sp.append(r)
    sp.rotate()
    got = read_all(sp)
    assert [g.batch_key for g in got] == [w.batch_key for w in written]
    for g, w in zip(got, written, strict=True):
        assert g.names == w.names and g.source == "src"
        np.testing.assert_array_equal(g.batch.key, w.batch.key)
        np.testing.assert_array_equal(g.batch.ts, w.batch.ts)
        np.testing.assert_array_equal(g.batch.value, w.batch.value)
        np.testing.assert_array_equal(g.batch.quality, w.batch.quality)
        np.testing.assert_array_equal(g.batch.status, w.batch.status)
    assert sp.stats.rows == 250


def test_survives_reopen_and_detects_torn_last_record(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    good = [rec(20), rec(20, 20)]
    for r in good:
        sp.append(r)
    sp.append(rec(20, 40))
    seg = sp.closed_segments() or sp._segments  # noqa: SLF001
    path = seg[-1].path
    sp.sync()
    # simulate kill -9 in the middle of writing the last record
    data = path.read_bytes()
    path.write_bytes(data[:-17])
    sp2 = Spool(tmp_path, max_bytes=10**8)
    assert sp2.stats.torn_records == 1
    got = read_all(sp2)
    assert [g.batch_key for g in got] == [g.batch_key for g in good]
    sp2.append(rec(5, 100))  # appends continue cleanly after the cut
    sp2.rotate()
    assert len(read_all(Spool(tmp_path, max_bytes=10**8))) == 3


def test_corrupt_record_in_the_middle_is_skipped(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    recs = [rec(30, i * 30) for i in range(3)]
    for r in recs:
        sp.append(r)
    sp.rotate()
    path = sp.closed_segments()[0].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte inside the second record
    path.write_bytes(bytes(data))
    sp2 = Spool(tmp_path, max_bytes=10**8)
    got = read_all(sp2)
    assert [g.batch_key for g in got] == [recs[0].batch_key, recs[2].batch_key]
    assert sp2.stats.corrupt_records >= 1


def test_full_spool_drops_oldest_and_reports_it(tmp_path: Path) -> None:
    drops: list[tuple[int, int]] = []
    sp = Spool(tmp_path, max_bytes=40_000, segment_bytes=10_000, on_drop=lambda r, b: drops.append((r, b)))
    keys = []
    for i in range(40):
        r = rec(100, i * 100)
        keys.append(r.batch_key)
        sp.append(r)
        assert sp.stats.bytes <= 40_000
    assert drops, "oldest segments must be dropped"
    assert sp.stats.dropped_rows == sum(d[0] for d in drops)
    sp.rotate()
    kept = [g.batch_key for g in read_all(sp)]
    assert kept == keys[-len(kept):]  # newest kept, in order
    assert sp.stats.dropped_rows + sp.stats.rows == 4000


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_durability_tokens_released_after_sync(tmp_path: Path, policy: str) -> None:
    done: list[int] = []
    sp = Spool(tmp_path, max_bytes=10**8, fsync=policy)  # type: ignore[arg-type]
    sp.append(rec(10), [Durability(lambda: done.append(1))])
    if policy == "interval":
        assert done == []
        await sp.sync_async()
    assert done == [1]
