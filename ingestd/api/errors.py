"""JSON errors of the query API and the orjson response class.

Every error body is ``{"error": "<message>", "parameter": "<name>" | null}`` — validation errors name
the offending parameter, nothing else is ever echoed back (no tokens, no DSNs, no stack traces).

Mapping of exceptions to statuses::

    ApiError(status, ...)            the status it carries (400 bad parameter, 401, 403, 404, 409, 410, ...)
    RequestValidationError           400, naming the first invalid parameter
    StorageUnavailable               503 (tenant database unreachable; the body says which tenant)
    StorageSchemaError / StorageError  503 (database not migrated / unexpected storage failure)
    starlette HTTPException          its status (404 unknown route, 405 wrong method)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ..errors import StorageError, StorageUnavailable

__all__ = ["ApiError", "ErrorBody", "OrjsonResponse", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson: NumPy arrays serialised natively, NaN/inf as ``null``.

    (FastAPI's own ``ORJSONResponse`` is deprecated; this is the small equivalent.)"""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_ORJSON_OPTS)


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: str
    parameter: str | None = None


class ApiError(Exception):
    """An error answer: status, message safe to show, optionally the offending parameter."""

    def __init__(self, status: int, message: str, *, parameter: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


def error_response(status: int, message: str, parameter: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    return OrjsonResponse({"error": message, "parameter": parameter}, status_code=status, headers=dict(headers or {}))


def _parameter_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("query", "max_points")`` → ``max_points``; ``("body", "tags", 3)`` → ``tags[3]``."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "cookie", "body"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _validation_message(err: Mapping[str, Any], parameter: str | None) -> str:
    msg = str(err.get("msg", "invalid value"))
    kind = str(err.get("type", ""))
    if kind == "missing":
        return f"{parameter or 'a parameter'} is required"
    if kind in ("json_invalid", "model_attributes_type", "dict_type") and not parameter:
        return "the request body must be a JSON object"
    # pydantic's "Value error, <ours>" → "<ours>"
    msg = msg.removeprefix("Value error, ")
    return f"{parameter}: {msg}" if parameter else msg


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    parameter = _parameter_of(first.get("loc", ()))
    return error_response(400, _validation_message(first, parameter), parameter)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.parameter, exc.headers)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    messages = {404: "no such endpoint", 405: "method not allowed for this endpoint"}
    message = messages.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=exc.headers)


async def _on_storage(request: Request, exc: Exception) -> Response:
    # StorageError messages are redacted by the storage layer (no DSN, no password).
    if isinstance(exc, StorageUnavailable):
        log.warning("query API: %s", exc)
        return error_response(503, f"tenant database unavailable: {exc}", headers={"Retry-After": "5"})
    log.error("query API: storage error: %s", exc)
    return error_response(503, f"tenant database error: {exc}", headers={"Retry-After": "30"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(StorageError, _on_storage)
