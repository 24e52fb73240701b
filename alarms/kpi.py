"""Alarm-system KPIs of ISA-18.2 / IEC 62682 / EEMUA 191, computed from the journal of one tenant.

An *alarm* here is an annunciation: a journal row of an annunciating kind (ACTIVATED, REACTIVATED,
ESCALATED, REALARMED, REANNUNCIATED) recorded while the alarm was annunciated (not shelved, suppressed,
out of service or inhibited). Periods are aligned to ``start``: 10-minute buckets, hours and days.

=========================================  ===================  =================================
KPI                                        field                 target (very likely acceptable)
=========================================  ===================  =================================
annunciated alarms per 10 min (average)    avg_per_10min         ~1 (max manageable ~2)
% of 10-min periods with > 10 alarms       pct_10min_over_10     ~< 1 %
max alarms in a 10-min period              peak_10min            ≤ 10
% of hours with > 30 alarms                pct_hours_over_30     ~< 1 %
% of time in flood (≥10 start, <5 end)     pct_time_in_flood     ~< 1 %
chattering / fleeting alarms               chattering, fleeting  0
stale alarms (active > 24 h)               stale, days_over_5    < 5 present on any day
top-10 alarms' share of the load           top10_share           ~< 1 % … 5 %
priority distribution                      priority_pct          ~80 % low / 15 % medium / 5 % high
unauthorized changes                       unauthorized          0
=========================================  ===================  =================================
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .model import US, EventKind, JournalEvent
from .nuisance import fleeting_episodes, flood_intervals

__all__ = ["KpiReport", "compute_kpis"]

TEN_MIN = 600 * US
HOUR = 3600 * US
DAY = 86400 * US


@dataclass(frozen=True, slots=True)
class KpiReport:
    tenant: str | None
    start: int
    end: int
    annunciated: int
    avg_per_10min: float
    avg_per_hour: float
    avg_per_day: float
    pct_10min_over_10: float
    peak_10min: int
    pct_hours_over_30: float
    pct_time_in_flood: float
    floods: int
    chattering: int
    """Distinct alarms flagged chattering in the period."""
    fleeting: int
    stale: int
    """Distinct alarms flagged stale in the period."""
    max_stale_per_day: int
    days_over_5_stale: int
    top10: tuple[tuple[str, int], ...]
    top10_share: float
    priority_pct: dict[str, float] = field(default_factory=dict)
    unauthorized: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (what the query API's ``/alarms/kpis`` returns)."""
        d = asdict(self)
        d["top10"] = [{"alarm_id": a, "count": n} for a, n in self.top10]
        return d


def _pct(n: float, d: float) -> float:
    return 100.0 * n / d if d else 0.0


def compute_kpis(events: Iterable[JournalEvent], start: int, end: int, *, tenant: str | None = None,
                 flood_start: int = 10, flood_end: int = 5, flood_window_us: int = TEN_MIN,
                 fleeting_us: int = 2 * US) -> KpiReport:
    """KPIs over ``[start, end)`` (µs). ``events`` may hold several tenants; pass ``tenant`` to select one."""
    if end <= start:
        raise ValueError("end must be after start")
    evs = sorted((e for e in events if (tenant is None or e.tenant == tenant) and start <= e.at < end),
                 key=lambda e: (e.at, e.alarm_id, e.seq))
    alarms = [e for e in evs if e.kind.annunciates and e.annunciated]
    n = len(alarms)
    span = end - start
    n10, nh, nd = math.ceil(span / TEN_MIN), math.ceil(span / HOUR), math.ceil(span / DAY)
    per10 = Counter((e.at - start) // TEN_MIN for e in alarms)
    perh = Counter((e.at - start) // HOUR for e in alarms)

    flood_us = 0
    intervals = flood_intervals((e.at for e in alarms), start=flood_start, end=flood_end,
                                window_us=flood_window_us, until=end)
    for iv in intervals:
        flood_us += min(iv.end if iv.end is not None else end, end) - max(iv.start, start)

    by_alarm = Counter(e.alarm_id for e in alarms)
    top = tuple(by_alarm.most_common(10))
    prio = Counter(e.priority.value if e.priority else "unknown" for e in alarms)
    stale_per_day = _stale_per_day(evs, start, nd)
    return KpiReport(
        tenant=tenant, start=start, end=end, annunciated=n,
        avg_per_10min=n / n10, avg_per_hour=n / nh, avg_per_day=n / nd,
        pct_10min_over_10=_pct(sum(1 for c in per10.values() if c > 10), n10),
        peak_10min=max(per10.values(), default=0),
        pct_hours_over_30=_pct(sum(1 for c in perh.values() if c > 30), nh),
        pct_time_in_flood=_pct(flood_us, span), floods=len(intervals),
        chattering=len({e.alarm_id for e in evs if e.kind is EventKind.CHATTERING}),
        fleeting=sum(1 for _ in fleeting_episodes(sorted(evs, key=lambda e: (e.alarm_id, e.seq)), fleeting_us)),
        stale=len({e.alarm_id for e in evs if e.kind is EventKind.STALE}),
        max_stale_per_day=max(stale_per_day, default=0),
        days_over_5_stale=sum(1 for c in stale_per_day if c > 5),
        top10=top, top10_share=_pct(sum(c for _, c in top), n),
        priority_pct={k: _pct(v, n) for k, v in sorted(prio.items())},
        unauthorized=sum(1 for e in evs if e.kind is EventKind.OPERATION_DENIED),
    )


def _stale_per_day(evs: list[JournalEvent], start: int, nd: int) -> list[int]:
    """Distinct alarms stale at some moment of each day: from their STALE row until the condition clears."""
    open_: dict[str, int] = {}
    spans: list[tuple[str, int, int]] = []
    for e in evs:
        if e.kind is EventKind.STALE:
            open_.setdefault(e.alarm_id, e.at)
        elif e.alarm_id in open_ and (e.changes.get("cond") is False or e.kind is EventKind.DISABLED):
            spans.append((e.alarm_id, open_.pop(e.alarm_id), e.at))
    spans += [(a, t, start + nd * DAY) for a, t in open_.items()]
    days: list[set[str]] = [set() for _ in range(nd)]
    for alarm, t0, t1 in spans:
        for d in range((t0 - start) // DAY, min(nd, (max(t1 - 1, t0) - start) // DAY + 1)):
            days[d].add(alarm)
    return [len(s) for s in days]
