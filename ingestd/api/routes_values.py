"""Latest values (from the live cache, no database round trip) and time series (raw or rollups)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ..model import now_us
from ..pipeline.tags import TagRegistry
from .context import ApiContext
from .errors import ApiError, OrjsonResponse
from .models import LatestQuery, LatestResponse, SeriesResponse
from .params import (
    GLOB_RE,
    OptTime,
    TagName,
    TagNames,
    cursor_int,
    decode_cursor,
    encode_cursor,
    parse_duration_s,
    time_range,
)
from .security import ReadAccess
from .series import Downsample, RequestedResolution, load_series

__all__ = ["live_items", "router"]

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["values"])

_MAX_MATCHED: Final = 10_000


def live_items(reg: TagRegistry, keys: npt.NDArray[np.intp], now: int, max_age_s: float | None) -> list[dict[str, Any]]:
    """Live-cache rows for tag ``keys`` (vectorised: ~1 µs per tag)."""
    if keys.shape[0] == 0:
        return []
    q = reg.live_quality[keys]
    has = q >= 0
    ts = reg.live_ts[keys]
    age = np.where(has, (now - ts) / 1e6, np.nan)
    stale = reg.stale[keys] | ~has
    if max_age_s is not None:
        stale |= has & (age > max_age_s)
    names = reg.names
    out = []
    for k, h, v, qq, st, t, rc, a, s in zip(
        keys.tolist(), has.tolist(), reg.live_value[keys].tolist(), q.tolist(), reg.live_status[keys].tolist(),
        ts.tolist(), reg.live_recv[keys].tolist(), age.tolist(), stale.tolist(), strict=True,
    ):
        if h:
            out.append({"tag": names[k], "value": None if v != v else v, "quality": qq, "status": st, "ts_us": t,
                        "recv_us": rc, "age_s": a, "stale": s})
        else:
            out.append({"tag": names[k], "value": None, "quality": None, "status": None, "ts_us": None,
                        "recv_us": None, "age_s": None, "stale": True})
    return out


def _select(reg: TagRegistry, tags: Sequence[str], patterns: Sequence[str]) -> tuple[list[int], list[str]]:
    """Keys of the named tags (request order) then of the pattern matches (name order); unknown names."""
    keys: list[int] = []
    seen: set[int] = set()
    missing = []
    for name in tags:
        k = reg.index.get(name)
        if k is None:
            missing.append(name)
        elif k not in seen:
            seen.add(k)
            keys.append(k)
    if patterns:
        rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
        matched = sorted(n for n in reg.names if rx.match(n))
        for name in matched:
            k = reg.index[name]
            if k not in seen:
                seen.add(k)
                keys.append(k)
    return keys, missing


def _max_age(text: str | None, parameter: str) -> float | None:
    return None if text is None else parse_duration_s(text, parameter)


@router.get("/latest", response_model=LatestResponse,
            summary="Latest value of tags from the live cache (quality, status, times, staleness)")
async def latest(
    request: Request, access: ReadAccess, tag: TagNames = None,
    match: Annotated[str | None, Query(pattern=GLOB_RE, description="Glob over tag names.")] = None,
    max_age: Annotated[str | None, Query(max_length=32, description="Flag values older than this stale, e.g. "
                                         "'5m'.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    reg = access.pipeline.registry
    age = _max_age(max_age, "max_age")
    if tag:
        keys, missing = _select(reg, tag, [match] if match else [])
    else:
        keys, missing = _select(reg, [], [match or "*"])
    offset = cursor_int(decode_cursor(cursor, "latest", access.tenant), "o") if cursor else 0
    if offset < 0:
        raise ApiError(400, "cursor: not a valid cursor for this list (start again without it)", parameter="cursor")
    page = keys[offset: offset + limit]
    nxt = encode_cursor("latest", access.tenant, {"o": offset + limit}) if offset + limit < len(keys) else None
    now = now_us()
    items = live_items(reg, np.asarray(page, dtype=np.intp), now, age)
    return OrjsonResponse({"now_us": now, "items": items, "missing": missing, "next": nxt})


@router.post("/latest", response_model=LatestResponse,
             summary="Latest values of up to 10,000 tags named in the body (too many for a URL)")
async def latest_bulk(access: ReadAccess, body: LatestQuery) -> Response:
    reg = access.pipeline.registry
    age = _max_age(body.max_age, "max_age")
    keys, missing = _select(reg, body.tags, body.match)
    if len(keys) > _MAX_MATCHED:
        raise ApiError(400, f"more than {_MAX_MATCHED} tags selected; narrow the patterns", parameter="match")
    now = now_us()
    items = live_items(reg, np.asarray(keys, dtype=np.intp), now, age)
    return OrjsonResponse({"now_us": now, "items": items, "missing": missing, "next": None})


@router.get("/series", response_model=SeriesResponse,
            summary="Time series of one or more tags: raw or 1m/1h/1d rollups, downsampled to max_points")
async def series(
    request: Request, access: ReadAccess,
    tag: Annotated[list[TagName], Query(min_length=1, max_length=100,
                                        description="Tag name (repeat for several tags).")],
    start: OptTime = None, end: OptTime = None,
    resolution: Annotated[RequestedResolution, Query(description="`auto` picks the finest resolution that "
                                                     "keeps each series within max_points.")] = "auto",
    max_points: Annotated[int, Query(ge=2, le=100_000, description="Most points per series.")] = 1000,
    downsample: Annotated[Downsample, Query(description="How raw series longer than max_points are reduced.")]
    = "minmax",
) -> Response:
    ctx = ApiContext.of(request.app)
    start_us, end_us = time_range(start, end, default_span_s=86400.0, max_span_s=20 * 366 * 86400.0)
    names = list(dict.fromkeys(tag))
    body = await load_series(ctx, access.tenant, names, start_us, end_us, resolution, max_points, downsample)
    return OrjsonResponse(body)
