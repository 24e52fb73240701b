"""Hot reload of the alarm configuration (scenarios 53, 54, 55): unchanged alarms keep state and timers,
removed rules are closed in order and go silent, changed limits are re-evaluated and audited."""

from __future__ import annotations

import copy
from pathlib import Path

from tests.alarms.support import alarm_env, cards, limit_rule
from tests.conftest import TenantDb
from tests.support.daemon import parse
from tests.support.mosquitto import Mosquitto

CASING = "casing@w1.casing_pressure"
TEMP = "temp@w1.temp"
LEVEL = "level@w1.level"


async def test_reload_keeps_unchanged_closes_removed_reevaluates_changed(
        tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    rules = [limit_rule(hi={"setpoint": 100.0, "deadband": 5.0, "on_delay": "3s"}),
             limit_rule("temp", ["w*.temp"]),
             limit_rule("level", ["w*.level"], priority="medium")]
    async with alarm_env(tenant_db, mosquitto, state_dir, rules=rules) as env:
        teams = env.teams["oncall"]
        await env.publish("temp", 150.0)
        await env.publish("level", 110.0)
        await env.wait_journal(TEMP, "ACTIVATED")
        await env.wait_journal(LEVEL, "ACTIVATED")
        await env.publish("casing_pressure", 150.0)  # on-delay of 3 s starts
        core = env.rt.core
        await env.wait(lambda: CASING in core.alarms and core.alarms[CASING].evaluator.next_deadline() is not None,
                       "on-delay pending")
        deadline = core.alarms[CASING].evaluator.next_deadline()
        casing_eval = core.alarms[CASING].evaluator
        new = copy.deepcopy(env.cfg)
        new["alarms"]["rules"] = [rules[0], limit_rule("level", ["w*.level"], priority="medium",
                                                       hi={"setpoint": 120.0, "deadband": 5.0}),
                                  limit_rule("flow", ["w*.flow"])]
        await env.daemon.apply_config(parse(new))
        assert core.alarms[CASING].evaluator is casing_eval, "unchanged alarm: evaluator untouched"
        assert core.alarms[CASING].evaluator.next_deadline() == deadline, "timer not reset"
        await env.wait_journal(CASING, "ACTIVATED")
        await env.wait_journal(LEVEL, "CLEARED")
        await env.wait_journal(TEMP, "DISABLED")
        await env.settled()
        await env.publish("temp", 160.0)  # removed rule: evaluated no more
        await env.publish("flow", 150.0)  # added rule: works at once
        await env.wait_journal("flow@w1.flow", "ACTIVATED")
        await env.settled()
        got = [str(c) for c in cards(teams)]
        assert env.rt.core.alarms[TEMP].record.disabled
    assert env.kinds(CASING) == ["ACTIVATED"], "no RECONFIGURED row for an unchanged alarm"
    at = env.query(f"SELECT (extract(epoch FROM at) * 1e6)::bigint FROM alarm_journal WHERE alarm_id = '{CASING}'")
    assert at[0][0] == deadline, "activated at the on-delay deadline set before the reload"
    assert env.kinds(TEMP) == ["ACTIVATED", "DISABLED"]
    assert env.kinds(LEVEL) == ["ACTIVATED", "RECONFIGURED", "CLEARED"]
    assert sum("w1.temp" in c for c in got) == 2, "raise, then one resolve (disabled) — then silence"
    assert any("w1.temp" in c and "removed from configuration" in c for c in got)
