"""Per-tenant disk spool: append-only segments with a CRC per record (DESIGN §5).

Layout: ``<state_dir>/spool/<tenant>/seg-<20-digit number>.spool``. A record is::

    b"ISR1" | u32 payload length | u32 crc32(payload) | payload

and the payload carries the batch key (idempotent replay), the source name, the tag names used by
the batch (so the spool survives restarts and tag id changes) and the columnar arrays.

* Appends go to the newest (active) segment; a segment is closed at ``segment_bytes`` or when replay
  wants it. Replay reads closed segments oldest first; a segment is deleted once all its records
  are committed.
* Durability: with ``fsync = "interval"`` the owner calls :meth:`Spool.sync_async` every interval;
  ``"always"`` fsyncs every append; ``"never"`` leaves it to the OS. A new segment's directory entry
  is fsynced too. Completion tokens (MQTT acks) are released only once their record is durable under
  the policy, and always on the thread that calls the public methods (the event loop), never on a
  worker thread.
* Bounded: when an append would exceed ``max_bytes`` the oldest segments are dropped — counted and
  reported through ``on_drop(rows, bytes)``, never silently. Rows of a dropped segment that replay
  already committed (or that are known committed copies) are not counted as lost.
* Recovery on open: a torn last record (``kill -9`` mid-write) is detected by length/CRC, logged and
  cut off; a corrupt record in the middle is skipped by resynchronising on the next record marker.
  Neither is fatal.
* Records that the database rejects permanently (not a connectivity problem) are moved to
  ``quarantine/`` by :meth:`Spool.quarantine` instead of blocking replay forever.

Threading: blocking file work (append, fsync, rotate, delete) may run in worker threads via the
``*_async`` methods; a lock serialises it. Readers on the event loop (``closed_segments``, ``stats``,
``empty``) never take the lock: the segment list is copy-on-write.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import numpy as np

from .model import Batch, Durability

__all__ = ["Segment", "Spool", "SpoolRecord", "SpoolRef", "SpoolStats", "decode_record", "encode_record"]

log = logging.getLogger(__name__)

MAGIC: Final = b"ISR1"
_HDR = struct.Struct("<4sII")
_FIXED = struct.Struct("<16sqH")
FsyncPolicy = Literal["interval", "always", "never"]


@dataclass(slots=True)
class SpoolRecord:
    batch_key: uuid.UUID
    source: str
    names: list[str]
    """Tag names; ``batch.key`` indexes into this list."""
    batch: Batch


def encode_record(rec: SpoolRecord) -> bytes:
    src = rec.source.encode()
    parts = [_FIXED.pack(rec.batch_key.bytes, rec.batch.recv_us, len(src)), src,
             struct.pack("<I", len(rec.names))]
    for name in rec.names:
        b = name.encode()
        parts.append(struct.pack("<H", len(b)))
        parts.append(b)
    b_ = rec.batch
    parts.append(struct.pack("<I", len(b_)))
    parts += [b_.key.astype("<i4").tobytes(), b_.ts.astype("<i8").tobytes(), b_.value.astype("<f8").tobytes(),
              b_.quality.astype("u1").tobytes(), b_.status.astype("<u4").tobytes()]
    payload = b"".join(parts)
    return _HDR.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_record(payload: bytes | memoryview, names_seen: dict[bytes, str] | None = None) -> SpoolRecord:
    """Decode one record's payload. The arrays are read-only views into ``payload`` where the byte
    order allows (no copy: replay memory stays at about one segment); tag names are shared through
    ``names_seen`` across the records of a segment (each record repeats its name table)."""
    key, recv_us, src_len = _FIXED.unpack_from(payload, 0)
    off = _FIXED.size
    source = bytes(payload[off:off + src_len]).decode()
    off += src_len
    (n_names,) = struct.unpack_from("<I", payload, off)
    off += 4
    names = []
    for _ in range(n_names):
        (ln,) = struct.unpack_from("<H", payload, off)
        off += 2
        raw = bytes(payload[off:off + ln])
        name = names_seen.get(raw) if names_seen is not None else None
        if name is None:
            name = raw.decode()
            if names_seen is not None:
                names_seen[raw] = name
        names.append(name)
        off += ln
    (n,) = struct.unpack_from("<I", payload, off)
    off += 4

    def arr(dtype: str, size: int) -> np.ndarray[Any, Any]:
        nonlocal off
        a = np.frombuffer(payload, dtype=dtype, count=n, offset=off).astype(dtype.lstrip("<"), copy=False)
        off += size * n
        return a

    batch = Batch(arr("<i4", 4), arr("<i8", 8), arr("<f8", 8), arr("u1", 1), arr("<u4", 4), recv_us)
    if off != len(payload):
        raise ValueError("trailing bytes in spool record")
    if n and (int(batch.key.min()) < 0 or int(batch.key.max()) >= len(names)):
        raise ValueError("tag index outside the record's name table")
    return SpoolRecord(uuid.UUID(bytes=key), source, names, batch)


def _record_rows(payload: bytes | memoryview) -> int:
    off = _FIXED.size + _FIXED.unpack_from(payload, 0)[2]
    (n_names,) = struct.unpack_from("<I", payload, off)
    off += 4
    for _ in range(n_names):
        (ln,) = struct.unpack_from("<H", payload, off)
        off += 2 + ln
    return int(struct.unpack_from("<I", payload, off)[0])


@dataclass(slots=True, eq=False)
class Segment:
    number: int
    path: Path
    bytes: int = 0
    rows: int = 0
    records: int = 0
    first_recv_us: int = 0
    """Receive time of the oldest reading in this segment (µs since the epoch)."""
    closed: bool = False
    """No more appends: replay may take it."""
    dropped: bool = False
    """Deleted because the spool was full."""
    done_rows: int = 0
    """Rows known to be in the database already (replayed, or committed copies): not lost if dropped."""
    committed: set[uuid.UUID] = field(default_factory=set)
    """Batch keys of records known to be committed (replay skips them)."""
    replay_pos: int = 0
    """Records replayed so far by this process (replay resumes here)."""
    replaying: bool = False
    """Replay is writing from this segment: a full spool drops the next oldest instead (data in
    flight to the database is neither lost nor counted as dropped)."""

    @property
    def pending_rows(self) -> int:
        return max(0, self.rows - self.done_rows)


@dataclass(frozen=True, slots=True)
class SpoolRef:
    """Where one appended record went."""

    segment: Segment
    batch_key: uuid.UUID
    rows: int


@dataclass(slots=True)
class SpoolStats:
    bytes: int = 0
    rows: int = 0
    """Readings waiting for replay."""
    segments: int = 0
    dropped_rows: int = 0
    torn_records: int = 0
    corrupt_records: int = 0
    quarantined_rows: int = 0
    peak_bytes: int = 0
    oldest_recv_us: int = 0
    """Receive time of the oldest waiting reading (0 when empty)."""


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        on_drop: Callable[[int, int], None] | None = None,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max(4096, max_bytes // 4)))
        self.fsync = fsync
        self.on_drop = on_drop
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # copy-on-write: replaced, never mutated in place
        self._active: Segment | None = None
        self._fh: BinaryIO | None = None
        self._dirty = False
        self._unsynced: list[Durability] = []
        self._durable: list[Durability] = []
        self._drops: list[tuple[int, int]] = []
        self.quarantine_max_bytes = max(4 * 1024 * 1024, max_bytes // 16)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ------------------------------------------------------------------ open / recovery
    def _recover(self) -> None:
        segments = []
        for path in sorted(self.dir.glob("seg-*.spool")):
            try:
                number = int(path.stem.split("-", 1)[1])
            except ValueError:
                log.warning("ignoring unexpected file in spool: %s", path)
                continue
            seg = Segment(number, path, closed=True)
            valid_end = 0
            for _off, end, payload in self._scan(path, count=True):
                if payload is None:
                    continue
                if seg.records == 0:
                    seg.first_recv_us = int(_FIXED.unpack_from(payload, 0)[1])
                seg.records += 1
                seg.rows += _record_rows(payload)
                valid_end = end
            payload = None  # release the last view (and with it the file's memory map)
            size = path.stat().st_size
            if valid_end < size:
                # torn tail (kill -9 mid-write) or trailing garbage: cut it off, never fatal
                with path.open("r+b") as fh:
                    fh.truncate(valid_end)
                self.stats.torn_records += 1
                log.warning("spool %s: torn record at byte %d of %s cut off (%d bytes)", self.dir.name, valid_end,
                            path.name, size - valid_end)
            seg.bytes = valid_end
            if seg.records == 0:
                path.unlink(missing_ok=True)
                continue
            segments.append(seg)
        self._segments = segments
        self._refresh_stats()
        if segments:
            log.info("spool %s: %d readings in %d segment(s) (%d bytes) recovered", self.dir.name, self.stats.rows,
                     len(segments), self.stats.bytes)

    def _scan(self, path: Path, *, count: bool = False) -> Iterator[tuple[int, int, memoryview | None]]:
        """Yield (offset, end, payload) of valid records; payload None marks a skipped corrupt region
        (counted and logged when ``count``: once, at recovery). Payloads are views into a read-only
        memory map of the file: page-cache pages, released when the last view goes, instead of a heap
        copy that malloc arenas of worker threads would keep (closed segments are never truncated)."""
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(data)
        off = 0
        while off + _HDR.size <= len(data):
            magic, length, crc = _HDR.unpack_from(data, off)
            end = off + _HDR.size + length
            if magic == MAGIC and end <= len(data) and zlib.crc32(view[off + _HDR.size:end]) == crc:
                yield off, end, view[off + _HDR.size:end]
                off = end
                continue
            nxt = self._resync(data, off + 1)
            if nxt == -1:
                return  # torn or garbage tail: the caller truncates at the last valid record
            if count:
                self.stats.corrupt_records += 1
                log.error("spool %s: corrupt record at byte %d of %s skipped (%d bytes)", self.dir.name, off,
                          path.name, nxt - off)
            yield off, nxt, None
            off = nxt

    @staticmethod
    def _resync(data: mmap.mmap, start: int) -> int:
        """Offset of the next valid record at or after ``start`` (-1 if none)."""
        view = memoryview(data)
        pos = data.find(MAGIC, start)
        while pos != -1:
            if pos + _HDR.size <= len(data):
                _, length, crc = _HDR.unpack_from(data, pos)
                end = pos + _HDR.size + length
                if end <= len(data) and zlib.crc32(view[pos + _HDR.size:end]) == crc:
                    return pos
            pos = data.find(MAGIC, pos + 1)
        return -1

    # ------------------------------------------------------------------ append
    def append(self, rec: SpoolRecord, tokens: list[Durability] | None = None) -> SpoolRef:
        """Append one record (blocking file I/O on the calling thread)."""
        data = encode_record(rec)
        with self._lock:
            ref = self._append_locked(data, rec, tokens)
        self.deliver()
        return ref

    async def append_async(self, rec: SpoolRecord, tokens: list[Durability] | None = None) -> SpoolRef:
        """Append in a worker thread. If the caller is cancelled the append still completes and its
        tokens are released by a later :meth:`deliver` (every public method calls it)."""
        ref = await asyncio.to_thread(self._append_in_thread, rec, tokens)
        self.deliver()
        return ref

    def _append_in_thread(self, rec: SpoolRecord, tokens: list[Durability] | None) -> SpoolRef:
        data = encode_record(rec)
        with self._lock:
            return self._append_locked(data, rec, tokens)

    def append_many(self, records: list[SpoolRecord], tokens: list[Durability] | None = None) -> list[SpoolRef]:
        """Append several records (one batch split to fit segments); tokens ride on the last one."""
        refs = self._append_many_in_thread(records, tokens)
        self.deliver()
        return refs

    async def append_many_async(self, records: list[SpoolRecord],
                                tokens: list[Durability] | None = None) -> list[SpoolRef]:
        refs = await asyncio.to_thread(self._append_many_in_thread, records, tokens)
        self.deliver()
        return refs

    def _append_many_in_thread(self, records: list[SpoolRecord], tokens: list[Durability] | None) -> list[SpoolRef]:
        encoded = [encode_record(r) for r in records]
        with self._lock:
            return [self._append_locked(data, r, tokens if i == len(records) - 1 else None)
                    for i, (data, r) in enumerate(zip(encoded, records, strict=True))]

    def _append_locked(self, data: bytes, rec: SpoolRecord, tokens: list[Durability] | None) -> SpoolRef:
        self._make_room(len(data))
        seg = self._active_segment()
        fh = self._fh
        assert fh is not None
        try:
            fh.write(data)
            fh.flush()
        except OSError:
            # disk full / I/O error: keep the file consistent (cut the partial record) and report
            self._close_active(sync=False)
            with seg.path.open("r+b") as f:
                f.truncate(seg.bytes)
            raise
        if seg.records == 0:
            seg.first_recv_us = rec.batch.recv_us
        seg.bytes += len(data)
        seg.rows += len(rec.batch)
        seg.records += 1
        self._dirty = True
        if tokens:
            self._unsynced.extend(tokens)
        if self.fsync == "always":
            self._sync_locked()
        elif self.fsync == "never":
            self._durable.extend(self._unsynced)
            self._unsynced = []
        if seg.bytes >= self.segment_bytes:
            self._close_active(sync=True)
        self._refresh_stats()
        return SpoolRef(seg, rec.batch_key, len(rec.batch))

    def _active_segment(self) -> Segment:
        if self._active is None:
            segs = self._segments
            number = (segs[-1].number + 1) if segs else 1
            path = self.dir / f"seg-{number:020d}.spool"
            seg = Segment(number, path)
            self._fh = path.open("ab")
            if self.fsync != "never":
                self._fsync_dir()
            self._active = seg
            self._segments = [*segs, seg]
        return self._active

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_active(self, *, sync: bool) -> None:
        if self._fh is not None:
            if sync:
                self._sync_locked()
            self._fh.close()
            self._fh = None
        if self._active is not None:
            self._active.closed = True
            self._active = None

    # ------------------------------------------------------------------ durability
    def _sync_locked(self) -> None:
        if self._fh is not None and self._dirty:
            os.fsync(self._fh.fileno())
            self._dirty = False
        self._durable.extend(self._unsynced)
        self._unsynced = []

    def sync(self) -> None:
        """fsync the active segment (blocking) and release the tokens now durable."""
        with self._lock:
            self._sync_locked()
        self.deliver()

    async def sync_async(self) -> None:
        """fsync in a worker thread, then release the tokens made durable (on this thread)."""
        if self._dirty or self._unsynced:
            await asyncio.to_thread(self._sync_in_thread)
        self.deliver()

    def _sync_in_thread(self) -> None:
        with self._lock:
            self._sync_locked()

    def deliver(self) -> None:
        """Release durable tokens and report drops on the calling thread."""
        if self._durable:
            tokens, self._durable = self._durable, []
            for t in tokens:
                t.done()
        if self._drops:
            drops, self._drops = self._drops, []
            if self.on_drop is not None:
                for rows, nbytes in drops:
                    self.on_drop(rows, nbytes)

    # ------------------------------------------------------------------ bound
    def _make_room(self, need: int) -> None:
        while self.stats.bytes + need > self.max_bytes:
            victims = [s for s in self._segments if not s.replaying]
            if not victims:
                return  # only the segment being replayed is left: exceed the bound by at most that one
            oldest = victims[0]
            if oldest is self._active:
                self._close_active(sync=True)
            self._segments = [s for s in self._segments if s is not oldest]
            oldest.dropped = True
            oldest.path.unlink(missing_ok=True)
            lost = oldest.pending_rows
            self.stats.dropped_rows += lost
            log.error("spool %s full (%d bytes max): dropped oldest segment %s with %d unreplayed readings",
                      self.dir.name, self.max_bytes, oldest.path.name, lost)
            if lost:
                self._drops.append((lost, oldest.bytes))
            self._refresh_stats()

    def _refresh_stats(self) -> None:
        segs = self._segments
        st = self.stats
        st.bytes = sum(s.bytes for s in segs)
        st.rows = sum(s.pending_rows for s in segs)
        st.segments = len(segs)
        st.peak_bytes = max(st.peak_bytes, st.bytes)
        st.oldest_recv_us = next((s.first_recv_us for s in segs if s.pending_rows), 0)

    # ------------------------------------------------------------------ replay
    @property
    def empty(self) -> bool:
        return not self._segments

    def closed_segments(self) -> list[Segment]:
        return [s for s in self._segments if s.closed]

    def rotate(self) -> None:
        """Close the active segment so that replay can take it."""
        with self._lock:
            self._close_active(sync=True)
        self.deliver()

    async def rotate_async(self) -> None:
        await asyncio.to_thread(self._rotate_in_thread)
        self.deliver()

    def _rotate_in_thread(self) -> None:
        with self._lock:
            self._close_active(sync=True)

    def read_segment(self, seg: Segment) -> Iterator[SpoolRecord]:
        """Records of a closed segment in order (nothing if it was dropped meanwhile)."""
        try:
            scanned = list(self._scan(seg.path))
        except FileNotFoundError:
            return
        names_seen: dict[bytes, str] = {}
        for _, _, payload in scanned:
            if payload is None:
                continue
            try:
                yield decode_record(payload, names_seen)
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                self.stats.corrupt_records += 1
                log.error("spool %s: undecodable record in %s skipped: %s", self.dir.name, seg.path.name, exc)

    async def read_segment_async(self, seg: Segment) -> list[SpoolRecord]:
        return await asyncio.to_thread(lambda: list(self.read_segment(seg)))

    def mark_committed(self, ref: SpoolRef) -> None:
        """The record behind ``ref`` is known to be in the database (its original write committed)."""
        seg = ref.segment
        if ref.batch_key not in seg.committed:
            seg.committed.add(ref.batch_key)
            seg.done_rows += ref.rows
            self._refresh_stats()

    def mark_replayed(self, seg: Segment, records: int, rows: int) -> None:
        seg.replay_pos += records
        seg.done_rows += rows
        self._refresh_stats()

    def remove_segment(self, seg: Segment) -> None:
        with self._lock:
            self._remove_locked(seg)

    async def remove_segment_async(self, seg: Segment) -> None:
        await asyncio.to_thread(self.remove_segment, seg)

    def _remove_locked(self, seg: Segment) -> None:
        if seg in self._segments:
            self._segments = [s for s in self._segments if s is not seg]
        seg.path.unlink(missing_ok=True)
        self._refresh_stats()

    def quarantine(self, rec: SpoolRecord, reason: str) -> bool:
        """Keep a record the database rejects permanently in ``quarantine/`` (bounded); False when
        the quarantine is full and the record had to be dropped."""
        qdir = self.dir / "quarantine"
        qdir.mkdir(exist_ok=True)
        used = sum(p.stat().st_size for p in qdir.glob("seg-*.spool"))
        data = encode_record(rec)
        if used + len(data) > self.quarantine_max_bytes:
            log.error("spool %s: quarantine full, %d readings of batch %s dropped (%s)", self.dir.name,
                      len(rec.batch), rec.batch_key, reason)
            return False
        path = qdir / f"seg-{int(time.strftime('%Y%m%d')):020d}.spool"  # one per day; readable as a Spool
        with path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with (qdir / "reasons.log").open("a") as fh_log:
            fh_log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {rec.batch_key} "
                         f"rows={len(rec.batch)} {reason[:500]}\n")
        self.stats.quarantined_rows += len(rec.batch)
        log.error("spool %s: batch %s (%d readings) quarantined in %s: %s", self.dir.name, rec.batch_key,
                  len(rec.batch), path, reason)
        return True

    def close(self) -> None:
        self.rotate()
