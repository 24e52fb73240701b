"""A fake Teams Workflows endpoint: a real HTTP/1.1 server on 127.0.0.1 (port 0), scripted per request.

It validates every body like the Workflows template does (message envelope, one Adaptive Card attachment,
AC 1.2, webhook-supported elements and actions only, ≤ 28 KB), records requests, and answers from a
script: a status code (with headers), ``reset`` (close the connection without answering) or ``hang`` (read
the request, never answer — the client times out). Unscripted requests get ``202 Accepted`` with an empty
body, like Workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Action", "FakeTeams", "Recorded", "validate_payload"]

_ELEMENTS = {"TextBlock", "FactSet", "ColumnSet", "Column", "Container", "Image", "ImageSet"}
_ACTIONS = {"Action.OpenUrl", "Action.ShowCard", "Action.ToggleVisibility"}
_REASONS = {202: "Accepted", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _elements(items: list[Any], errors: list[str], where: str) -> None:
    for k, el in enumerate(items):
        t = el.get("type") if isinstance(el, dict) else None
        if t not in _ELEMENTS:
            errors.append(f"{where}[{k}]: element type {t!r} not allowed")
            continue
        if t == "TextBlock" and not isinstance(el.get("text"), str):
            errors.append(f"{where}[{k}]: TextBlock without text")
        if t == "FactSet":
            for f in el.get("facts", []):
                if not (isinstance(f.get("title"), str) and isinstance(f.get("value"), str)):
                    errors.append(f"{where}[{k}]: fact must have string title and value")
        for key in ("items", "columns"):
            if isinstance(el.get(key), list):
                _elements(el[key], errors, f"{where}[{k}].{key}")


def validate_payload(raw: bytes) -> list[str]:
    """Problems a Teams Workflows "post card" flow would have with this body (empty list: fine)."""
    errors: list[str] = []
    if len(raw) > 28_000:
        errors.append(f"body is {len(raw)} bytes (> 28 KB)")
    try:
        doc = json.loads(raw)
    except ValueError:
        return [*errors, "body is not JSON"]
    if doc.get("type") != "message":
        errors.append("type must be 'message'")
    atts = doc.get("attachments")
    if not isinstance(atts, list) or len(atts) != 1:
        return [*errors, "exactly one attachment expected"]
    att = atts[0]
    if att.get("contentType") != "application/vnd.microsoft.card.adaptive":
        errors.append("contentType must be application/vnd.microsoft.card.adaptive")
    if "contentUrl" not in att or att["contentUrl"] is not None:
        errors.append("contentUrl must be null")
    card = att.get("content") or {}
    if card.get("type") != "AdaptiveCard" or card.get("version") != "1.2":
        errors.append("content must be an AdaptiveCard version 1.2")
    body = card.get("body")
    if not isinstance(body, list) or not body:
        errors.append("card body must be a non-empty list")
    else:
        _elements(body, errors, "body")
    for k, a in enumerate(card.get("actions", [])):
        if a.get("type") not in _ACTIONS:
            errors.append(f"actions[{k}]: {a.get('type')!r} is not supported by webhooks")
        if a.get("type") == "Action.OpenUrl" and not str(a.get("url", "")).startswith("https://"):
            errors.append(f"actions[{k}]: OpenUrl needs an https URL")
    return errors


@dataclass(frozen=True, slots=True)
class Action:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    hang: bool = False
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    errors: list[str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeTeams:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Action] = deque()
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """Looks like a Workflows URL, with a SAS signature that must never be logged."""
        return (f"http://127.0.0.1:{self.port}/workflows/5f1e/triggers/manual/paths/invoke"
                "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=TOPSECRETsig123")

    def push(self, *actions: Action | int) -> None:
        self.script.extend(a if isinstance(a, Action) else Action(a) for a in actions)

    async def __aenter__(self) -> FakeTeams:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n)
        return self.requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self._closing.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                action = self.script.popleft() if self.script else Action()
                rec = Recorded(method, path, headers, body, time.monotonic(), validate_payload(body))
                async with self._arrived:
                    self.requests.append(rec)
                    self._arrived.notify_all()
                if action.reset:
                    writer.transport.abort()
                    return
                if action.hang:
                    await self._closing.wait()
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in action.headers.items())
                writer.write(f"HTTP/1.1 {action.status} {_REASONS.get(action.status, 'Status')}\r\n"
                             f"Content-Length: {len(action.body)}\r\n{extra}\r\n".encode() + action.body)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError):
                writer.close()
