"""Notification planning: grouping (41), fleeting (23), ack before send (38), flood cards (34), burst
coalescing (47), silences vs shelving (50), escalation routing (51)."""

from __future__ import annotations

import itertools

from alarms.config import AlarmsConfig
from alarms.dispatch import Delivery, Dispatcher, Silence
from alarms.kpi import compute_kpis
from alarms.model import US, AlarmPolicy, AlarmState, IntentKind, Level, NotificationIntent, NotifyTiming, Priority
from alarms.testing import T0, AlarmHarness

S = 1_000_000


def config(**route: object) -> AlarmsConfig:
    base: dict[str, object] = {"name": "oncall", "tenant": "acme", "webhook": "env:HOOK", "group_wait": "30s",
                               "group_interval": "5m", "escalate_to": "boss", "escalate_after": "15m"}
    base.update(route)
    return AlarmsConfig.model_validate({
        "routes": [base, {"name": "boss", "tenant": "acme", "priorities": [], "webhook": "env:BOSS"}],
        "defaults": {"flood": {"summary_interval": "5m"}},
    })


def intent(n: int, kind: IntentKind = IntentKind.RAISE, *, at: int = T0, site: str = "pad_7",
           prio: Priority = Priority.HIGH, reason: str = "activated", event: str | None = None,
           seq: int = 1, annunciation: bool | None = None) -> NotificationIntent:
    return NotificationIntent(
        kind=kind, reason=reason, tenant="acme", alarm_id=f"hi@{site}/t{n}", event_id=event or f"evt-{n}", seq=seq,
        occurrence=1, at=at, priority=prio, state=AlarmState.UNACK_ACTIVE, level=Level.HI, value=1.0, limit=0.5,
        since=at, tag=f"{site}/t{n}", rule="hi", rule_kind="limit", site=site,
        annunciation=(kind is IntentKind.RAISE) if annunciation is None else annunciation)


def run(d: Dispatcher, until: int) -> list[Delivery]:
    out: list[Delivery] = []
    while (t := d.next_deadline()) is not None and t <= until:
        out += d.tick(t)
    return out


def test_s41_grouping_within_group_wait_then_group_interval() -> None:
    d = Dispatcher(config())
    for k in range(5):
        assert d.submit(intent(k, at=T0 + k * S), T0 + k * S) == []
    first = run(d, T0 + 60 * S)
    assert len(first) == 1 and first[0].at == T0 + 30 * S and len(first[0].intents) == 5
    assert first[0].group == "pad_7" and first[0].key.startswith("grp-")
    d.submit(intent(9, at=T0 + 90 * S), T0 + 90 * S)
    later = run(d, T0 + 3600 * S)
    assert [(x.at, len(x.intents)) for x in later] == [(T0 + 330 * S, 1)]  # at group_interval after the flush
    assert later[0].key == "evt-9#1"


def test_s23_fleeting_alarm_resolved_within_group_wait_is_never_paged() -> None:
    d = Dispatcher(config())
    d.submit(intent(1), T0)
    d.submit(intent(1, IntentKind.UPDATE, reason="returned_unacked", at=T0 + S, seq=2), T0 + S)
    assert run(d, T0 + 3600 * S) == []
    assert [x.reason for x in d.dropped] == ["returned to normal before it was sent (fleeting)"] * 2


def test_s38_ack_before_the_raise_was_sent_drop_policy() -> None:
    d = Dispatcher(config())
    d.submit(intent(1), T0)
    d.submit(intent(1, IntentKind.UPDATE, reason="acknowledged", seq=2, at=T0 + 5 * S), T0 + 5 * S)
    assert run(d, T0 + 3600 * S) == []
    assert {x.reason for x in d.dropped} == {"acknowledged before it was sent"}


def test_s38_ack_before_the_raise_was_sent_in_order_policy() -> None:
    d = Dispatcher(config(on_ack_before_send="send_in_order"))
    d.submit(intent(1), T0)
    d.submit(intent(1, IntentKind.UPDATE, reason="acknowledged", seq=2, at=T0 + 5 * S), T0 + 5 * S)
    out = run(d, T0 + 3600 * S)
    assert [[(i.kind, i.seq) for i in x.intents] for x in out] == [[(IntentKind.RAISE, 1), (IntentKind.UPDATE, 2)]]


def test_s47_burst_coalesces_and_keeps_per_alarm_order() -> None:
    d = Dispatcher(config(group_by="alarm"))
    t = T0
    for k in range(500):  # 500 transitions in 1 min on 5 alarms
        n = k % 5
        kind = IntentKind.RAISE if k < 5 else IntentKind.UPDATE
        d.submit(intent(n, kind, at=t, seq=k // 5 + 1, reason="activated" if k < 5 else "reactivated",
                        annunciation=False), t)
        t += 120_000
    out = run(d, T0 + 3600 * S)
    assert len(out) == 5  # one card per alarm (coalesced), not 500
    for x in out:
        assert [i.kind for i in x.intents] == [IntentKind.RAISE, IntentKind.UPDATE]  # raise before its update
        assert x.intents[-1].seq == 100


