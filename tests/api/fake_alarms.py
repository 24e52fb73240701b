"""An in-test AlarmService: real alarm state machine and real signed links, records in memory.

It records every call so tests can prove that GETs never act and that a token of one tenant never
reaches the engine for another tenant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alarms import state
from alarms.links import AckClaims, AckLinks
from alarms.model import AlarmPolicy, AlarmRecord, Condition, JournalEvent, Level, Operator, ShelveKind
from ingestd.model import now_us

SECRET = "0123456789abcdef0123456789abcdef"


class FakeAlarms:
    def __init__(self, public_url: str = "https://api.example.com") -> None:
        self.links = AckLinks(SECRET, public_url, ttl_s=3600)
        self.policy = AlarmPolicy(max_shelve_us=3600 * 1_000_000)
        self.records: dict[tuple[str, str], AlarmRecord] = {}
        self.journal: list[JournalEvent] = []
        self.calls: list[tuple[str, str, str]] = []
        self.leak: AlarmRecord | None = None
        """A record of another tenant that a buggy engine would return (the API must filter it)."""

    def raise_alarm(self, tenant: str, alarm_id: str, value: float = 900.0, at: int | None = None) -> AlarmRecord:
        rec = self.records.get((tenant, alarm_id), AlarmRecord(alarm_id, tenant))
        out = state.on_condition(rec, Condition(True, at or now_us(), Level.HI, value, 800.0), self.policy)
        self._apply(out)
        return out.record

    def _apply(self, out: Any) -> AlarmRecord:
        rec: AlarmRecord = out.record
        self.records[(rec.tenant, rec.alarm_id)] = rec
        self.journal.extend(out.events)
        return rec

    def _get(self, tenant: str, alarm_id: str) -> AlarmRecord:
        return self.records[(tenant, alarm_id)]  # KeyError → 404

    # ------------------------------------------------------------------ AlarmService
    async def list_active(self, tenant: str) -> Sequence[AlarmRecord]:
        self.calls.append(("list_active", tenant, ""))
        out = [r for (t, _), r in self.records.items() if t == tenant and r.display_state != "NORMAL"]
        if self.leak is not None:
            out.append(self.leak)
        return out

    async def history(self, tenant: str, *, alarm_id: str | None, start_us: int, end_us: int, limit: int,
                      cursor: str | None) -> tuple[Sequence[JournalEvent], str | None]:
        self.calls.append(("history", tenant, alarm_id or ""))
        rows = [e for e in reversed(self.journal) if e.tenant == tenant and start_us <= e.at < end_us
                and (alarm_id is None or e.alarm_id == alarm_id)]
        offset = int(cursor) if cursor else 0
        page = rows[offset: offset + limit]
        return page, (str(offset + limit) if offset + limit < len(rows) else None)

    async def kpis(self, tenant: str, *, start_us: int, end_us: int) -> Mapping[str, Any]:
        self.calls.append(("kpis", tenant, ""))
        n = sum(1 for e in self.journal if e.tenant == tenant and e.kind.annunciates and start_us <= e.at < end_us)
        return {"annunciated": n, "per_10_min_max": n}

    async def ack(self, tenant: str, alarm_id: str, op: Operator, *, event_id: str | None = None) -> AlarmRecord:
        self.calls.append(("ack", tenant, alarm_id))
        return self._apply(state.acknowledge(self._get(tenant, alarm_id), op, self.policy, now_us(),
                                             event_id=event_id))

    async def shelve(self, tenant: str, alarm_id: str, op: Operator, *, kind: ShelveKind,
                     duration_us: int | None) -> AlarmRecord:
        self.calls.append(("shelve", tenant, alarm_id))
        return self._apply(state.shelve(self._get(tenant, alarm_id), op, self.policy, now_us(), kind=kind,
                                        duration_us=duration_us))

    async def unshelve(self, tenant: str, alarm_id: str, op: Operator) -> AlarmRecord:
        self.calls.append(("unshelve", tenant, alarm_id))
        return self._apply(state.unshelve(self._get(tenant, alarm_id), op, self.policy, now_us()))

    async def set_out_of_service(self, tenant: str, alarm_id: str, op: Operator, *,
                                 out_of_service: bool) -> AlarmRecord:
        self.calls.append(("oos" if out_of_service else "in_service", tenant, alarm_id))
        fn = state.remove_from_service if out_of_service else state.return_to_service
        return self._apply(fn(self._get(tenant, alarm_id), op, self.policy, now_us()))

    def verify_link(self, query: Mapping[str, str], now_us: int) -> AckClaims:
        self.calls.append(("verify_link", query.get("t", ""), query.get("a", "")))
        return self.links.verify_query(query, now_us)

    # ------------------------------------------------------------------ helpers
    def acting_calls(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] in ("ack", "shelve", "unshelve", "oos", "in_service")]
