"""The engine behind the query API's :class:`ingestd.api.alarm_service.AlarmService` protocol, and the
engine functions tests and tools call directly (``daemon.alarm_service.ack(...)``).

Every call is scoped to one tenant; unknown tenants and alarms raise ``KeyError`` (API: 404). Operator
actions are applied in memory at once and awaited (bounded) until their journal rows are committed.
History and KPIs read the tenant's journal (``StorageUnavailable`` → 503 while the database is down).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ingestd.model import now_us as _now_us

from . import store
from .errors import LinkInvalid
from .kpi import compute_kpis
from .links import AckClaims
from .model import AlarmRecord, JournalEvent, Operator, ShelveKind, us
from .tenant import ack_links

if TYPE_CHECKING:
    from .engine import AlarmExtension

__all__ = ["EngineService"]


class EngineService:
    def __init__(self, engine: AlarmExtension) -> None:
        self._engine = engine

    # ------------------------------------------------------------------------------------------ reading
    async def list_active(self, tenant: str) -> Sequence[AlarmRecord]:
        rt = self._engine.tenant(tenant)
        return [r for r in rt.core.listed() if r.tenant == tenant]

    async def history(self, tenant: str, *, alarm_id: str | None, start_us: int, end_us: int, limit: int,
                      cursor: str | None) -> tuple[Sequence[JournalEvent], str | None]:
        rt = self._engine.tenant(tenant)
        before = int(cursor) if cursor and cursor.isdigit() else None
        async with rt.db.connection() as conn:
            events, nxt = await store.journal_page(conn, tenant, alarm_id=alarm_id, start_us=start_us, end_us=end_us,
                                                   limit=limit, before_id=before)
        return events, (str(nxt) if nxt is not None else None)

    async def journal(self, tenant: str, *, alarm_ids: Sequence[str] | None = None) -> list[JournalEvent]:
        """Every journal row (optionally of some alarms) in per-alarm sequence order (replay, tests)."""
        rt = self._engine.tenant(tenant)
        async with rt.db.connection() as conn:
            return await store.journal_events(conn, tenant, alarm_ids=alarm_ids)

    async def kpis(self, tenant: str, *, start_us: int, end_us: int) -> Mapping[str, Any]:
        rt = self._engine.tenant(tenant)
        p = rt.cfg.alarms.policy_for(tenant)
        async with rt.db.connection() as conn:
            events = await store.journal_events(conn, tenant, start_us=start_us, end_us=end_us)
        report = compute_kpis(events, start_us, end_us, tenant=tenant, flood_start=p.flood.start,
                              flood_end=p.flood.end, flood_window_us=us(p.flood.window), fleeting_us=us(p.fleeting))
        return report.to_dict()

    # ------------------------------------------------------------------------------------------ actions
    async def ack(self, tenant: str, alarm_id: str, op: Operator, *, event_id: str | None = None) -> AlarmRecord:
        return await self._engine.tenant(tenant).ack(alarm_id, op, event_id=event_id)

    async def reset(self, tenant: str, alarm_id: str, op: Operator) -> AlarmRecord:
        return await self._engine.tenant(tenant).reset(alarm_id, op)

    async def shelve(self, tenant: str, alarm_id: str, op: Operator, *, kind: ShelveKind,
                     duration_us: int | None) -> AlarmRecord:
        return await self._engine.tenant(tenant).shelve(alarm_id, op, kind=kind, duration_us=duration_us)

    async def unshelve(self, tenant: str, alarm_id: str, op: Operator) -> AlarmRecord:
        return await self._engine.tenant(tenant).unshelve(alarm_id, op)

    async def set_out_of_service(self, tenant: str, alarm_id: str, op: Operator, *,
                                 out_of_service: bool) -> AlarmRecord:
        return await self._engine.tenant(tenant).set_out_of_service(alarm_id, op, out_of_service=out_of_service)

    def verify_link(self, query: Mapping[str, str], now_us: int | None = None) -> AckClaims:
        tenant = query.get("t", "")
        rt = self._engine.tenants.get(tenant)
        links = ack_links(rt.cfg, tenant) if rt is not None else None
        if links is None:
            raise LinkInvalid("acknowledge links are not configured for this site")
        return links.verify_query(query, _now_us() if now_us is None else now_us)


if TYPE_CHECKING:  # the engine satisfies the query API's protocol (checked by mypy)
    from ingestd.api.alarm_service import AlarmService

    def _conforms(engine: AlarmExtension) -> AlarmService:
        return EngineService(engine)
