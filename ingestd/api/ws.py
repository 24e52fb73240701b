"""``/v1/tenants/{tenant}/stream`` — live values over a WebSocket.

Authentication: ``Authorization: Bearer <token>`` on the handshake, or (browsers cannot set headers)
a first text message ``{"type": "auth", "token": "..."}`` within 10 s. Scope ``read``; the token's
tenant must be the path's tenant. Failures close with 1008 (policy violation) and no detail.

Client → server (JSON text)::

    {"type": "subscribe",   "tags": ["w1.tubing_pressure"], "patterns": ["w2.*"]}
    {"type": "unsubscribe", "tags": [...], "patterns": [...]}      or {"type": "unsubscribe", "all": true}
    {"type": "ping"}

Server → client::

    {"type": "subscribed", "count": 12, "unknown": ["not.yet.seen"]}
    {"type": "snapshot", "items": [<latest value objects as GET /latest>]}    after each subscribe
    {"type": "values", "tags": [...], "ts_us": [...], "value": [...], "quality": [...], "status": [...],
     "recv_us": [...], "sent_us": t}     columnar, as values arrive; recv_us = when ingestd received each
                                         value, sent_us = when this message was built (latency accounting)
    {"type": "dropped", "count": 3}      messages dropped because this client did not keep up
    {"type": "error", "error": "...", "parameter": "tags"}                  bad message (connection stays)
    {"type": "pong"}
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, Final

import numpy as np
import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..config.types import SLUG_RE, TAG_RE
from ..model import now_us
from .context import ApiContext
from .errors import ApiError
from .params import GLOB_RE
from .routes_values import live_items
from .security import authenticate
from .stream import StreamClient

__all__ = ["router"]

router = APIRouter()

_AUTH_TIMEOUT: Final = 10.0
_MAX_MESSAGE: Final = 1 << 20
_MAX_TAGS: Final = 10_000
_MAX_PATTERNS: Final = 100
_TAG: Final = re.compile(TAG_RE)
_GLOB: Final = re.compile(GLOB_RE)
_SLUG: Final = re.compile(SLUG_RE)
_POLICY: Final = 1008
_TRY_AGAIN: Final = 1013


def _strings(msg: dict[str, Any], key: str, limit: int, rx: re.Pattern[str]) -> list[str]:
    v = msg.get(key, [])
    if not isinstance(v, list) or len(v) > limit or not all(isinstance(x, str) and rx.fullmatch(x) for x in v):
        raise ApiError(400, f"{key} must be a list of at most {limit} valid names", parameter=key)
    return v


async def _receive_text(ws: WebSocket) -> str:
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(int(msg.get("code", 1000)))
    text = msg.get("text")
    if text is None:
        raw = msg.get("bytes") or b""
        text = raw.decode("utf-8", "replace")
    return str(text)


async def _send(ws: WebSocket, doc: dict[str, Any]) -> None:
    await ws.send_text(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode())


@router.websocket("/v1/tenants/{tenant}/stream")
async def stream(ws: WebSocket, tenant: str) -> None:
    ctx = ApiContext.of(ws.app)
    opts = ctx.options
    header = ws.headers.get("authorization")
    if ctx.hub.client_count >= opts.ws_max_clients:
        await ws.close(code=_TRY_AGAIN, reason="too many stream clients")
        return
    await ws.accept()
    try:
        if header is None:
            first = await asyncio.wait_for(_receive_text(ws), _AUTH_TIMEOUT)
            doc = orjson.loads(first) if len(first) < 4096 else None
            token = doc.get("token") if isinstance(doc, dict) and doc.get("type") == "auth" else None
            header = f"Bearer {token}" if isinstance(token, str) else ""
        credential, p = authenticate(ws.headers.get("host", ""), header, tokens=ctx.tokens,
                                     base_host=opts.base_host, tenant_from_host=opts.tenant_from_host)
    except (ApiError, TimeoutError, orjson.JSONDecodeError, WebSocketDisconnect):
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code=_POLICY, reason="not authorized")
        return
    tp = ctx.daemon.tenants.get(tenant)
    if not _SLUG.fullmatch(tenant) or p.tenant != tenant or not p.allows("read") or tp is None:
        await ws.close(code=_POLICY, reason="not authorized")
        return
    client = ctx.hub.add(tp, credential)
    try:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(_sender(ws, client, ctx), name=f"api:ws-send:{tenant}")
            await _receiver(ws, client, ctx)
            sender.cancel()
    except* (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        ctx.hub.remove(client)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await ws.close()


async def _receiver(ws: WebSocket, client: StreamClient, ctx: ApiContext) -> None:
    """Handle control messages until the client goes away (or the hub closes it)."""
    while not client.closed:
        text = await _receive_text(ws)
        tp = ctx.daemon.tenants.get(client.tenant)
        if tp is None:
            return
        try:
            if len(text) > _MAX_MESSAGE:
                raise ApiError(400, "message too large")
            msg = orjson.loads(text)
            if not isinstance(msg, dict):
                raise ApiError(400, "messages are JSON objects", parameter="type")
            kind = msg.get("type")
            if kind == "ping":
                client.push(b'{"type":"pong"}')
            elif kind == "subscribe":
                tags = _strings(msg, "tags", _MAX_TAGS, _TAG)
                patterns = _strings(msg, "patterns", _MAX_PATTERNS, _GLOB)
                count, unknown = ctx.hub.subscribe(client, tp, tags, patterns)
                client.push(orjson.dumps({"type": "subscribed", "count": count, "unknown": unknown}))
                keys = ctx.hub.subscribed_keys(client)
                items = live_items(tp.registry, keys.astype(np.intp), now_us(), None)
                client.push(orjson.dumps({"type": "snapshot", "items": items}))
            elif kind == "unsubscribe":
                if msg.get("all") is True:
                    ctx.hub.unsubscribe_all(client)
                    count = 0
                else:
                    count, _ = ctx.hub.subscribe(client, tp, _strings(msg, "tags", _MAX_TAGS, _TAG),
                                                 _strings(msg, "patterns", _MAX_PATTERNS, _GLOB), add=False)
                client.push(orjson.dumps({"type": "subscribed", "count": count, "unknown": []}))
            else:
                raise ApiError(400, "type must be subscribe, unsubscribe or ping", parameter="type")
        except orjson.JSONDecodeError:
            client.push(orjson.dumps({"type": "error", "error": "not JSON", "parameter": None}))
        except ApiError as exc:
            client.push(orjson.dumps({"type": "error", "error": exc.message, "parameter": exc.parameter}))


async def _sender(ws: WebSocket, client: StreamClient, ctx: ApiContext) -> None:
    sent_metric = ctx.metrics.ws_sent.labels(client.tenant)
    while True:
        await client.wake.wait()
        client.wake.clear()
        if client.closed:
            await ws.close(code=client.close_code)
            return
        while client.queue:
            if client.dropped:
                n, client.dropped = client.dropped, 0
                await _send(ws, {"type": "dropped", "count": n})
            msg = client.queue.popleft()
            await ws.send_text(msg.decode())
        if client.sent:
            sent_metric.inc(client.sent)
            client.sent = 0
