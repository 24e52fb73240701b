"""Per-tenant disk spool: append-only segments with a CRC per record (DESIGN §5).

Layout: ``<state_dir>/spool/<tenant>/seg-<20-digit number>.spool``. A record is::

    b"ISR1" | u32 payload length | u32 crc32(payload) | payload

and the payload carries the batch key (idempotent replay), the source name, the tag names used by
the batch (so the spool survives restarts and tag id changes) and the columnar arrays.

* Appends go to the newest segment; a segment is closed at ``segment_bytes``.
* Replay reads closed segments oldest first; a segment is deleted once all its records are committed.
* When the spool would exceed ``max_bytes`` the oldest segments are dropped — counted and reported
  through ``on_drop``, never silently.
* On open, a torn last record (``kill -9`` mid-write) is detected by length/CRC, logged and cut off;
  a corrupt record in the middle is skipped by resynchronising on the next record marker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from .model import Batch, Durability

__all__ = ["Spool", "SpoolRecord", "decode_record", "encode_record"]

log = logging.getLogger(__name__)

MAGIC: Final = b"ISR1"
_HDR = struct.Struct("<4sII")
_FIXED = struct.Struct("<16sqH")


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


def decode_record(payload: bytes) -> SpoolRecord:
    key, recv_us, src_len = _FIXED.unpack_from(payload, 0)
    off = _FIXED.size
    source = payload[off:off + src_len].decode()
    off += src_len
    (n_names,) = struct.unpack_from("<I", payload, off)
    off += 4
    names = []
    for _ in range(n_names):
        (ln,) = struct.unpack_from("<H", payload, off)
        off += 2
        names.append(payload[off:off + ln].decode())
        off += ln
    (n,) = struct.unpack_from("<I", payload, off)
    off += 4

    def arr(dtype: str, size: int) -> np.ndarray[Any, Any]:
        nonlocal off
        a = np.frombuffer(payload, dtype=dtype, count=n, offset=off).astype(dtype.lstrip("<"))
        off += size * n
        return a

    batch = Batch(arr("<i4", 4), arr("<i8", 8), arr("<f8", 8), arr("u1", 1), arr("<u4", 4), recv_us)
    if off != len(payload):
        raise ValueError("trailing bytes in spool record")
    return SpoolRecord(uuid.UUID(bytes=key), source, names, batch)


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    bytes: int = 0
    rows: int = 0
    records: int = 0


@dataclass(slots=True)
class SpoolStats:
    bytes: int = 0
    rows: int = 0
    segments: int = 0
    dropped_rows: int = 0
    torn_records: int = 0
    corrupt_records: int = 0
    peak_bytes: int = 0


@dataclass(slots=True)
class _Pending:
    tokens: list[Durability] = field(default_factory=list)


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: Literal["interval", "always", "never"] = "interval",
        on_drop: Callable[[int, int], None] | None = None,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max(4096, max_bytes // 4)))
        self.fsync = fsync
        self.on_drop = on_drop
        self.stats = SpoolStats()
        self._segments: list[_Segment] = []
        self._fh: object | None = None
        self._active: _Segment | None = None
        self._unsynced: list[Durability] = []
        self._dirty = False
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ------------------------------------------------------------------ open / recovery
    def _recover(self) -> None:
        for path in sorted(self.dir.glob("seg-*.spool")):
            try:
                number = int(path.stem.split("-", 1)[1])
            except ValueError:
                log.warning("ignoring unexpected file in spool: %s", path)
                continue
            seg = _Segment(number, path)
            valid_end = 0
            for _off, end, payload in self._scan(path):
                if payload is None:
                    continue
                seg.records += 1
                seg.rows += struct.unpack_from("<I", payload, self._rows_offset(payload))[0]
                valid_end = end
            size = path.stat().st_size
            if valid_end < size:
                # torn tail (or trailing garbage): cut it off so appends continue cleanly
                with path.open("r+b") as fh:
                    fh.truncate(valid_end)
                self.stats.torn_records += 1
                log.warning("spool %s: torn record at byte %d of %s cut off (%d bytes)", self.dir.name, valid_end,
                            path.name, size - valid_end)
            seg.bytes = valid_end
            if seg.records == 0:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(seg)
        self._refresh_stats()

    @staticmethod
    def _rows_offset(payload: bytes) -> int:
        off = _FIXED.size + _FIXED.unpack_from(payload, 0)[2]
        (n_names,) = struct.unpack_from("<I", payload, off)
        off += 4
        for _ in range(n_names):
            (ln,) = struct.unpack_from("<H", payload, off)
            off += 2 + ln
        return int(off)

    def _scan(self, path: Path) -> Iterator[tuple[int, int, bytes | None]]:
        """Yield (offset, end, payload) of valid records; payload None marks a skipped corrupt one."""
        data = path.read_bytes()
        off = 0
        while off + _HDR.size <= len(data):
            magic, length, crc = _HDR.unpack_from(data, off)
            end = off + _HDR.size + length
            if magic == MAGIC and end <= len(data) and zlib.crc32(data[off + _HDR.size:end]) == crc:
                yield off, end, data[off + _HDR.size:end]
                off = end
                continue
            nxt = data.find(MAGIC, off + 1)
            if end > len(data) and (nxt == -1 or nxt >= len(data)):
                return  # torn last record: caller truncates
            if nxt == -1:
                return
            self.stats.corrupt_records += 1
            log.error("spool %s: corrupt record at byte %d of %s skipped", self.dir.name, off, path.name)
            yield off, nxt, None
            off = nxt

    # ------------------------------------------------------------------ append
    def append(self, rec: SpoolRecord, tokens: list[Durability] | None = None) -> None:
        data = encode_record(rec)
        self._make_room(len(data))
        seg = self._active_segment()
        fh = self._fh
        assert fh is not None
        fh.write(data)  # type: ignore[attr-defined]
        fh.flush()  # type: ignore[attr-defined]
        seg.bytes += len(data)
        seg.rows += len(rec.batch)
        seg.records += 1
        self._dirty = True
        if tokens:
            self._unsynced.extend(tokens)
        if self.fsync == "always":
            self.sync()
        elif self.fsync == "never":
            self._release()
        if seg.bytes >= self.segment_bytes:
            self.rotate()
        self._refresh_stats()

    def _active_segment(self) -> _Segment:
        if self._active is None:
            number = (self._segments[-1].number + 1) if self._segments else 1
            path = self.dir / f"seg-{number:020d}.spool"
            self._active = _Segment(number, path)
            self._segments.append(self._active)
            self._fh = path.open("ab")
        return self._active

    def rotate(self) -> None:
        """Close the active segment so that replay can take it."""
        if self._fh is not None:
            self.sync()
            self._fh.close()  # type: ignore[attr-defined]
            self._fh = None
        self._active = None

    def sync(self) -> None:
        if self._fh is not None and self._dirty:
            os.fsync(self._fh.fileno())  # type: ignore[attr-defined]
            self._dirty = False
        self._release()

    async def sync_async(self) -> None:
        """fsync without blocking the event loop, then release durability tokens."""
        if self._fh is not None and self._dirty:
            self._dirty = False
            tokens, self._unsynced = self._unsynced, []
            await asyncio.to_thread(os.fsync, self._fh.fileno())  # type: ignore[attr-defined]
            for t in tokens:
                t.done()
        else:
            self._release()

    def _release(self) -> None:
        tokens, self._unsynced = self._unsynced, []
        for t in tokens:
            t.done()

    def _make_room(self, need: int) -> None:
        while self._segments and self.stats.bytes + need > self.max_bytes:
            oldest = self._segments[0]
            if oldest is self._active:
                self.rotate()
            self._segments.pop(0)
            oldest.path.unlink(missing_ok=True)
            self.stats.dropped_rows += oldest.rows
            log.error("spool %s full (%d bytes max): dropped oldest segment %s with %d readings",
                      self.dir.name, self.max_bytes, oldest.path.name, oldest.rows)
            if self.on_drop is not None:
                self.on_drop(oldest.rows, oldest.bytes)
            self._refresh_stats()

    def _refresh_stats(self) -> None:
        self.stats.bytes = sum(s.bytes for s in self._segments)
        self.stats.rows = sum(s.rows for s in self._segments)
        self.stats.segments = len(self._segments)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.stats.bytes)

    # ------------------------------------------------------------------ replay
    @property
    def empty(self) -> bool:
        return not self._segments

    def closed_segments(self) -> list[_Segment]:
        return [s for s in self._segments if s is not self._active]

    def read_segment(self, seg: _Segment) -> Iterator[SpoolRecord]:
        for _, _, payload in self._scan(seg.path):
            if payload is None:
                continue
            try:
                yield decode_record(payload)
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                self.stats.corrupt_records += 1
                log.error("spool %s: undecodable record in %s skipped: %s", self.dir.name, seg.path.name, exc)

    def remove_segment(self, seg: _Segment) -> None:
        if seg in self._segments:
            self._segments.remove(seg)
        seg.path.unlink(missing_ok=True)
        self._refresh_stats()

    def close(self) -> None:
        self.rotate()
