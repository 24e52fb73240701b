"""Change feed for offline-sync clients and bulk export for ML.

Change feed (``GET .../changes``) — cursor design:

* order: the batch ledger ``ingest_batches`` ordered by ``(txid, seq)``; a batch and its readings are
  committed in one transaction, so a ledger row that is visible has all its readings visible;
* only batches whose ``txid < pg_snapshot_xmin(pg_current_snapshot())`` are served: every transaction
  below the snapshot's xmin has ended, so no batch can ever appear *before* a position already served
  (no gaps), and each position is served once (no duplicates) — even while ingest runs;
* a page is whole batches up to ``limit`` readings (at least one batch); its readings are found through
  the BRIN index on ``readings.batch_seq`` within the batches' time range;
* the cursor is opaque (URL-safe base64 of JSON): tenant, last position (txid, seq), and ``t``, a lower
  bound of ``committed_at`` for every batch after the position (minus a skew allowance);
* the ledger is trimmed after 7 days (``committed_at`` older than that): when ``t`` is older than the
  trimming horizon, batches after the cursor may be gone → **410 Gone**; the client resyncs (export) and
  starts again without a cursor;
* without a cursor the feed starts at ``since`` (default: as far back as the ledger safely reaches).
"""

from __future__ import annotations

from typing import Annotated, Final

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from ..storage import queries
from .context import ApiContext
from .errors import ApiError, OrjsonResponse
from .export import ExportFormat, export_stream
from .models import ChangePage
from .params import (
    GLOB_RE,
    TIME_PATTERN,
    OptTime,
    TagNames,
    cursor_int,
    decode_cursor,
    encode_cursor,
    parse_time,
    time_range,
)
from .security import ReadAccess

__all__ = ["router"]

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["sync and export"])

KEEP_US: Final = int(queries.LEDGER_KEEP_S * 1e6)
SKEW_US: Final = 5 * 60 * 1_000_000
"""Allowance between commit order and ``committed_at`` (a write transaction's start time): ingest
transactions are bounded by the writer's timeout (30 s), far below this."""
START_MARGIN_US: Final = 3600 * 1_000_000
"""A fresh start stays this far inside the ledger's horizon, so its first cursor has time to be used."""
_MAX_BATCHES: Final = 5000
_QUALITY: Final = {"all": 2, "not_bad": 1, "good": 0}
_MAX_EXPORT_TAGS: Final = 10_000

_GONE = ("the change feed cursor has expired (the feed keeps {days:g} days of history); resynchronise "
         "with /export and start again without a cursor")


@router.get("/changes", response_model=ChangePage,
            summary="Readings committed since a cursor (offline sync): resumable, no gaps, no duplicates",
            responses={410: {"description": "The cursor is older than the feed's history."}})
