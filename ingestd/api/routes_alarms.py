"""Alarms: active list, journal history, KPIs (scope read); ack, shelve, unshelve, out-of-service
(scope ack). The work is done by the alarm engine behind :class:`~ingestd.api.alarm_service.AlarmService`;
this module is HTTP only: auth, validation, tenant scoping, error mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from alarms.errors import MissingAudit, OperationError, ShelveRejected
from alarms.model import AlarmRecord, JournalEvent, Operator, Priority, ShelveKind, finite_or_none

from .context import ApiContext
from .errors import ApiError, OrjsonResponse
from .models import (
    AckRequest,
    ActionResult,
    AlarmPage,
    HistoryPage,
    KpiReport,
    OutOfServiceRequest,
    ShelveRequest,
    UnshelveRequest,
)
from .params import OptTime, cursor_int, cursor_str, decode_cursor, encode_cursor, parse_duration_s, time_range
from .security import Access, AckAccess, ReadAccess

__all__ = ["alarm_out", "operation_errors", "router"]

router = APIRouter(prefix="/v1/tenants/{tenant}/alarms", tags=["alarms"])

T = TypeVar("T")
_ACTION_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    409: {"description": "Refused in the alarm's current state (nothing to acknowledge, stale episode, ...)."},
    422: {"description": "Refused by policy (shelve duration above the maximum, reason missing, ...)."},
}


def alarm_out(r: AlarmRecord) -> dict[str, Any]:
    rule, _, tag = r.alarm_id.partition("@")
    s, o = r.shelve, r.oos
    return {
        "alarm_id": r.alarm_id, "tag": tag, "rule": rule, "state": r.state.value, "display_state": r.display_state,
        "priority": r.priority.value if r.priority is not None else None,
        "level": r.level.value if r.level is not None else None,
        "value": finite_or_none(r.value), "limit": finite_or_none(r.limit), "event_id": r.event_id,
        "active_since_us": r.active_since, "episode_since_us": r.episode_since, "acked_by": r.acked_by,
        "acked_at_us": r.acked_at,
        "shelved": None if s is None else {"kind": s.kind.value, "until_us": s.until, "user": s.user,
                                           "reason": s.reason, "at_us": s.at},
        "out_of_service": None if o is None else {"user": o.user, "reason": o.reason, "at_us": o.at},
        "suppressed": bool(r.sbd_groups) or r.sbd_grace_until is not None, "inhibited": r.inhibited,
        "chattering": r.chattering, "stale": r.stale,
    }


def _journal_out(e: JournalEvent) -> dict[str, Any]:
    return {
        "alarm_id": e.alarm_id, "seq": e.seq, "at_us": e.at, "kind": e.kind.value, "from_state": e.from_state.value,
        "to_state": e.to_state.value, "event_id": e.event_id,
        "priority": e.priority.value if e.priority is not None else None,
        "level": e.level.value if e.level is not None else None, "value": finite_or_none(e.value),
        "limit": finite_or_none(e.limit), "user": e.user, "comment": e.comment, "reason": e.reason,
    }


async def operation_errors(call: Awaitable[T]) -> T:
    """Map the engine's refusals to HTTP errors (see :mod:`ingestd.api.alarm_service`)."""
    try:
        return await call
    except LookupError:
        raise ApiError(404, "alarm not found", parameter="alarm_id") from None
    except (ShelveRejected, MissingAudit) as exc:
        raise ApiError(422, str(exc)) from None
    except OperationError as exc:
        raise ApiError(409, str(exc)) from None


def _operator(access: Access, user: str | None, comment: str) -> Operator:
    who = f"token:{access.principal.token_name}"
    return Operator(f"{user} ({who})" if user else who, comment)


