"""Binary COPY encoding: decode the bytes back field by field."""

from __future__ import annotations

import struct

import numpy as np

from ingestd.storage.copy import PG_EPOCH_US, encode_readings


def parse(buf: bytes) -> list[tuple[int, int, float | None, int, int, int]]:
    assert buf[:11] == b"PGCOPY\n\xff\r\n\x00"
    off = 19
    out = []
    while True:
        (nf,) = struct.unpack_from(">h", buf, off)
        off += 2
        if nf == -1:
            break
        assert nf == 6
        fields: list[bytes | None] = []
        for _ in range(nf):
            (ln,) = struct.unpack_from(">i", buf, off)
            off += 4
            if ln == -1:
                fields.append(None)
            else:
                fields.append(buf[off:off + ln])
                off += ln
        tag = struct.unpack(">i", fields[0])[0]  # type: ignore[arg-type]
        ts = struct.unpack(">q", fields[1])[0] + PG_EPOCH_US  # type: ignore[arg-type]
        val = None if fields[2] is None else struct.unpack(">d", fields[2])[0]
        q = struct.unpack(">h", fields[3])[0]  # type: ignore[arg-type]
        st = struct.unpack(">q", fields[4])[0]  # type: ignore[arg-type]
        seq = struct.unpack(">q", fields[5])[0]  # type: ignore[arg-type]
        out.append((tag, ts, val, q, st, seq))
    assert off == len(buf)
    return out


def test_encoding_with_nulls_round_trips() -> None:
    tag = np.array([1, 2, 3], np.int32)
    ts = np.array([1_700_000_000_000_000, 1, -5], np.int64)
    val = np.array([1.5, np.nan, -0.0])
    q = np.array([0, 2, 1], np.uint8)
    st = np.array([0, 0x80340000, 7], np.uint32)
    rows = sorted(parse(encode_readings(tag, ts, val, q, st, 42)))
    assert rows == [(1, 1_700_000_000_000_000, 1.5, 0, 0, 42), (2, 1, None, 2, 0x80340000, 42), (3, -5, -0.0, 1, 7, 42)]


def test_empty_and_all_null() -> None:
    e = np.empty(0)
    enc = encode_readings(e.astype(np.int32), e.astype(np.int64), e, e.astype(np.uint8), e.astype(np.uint32), 1)
    assert parse(enc) == []
    rows = parse(encode_readings(np.array([9], np.int32), np.array([0], np.int64), np.array([np.nan]),
                                 np.array([2], np.uint8), np.array([3], np.uint32), 1))
    assert rows == [(9, 0, None, 2, 3, 1)]