async def changes(
    request: Request, access: ReadAccess,
    cursor: Annotated[str | None, Query(max_length=2048, description="`cursor` of the previous page.")] = None,
    since: Annotated[str | None, Query(min_length=1, max_length=64, pattern=TIME_PATTERN,
                                       description="Without cursor: start with batches committed from this "
                                       "time (RFC 3339 or relative like `-1h`; default: the oldest the feed "
                                       "keeps).")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most readings per page (whole batches; at "
                                "least one batch).")] = 10_000,
) -> Response:
    ctx = ApiContext.of(request.app)
    tenant = access.tenant
    async with ctx.db(tenant).connection() as conn:
        if cursor:
            doc = decode_cursor(cursor, "changes", tenant)
            pos = (cursor_int(doc, "x"), cursor_int(doc, "s"))
            bound = cursor_int(doc, "b")
        else:
            now = await queries.server_now_us(conn)
            floor = now - KEEP_US + START_MARGIN_US
            start = floor
            if since is not None:
                start = parse_time(since, "since", now=now)
                if start < floor:
                    raise ApiError(410, f"since: the change feed keeps {queries.LEDGER_KEEP_S / 86400:g} days; "
                                        "use /export for older data", parameter="since")
            pos = await queries.ledger_start(conn, start)
            bound = start - SKEW_US
        fetched, now = await queries.ledger_page(conn, pos, min(limit, _MAX_BATCHES) + 1)
        if bound < now - KEEP_US:
            raise ApiError(410, _GONE.format(days=queries.LEDGER_KEEP_S / 86400), parameter="cursor")
        chosen: list[queries.LedgerBatch] = []
        total = 0
        for b in fetched[:_MAX_BATCHES]:
            if chosen and total + b.rows > limit:
                break
            chosen.append(b)
            total += b.rows
        cols = await queries.page_readings(conn, chosen)
        names = await queries.tag_names(conn, np.unique(cols["tag_id"]).tolist()) if chosen else {}
    if chosen:
        last = chosen[-1]
        pos = (last.txid, last.seq)
        bound = max(bound, min(last.committed_us, now) - SKEW_US)
    else:
        bound = max(bound, now - SKEW_US)
    order_of = {b.seq: i for i, b in enumerate(chosen)}
    items = []
    if cols["ts"].shape[0]:
        rank = np.array([order_of[s] for s in cols["batch_seq"].tolist()], dtype=np.int64)
        order = np.lexsort((cols["ts"], cols["tag_id"], rank))
        for t, ts, v, q, st in zip(cols["tag_id"][order].tolist(), cols["ts"][order].tolist(),
                                   cols["value"][order].tolist(), cols["quality"][order].tolist(),
                                   cols["status"][order].tolist(), strict=True):
            items.append({"tag": names.get(t, f"#{t}"), "ts_us": ts, "value": None if v != v else v,
                          "quality": q, "status": st})
    nxt = encode_cursor("changes", tenant, {"x": pos[0], "s": pos[1], "b": bound})
    return OrjsonResponse({"items": items, "cursor": nxt, "has_more": len(fetched) > len(chosen),
                           "batches": len(chosen)})


_EXPORT_TYPES = {"text/csv": {"schema": {"type": "string"}},
                 "application/x-ndjson": {"schema": {"type": "string"}}}


@router.get("/export", summary="Stream raw readings with quality for ML (CSV or NDJSON), any size",
            response_class=StreamingResponse, responses={200: {"content": _EXPORT_TYPES}})
async def export(
    request: Request, access: ReadAccess, tag: TagNames = None,
    match: Annotated[str | None, Query(pattern=GLOB_RE, description="Glob over tag names.")] = None,
    start: OptTime = None, end: OptTime = None,
    format: Annotated[ExportFormat, Query(description="csv or ndjson")] = "csv",
    quality: Annotated[str, Query(pattern="^(all|not_bad|good)$", description="`all` (default), `not_bad` "
                                  "(GOOD and UNCERTAIN) or `good`.")] = "all",
) -> Response:
    ctx = ApiContext.of(request.app)
    if not tag and not match:
        raise ApiError(400, "name tags with tag=... or a pattern with match=...", parameter="tag")
    start_us, end_us = time_range(start, end, default_span_s=86400.0)
    db = ctx.db(access.tenant)
    chunk = ctx.options.export_chunk
    max_q = _QUALITY[quality]
    async with db.connection() as conn:
        found = await queries.tag_ids(conn, tag or [], glob=match, limit=_MAX_EXPORT_TAGS + 1)
        if len(found) > _MAX_EXPORT_TAGS:
            raise ApiError(400, f"more than {_MAX_EXPORT_TAGS} tags selected; narrow the pattern", parameter="match")
        ids = sorted(found.values())
        first = await queries.export_chunk(conn, ids, start_us, end_us, None, chunk, max_q) if ids else None
    names = {v: k for k, v in found.items()}
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    filename = f"{access.tenant}-export.{'csv' if format == 'csv' else 'ndjson'}"
    if not ids:
        body = b"tag,ts,value,quality,status\n" if format == "csv" else b""
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return StreamingResponse(
        export_stream(db, ids, names, start_us, end_us, max_q, format, chunk, first), media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
