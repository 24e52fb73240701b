"""Report-by-exception in the core: per-tag deadband with a heartbeat (max time between samples).

A sample is stored when any of these holds:

* the tag has no deadband (store everything);
* it is the tag's first sample, or its quality differs from the last stored sample's;
* its value moved more than the deadband from the last *stored* value (NULL↔value counts as a move);
* the heartbeat elapsed since the last stored sample;
* it is older than the last stored sample (late/backfilled data is always stored).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..model import Batch
from .tags import TagRegistry

__all__ = ["apply_deadband"]


def _decide(reg: TagRegistry, k: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], v: npt.NDArray[np.float64],
            q: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    db = reg.deadband[k]
    sv = reg.stored_value[k]
    st = reg.stored_ts[k]
    sq = reg.stored_quality[k]
    hb = reg.heartbeat_us[k]
    v_nan, s_nan = np.isnan(v), np.isnan(sv)
    with np.errstate(invalid="ignore"):
        moved = np.abs(v - sv) > db
    keep: npt.NDArray[np.bool_] = (
        np.isnan(db)
        | (sq != q)
        | (v_nan != s_nan)
        | moved
        | ((hb > 0) & (ts - st >= hb))
        | (ts < st)
    )
    return keep


def apply_deadband(reg: TagRegistry, batch: Batch) -> Batch:
    """Return the rows to store and advance the per-tag stored state. ``batch.key`` = tag keys."""
    n = len(batch)
    if n == 0:
        return batch
    k = batch.key
    if not np.any(~np.isnan(reg.deadband[k])):
        keep = np.ones(n, dtype=bool)
    elif np.unique(k).shape[0] == n:
        keep = _decide(reg, k, batch.ts, batch.value, batch.quality)
    else:
        # A tag appears several times: decide row by row in timestamp order (rare path).
        keep = np.zeros(n, dtype=bool)
        for i in np.argsort(batch.ts, kind="stable"):
            one = np.array([i])
            if _decide(reg, k[one], batch.ts[one], batch.value[one], batch.quality[one])[0]:
                keep[i] = True
                _advance(reg, k[one], batch.ts[one], batch.value[one], batch.quality[one])
        return _finish(batch, keep)
    _advance(reg, k[keep], batch.ts[keep], batch.value[keep], batch.quality[keep])
    return _finish(batch, keep)


def _advance(reg: TagRegistry, k: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], v: npt.NDArray[np.float64],
             q: npt.NDArray[np.uint8]) -> None:
    newer = ts >= reg.stored_ts[k]
    k, ts, v, q = k[newer], ts[newer], v[newer], q[newer]
    reg.stored_value[k] = v
    reg.stored_ts[k] = ts
    reg.stored_quality[k] = q


def _finish(batch: Batch, keep: npt.NDArray[np.bool_]) -> Batch:
    if keep.all():
        return batch
    out = batch.take(keep)
    out.tokens = batch.tokens
    return out
