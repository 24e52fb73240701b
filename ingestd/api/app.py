"""The query API application (DESIGN §7): FastAPI routes, OpenAPI document, error format, metrics.

Endpoints (tenant in the path; the token must belong to it — see :mod:`ingestd.api.security`)::

    GET  /healthz                                   liveness, no auth
    GET  /readyz                                    the token's tenant: database + sources (503 if not)
    GET  /metrics                                   Prometheus text (admin token, filtered; or open)
    GET  /openapi.json                              this API's OpenAPI 3.1 document (no auth)
    GET  /v1/tenants/{t}/tags                       list/search tags (glob, substring, source, unit)
    GET  /v1/tenants/{t}/sources                    sources feeding the tenant, up/down now
    GET  /v1/tenants/{t}/sources/outages            outage windows (source_status)
    GET  /v1/tenants/{t}/latest                     latest values from the live cache (paged)
    POST /v1/tenants/{t}/latest                     latest values of up to 10,000 named tags
    GET  /v1/tenants/{t}/series                     raw / 1m / 1h / 1d / auto, max_points downsampling
    GET  /v1/tenants/{t}/changes                    change feed with an opaque resumable cursor
    GET  /v1/tenants/{t}/export                     CSV / NDJSON streaming export for ML
    GET  /v1/tenants/{t}/alarms/active|history|kpis
    POST /v1/tenants/{t}/alarms/ack|shelve|unshelve|out-of-service     (scope ack)
    GET  /v1/alarms/ack?t&a&e&x&s                   signed Teams link: confirmation page (never acts)
    POST /v1/alarms/ack?t&a&e&x&s                   signed Teams link: acknowledge
    WS   /v1/tenants/{t}/stream                     live values of subscribed tags

Why FastAPI (on uvicorn): the OpenAPI document is generated from the same pydantic models that
validate requests — pydantic is already how ingestd parses its configuration — so the contract that
schemathesis fuzzes in CI cannot drift from the code; and it is plain ASGI, so uvicorn runs it as a
task on the daemon's own event loop (no thread, no second loop). Hot endpoints return
:class:`~ingestd.api.errors.OrjsonResponse` directly (NumPy columns serialised by orjson) instead of
re-validating their output through pydantic.
"""

from __future__ import annotations

import time
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .ackpage import router as ack_router
from .context import ApiContext
from .errors import ErrorBody, OrjsonResponse, error_response, install_error_handlers
from .routes_alarms import router as alarms_router
from .routes_feed import router as feed_router
from .routes_ops import router as ops_router
from .routes_tags import router as tags_router
from .routes_values import router as values_router
from .ws import router as ws_router

__all__ = ["create_app", "openapi_document"]

MAX_BODY: Final = 2 * 1024 * 1024
_ERRORS: Final = {
    "400": "Bad parameter (the body names it)",
    "401": "Missing or invalid bearer token",
    "403": "Token lacks the scope, or the Host names another tenant",
    "404": "Tenant or resource not found",
    "503": "Tenant database or alarm engine unavailable",
}


class _Guard:
    """Pure ASGI middleware: request metrics by route template, and a request body size limit."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                await error_response(413, f"request body larger than {MAX_BODY} bytes")(scope, receive, send)
                return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                route = scope.get("route")
                label = getattr(route, "path", "unmatched")
                m = self.ctx.metrics
                m.seconds.labels(label).observe(time.perf_counter() - t0)
                m.requests.labels(label, str(status[0])).inc()
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with our error format instead of its 422 validation body."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if path == "/healthz" or path == "/openapi.json":
                continue
            codes = ("400", "413", "503") if path.startswith("/v1/alarms/") else (*tuple(_ERRORS), "413")
            for code in codes:
                if code not in responses:
                    responses[code] = {"description": _ERRORS.get(code, "Request body too large"), "content": ref}
                elif "content" not in responses[code]:
                    responses[code]["content"] = ref
    app.openapi_schema = doc
    return doc


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document without a running daemon (CI fuzzing, published docs)."""
    return create_app(None).openapi()


def create_app(ctx: ApiContext | None) -> FastAPI:
    app = FastAPI(
        title="ingestd query API",
        version="1",
        description="Tags, live values, series, alarms, change feed and export of one ingestd process. "
                    "Times are µs since the Unix epoch (UTC); errors are {\"error\", \"parameter\"}.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=OrjsonResponse,
    )
    app.state.ingestd = ctx
    install_error_handlers(app)
    for r in (ops_router, tags_router, values_router, feed_router, alarms_router, ack_router, ws_router):
        app.include_router(r)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if ctx is not None:
        app.add_middleware(_Guard, ctx=ctx)
    return app
