"""Tags (metadata, search) and sources (current state, outage windows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ..storage import queries
from .context import ApiContext
from .errors import OrjsonResponse
from .models import OutagePage, SourcesResponse, TagPage
from .params import GLOB_RE, OptTime, cursor_int, cursor_str, decode_cursor, encode_cursor, time_range
from .security import ReadAccess
from .status import source_states

__all__ = ["router"]

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["tags and sources"])

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next` of the previous page.")]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/tags", response_model=TagPage, summary="List and search tags with their metadata")
async def list_tags(
    request: Request, access: ReadAccess,
    match: Annotated[str | None, Query(pattern=GLOB_RE, description="Glob over names: `*` any run, `?` one "
                                       "character, e.g. `well_1*.pressure`.")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200,
                                   description="Case-insensitive substring of the name.")] = None,
    source: Text = None, unit: Text = None, limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    ctx = ApiContext.of(request.app)
    after = cursor_str(decode_cursor(cursor, "tags", access.tenant), "n") if cursor else None
    async with ctx.db(access.tenant).connection() as conn:
        rows = await queries.search_tags(conn, glob=match, contains=q, source=source, unit=unit, after=after,
                                         limit=limit + 1)
    live = access.pipeline.registry.index
    items = [{"name": r.name, "source": r.source, "unit": r.unit, "data_type": r.data_type,
              "description": r.description, "meta": dict(r.meta), "created_us": r.created_us,
              "updated_us": r.updated_us, "live": r.name in live} for r in rows[:limit]]
    nxt = encode_cursor("tags", access.tenant, {"n": rows[limit - 1].name}) if len(rows) > limit else None
    return OrjsonResponse({"items": items, "next": nxt})


@router.get("/sources", response_model=SourcesResponse, summary="Sources feeding this tenant, with their state")
async def list_sources(request: Request, access: ReadAccess) -> Response:
    ctx = ApiContext.of(request.app)
    return OrjsonResponse({"items": source_states(ctx.daemon, access.pipeline)})


@router.get("/sources/outages", response_model=OutagePage,
            summary="Outage windows: when a source or device was not collecting (newest first)")
async def list_outages(
    request: Request, access: ReadAccess,
    source: Annotated[str | None, Query(min_length=1, max_length=200, description="Only this source.")] = None,
    start: OptTime = None, end: OptTime = None, limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    ctx = ApiContext.of(request.app)
    start_us, end_us = time_range(start, end, default_span_s=30 * 86400.0)
    after = cursor_int(decode_cursor(cursor, "outages", access.tenant), "id") if cursor else None
    async with ctx.db(access.tenant).connection() as conn:
        rows = await queries.list_outages(conn, sources=[source] if source else None, start_us=start_us,
                                          end_us=end_us, after_id=after, limit=limit + 1)
    items = [{"id": r.id, "source": r.source, "device": r.device, "down_us": r.down_us, "up_us": r.up_us,
              "reason": r.reason} for r in rows[:limit]]
    nxt = encode_cursor("outages", access.tenant, {"id": rows[limit - 1].id}) if len(rows) > limit else None
    return OrjsonResponse({"items": items, "next": nxt})
