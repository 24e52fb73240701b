"""Reference scenarios through the real daemon (reference/alarms.md §6): grouping (41), acknowledgement
while the notifier is down (38), journal replay (40), suppression by design with start-up grace (30)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alarms.model import AlarmRecord, Operator, ShelveKind
from alarms.replay import live, out_of_service, replay, shelved
from tests.alarms.support import alarm_env, cards, limit_rule, route
from tests.alarms.teams_server import FakeTeams
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

PAD = limit_rule("pad", ["w1.p*"])


async def test_grouping_one_card_for_five_then_an_update_at_group_interval(
        apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[PAD],
                         routes=lambda s: [route("oncall", s["oncall"].url, group_wait="1.5s",
                                                 group_interval="3s")]) as env:
        teams = env.teams["oncall"]
        await env.publish_many([("w1", f"p{i}", 150.0) for i in range(1, 6)])
        first = (await teams.wait_requests(1))[0]
        await env.publish("p6", 150.0)
        second = (await teams.wait_requests(2))[1]
        await env.settled()
        got = cards(teams)
    assert len(got) == 2
    assert "5 alarm notifications" in str(got[0]) and all(f"w1.p{i}" in str(got[0]) for i in range(1, 6))
    assert "w1.p6" in str(got[1]) and "w1.p1" not in str(got[1])
    assert second.at - first.at >= 2.9, "the later alarm waited for group_interval"


async def test_ack_before_the_raise_went_out_drops_both(apache_db: TenantDb, mosquitto: Mosquitto,
                                                        state_dir: Path) -> None:
    """Scenario 38 (policy "drop"): acknowledged while its card still waited: neither card is sent, the
    ack is journaled, no reminder follows."""
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule(tags=["w*.casing_pressure"])],
                         routes=lambda s: [route("oncall", s["oncall"].url, group_wait="2s", group_by="alarm",
                                                 repeat_interval="1s")]) as env:
        teams = env.teams["oncall"]
        aid = "casing@w1.casing_pressure"
        await env.publish("casing_pressure", 150.0)
        await env.wait(lambda: aid in env.rt.core.alarms and env.rt.core.alarms[aid].record.cond, "active")
        await env.service.ack("acme", aid, Operator("jane"))
        await env.publish("casing_pressure", 150.0, well="w2")  # the control alarm: its card is the barrier
        await teams.wait_requests(1)
        await env.wait_journal("casing@w2.casing_pressure", "REMINDED")
        got = [str(c) for c in cards(teams)]
        assert not any("w1.casing_pressure" in c for c in got)
        assert env.kinds(aid) == ["ACTIVATED", "ACKED"]
        statuses = {r[1]: r[3] for r in env.outbox() if r[0] == aid}
        assert statuses == {1: "dropped", 2: "dropped"}


async def test_ack_while_teams_is_down_sends_raise_then_ack_in_order(
        apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    """Scenario 38 (card already on its way): the raise is retried until Teams is back, the ack update
    follows it, in order, and the reminder is cancelled."""
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule()],
                         routes=lambda s: [route("oncall", s["oncall"].url, repeat_interval="1s")]) as env:
        teams = env.teams["oncall"]
        teams.push(503, 503, 503)
        aid = "casing@w1.casing_pressure"
        await env.publish("casing_pressure", 150.0)
        await teams.wait_requests(1)
        await env.service.ack("acme", aid, Operator("jane", "seen it"))
        await teams.wait_requests(5)
        await env.settled()
        got = [str(c) for c in cards(teams)]
    ok = got[3:]
    assert len(ok) == 2 and "Alarm raised" in ok[0] and "Acknowledged" in ok[1]
    assert "REMINDED" not in env.kinds(aid)


async def test_journal_replay_reconstructs_state_and_lists(tenant_db: TenantDb, mosquitto: Mosquitto,
                                                           state_dir: Path) -> None:
    """Scenario 40: the append-only journal alone rebuilds every alarm record, the live list and the shelved /
    out-of-service lists — equal to the engine's memory and to alarm_state."""
    rule = limit_rule(tags=["w*.casing_pressure"])
    async with alarm_env(tenant_db, mosquitto, state_dir, rules=[rule]) as env:
        a = [f"casing@w{i}.casing_pressure" for i in range(1, 6)]
        await env.publish_many([(f"w{i}", "casing_pressure", 150.0) for i in range(1, 6)])
        for aid in a:
            await env.wait_journal(aid, "ACTIVATED")
        svc, op = env.service, Operator("jane", "maintenance MOC-7")
        await svc.ack("acme", a[0], op)
        await svc.shelve("acme", a[1], op, kind=ShelveKind.TIMED, duration_us=3600 * 1_000_000)
        await svc.shelve("acme", a[2], op, kind=ShelveKind.ONE_SHOT, duration_us=None)
        await svc.unshelve("acme", a[2], op)
        await svc.set_out_of_service("acme", a[3], op, out_of_service=True)
        await env.publish("casing_pressure", 40.0, well="w5")
        await env.wait_journal(a[4], "CLEARED")
        await env.settled()
        memory = dict(env.rt.core.records())
        events = await svc.journal("acme")
    rebuilt = replay(events)
    stored = {r[0]: AlarmRecord.from_dict(r[1]) for r in env.query("SELECT alarm_id, record FROM alarm_state")}
    for aid in a:
        assert rebuilt[aid] == memory[aid] == stored[aid], aid
    assert [r.alarm_id for r in live(rebuilt)] == [r.alarm_id for r in live(memory)]
    assert [r.alarm_id for r in shelved(rebuilt)] == [a[1]]
    assert [r.alarm_id for r in out_of_service(rebuilt)] == [a[3]]


