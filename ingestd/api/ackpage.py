"""The signed "Acknowledge" link of Teams alarm cards: ``/v1/alarms/ack?t=&a=&e=&x=&s=``.

The link itself is the credential (HMAC-signed, expiring; see :mod:`alarms.links`), so no bearer token:

* ``GET`` only shows a confirmation page — it never acts (link previews, mail scanners and Teams'
  unfurling follow GETs);
* ``POST`` (the page's button) verifies the link again and acknowledges *that episode* (``event_id``),
  so a link from an older, closed episode cannot acknowledge a newer one (409).

Pages are self-contained HTML with every value escaped, ``Referrer-Policy: no-referrer`` (the signed
URL must not leak to other sites), no caching, no framing, and a CSP allowing nothing but inline style.
"""

from __future__ import annotations

import html
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from alarms.errors import LinkExpired, LinkInvalid, NothingToAcknowledge, OperationError, StaleEvent
from alarms.links import ACK_PATH, AckClaims
from alarms.model import Operator

from ..model import now_us
from .context import ApiContext
from .errors import ApiError
from .security import host_tenant

__all__ = ["router"]

router = APIRouter(tags=["alarms"])

_MAX_FORM: Final = 8192
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}
_STYLE: Final = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}"
                 "dt{font-weight:600}dd{margin:0 0 .6rem 0}button{font-size:1.1rem;padding:.5rem 1.4rem}"
                 "input{width:100%;padding:.3rem;margin:.2rem 0 .8rem}")
_HTML_RESPONSES: Final = {code: {"description": desc, "content": {"text/html": {"schema": {"type": "string"}}}}
                          for code, desc in ((200, "HTML page"), (403, "The link is not valid"),
                                             (404, "Unknown tenant or alarm"), (409, "Nothing to acknowledge"),
                                             (410, "The link has expired"), (413, "Form too large"),
                                             (503, "Alarm engine not running"))}

Param = Annotated[str, Query(min_length=1, max_length=512)]


def _page(status: int, title: str, body: str) -> HTMLResponse:
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
           f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)


def _details(c: AckClaims) -> str:
    return (f"<dl><dt>Alarm</dt><dd>{html.escape(c.alarm_id)}</dd><dt>Site</dt><dd>{html.escape(c.tenant)}</dd>"
            f"<dt>Event</dt><dd>{html.escape(c.event_id)}</dd></dl>")


def _verify(request: Request, t: str, a: str, e: str, x: str, s: str) -> AckClaims | HTMLResponse:
    ctx = ApiContext.of(request.app)
    svc = getattr(ctx.daemon, "alarm_service", None)
    if svc is None:
        return _page(503, "Alarm engine not running", "<p>Try again in a minute.</p>")
    try:
        claims: AckClaims = svc.verify_link({"t": t, "a": a, "e": e, "x": x, "s": s}, now_us())
    except LinkExpired:
        return _page(410, "Link expired", "<p>This acknowledge link has expired. Open the alarm list to "
                                          "acknowledge the alarm.</p>")
    except LinkInvalid:
        return _page(403, "Link not valid", "<p>This acknowledge link is not valid.</p>")
    if claims.tenant not in ctx.daemon.tenants:
        return _page(404, "Unknown site", "<p>This alarm belongs to a site this server does not serve.</p>")
    if ctx.options.tenant_from_host:
        named = host_tenant(request.headers.get("host", ""), ctx.options.base_host, ctx.tokens.tenants)
        if named is not None and named != claims.tenant:
            return _page(403, "Link not valid", "<p>This acknowledge link is not valid on this host.</p>")
    return claims


@router.get(ACK_PATH, response_class=HTMLResponse, responses=_HTML_RESPONSES,  # type: ignore[arg-type]
            summary="Confirmation page of a signed acknowledge link (never acknowledges)")
async def ack_link_page(request: Request, t: Param, a: Param, e: Param, x: Param, s: Param) -> Response:
    claims = _verify(request, t, a, e, x, s)
    if isinstance(claims, HTMLResponse):
        return claims
    form = ("<form method=post><label>Your name<input name=user maxlength=100 autocomplete=name></label>"
            "<label>Comment<input name=comment maxlength=1000></label>"
            "<button type=submit>Acknowledge</button></form>")
    return _page(200, "Acknowledge alarm?", _details(claims) + form)


async def _read_form(request: Request) -> dict[str, str]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM:
            raise ApiError(413, "form too large")
    fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}


@router.post(ACK_PATH, response_class=HTMLResponse, responses=_HTML_RESPONSES,  # type: ignore[arg-type]
             summary="Acknowledge through a signed link (the confirmation page's button)",
             openapi_extra={"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {
                 "schema": {"type": "object", "properties": {
                     "user": {"type": "string", "maxLength": 100}, "comment": {"type": "string", "maxLength": 1000},
                 }}}}}})
async def ack_link_submit(request: Request, t: Param, a: Param, e: Param, x: Param, s: Param) -> Response:
    claims = _verify(request, t, a, e, x, s)
    if isinstance(claims, HTMLResponse):
        return claims
    try:
        form = await _read_form(request)
    except (ApiError, ValueError):
        return _page(413, "Form too large", "<p>Please shorten the name or comment.</p>")
    user = "".join(ch for ch in form.get("user", "").strip()[:100] if ch.isprintable())
    comment = form.get("comment", "").strip()[:1000]
    op = Operator(f"{user} (ack link)" if user else "ack link", comment)
    svc = ApiContext.of(request.app).alarms
    try:
        await svc.ack(claims.tenant, claims.alarm_id, op, event_id=claims.event_id)
    except LookupError:
        return _page(404, "Unknown alarm", "<p>This alarm no longer exists.</p>" + _details(claims))
    except NothingToAcknowledge:
        return _page(200, "Already acknowledged", "<p>Nothing to do: the alarm is already acknowledged or "
                                                  "has cleared.</p>" + _details(claims))
    except StaleEvent:
        return _page(409, "Alarm has moved on", "<p>This link is for an earlier occurrence of the alarm, which "
                                                "is closed. Open the alarm list.</p>" + _details(claims))
    except OperationError as exc:
        return _page(409, "Not acknowledged", f"<p>{html.escape(str(exc))}</p>" + _details(claims))
    return _page(200, "Acknowledged", "<p>The alarm is acknowledged. Thank you.</p>" + _details(claims))
