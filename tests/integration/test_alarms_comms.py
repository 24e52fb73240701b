"""Comm loss and bad quality (scenarios 18, 19, 49): limit alarms freeze instead of flooding LOLO, one comm
alarm per source inhibits that source's tag alarms, and when comms return only tags still in alarm page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.alarms.support import alarm_env, cards
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

FLOW: dict[str, Any] = {"name": "flow", "kind": "limit", "tags": ["w*.flow"], "priority": "medium",
                        "lo": {"setpoint": 10.0, "deadband": 1.0}, "lolo": {"setpoint": 2.0}}
COMMS: dict[str, Any] = {"name": "rtu_comms", "kind": "comm_loss", "sources": ["field"], "priority": "high"}


def flow(well: str) -> str:
    return f"flow@{well}.flow"


async def test_comm_loss_freezes_tag_alarms_and_raises_one_alarm_per_source(
        apache_db: TenantDb, broker: Mosquitto, state_dir: Path) -> None:
    async with alarm_env(apache_db, broker, state_dir, rules=[FLOW, COMMS], alarms={}) as env:
        teams = env.teams["oncall"]
        for w in ("w1", "w3", "w4", "w5"):
            await env.publish("flow", 50.0, well=w)
        await env.publish("flow", 5.0, well="w2")  # LO: pages
        await teams.wait_requests(1)
        # bad quality (the gateway reports NULL for every tag): limit alarms freeze, no LOLO flood
        for w in ("w1", "w3", "w4", "w5"):
            await env.publish("flow", None, well=w)
        await env.wait(lambda: env.query("SELECT count(*) FROM readings WHERE quality = 2") == [(4,)],
                       "BAD readings stored")
        # the source loses its broker: one comm alarm, tag alarms inhibited
        broker.stop()
        await env.wait_journal("rtu_comms@field", "ACTIVATED")
        await env.wait_journal(flow("w2"), "INHIBITED")
        await teams.wait_requests(2)
        broker.start()
        await env.wait_journal("rtu_comms@field", "CLEARED", timeout=30)
        await env.wait_journal(flow("w2"), "UNINHIBITED")
        await env.publish("flow", 1.0, well="w3")  # a new alarm after comms returned: pages once
        await env.wait_journal(flow("w3"), "ACTIVATED")
        await env.settled()
        texts = [str(c) for c in cards(teams)]
    assert sum("w2.flow" in t for t in texts) == 1, "w2 was paged once, not again when comms returned"
    assert sum("w3.flow" in t for t in texts) == 1
    assert not any(w in t for t in texts for w in ("w1.flow", "w4.flow", "w5.flow"))
    comm = [t for t in texts if "field" in t and "comm_loss" in t]
    assert len(comm) == 2, "one raise and one update (returned to normal) of the single comm alarm"
    for w in ("w1", "w4", "w5"):
        assert env.kinds(flow(w)) == ["INHIBITED", "UNINHIBITED"], f"{w}: frozen, never activated"
    assert env.kinds(flow("w2")) == ["ACTIVATED", "INHIBITED", "UNINHIBITED"]
