"""Operations endpoints: ``/healthz`` (liveness, no auth), ``/readyz`` (the token's tenant: database and
sources), ``/metrics`` (Prometheus text; admin token → only its tenant's series, or open by option)."""

from __future__ import annotations

import re
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from .context import ApiContext
from .errors import ApiError, OrjsonResponse
from .models import Health, Readiness
from .security import Principal, bearer, principal
from .status import readiness

__all__ = ["filter_metrics", "router"]

router = APIRouter(tags=["operations"])

_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def filter_metrics(text: str, tenant: str, sources: set[str]) -> str:
    """Keep comments, process-wide series, and series labelled with this tenant and/or its sources only."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" not in line:
            out.append(line)
            continue
        labels = dict(_LABEL.findall(line[line.index("{"): line.rindex("}") + 1]))
        if "tenant" in labels and labels["tenant"] != tenant:
            continue
        if "source" in labels and labels["source"] not in sources:
            continue
        kind = labels.get("kind")
        if kind == "tenant_db" and labels.get("name") != tenant:
            continue
        if kind == "source" and labels.get("name") not in sources:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@router.get("/healthz", response_model=Health, summary="Liveness (no authentication)")
async def healthz() -> Response:
    return OrjsonResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz", response_model=Readiness, summary="Readiness of the token's tenant: database and sources",
            responses={503: {"model": Readiness, "description": "Not ready (see reasons)"}})
async def readyz(request: Request, p: Annotated[Principal, Depends(principal)]) -> Response:
    ctx = ApiContext.of(request.app)
    tp = ctx.pipeline(p.tenant)
    body = readiness(ctx.daemon, tp)
    return OrjsonResponse(body, status_code=200 if body["ready"] else 503, headers={"Cache-Control": "no-store"})


@router.get("/metrics", summary="Prometheus metrics (admin token: series of its tenant; or open)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Response:
    ctx = ApiContext.of(request.app)
    text = ctx.daemon.metrics.render()
    if ctx.options.metrics_auth == "open":
        return Response(text, media_type=CONTENT_TYPE_LATEST)
    p = await principal(request, creds)
    if not p.allows("admin"):
        raise ApiError(403, "this token lacks the 'admin' scope")
    tp = ctx.daemon.tenants.get(p.tenant)
    sources = {name for name, h in ctx.daemon.sources.items() if tp is not None and tp in h.route.tenants}
    return Response(filter_metrics(text.decode(), p.tenant, sources), media_type=CONTENT_TYPE_LATEST)
