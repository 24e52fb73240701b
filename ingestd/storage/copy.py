"""Binary COPY encoding of reading batches with NumPy (no per-row Python work).

PostgreSQL's binary COPY format: a header, then per tuple an int16 field count and, per field,
an int32 length (-1 for NULL) followed by the big-endian value; then an int16 -1 trailer.
Rows with a NULL value have a different width, so they are encoded as a second block: COPY does
not care about row order.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["COPY_COLUMNS", "PG_EPOCH_US", "encode_readings"]

PG_EPOCH_US: Final = 946_684_800_000_000
"""Unix µs of 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch."""

COPY_COLUMNS: Final = ("tag_id", "ts", "value", "quality", "status", "batch_seq")

_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER: Final = b"\xff\xff"

_FULL = np.dtype([
    ("nf", ">i2"),
    ("l_tag", ">i4"), ("tag", ">i4"),
    ("l_ts", ">i4"), ("ts", ">i8"),
    ("l_val", ">i4"), ("val", ">f8"),
    ("l_q", ">i4"), ("q", ">i2"),
    ("l_st", ">i4"), ("st", ">i8"),
    ("l_seq", ">i4"), ("seq", ">i8"),
])
_NULL = np.dtype([
    ("nf", ">i2"),
    ("l_tag", ">i4"), ("tag", ">i4"),
    ("l_ts", ">i4"), ("ts", ">i8"),
    ("l_val", ">i4"),
    ("l_q", ">i4"), ("q", ">i2"),
    ("l_st", ">i4"), ("st", ">i8"),
    ("l_seq", ">i4"), ("seq", ">i8"),
])


def _fill(
    out: npt.NDArray[np.void], tag: npt.NDArray[np.int32], ts: npt.NDArray[np.int64],
    quality: npt.NDArray[np.uint8], status: npt.NDArray[np.uint32], seq: int,
) -> None:
    out["nf"] = 6
    out["l_tag"] = 4
    out["tag"] = tag
    out["l_ts"] = 8
    out["ts"] = ts - PG_EPOCH_US
    out["l_q"] = 2
    out["q"] = quality
    out["l_st"] = 8
    out["st"] = status
    out["l_seq"] = 8
    out["seq"] = seq


def encode_readings(
    tag_id: npt.NDArray[np.int32],
    ts_us: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    quality: npt.NDArray[np.uint8],
    status: npt.NDArray[np.uint32],
    batch_seq: int,
) -> bytes:
    """Encode rows for ``COPY readings (tag_id, ts, value, quality, status, batch_seq) FROM STDIN
    (FORMAT binary)``. NaN values become NULL."""
    null = np.isnan(value)
    parts = [_HEADER]
    if not null.any():
        full = np.empty(tag_id.shape[0], _FULL)
        _fill(full, tag_id, ts_us, quality, status, batch_seq)
        full["l_val"] = 8
        full["val"] = value
        parts.append(full.tobytes())
    else:
        keep = ~null
        full = np.empty(int(keep.sum()), _FULL)
        _fill(full, tag_id[keep], ts_us[keep], quality[keep], status[keep], batch_seq)
        full["l_val"] = 8
        full["val"] = value[keep]
        nulls = np.empty(int(null.sum()), _NULL)
        _fill(nulls, tag_id[null], ts_us[null], quality[null], status[null], batch_seq)
        nulls["l_val"] = -1
        parts.append(full.tobytes())
        parts.append(nulls.tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)