def _checked(access: Access, rec: AlarmRecord) -> dict[str, Any]:
    if rec.tenant != access.tenant:  # defence in depth: an engine bug must not leak another tenant's alarm
        raise ApiError(404, "alarm not found", parameter="alarm_id")
    return {"alarm": alarm_out(rec)}


Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next` of the previous page.")]


@router.get("/active", response_model=AlarmPage,
            summary="Alarms that are not NORMAL, plus shelved/suppressed/out-of-service ones (most urgent first)")
async def active(
    request: Request, access: ReadAccess,
    priority: Annotated[Priority | None, Query(description="Only this priority.")] = None,
    unacked: Annotated[bool, Query(description="Only alarms awaiting acknowledgement.")] = False,
    limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    svc = ApiContext.of(request.app).alarms
    offset = cursor_int(decode_cursor(cursor, "alarms", access.tenant), "o") if cursor else 0
    if offset < 0:
        raise ApiError(400, "cursor: not a valid cursor for this list (start again without it)", parameter="cursor")
    recs = [r for r in await svc.list_active(access.tenant) if r.tenant == access.tenant
            and (priority is None or r.priority == priority) and (not unacked or r.state.unacked)]
    recs.sort(key=lambda r: (r.priority.rank if r.priority is not None else 9, -(r.active_since or 0), r.alarm_id))
    page = recs[offset: offset + limit]
    nxt = encode_cursor("alarms", access.tenant, {"o": offset + limit}) if offset + limit < len(recs) else None
    return OrjsonResponse({"items": [alarm_out(r) for r in page], "next": nxt})


@router.get("/history", response_model=HistoryPage, summary="Alarm journal (newest first)")
async def history(
    request: Request, access: ReadAccess,
    alarm_id: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
    start: OptTime = None, end: OptTime = None, limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    svc = ApiContext.of(request.app).alarms
    start_us, end_us = time_range(start, end, default_span_s=7 * 86400.0)
    engine_cursor = cursor_str(decode_cursor(cursor, "history", access.tenant), "c") if cursor else None
    events, nxt = await svc.history(access.tenant, alarm_id=alarm_id, start_us=start_us, end_us=end_us,
                                    limit=limit, cursor=engine_cursor)
    items = [_journal_out(e) for e in events[:limit] if e.tenant == access.tenant]
    return OrjsonResponse({"items": items,
                           "next": encode_cursor("history", access.tenant, {"c": nxt}) if nxt else None})


@router.get("/kpis", response_model=KpiReport, summary="Alarm-management KPIs (ISA-18.2 / EEMUA 191)")
async def kpis(request: Request, access: ReadAccess, start: OptTime = None, end: OptTime = None) -> Response:
    svc = ApiContext.of(request.app).alarms
    start_us, end_us = time_range(start, end, default_span_s=86400.0, max_span_s=366 * 86400.0)
    values = await svc.kpis(access.tenant, start_us=start_us, end_us=end_us)
    return OrjsonResponse({"start_us": start_us, "end_us": end_us, "kpis": dict(values)})


@router.post("/ack", response_model=ActionResult, responses=_ACTION_ERRORS, summary="Acknowledge an alarm")
async def ack(request: Request, access: AckAccess, body: AckRequest) -> Response:
    svc = ApiContext.of(request.app).alarms
    rec = await operation_errors(svc.ack(access.tenant, body.alarm_id, _operator(access, body.user, body.comment),
                                         event_id=body.event_id))
    return OrjsonResponse(_checked(access, rec))


@router.post("/shelve", response_model=ActionResult, responses=_ACTION_ERRORS,
             summary="Shelve an alarm (timed or one-shot; a reason is required)")
async def shelve(request: Request, access: AckAccess, body: ShelveRequest) -> Response:
    svc = ApiContext.of(request.app).alarms
    kind: Literal["timed", "one_shot"] = body.kind
    duration_us = None
    if kind == "timed":
        if body.duration is None:
            raise ApiError(400, "duration is required for timed shelving", parameter="duration")
        duration_us = int(parse_duration_s(body.duration, "duration") * 1e6)
        if duration_us <= 0:
            raise ApiError(400, "duration must be positive", parameter="duration")
    elif body.duration is not None:
        raise ApiError(400, "one-shot shelving takes no duration", parameter="duration")
    rec = await operation_errors(svc.shelve(access.tenant, body.alarm_id, _operator(access, body.user, body.reason),
                                            kind=ShelveKind(kind), duration_us=duration_us))
    return OrjsonResponse(_checked(access, rec))


@router.post("/unshelve", response_model=ActionResult, responses=_ACTION_ERRORS, summary="Unshelve an alarm")
async def unshelve(request: Request, access: AckAccess, body: UnshelveRequest) -> Response:
    svc = ApiContext.of(request.app).alarms
    rec = await operation_errors(svc.unshelve(access.tenant, body.alarm_id,
                                              _operator(access, body.user, body.comment)))
    return OrjsonResponse(_checked(access, rec))


@router.post("/out-of-service", response_model=ActionResult, responses=_ACTION_ERRORS,
             summary="Remove an alarm from service (maintenance) or return it to service")
async def out_of_service(request: Request, access: AckAccess, body: OutOfServiceRequest) -> Response:
    svc = ApiContext.of(request.app).alarms
    rec = await operation_errors(svc.set_out_of_service(
        access.tenant, body.alarm_id, _operator(access, body.user, body.reason),
        out_of_service=body.out_of_service))
    return OrjsonResponse(_checked(access, rec))
