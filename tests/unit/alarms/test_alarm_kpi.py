"""Scenario 35: KPIs over a synthetic 30-day journal, against hand-computed expectations.

The journal (tenant ``acme``, 2026-01-01 00:00Z + 30 days):

* steady load: one LOW alarm at hh:05 every hour (720), rotating over 20 alarm ids (36 each);
* day 10, 12:00:00: 40 distinct MEDIUM alarms, one every 6 s (12:00:00 … 12:03:54);
* day 20, 12:00:00: 25 distinct HIGH alarms, one every 6 s (12:00:00 … 12:02:24);
* hours 100 and 200: the steady alarm clears 1 s after activating without an ack (fleeting);
* one alarm flagged CHATTERING twice; six alarms STALE on day 5 at 08:00, cleared on day 6 at 12:00;
* one OPERATION_DENIED; non-annunciated activations (shelved) that must not count; another tenant's rows.
"""

from __future__ import annotations

import json

import pytest

from alarms.kpi import compute_kpis
from alarms.model import US, AlarmState, EventKind, JournalEvent, Priority
from alarms.testing import T0

H = 3600 * US
D = 24 * H
S = AlarmState


def ev(alarm: str, at: int, kind: EventKind, *, prio: Priority = Priority.LOW, annunciated: bool = True,
       tenant: str = "acme", seq: int = 1, from_state: S = S.NORMAL, to_state: S = S.UNACK_ACTIVE,
       changes: dict[str, object] | None = None) -> JournalEvent:
    return JournalEvent(alarm, tenant, seq, at, kind, from_state, to_state, "evt-x", 1, prio,
                        annunciated=annunciated and kind.annunciates, changes=changes or {})


def journal() -> list[JournalEvent]:
    out: list[JournalEvent] = []
    seq: dict[str, int] = {}

    def add(alarm: str, at: int, kind: EventKind, **kw: object) -> None:
        seq[alarm] = seq.get(alarm, 0) + 1
        out.append(ev(alarm, at, kind, seq=seq[alarm], **kw))  # type: ignore[arg-type]

    for h in range(720):
        a = f"steady{h % 20}"
        add(a, T0 + h * H + 5 * 60 * US, EventKind.ACTIVATED)
        if h in (100, 200):
            add(a, T0 + h * H + 5 * 60 * US + US, EventKind.CLEARED, from_state=S.UNACK_ACTIVE,
                to_state=S.RTN_UNACK, changes={"cond": False})
    for k in range(40):
        add(f"burst{k}", T0 + 10 * D + 12 * H + k * 6 * US, EventKind.ACTIVATED, prio=Priority.MEDIUM)
    for k in range(25):
        add(f"b2_{k}", T0 + 20 * D + 12 * H + k * 6 * US, EventKind.ACTIVATED, prio=Priority.HIGH)
    add("steady3", T0 + 3 * D, EventKind.CHATTERING)
    add("steady3", T0 + 4 * D, EventKind.CHATTERING)
    for k in range(6):
        add(f"stale{k}", T0 + 5 * D + 8 * H, EventKind.STALE)
        add(f"stale{k}", T0 + 6 * D + 12 * H, EventKind.CLEARED, changes={"cond": False})
    add("steady1", T0 + 7 * D, EventKind.OPERATION_DENIED)
    for k in range(50):  # shelved: evaluated and journaled, not annunciated
        add("shelved", T0 + 15 * D + k * US, EventKind.ACTIVATED, annunciated=False)
    add("other", T0 + 2 * D, EventKind.ACTIVATED, tenant="other")
    return out


def test_s35_kpis_over_a_synthetic_30_day_journal() -> None:
    r = compute_kpis(journal(), T0, T0 + 30 * D, tenant="acme")
    total = 720 + 40 + 25
    assert r.annunciated == total
    assert r.avg_per_10min == pytest.approx(total / 4320)
    assert r.avg_per_hour == pytest.approx(total / 720)
    assert r.avg_per_day == pytest.approx(total / 30)
    # 10-min buckets: day 10 12:00-12:10 holds 40 + the 12:05 steady alarm = 41; day 20: 25 + 1 = 26
    assert r.peak_10min == 41
    assert r.pct_10min_over_10 == pytest.approx(100 * 2 / 4320)
    assert r.pct_hours_over_30 == pytest.approx(100 * 1 / 720)  # 41 in day 10 hour 12; 26 < 30 on day 20
    # flood 1: starts at the 10th burst alarm (12:00:54); ends when burst #36 (12:03:36) ages out at 12:13:36,
    # leaving #37, #38, #39 and the 12:05 steady alarm (4 < 5): 12 min 42 s = 762 s.
    # flood 2: starts 12:00:54; ends when #21 (12:02:06) ages out at 12:12:06: 11 min 12 s = 672 s.
    assert r.floods == 2
    assert r.pct_time_in_flood == pytest.approx(100 * (762 + 672) / (30 * 86400))
    assert r.top10_share == pytest.approx(100 * 10 * 36 / total)
    assert r.top10[0][1] == 36 and len(r.top10) == 10
    assert r.priority_pct == pytest.approx({"high": 100 * 25 / total, "low": 100 * 720 / total,
                                            "medium": 100 * 40 / total})
    assert r.chattering == 1
    assert r.fleeting == 2
    assert r.stale == 6 and r.max_stale_per_day == 6 and r.days_over_5_stale == 2  # days 5 and 6
    assert r.unauthorized == 1
    d = json.loads(json.dumps(r.to_dict()))
    assert d["annunciated"] == total and d["top10"][0]["count"] == 36


def test_kpis_empty_and_invalid_period() -> None:
    r = compute_kpis([], T0, T0 + D)
    assert (r.annunciated, r.peak_10min, r.top10_share, r.pct_time_in_flood) == (0, 0, 0.0, 0.0)
    with pytest.raises(ValueError):
        compute_kpis([], T0, T0)
