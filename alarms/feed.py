"""Vectorised routing of routed batches to alarm inputs, with a "quiet sample" fast path.

A *slot* is one input of one consumer: ``(alarm, role)`` or the condition tag of a suppression group.
Per tenant, :class:`SlotTable` maps tag keys (indices of the tenant's ``TagRegistry``) to slots with NumPy
arrays, so a batch costs a handful of vector operations whatever its size:

1. ``has[key]`` masks out the tags without any alarm (~free for them);
2. the remaining rows are expanded to (row, slot) pairs;
3. a row is *quiet* for its slot when its quality is GOOD, its timestamp is newer than the slot's last one
   and its value lies in the slot's quiet interval ``[lo, hi]`` — the values for which the evaluator would
   only record the sample (no level flip, no delay started or cancelled; ``Evaluator.quiet_range``);
4. every row of a slot with at least one non-quiet row in the batch goes to the evaluator, in batch order
   (exact semantics); for slots with only quiet rows, the newest row is *noted* (last timestamp and value,
   handed to the evaluator before it is used next: :meth:`take_note`).

A steady process value therefore costs no Python per sample; only samples near or beyond a limit, BAD or
UNCERTAIN ones, and inputs of evaluators without a quiet interval (rate, deviation, discrepancy,
suppression groups) reach Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingestd.model import Quality

__all__ = ["Routed", "SlotTable"]

_INT64_MIN = np.iinfo(np.int64).min
_GOOD = np.uint8(Quality.GOOD)


@dataclass(frozen=True, slots=True)
class Routed:
    """Result of :meth:`SlotTable.route`: rows (batch positions) and their slots for the evaluators, in
    batch order; and how many (row, slot) pairs took each path."""

    rows: npt.NDArray[np.intp]
    slots: npt.NDArray[np.intp]
    fast: int
    slow: int


_EMPTY = Routed(np.empty(0, np.intp), np.empty(0, np.intp), 0, 0)


class SlotTable:
    """Tag key → slots, and per-slot quiet interval, last timestamp and pending note."""

    def __init__(self, n_keys: int, inputs: Mapping[int, Sequence[int]], n_slots: int) -> None:
        self.n_keys = n_keys
        self.n_slots = n_slots
        self.has = np.zeros(n_keys, dtype=bool)
        count = np.zeros(n_keys, dtype=np.int64)
        flat: list[int] = []
        start = np.zeros(n_keys, dtype=np.int64)
        self.first = np.full(n_keys, -1, dtype=np.intp)
        for key in sorted(inputs):
            slots = inputs[key]
            if not slots or key >= n_keys:
                continue
            self.has[key] = True
            self.first[key] = slots[0]
            start[key] = len(flat)
            count[key] = len(slots)
            flat.extend(slots)
        self.start = start
        self.count = count
        self.flat = np.asarray(flat, dtype=np.intp)
        self.single = bool((count[self.has] <= 1).all())
        self.lo = np.full(n_slots, np.inf)
        self.hi = np.full(n_slots, -np.inf)
        self.last_ts = np.full(n_slots, _INT64_MIN, dtype=np.int64)
        self.noted = np.zeros(n_slots, dtype=bool)
        self.note_ts = np.zeros(n_slots, dtype=np.int64)
        self.note_value = np.zeros(n_slots, dtype=np.float64)
        self._flag = np.zeros(n_slots, dtype=bool)

    # ------------------------------------------------------------------------------------------ slots
    def set_range(self, slot: int, lo: float, hi: float) -> None:
        self.lo[slot] = lo
        self.hi[slot] = hi

    def seen(self, slot: int, ts: int) -> None:
        """A sample went to the evaluator (accepted or not: the evaluator keeps the newest timestamp)."""
        if ts > self.last_ts[slot]:
            self.last_ts[slot] = ts

    def take_note(self, slot: int) -> tuple[int, float] | None:
        """The newest quiet sample not yet handed to the evaluator, if any (then cleared)."""
        if not self.noted[slot]:
            return None
        self.noted[slot] = False
        return int(self.note_ts[slot]), float(self.note_value[slot])

    def noted_slots(self) -> npt.NDArray[np.intp]:
        out: npt.NDArray[np.intp] = np.nonzero(self.noted)[0]
        return out

    # ------------------------------------------------------------------------------------------ batches
    def route(self, key: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64],
              quality: npt.NDArray[np.uint8]) -> Routed:
        """Keys must be < ``n_keys`` (the engine re-binds first when new tags appear)."""
        if self.n_slots == 0 or key.shape[0] == 0:
            return _EMPTY
        sel = np.nonzero(self.has[key])[0]
        if sel.shape[0] == 0:
            return _EMPTY
        k = key[sel]
        if self.single:
            rows = sel
            slots = self.first[k]
        else:
            cnt = self.count[k]
            rows = np.repeat(sel, cnt)
            ends = np.cumsum(cnt)
            intra = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - cnt, cnt)
            slots = self.flat[np.repeat(self.start[k], cnt) + intra]
        v = value[rows]
        t = ts[rows]
        quiet = (quality[rows] == _GOOD) & (v >= self.lo[slots]) & (v <= self.hi[slots]) & (t > self.last_ts[slots])
        if quiet.all():
            self._note(slots, t, v)
            return Routed(np.empty(0, np.intp), np.empty(0, np.intp), int(rows.shape[0]), 0)
        flag = self._flag
        flag[slots[~quiet]] = True
        slow = flag[slots]
        flag[slots[~quiet]] = False
        fast = ~slow
        if fast.any():
            self._note(slots[fast], t[fast], v[fast])
        return Routed(rows[slow], slots[slow], int(fast.sum()), int(slow.sum()))

    def _note(self, slots: npt.NDArray[np.intp], t: npt.NDArray[np.int64], v: npt.NDArray[np.float64]) -> None:
        # newest sample per slot; among equal timestamps the first one (the evaluator ignores later equal ones)
        pos = np.arange(slots.shape[0])
        order = np.lexsort((-pos, t, slots))
        s_sorted = slots[order]
        last = np.ones(s_sorted.shape[0], dtype=bool)
        last[:-1] = s_sorted[1:] != s_sorted[:-1]
        idx = order[last]
        s = slots[idx]
        self.note_ts[s] = t[idx]
        self.note_value[s] = v[idx]
        self.noted[s] = True
        self.last_ts[s] = t[idx]