async def test_suppressed_by_design_and_startup_grace(apache_db: TenantDb, mosquitto: Mosquitto,
                                                      state_dir: Path) -> None:
    """Scenario 30: pump off suppresses that well's low-flow alarm (evaluated and journaled, never paged);
    the pump restarts, flow recovers within the start-up grace: no burst, no card."""
    low: dict[str, Any] = {"name": "lowflow", "kind": "limit", "tags": ["w*.flow"], "priority": "medium",
                           "lo": {"setpoint": 10.0, "deadband": 1.0}}
    group = {"name": "pump_off", "condition_tag": "{asset}.pump_running", "when": "eq", "value": 0.0,
             "rules": ["lowflow"], "grace": "3s"}
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[low, limit_rule(tags=["w*.casing_pressure"])],
                         alarms={"suppression_groups": [group]}) as env:
        teams: FakeTeams = env.teams["oncall"]
        aid = "lowflow@w1.flow"
        await env.publish_many([("w1", "pump_running", 1.0), ("w1", "flow", 50.0)])
        await env.wait(lambda: aid in env.rt.core.alarms, "bound")
        await env.publish("pump_running", 0.0)
        await env.wait_journal(aid, "SUPPRESSED")
        await env.publish("flow", 1.0)  # pump off: low flow is expected
        await env.wait_journal(aid, "ACTIVATED")
        await env.publish("pump_running", 1.0)
        await env.wait_journal(aid, "UNSUPPRESSED")
        await env.publish("flow", 40.0)  # recovers within the grace
        await env.wait_journal(aid, "CLEARED")
        await env.publish("casing_pressure", 150.0, well="w9")  # barrier card
        await teams.wait_requests(1)
        await env.settled()
        got = [str(c) for c in cards(teams)]
    assert len(got) == 1 and "w9.casing_pressure" in got[0]
    rows = env.query(f"SELECT kind, annunciated FROM alarm_journal WHERE alarm_id = '{aid}' ORDER BY seq")
    assert ("ACTIVATED", False) in rows, "evaluated and journaled while suppressed, not annunciated"
