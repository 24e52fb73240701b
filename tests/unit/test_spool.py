"""Disk spool: round trip, order, torn tail after kill -9, corrupt records, bounded with drop-oldest,
durability tokens, thread safety, quarantine."""

from __future__ import annotations

import asyncio
import errno
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.model import Batch, Durability, Quality
from ingestd.spool import MAGIC, Spool, SpoolRecord, decode_record, encode_record


def rec(n: int, start: int = 0, names: tuple[str, ...] = ("a", "b"), recv_us: int | None = None) -> SpoolRecord:
    k = (np.arange(n) % len(names)).astype(np.int32)
    ts = np.arange(start, start + n, dtype=np.int64) * 1000
    v = np.arange(n, dtype=np.float64)
    v[::7] = np.nan
    q = np.where(np.isnan(v), Quality.BAD, Quality.GOOD).astype(np.uint8)
    return SpoolRecord(uuid.uuid4(), "src", list(names), Batch.of(k, ts, v, q, 5, recv_us=recv_us))


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
        assert g.names == w.names
        assert g.source == "src"
        np.testing.assert_array_equal(g.batch.key, w.batch.key)
        np.testing.assert_array_equal(g.batch.ts, w.batch.ts)
        np.testing.assert_array_equal(g.batch.value, w.batch.value)
        np.testing.assert_array_equal(g.batch.quality, w.batch.quality)
        np.testing.assert_array_equal(g.batch.status, w.batch.status)
        assert g.batch.recv_us == w.batch.recv_us
    assert sp.stats.rows == 250


def test_survives_reopen_and_detects_torn_last_record(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    good = [rec(20), rec(20, 20)]
    for r in good:
        sp.append(r)
    sp.append(rec(20, 40))
    path = sp._segments[-1].path
    sp.sync()
    # simulate kill -9 in the middle of writing the last record
    data = path.read_bytes()
    path.write_bytes(data[:-17])
    sp2 = Spool(tmp_path, max_bytes=10**8)
    assert sp2.stats.torn_records == 1
    got = read_all(sp2)
    assert [g.batch_key for g in got] == [g.batch_key for g in good]
    sp2.append(rec(5, 100))  # appends continue cleanly after the cut, in a new segment
    sp2.rotate()
    sp3 = Spool(tmp_path, max_bytes=10**8)
    assert sp3.stats.torn_records == 0
    assert len(read_all(sp3)) == 3


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 13, 40])
def test_torn_write_of_a_new_record_is_cut_never_fatal(tmp_path: Path, cut: int) -> None:
    """A prefix of a record (header only, part of the header, part of the payload) at the tail."""
    sp = Spool(tmp_path, max_bytes=10**8)
    kept = [rec(10), rec(10, 10)]
    for r in kept:
        sp.append(r)
    sp.close()
    path = next(tmp_path.glob("seg-*.spool"))
    size = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(encode_record(rec(10, 20))[:cut])
    sp2 = Spool(tmp_path, max_bytes=10**8)
    assert sp2.stats.torn_records == 1
    assert path.stat().st_size == size
    assert [g.batch_key for g in read_all(sp2)] == [r.batch_key for r in kept]


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
    assert sp2.stats.corrupt_records == 1


