"""The interface the query API needs from the alarm engine (implemented by ``alarms/``).

The API finds it as ``daemon.alarm_service``; while that is ``None`` (alarm engine not configured or
not started) every alarm endpoint answers 503 ``{"error": "the alarm engine is not running"}``.

Contract for implementations:

* every call is scoped to ``tenant`` — the API has already checked the caller's token against it,
  and an implementation must never return or change another tenant's alarms;
* unknown alarms raise ``LookupError`` (``KeyError`` is fine) → 404;
* refused operations raise :mod:`alarms.errors` types: ``NothingToAcknowledge`` / ``StaleEvent`` /
  ``InvalidOperation`` → 409, ``ShelveRejected`` / ``MissingAudit`` → 422; link problems raise
  ``LinkInvalid`` → 403 and ``LinkExpired`` → 410;
* operator actions are journaled by the engine with ``op.user`` and ``op.comment``;
* ``history`` pages are the engine's business: it returns an opaque cursor for the next page (or None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from alarms.links import AckClaims
from alarms.model import AlarmRecord, JournalEvent, Operator, ShelveKind

__all__ = ["AlarmService"]


@runtime_checkable
class AlarmService(Protocol):
    async def list_active(self, tenant: str) -> Sequence[AlarmRecord]:
        """Every alarm that is not NORMAL, plus shelved, suppressed and out-of-service ones."""

    async def history(self, tenant: str, *, alarm_id: str | None, start_us: int, end_us: int, limit: int,
                      cursor: str | None) -> tuple[Sequence[JournalEvent], str | None]:
        """Journal events in [start, end), newest first, at most ``limit``; and the next page's cursor."""

    async def kpis(self, tenant: str, *, start_us: int, end_us: int) -> Mapping[str, Any]:
        """ISA-18.2 / EEMUA 191 KPIs over [start, end) as a JSON-ready mapping."""

    async def ack(self, tenant: str, alarm_id: str, op: Operator, *, event_id: str | None = None) -> AlarmRecord:
        """Acknowledge; with ``event_id`` only if that episode is still the current one."""

    async def shelve(self, tenant: str, alarm_id: str, op: Operator, *, kind: ShelveKind,
                     duration_us: int | None) -> AlarmRecord: ...

    async def unshelve(self, tenant: str, alarm_id: str, op: Operator) -> AlarmRecord: ...

    async def set_out_of_service(self, tenant: str, alarm_id: str, op: Operator, *,
                                 out_of_service: bool) -> AlarmRecord:
        """Remove from service (``True``) or return to service (``False``)."""

    def verify_link(self, query: Mapping[str, str], now_us: int) -> AckClaims:
        """Verify a signed acknowledge link's query (``t``, ``a``, ``e``, ``x``, ``s``)."""