def test_s34_flood_one_summary_then_bounded_updates_and_critical_bypass() -> None:
    d = Dispatcher(config())
    out: list[Delivery] = []
    for k in range(30):  # 30 alarms in 3 minutes
        t = T0 + k * 6 * S
        out += d.submit(intent(k, at=t), t)
        out += d.tick(t)
    assert d.in_flood("acme")
    floods = [x for x in out if x.flood is not None]
    assert len(floods) == 1 and floods[0].flood is not None and floods[0].flood.active
    # before the threshold, group_wait (30 s) sent one grouped card with the first 6 alarms; the 4 still
    # pending when the 10th arrived joined the flood summary instead of going out one by one
    assert [len(x.intents) for x in out if x.flood is None] == [6]
    assert floods[0].flood.held == 4 and floods[0].flood.in_window == 10
    crit = intent(99, prio=Priority.CRITICAL, at=T0 + 200 * S)
    d.submit(crit, T0 + 200 * S)
    t = T0 + 200 * S
    for k in range(60):  # an hour of flood traffic, one alarm a minute
        t = T0 + 200 * S + k * 60 * S
        out += d.submit(intent(100 + k, at=t), t)
        out += d.tick(t)
    summaries = [x for x in out if x.flood is not None]
    assert all(b.at - a.at >= 300 * S for a, b in itertools.pairwise(summaries))
    assert len(summaries) <= 1 + 3600 // 300 + 1
    singles = [i for x in out[1:] if x.flood is None for i in x.intents]
    assert [i.alarm_id for i in singles] == [crit.alarm_id]  # critical bypasses the flood
    out += run(d, t + 3 * 3600 * S)
    last = [x for x in out if x.flood is not None][-1]
    assert last.flood is not None and not last.flood.active
    assert not d.in_flood("acme") and last.key.startswith("flood-acme-")


def test_s33_suppressed_and_shelved_alarms_do_not_count_toward_a_flood() -> None:
    d = Dispatcher(config())
    hs = [AlarmHarness(AlarmPolicy(), alarm_id=f"a{k}") for k in range(15)]
    for h in hs:
        h.shelve(3600)
        h.cond(True, Level.HI, 1.0, 0.5)
    for h in hs:
        for i in h.intents:
            d.submit(i, T0)
    assert not d.in_flood("acme") and hs[0].intents == []


def test_s50_silence_mutes_teams_but_not_the_journal_or_kpis() -> None:
    d = Dispatcher(config())
    d.silences.append(Silence("s1", "acme", T0, T0 + 3600 * S, sites=("pad_7",), created_by="ops",
                              comment="maintenance window"))
    h = AlarmHarness(AlarmPolicy(site="pad_7", tag="pad_7/t1"), alarm_id="hi@pad_7/t1")
    h.cond(True, Level.HI, 1.0, 0.5)
    for i in h.intents:
        d.submit(i, h.now)
    assert run(d, T0 + 7200 * S) == [] and [x.reason for x in d.dropped] == ["silenced"]
    assert h.rec.state is AlarmState.UNACK_ACTIVE and h.rec.annunciating  # alarm list unaffected
    assert compute_kpis(h.journal, T0, T0 + 3600 * US).annunciated == 1  # counts in the KPIs
    # shelving is different: it removes annunciation and is what the shelved KPI counts
    h2 = AlarmHarness(AlarmPolicy(), alarm_id="x")
    h2.shelve(600)
    h2.cond(True, Level.HI, 1.0, 0.5)
    assert compute_kpis(h2.journal, T0, T0 + 3600 * US).annunciated == 0
    other = intent(1, site="pad_8")
    d.submit(other, T0)
    assert len(run(d, T0 + 7200 * S)) == 1


def test_s51_escalation_goes_to_the_escalation_route() -> None:
    timing = {Priority.HIGH: NotifyTiming(escalate_us=15 * 60 * US)}
    h = AlarmHarness(AlarmPolicy(priority=Priority.HIGH, timing=timing, site="pad_7"))
    h.cond(True, Level.HI, 1.0, 0.5)
    h.advance(20 * 60)
    d = Dispatcher(config())
    for i in h.intents:
        d.submit(i, i.at)
    out = run(d, T0 + 3600 * S)
    assert sorted((x.route, x.intents[0].kind) for x in out) == [("boss", IntentKind.ESCALATE),
                                                                 ("oncall", IntentKind.RAISE)]


def test_routes_filters_and_missing_routes() -> None:
    d = Dispatcher(config(send_resolved=False, send_updates=False))
    d.submit(intent(1, IntentKind.RESOLVE, reason="resolved"), T0)
    d.submit(intent(2, IntentKind.UPDATE, reason="acknowledged"), T0)
    other = NotificationIntent(IntentKind.RAISE, "activated", "other", "a@b", "evt-z", 1, 1, T0, Priority.LOW,
                               AlarmState.UNACK_ACTIVE)
    d.submit(other, T0)
    assert run(d, T0 + 3600 * S) == []
    assert [x.reason for x in d.dropped] == ["send_resolved is off", "send_updates is off", "no route"]
