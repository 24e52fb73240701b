"""Series planning: which relation answers a request, and how it is reduced to ``max_points``.

``resolution=auto`` takes raw readings when there are at most ``max_points`` per tag in the range,
else the finest rollup (1m → 1h → 1d) whose bucket count fits, else the coarsest rollup re-bucketed.
Where a rollup relation does not exist (rollups not built, or a database migrated before them) the
same bucket widths are computed from raw readings in SQL — slower, but the answer has the same shape.

Raw answers larger than ``max_points`` are downsampled in NumPy (min/max per bucket by default,
or LTTB); raw ranges with more than ``ApiOptions.raw_cap`` rows are aggregated in SQL instead of
being shipped to Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ..storage import queries
from .context import ApiContext
from .downsample import lttb, minmax, rebucket
from .errors import ApiError

__all__ = ["Downsample", "RequestedResolution", "load_series"]

RequestedResolution = Literal["auto", "raw", "1m", "1h", "1d"]
Downsample = Literal["minmax", "lttb"]

_ORDER: Final = ("1m", "1h", "1d")
_ROLLUP_COLS: Final = ("ts", "value", "min", "max", "sum", "count", "non_good")


def _split(cols: queries.Columns) -> dict[int, queries.Columns]:
    """Columns sorted by tag_id → per tag_id columns."""
    tag = cols["tag_id"]
    if tag.shape[0] == 0:
        return {}
    starts = np.flatnonzero(np.concatenate(([True], tag[1:] != tag[:-1])))
    ends = np.append(starts[1:], tag.shape[0])
    out: dict[int, queries.Columns] = {}
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        out[int(tag[s])] = {k: v[s:e] for k, v in cols.items() if k != "tag_id"}
    return out


def _raw_item(name: str, c: queries.Columns, max_points: int, how: Downsample, truncated: bool) -> dict[str, Any]:
    ts, value = c["ts"], c["value"]
    down: str | None = None
    if ts.shape[0] > max_points:
        idx = lttb(ts, value, max_points) if how == "lttb" else minmax(ts, value, max_points)
        down = how
        c = {k: v[idx] for k, v in c.items()}
    return {"tag": name, "resolution": "raw", "bucket_s": None, "downsampled": down, "truncated": truncated,
            "ts_us": c["ts"], "value": c["value"], "quality": c["quality"], "status": c["status"]}


def _rollup_item(name: str, resolution: str, c: queries.Columns, width_s: float, down: str | None,
                 truncated: bool) -> dict[str, Any]:
    return {"tag": name, "resolution": resolution, "bucket_s": width_s, "downsampled": down, "truncated": truncated,
            "ts_us": c["ts"], "value": c["value"], "min": c["min"], "max": c["max"], "count": c["count"],
            "non_good": c["non_good"]}


def _empty(kind: str) -> queries.Columns:
    if kind == "raw":
        return {"ts": np.empty(0, np.int64), "value": np.empty(0), "quality": np.empty(0, np.int16),
                "status": np.empty(0, np.int64)}
    return {"ts": np.empty(0, np.int64), "value": np.empty(0), "min": np.empty(0), "max": np.empty(0),
            "sum": np.empty(0), "count": np.empty(0, np.int64), "non_good": np.empty(0, np.int64)}


def _pick_rollup(span_s: float, max_points: int, available: frozenset[str]) -> tuple[str, bool]:
    """(resolution, exists) — the finest bucket width that fits; ``exists`` False means SQL aggregation."""
    for r in _ORDER:
        if span_s / queries.ROLLUPS[r][1] <= max_points:
            return r, r in available
    return "1d", "1d" in available


async def load_series(ctx: ApiContext, tenant: str, names: Sequence[str], start_us: int, end_us: int,
                      resolution: RequestedResolution, max_points: int, how: Downsample) -> dict[str, Any]:
    db = ctx.db(tenant)
    span_s = (end_us - start_us) / 1e6
    async with db.connection() as conn:
        ids = await queries.tag_ids(conn, names)
        missing = [n for n in names if n not in ids]
        found = [n for n in names if n in ids]
        id_list = [ids[n] for n in found]
        items: list[dict[str, Any]] = []
        if not id_list:
            return {"start_us": start_us, "end_us": end_us, "items": items, "missing": missing}
        available = await ctx.rollups(tenant, conn) if resolution != "raw" else frozenset()
        chosen: str = resolution
        if resolution == "auto":
            fits = min(max_points * len(id_list), ctx.options.raw_cap)
            n_raw = await queries.count_raw(conn, id_list, start_us, end_us, fits + 1)
            chosen = "raw" if n_raw <= fits else _pick_rollup(span_s, max_points, available)[0]
        if chosen == "raw":
            items = await _raw(ctx, conn, found, ids, start_us, end_us, max_points, how)
        else:
            items = await _rollup(ctx, conn, chosen, chosen in available, found, ids, start_us, end_us, max_points)
    return {"start_us": start_us, "end_us": end_us, "items": items, "missing": missing}


async def _raw(ctx: ApiContext, conn: Any, found: Sequence[str], ids: dict[str, int], start_us: int, end_us: int,
               max_points: int, how: Downsample) -> list[dict[str, Any]]:
    cap = ctx.options.raw_cap
    id_list = [ids[n] for n in found]
    n = await queries.count_raw(conn, id_list, start_us, end_us, cap + 1)
    if n > cap:
        # too much to ship to Python: aggregate in SQL into ~max_points buckets per tag
        width_us = max(1, math.ceil((end_us - start_us) / max_points))
        per_tag = _split(await queries.raw_bucketed(conn, id_list, start_us, end_us, width_us))
        return [_rollup_item(name, "raw", per_tag.get(ids[name], _empty("rollup")), width_us / 1e6, "sql", False)
                for name in found]
    per_tag = _split(await queries.raw_series(conn, id_list, start_us, end_us, cap))
    return [_raw_item(name, per_tag.get(ids[name], _empty("raw")), max_points, how, False) for name in found]


async def _rollup(ctx: ApiContext, conn: Any, resolution: str, exists: bool, found: Sequence[str],
                  ids: dict[str, int], start_us: int, end_us: int, max_points: int) -> list[dict[str, Any]]:
    width_s = queries.ROLLUPS[resolution][1]
    width_us = width_s * 1_000_000
    id_list = [ids[n] for n in found]
    buckets = math.ceil((end_us - start_us) / width_us)
    cap = ctx.options.raw_cap
    if buckets * len(id_list) > cap * 4:
        raise ApiError(400, f"{buckets} {resolution} buckets per tag is too many; use a coarser resolution, "
                            "'auto', or a shorter range", parameter="resolution")
    aligned = start_us - start_us % width_us
    if exists:
        cols, truncated = await _fresh_rollup(conn, resolution, id_list, aligned, end_us, width_us, cap * 4)
        down = None
    else:
        cols = await queries.raw_bucketed(conn, id_list, aligned, end_us, width_us)
        truncated = False
        down = "sql"
    per_tag = _split(cols)
    out = []
    for name in found:
        c = per_tag.get(ids[name], _empty("rollup"))
        item_width, item_down = float(width_s), down
        if c["ts"].shape[0] > max_points:
            base = {k: c[k] for k in _ROLLUP_COLS}
            factor = math.ceil(c["ts"].shape[0] / max_points)
            while True:  # epoch-aligned wider buckets; alignment may add one bucket, then widen again
                new_width = width_us * factor
                c = rebucket(base, aligned - aligned % new_width, new_width)
                if c["ts"].shape[0] <= max_points:
                    break
                factor += 1
            item_width, item_down = new_width / 1e6, "rebucket"
        out.append(_rollup_item(name, resolution, _native(c), item_width, item_down, truncated))
    return out


async def _fresh_rollup(conn: Any, resolution: str, ids: list[int], start_us: int, end_us: int, width_us: int,
                        limit: int) -> tuple[queries.Columns, bool]:
    """Rollup rows, with the buckets that hold not-yet-folded readings (the refresher runs every minute,
    late data can be older) recomputed from raw readings, so a chart never lags behind ingest."""
    fresh = await queries.rollup_fresh_from(conn)
    cut = end_us if fresh is None else max(start_us, min(end_us, fresh - fresh % width_us))
    cols = await queries.rollup_series(conn, resolution, ids, start_us, cut, limit) if cut > start_us else None
    truncated = cols is not None and cols["tag_id"].shape[0] >= limit
    if cut >= end_us and cols is not None:
        return cols, truncated
    tail = await queries.raw_bucketed(conn, ids, cut, end_us, width_us)
    if cols is None:
        return tail, truncated
    merged = {k: np.concatenate((cols[k], tail[k])) for k in cols}
    order = np.lexsort((merged["ts"], merged["tag_id"]))
    return {k: v[order] for k, v in merged.items()}, truncated


def _native(c: queries.Columns) -> queries.Columns:
    out: dict[str, npt.NDArray[Any]] = {}
    for k, v in c.items():
        out[k] = np.ascontiguousarray(v)
    return out
