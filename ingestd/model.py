"""Core data model: quality codes and columnar sample batches.

A reading is (tag, source timestamp µs UTC, float64 value or NULL, quality, raw protocol status).
Batches are columnar NumPy arrays so the hot path costs microseconds per *batch*, not per point.

``Batch.key`` means different things at different stages:

* emitted by a source: the index of the point in that source's point table (``SourceContext.points``);
* after routing: the tenant-local tag key (index into that tenant's ``TagRegistry``).

``value`` is NaN where the reading is NULL (BAD quality). A GOOD/UNCERTAIN reading never carries NaN:
the router turns NaN/±inf from devices into BAD with status :data:`STATUS_NOT_FINITE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "STATUS_COMM_LOSS",
    "STATUS_NOT_FINITE",
    "STATUS_NOT_NUMERIC",
    "STATUS_OK",
    "Batch",
    "BatchBuilder",
    "Durability",
    "Quality",
    "now_us",
]

KeyArray = npt.NDArray[np.int32]
TsArray = npt.NDArray[np.int64]
ValueArray = npt.NDArray[np.float64]
QualityArray = npt.NDArray[np.uint8]
StatusArray = npt.NDArray[np.uint32]


class Quality(IntEnum):
    """Stored quality. The raw protocol status code is kept next to it in ``status``."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


STATUS_OK: Final = 0
"""No status code (the protocol reported success or has no status concept)."""
STATUS_NOT_FINITE: Final = 0x8000_0001
"""ingestd-internal: the device sent NaN or ±inf where a number was expected."""
STATUS_NOT_NUMERIC: Final = 0x8000_0002
"""ingestd-internal: a text value that is not a number (readings store numbers only)."""
STATUS_COMM_LOSS: Final = 0x8031_0000
"""No communication with the device (OPC UA's Bad_NoCommunication code)."""


def now_us() -> int:
    """Wall-clock time in µs since the Unix epoch (UTC)."""
    return time.time_ns() // 1000


class Durability:
    """Completion token for at-least-once sources (MQTT QoS 1 manual acks).

    The pipeline calls :meth:`done` once every sample emitted with this token is committed to the
    tenant database or written durably to the spool. Splitting a batch across tenants adds holds.
    """

    __slots__ = ("_callback", "_pending")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback
        self._pending = 1

    def hold(self, n: int = 1) -> None:
        self._pending += n

    def done(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self._callback is not None:
            cb, self._callback = self._callback, None
            cb()


@dataclass(slots=True)
class Batch:
    key: KeyArray
    ts: TsArray
    value: ValueArray
    quality: QualityArray
    status: StatusArray
    recv_us: int = field(default_factory=now_us)
    """When ingestd received this batch (µs since epoch)."""
    tokens: list[Durability] = field(default_factory=list)
    """Completion tokens released once the batch is durable."""
    origin: dict[str, int] = field(default_factory=dict)
    """Rows per source name (set by the router; used for per-source metrics)."""
    historical: bool = False
    """Backfill (e.g. Sparkplug ``is_historical``, store-and-forward): stored, but it never updates the
    live cache, the alarm state or the deadband state."""

    def __len__(self) -> int:
        return int(self.key.shape[0])

    @classmethod
    def empty(cls) -> Batch:
        return cls(
            np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64),
            np.empty(0, np.uint8), np.empty(0, np.uint32),
        )

    @classmethod
    def of(
        cls,
        key: Sequence[int] | npt.ArrayLike,
        ts: Sequence[int] | npt.ArrayLike,
        value: Sequence[float] | npt.ArrayLike,
        quality: Sequence[int] | npt.ArrayLike | int = Quality.GOOD,
        status: Sequence[int] | npt.ArrayLike | int = STATUS_OK,
        *,
        recv_us: int | None = None,
    ) -> Batch:
        k = np.asarray(key, np.int32)
        n = k.shape[0]
        q = np.asarray(quality, np.uint8)
        s = np.asarray(status, np.uint32)
        return cls(
            k,
            np.asarray(ts, np.int64),
            np.asarray(value, np.float64),
            np.broadcast_to(q, (n,)).copy() if q.ndim == 0 else q,
            np.broadcast_to(s, (n,)).copy() if s.ndim == 0 else s,
            recv_us if recv_us is not None else now_us(),
        )

    def take(self, idx: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Batch:
        """Rows selected by a boolean mask or an index array (tokens are not copied)."""
        out = Batch(self.key[idx], self.ts[idx], self.value[idx], self.quality[idx], self.status[idx],
                    self.recv_us)
        out.historical = self.historical
        return out

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return Batch.empty()
        out = Batch(
            np.concatenate([b.key for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.quality for b in batches]),
            np.concatenate([b.status for b in batches]),
            min(b.recv_us for b in batches),
        )
        for b in batches:
            out.tokens.extend(b.tokens)
            for src, n in b.origin.items():
                out.origin[src] = out.origin.get(src, 0) + n
        return out

    def release(self) -> None:
        """Mark this batch durable: release every completion token exactly once."""
        tokens, self.tokens = self.tokens, []
        for t in tokens:
            t.done()

    def nbytes(self) -> int:
        return int(self.key.nbytes + self.ts.nbytes + self.value.nbytes + self.quality.nbytes
                   + self.status.nbytes)


class BatchBuilder:
    """Row-at-a-time builder for adapters whose decoders yield one value at a time."""

    __slots__ = ("_k", "_q", "_s", "_t", "_v")

    def __init__(self) -> None:
        self._k: list[int] = []
        self._t: list[int] = []
        self._v: list[float] = []
        self._q: list[int] = []
        self._s: list[int] = []

    def add(self, key: int, ts_us: int, value: float | None, quality: int = Quality.GOOD,
            status: int = STATUS_OK) -> None:
        self._k.append(key)
        self._t.append(ts_us)
        self._v.append(float("nan") if value is None else value)
        self._q.append(quality)
        self._s.append(status & 0xFFFF_FFFF)

    def extend(self, rows: Iterable[tuple[int, int, float | None, int, int]]) -> None:
        for r in rows:
            self.add(*r)

    def __len__(self) -> int:
        return len(self._k)

    def build(self, recv_us: int | None = None) -> Batch:
        b = Batch(
            np.array(self._k, np.int32), np.array(self._t, np.int64), np.array(self._v, np.float64),
            np.array(self._q, np.uint8), np.array(self._s, np.uint32),
            recv_us if recv_us is not None else now_us(),
        )
        self._k, self._t, self._v, self._q, self._s = [], [], [], [], []
        return b
