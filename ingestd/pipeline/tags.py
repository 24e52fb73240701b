"""Per-tenant tag registry with the live cache and the deadband/heartbeat state, as NumPy columns.

A tag's *key* is its index here (stable for the life of the process); ``db_id`` is the tenant
database's ``tags.tag_id`` (-1 until resolved by the writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = ["LiveValue", "TagMeta", "TagRegistry"]

_INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class TagMeta:
    name: str
    source: str = ""
    unit: str = ""
    data_type: str = "float"
    description: str = ""
    configured: bool = True


@dataclass(frozen=True, slots=True)
class LiveValue:
    tag: str
    ts_us: int
    value: float | None
    quality: int
    status: int
    recv_us: int
    stale: bool


class TagRegistry:
    """Columns grow by doubling; all per-tag state lives in arrays indexed by tag key."""

    _COLUMNS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "db_id": (np.int32, -1),
        "deadband": (np.float64, np.nan),  # NaN: store every sample
        "heartbeat_us": (np.int64, 0),
        "stored_value": (np.float64, np.nan),
        "stored_ts": (np.int64, _INT64_MIN),
        "stored_quality": (np.int16, -1),
        "live_value": (np.float64, np.nan),
        "live_ts": (np.int64, _INT64_MIN),
        "live_quality": (np.int16, -1),
        "live_status": (np.uint32, 0),
        "live_recv": (np.int64, 0),
        "stale": (np.bool_, True),
    }

    db_id: npt.NDArray[np.int32]
    deadband: npt.NDArray[np.float64]
    heartbeat_us: npt.NDArray[np.int64]
    stored_value: npt.NDArray[np.float64]
    stored_ts: npt.NDArray[np.int64]
    stored_quality: npt.NDArray[np.int16]
    live_value: npt.NDArray[np.float64]
    live_ts: npt.NDArray[np.int64]
    live_quality: npt.NDArray[np.int16]
    live_status: npt.NDArray[np.uint32]
    live_recv: npt.NDArray[np.int64]
    stale: npt.NDArray[np.bool_]

    def __init__(self, tenant: str, capacity: int = 1024) -> None:
        self.tenant = tenant
        self.names: list[str] = []
        self.meta: list[TagMeta] = []
        self.index: dict[str, int] = {}
        self._cap = capacity
        for col, (dtype, fill) in self._COLUMNS.items():
            setattr(self, col, np.full(capacity, fill, dtype=dtype))

    def __len__(self) -> int:
        return len(self.names)

    def _grow(self) -> None:
        new = self._cap * 2
        for col, (dtype, fill) in self._COLUMNS.items():
            old = getattr(self, col)
            arr = np.full(new, fill, dtype=dtype)
            arr[: self._cap] = old
            setattr(self, col, arr)
        self._cap = new

    def ensure(self, meta: TagMeta, *, deadband: float | None = None, heartbeat_s: float | None = None) -> int:
        """Return the key of ``meta.name``, adding it if new. Configured metadata wins over dynamic."""
        key = self.index.get(meta.name)
        if key is None:
            if len(self.names) == self._cap:
                self._grow()
            key = len(self.names)
            self.names.append(meta.name)
            self.meta.append(meta)
            self.index[meta.name] = key
        elif (meta.configured or not self.meta[key].configured) and self.meta[key] != meta:
            self.meta[key] = meta
            self.db_id[key] = -1  # metadata changed: the writer refreshes the tags row
        if meta.configured:
            self.deadband[key] = np.nan if deadband is None else deadband
            self.heartbeat_us[key] = 0 if heartbeat_s is None else int(heartbeat_s * 1e6)
        return key

    def live(self, key: int) -> LiveValue | None:
        if self.live_quality[key] < 0:
            return None
        v = float(self.live_value[key])
        return LiveValue(self.names[key], int(self.live_ts[key]), None if v != v else v, int(self.live_quality[key]),
                         int(self.live_status[key]), int(self.live_recv[key]), bool(self.stale[key]))

    def update_live(self, key: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64],
                    quality: npt.NDArray[np.uint8], status: npt.NDArray[np.uint32], recv_us: int) -> None:
        """Keep the newest sample per tag (by source timestamp); late samples do not replace newer ones."""
        if key.shape[0] == 0:
            return
        order = np.lexsort((ts, key))
        k_sorted = key[order]
        last = np.ones(k_sorted.shape[0], dtype=bool)
        last[:-1] = k_sorted[1:] != k_sorted[:-1]
        idx = order[last]
        k = key[idx]
        newer = ts[idx] >= self.live_ts[k]
        idx, k = idx[newer], k[newer]
        self.live_value[k] = value[idx]
        self.live_ts[k] = ts[idx]
        self.live_quality[k] = quality[idx]
        self.live_status[k] = status[idx]
        self.live_recv[k] = recv_us
        self.stale[k] = False
