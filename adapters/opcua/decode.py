"""Pure decoding of OPC UA data values into columnar batches (no protocol library).

:mod:`adapters.opcua.client` hands over :class:`RawSamples` — plain Python columns taken from the
DataValues of a publish response or a Read — and :func:`build_batch` turns them into one
:class:`~ingestd.model.Batch`:

* quality from the two top bits of the StatusCode (``00`` GOOD, ``01`` UNCERTAIN, ``10``/``11`` BAD),
  with the raw 32-bit code kept in ``status``;
* BAD rows carry NaN (NULL), never a value;
* booleans, enumerations and integers become float64; anything else (strings, byte strings, arrays,
  structures, date-times) becomes BAD with :data:`STATUS_TYPE_MISMATCH` and is reported back so the
  source can reject it once per tag; a GOOD/UNCERTAIN DataValue without a value becomes BAD with
  :data:`STATUS_NO_DATA`;
* the timestamp is the source, server or receive time, falling back in that order when absent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

from ingestd.model import Batch, Quality

__all__ = [
    "STATUS_NODE_UNKNOWN",
    "STATUS_NO_DATA",
    "STATUS_TYPE_MISMATCH",
    "RawSamples",
    "TimestampMode",
    "TypeReject",
    "bad_batch",
    "build_batch",
    "quality_of",
]

TimestampMode = Literal["source", "server", "receive"]

STATUS_TYPE_MISMATCH: Final = 0x8074_0000
"""Bad_TypeMismatch: the value's data type cannot be stored as a number."""
STATUS_NO_DATA: Final = 0x809B_0000
"""Bad_NoData: the server sent no value although the status was not bad."""
STATUS_NODE_UNKNOWN: Final = 0x8034_0000
"""Bad_NodeIdUnknown (also used when an ``nsu=`` namespace URI is not published)."""

_NAN: Final = math.nan


def quality_of(status: int) -> Quality:
    """GOOD / UNCERTAIN / BAD from the StatusCode severity bits (``11`` is reserved: BAD)."""
    severity = (status >> 30) & 0b11
    return Quality(min(severity, 2))


@dataclass(slots=True)
class RawSamples:
    """Columns of decoded DataValues. ``key`` is the point index; timestamps are µs since the Unix
    epoch, ``0`` when the server sent none."""

    key: list[int] = field(default_factory=list)
    value: list[object] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    source_us: list[int] = field(default_factory=list)
    server_us: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.key)


@dataclass(frozen=True, slots=True)
class TypeReject:
    key: int
    type_name: str


def _values(values: list[object]) -> tuple[np.ndarray, list[int], list[int], list[str]]:
    """float64 values, indexes of null values, indexes and type names of unsupported values."""
    out = np.empty(len(values), np.float64)
    nulls: list[int] = []
    bad: list[int] = []
    names: list[str] = []
    for i, v in enumerate(values):
        t = type(v)
        if t is float or t is int or t is bool:
            out[i] = v  # type: ignore[call-overload]
        elif v is None:
            out[i] = _NAN
            nulls.append(i)
        elif isinstance(v, int | float):  # subclasses (IntEnum, np.float64)
            out[i] = float(v)
        else:
            out[i] = _NAN
            bad.append(i)
            names.append(_type_name(v))
    return out, nulls, bad, names


def _type_name(v: object) -> str:
    if isinstance(v, str):
        return "String"
    if isinstance(v, bytes | bytearray):
        return "ByteString"
    if isinstance(v, list | tuple):
        return "array"
    return type(v).__name__


def build_batch(raw: RawSamples, mode: TimestampMode, recv_us: int) -> tuple[Batch, list[TypeReject]]:
    """One batch from ``raw``; also the rows whose value type is unsupported (to reject once)."""
    n = len(raw)
    key = np.fromiter(raw.key, np.int32, n)
    status = np.fromiter(raw.status, np.uint32, n)
    value, nulls, bad, names = _values(raw.value)
    quality = np.minimum(status >> np.uint32(30), np.uint32(2)).astype(np.uint8)
    if nulls:
        idx = np.asarray(nulls, np.intp)
        not_bad = quality[idx] != Quality.BAD
        status[idx[not_bad]] = STATUS_NO_DATA
        quality[idx] = Quality.BAD
    rejects: list[TypeReject] = []
    if bad:
        idx = np.asarray(bad, np.intp)
        not_bad = quality[idx] != Quality.BAD
        status[idx[not_bad]] = STATUS_TYPE_MISMATCH
        quality[idx] = Quality.BAD
        rejects = [TypeReject(raw.key[i], name) for i, name in zip(bad, names, strict=True)]
    value[quality == Quality.BAD] = _NAN
    ts = _timestamps(raw, mode, recv_us, n)
    return Batch(key, ts, value, quality, status, recv_us), rejects


def _timestamps(raw: RawSamples, mode: TimestampMode, recv_us: int, n: int) -> np.ndarray:
    recv = np.int64(recv_us)
    if mode == "receive":
        return np.full(n, recv, np.int64)
    server = np.fromiter(raw.server_us, np.int64, n)
    ts = np.where(server > 0, server, recv)
    if mode == "source":
        source = np.fromiter(raw.source_us, np.int64, n)
        ts = np.where(source > 0, source, ts)
    return ts


def bad_batch(rows: Iterable[tuple[int, int]], recv_us: int) -> Batch:
    """BAD samples (NaN) stamped ``recv_us`` for ``(point, status)`` pairs — e.g. rejected nodes."""
    pairs = list(rows)
    return Batch.of(
        [k for k, _ in pairs], [recv_us] * len(pairs), [_NAN] * len(pairs), Quality.BAD,
        [s for _, s in pairs], recv_us=recv_us,
    )