def test_garbage_containing_record_markers_is_survived(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    first = rec(10)
    sp.append(first)
    sp.close()
    path = next(tmp_path.glob("seg-*.spool"))
    with path.open("ab") as fh:  # garbage that looks like headers (huge and small lengths)
        fh.write(MAGIC + b"\xff\xff\xff\x7f" + b"\0" * 4 + MAGIC + b"\x05\0\0\0" + b"\1\2\3\4" + b"xy" + MAGIC)
    sp2 = Spool(tmp_path, max_bytes=10**8)
    assert [g.batch_key for g in read_all(sp2)] == [first.batch_key]


def test_unreadable_payload_is_rejected_by_the_decoder() -> None:
    r = rec(4)
    payload = bytearray(encode_record(r)[12:])
    decode_record(bytes(payload))
    with pytest.raises(ValueError, match="trailing"):
        decode_record(bytes(payload) + b"\0")


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


def test_dropping_a_segment_does_not_count_rows_already_in_the_database(tmp_path: Path) -> None:
    drops: list[tuple[int, int]] = []
    sp = Spool(tmp_path, max_bytes=40_000, segment_bytes=10_000, on_drop=lambda r, b: drops.append((r, b)))
    first = rec(100)
    ref = sp.append(first)
    sp.mark_committed(ref)  # its original write committed after it was spooled
    assert sp.stats.rows == 0
    for i in range(1, 60):
        sp.append(rec(100, i * 100))
    # the committed record's segment was dropped first; only the rows not known committed count as lost
    assert ref.segment.dropped
    assert sp.stats.dropped_rows == sum(d[0] for d in drops)
    assert sp.stats.dropped_rows + sp.stats.rows == 5900


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_durability_tokens_released_after_sync(tmp_path: Path, policy: str) -> None:
    done: list[int] = []
    sp = Spool(tmp_path, max_bytes=10**8, fsync=policy)  # type: ignore[arg-type]
    sp.append(rec(10), [Durability(lambda: done.append(1))])
    if policy == "interval":
        assert done == []
        await sp.sync_async()
    assert done == [1]


async def test_async_append_releases_tokens_on_the_event_loop_thread(tmp_path: Path) -> None:
    threads: list[int] = []
    sp = Spool(tmp_path, max_bytes=10**8, fsync="always")
    ref = await sp.append_async(rec(10), [Durability(lambda: threads.append(threading.get_ident()))])
    assert threads == [threading.get_ident()]
    assert ref.rows == 10
    sp2 = Spool(tmp_path / "b", max_bytes=10**8, fsync="interval")
    await sp2.append_async(rec(10), [Durability(lambda: threads.append(threading.get_ident()))])
    assert len(threads) == 1
    await sp2.sync_async()
    assert threads == [threading.get_ident()] * 2


async def test_concurrent_async_appends_keep_every_record_intact(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8, segment_bytes=20_000)
    recs = [rec(50, i * 50) for i in range(60)]
    await asyncio.gather(*(sp.append_async(r) for r in recs))
    sp.close()
    got = Spool(tmp_path, max_bytes=10**8)
    assert got.stats.torn_records == 0
    assert got.stats.corrupt_records == 0
    assert sorted(g.batch_key for g in read_all(got)) == sorted(r.batch_key for r in recs)


def test_segments_rotate_and_recovered_segments_are_closed(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8, segment_bytes=4096)
    for i in range(9):  # two records fill a segment
        sp.append(rec(100, i * 100))
    assert len(sp.closed_segments()) >= 2
    assert sp.stats.segments == len(sp.closed_segments()) + 1  # one active
    sp2 = Spool(tmp_path, max_bytes=10**8, segment_bytes=4096)  # as after kill -9 (no close)
    assert sp2.stats.segments == len(sp2.closed_segments())
    numbers = [s.number for s in sp2.closed_segments()]
    sp2.append(rec(1, 5000))
    assert sp2._segments[-1].number > max(numbers)


def test_oldest_reading_age_is_tracked(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8, segment_bytes=4096)
    assert sp.stats.oldest_recv_us == 0
    sp.append(rec(200, recv_us=1_000))  # one record fills a segment
    sp.append(rec(200, 200, recv_us=2_000))
    assert sp.stats.oldest_recv_us == 1_000
    seg = sp.closed_segments()[0]
    sp.mark_replayed(seg, seg.records, seg.rows)
    assert sp.stats.oldest_recv_us == 2_000
    assert Spool(tmp_path, max_bytes=10**8).stats.oldest_recv_us == 1_000  # recovered from disk


def test_failed_write_leaves_no_partial_record(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    sp.append(rec(10))

    class HalfWriter:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    sp._fh = HalfWriter(sp._fh)  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"):
        sp.append(rec(10, 10))
    after = rec(10, 20)
    sp.append(after)  # the spool keeps working (new segment)
    sp.close()
    sp2 = Spool(tmp_path, max_bytes=10**8)
    assert sp2.stats.torn_records == 0
    assert len(read_all(sp2)) == 2


def test_quarantine_is_bounded(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10**8)
    sp.quarantine_max_bytes = 3000
    assert sp.quarantine(rec(20), "DataError: timestamp out of range")
    assert not sp.quarantine(rec(200), "too big for what is left")
    assert sp.stats.quarantined_rows == 20
    assert "timestamp out of range" in (tmp_path / "quarantine" / "reasons.log").read_text()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), cut=st.integers(0, 10_000))
def test_any_truncation_recovers_a_prefix(tmp_path_factory: pytest.TempPathFactory, sizes: list[int],
                                          cut: int) -> None:
    """kill -9 at any byte: reopening never fails and yields exactly the records fully written."""
    d = tmp_path_factory.mktemp("spool")
    sp = Spool(d, max_bytes=10**8)
    recs = [rec(n, i * 100) for i, n in enumerate(sizes)]
    ends = []
    for r in recs:
        sp.append(r)
        ends.append(sp._segments[-1].bytes)
    sp.close()
    path = next(d.glob("seg-*.spool"))
    data = path.read_bytes()
    cut_at = cut % (len(data) + 1)
    path.write_bytes(data[:cut_at])
    sp2 = Spool(d, max_bytes=10**8)
    expected = [r.batch_key for r, end in zip(recs, ends, strict=True) if end <= cut_at]
    assert [g.batch_key for g in read_all(sp2)] == expected
    assert sp2.stats.rows == sum(len(r.batch) for r, end in zip(recs, ends, strict=True) if end <= cut_at)
