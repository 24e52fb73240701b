"""Poll scheduling on a monotonic clock: per-source phase, no drift, missed slots skipped. Pure.

Each source polls on a fixed grid ``phase + k * interval`` of the event loop's monotonic clock. The phase
is derived from a stable hash of the source name, so hundreds of sources with the same interval spread
their polls over the whole interval instead of firing together, and a source keeps its slot across
restarts. The next deadline is the previous deadline plus the interval (never "now + interval", which
drifts by the poll's duration every cycle); when a poll overruns, the slots it missed are skipped.
"""

from __future__ import annotations

import math
import zlib

__all__ = ["first_deadline", "next_deadline", "phase_offset"]


def phase_offset(name: str, interval: float) -> float:
    """A deterministic offset in ``[0, interval)`` derived from ``name`` (CRC-32, stable across runs)."""
    return (zlib.crc32(name.encode("utf-8")) / 2**32) * interval


def first_deadline(now: float, interval: float, phase: float) -> float:
    """The first grid point ``phase + k * interval`` at or after ``now``."""
    k = math.ceil((now - phase) / interval)
    deadline = phase + k * interval
    return deadline if deadline >= now else deadline + interval


def next_deadline(previous: float, interval: float, now: float) -> tuple[float, int]:
    """The deadline after the poll that was due at ``previous`` finished at ``now``.

    Returns ``(deadline, missed)``: ``missed`` grid slots passed while the poll ran (0 when on time).
    """
    deadline = previous + interval
    if now <= deadline:
        return deadline, 0
    missed = math.floor((now - previous) / interval)
    deadline = previous + (missed + 1) * interval
    if deadline <= now:  # floating-point edge exactly on a slot
        deadline += interval
        missed += 1
    return deadline, missed
