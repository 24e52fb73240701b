"""Downsampling in NumPy for charts: min/max per time bucket, LTTB, and re-bucketing of rollups.

* :func:`minmax` keeps, per time bucket, the lowest and the highest sample (in time order), so spikes
  survive; a bucket holding only BAD samples (NaN) keeps one of them, so gaps stay visible.
* :func:`lttb` is Largest-Triangle-Three-Buckets (Steinarsson 2013) over the finite samples: the shape
  a human sees, with fewer points; BAD samples are dropped.
* :func:`rebucket` merges rollup buckets into wider ones exactly (min of mins, max of maxes,
  sum-weighted average, summed counts).

Inputs are one series sorted by time; outputs are index arrays into it (or new columns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["lttb", "minmax", "rebucket"]

Index = npt.NDArray[np.intp]


def minmax(ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64], max_points: int) -> Index:
    """Indices of at most ``max_points`` samples: the min and max of each of ``max_points // 2`` buckets."""
    n = ts.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.intp)
    buckets = max(1, max_points // 2)
    lo, hi = int(ts[0]), int(ts[-1])
    span = max(1, hi - lo + 1)
    b = ((ts - lo).astype(np.float64) * buckets / span).astype(np.int64)
    finite = np.isfinite(value)
    idx = np.arange(n, dtype=np.intp)
    picks: list[Index] = []
    if finite.any():
        fi = idx[finite]
        fb = b[finite]
        fv = value[finite]
        order = np.lexsort((fv, fb))  # by bucket, then value
        sb = fb[order]
        first = np.ones(sb.shape[0], dtype=bool)
        first[1:] = sb[1:] != sb[:-1]
        last = np.ones(sb.shape[0], dtype=bool)
        last[:-1] = sb[1:] != sb[:-1]
        picks += [fi[order[first]], fi[order[last]]]
    if not finite.all():
        # buckets that hold only NaN keep their first sample (a visible gap)
        has_finite = np.zeros(buckets + 1, dtype=bool)
        has_finite[b[finite]] = True
        nan_idx = idx[~finite]
        nb = b[~finite]
        lonely = ~has_finite[nb]
        if lonely.any():
            cand = nan_idx[lonely]
            cb = nb[lonely]
            keep = np.ones(cb.shape[0], dtype=bool)
            keep[1:] = cb[1:] != cb[:-1]
            picks.append(cand[keep])
    out: Index = np.unique(np.concatenate(picks)) if picks else np.empty(0, np.intp)
    return out


def lttb(ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64], max_points: int) -> Index:
    """Largest-Triangle-Three-Buckets over the finite samples; indices into the input."""
    finite_idx = np.flatnonzero(np.isfinite(value))
    n = finite_idx.shape[0]
    if n <= max_points:
        return finite_idx
    if max_points < 3:
        ends: Index = finite_idx[[0, n - 1]][:max_points]
        return ends
    x = ts[finite_idx].astype(np.float64)
    y = value[finite_idx]
    out = np.empty(max_points, dtype=np.intp)
    out[0] = 0
    out[-1] = n - 1
    # bucket boundaries over the inner points 1..n-2
    edges = np.linspace(1, n - 1, max_points - 1).astype(np.intp)
    a = 0
    for i in range(max_points - 2):
        s, e = int(edges[i]), int(edges[i + 1])
        if e <= s:
            e = s + 1
        ns = e
        ne = int(edges[i + 2]) if i + 2 < edges.shape[0] else n
        if ne <= ns:
            ne = min(n, ns + 1)
        avg_x = float(x[ns:ne].mean())
        avg_y = float(y[ns:ne].mean())
        ax, ay = x[a], y[a]
        area = np.abs((ax - avg_x) * (y[s:e] - ay) - (ax - x[s:e]) * (avg_y - ay))
        a = s + int(np.argmax(area))
        out[i + 1] = a
    picked: Index = finite_idx[out]
    return picked


def rebucket(cols: dict[str, npt.NDArray[Any]], start_us: int, width_us: int) -> dict[str, npt.NDArray[Any]]:
    """Merge rollup rows of one tag (columns ts, value, min, max, sum, count, non_good) into buckets of
    ``width_us`` aligned on ``start_us``."""
    ts = cols["ts"]
    if ts.shape[0] == 0:
        return cols
    b = (ts - start_us) // width_us
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    count = np.add.reduceat(cols["count"], starts)
    ssum = np.add.reduceat(np.nan_to_num(cols["sum"], nan=0.0), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(count > 0, ssum / np.maximum(count, 1), np.nan)
    return {
        "ts": start_us + b[starts] * width_us,
        "value": avg,
        "min": np.fmin.reduceat(cols["min"], starts),
        "max": np.fmax.reduceat(cols["max"], starts),
        "sum": np.where(count > 0, ssum, np.nan),
        "count": count,
        "non_good": np.add.reduceat(cols["non_good"], starts),
    }
