"""A restart neither forgets nor re-fires an alarm (reference/alarms.md §6.6, scenarios 36/37): in process
(clean stop) on both storage tiers, and as a real process killed with SIGKILL (crash)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from alarms.model import US, Operator
from tests.alarms.support import LINK_SECRET, PUBLIC_URL, alarm_env, cards, limit_rule, mqtt_source, route
from tests.alarms.teams_server import Action, FakeTeams
from tests.conftest import TenantDb
from tests.support.daemon import DaemonProcess, make_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import eventually

AID = "casing@w1.casing_pressure"
RULE = limit_rule(tags=["w*.casing_pressure"])


async def test_restart_mid_alarm_keeps_state_and_sends_nothing_twice(tenant_db: TenantDb, mosquitto: Mosquitto,
                                                                     state_dir: Path) -> None:
    prefix = f"r{uuid.uuid4().hex[:6]}"
    async with FakeTeams() as teams:
        servers = {"oncall": teams}
        routes = [route("oncall", teams.url, repeat_interval="3s", group_by="alarm")]
        async with alarm_env(tenant_db, mosquitto, state_dir, rules=[RULE], servers=servers, prefix=prefix,
                             routes=lambda _: routes) as env:
            await env.publish("casing_pressure", 150.0)
            await teams.wait_requests(1)
            await env.settled()
            before = env.rt.core.alarms[AID].record
        assert before.state.value == "UNACK_ACTIVE" and before.event_id is not None
        async with alarm_env(tenant_db, mosquitto, state_dir, rules=[RULE], servers=servers, prefix=prefix,
                             routes=lambda _: routes) as env:
            rec = env.rt.core.alarms[AID].record
            assert rec == before, "state restored exactly (same event id, timers, last_notified_at)"
            await env.publish("casing_pressure", 160.0)  # still in alarm: nothing new
            await env.publish("casing_pressure", 150.0, well="w2")  # barrier: the next card must be this one
            await env.wait_journal(AID, "REMINDED")
            await env.wait(lambda: len(teams.requests) >= 3, "w2 raised and w1 reminded")
            texts = [str(c) for c in cards(teams)]
            assert sum("w1.casing_pressure" in t and "Alarm raised" in t for t in texts) == 1, "no second raise"
            rows = env.query(f"SELECT kind, (extract(epoch FROM at) * 1e6)::bigint FROM alarm_journal "
                             f"WHERE alarm_id = '{AID}' ORDER BY seq")
            assert [k for k, _ in rows] == ["ACTIVATED", "REMINDED"]
            assert rows[1][1] - rows[0][1] == 3 * US, "the reminder schedule continued across the restart"
            await env.service.ack("acme", AID, Operator("jane", "checked"))
            await env.publish("casing_pressure", 40.0)
            await env.wait_journal(AID, "CLEARED")
            assert env.kinds(AID)[-2:] == ["ACKED", "CLEARED"]


# ------------------------------------------------------------------------------------------------- crashes
def process_config(db: TenantDb, broker: Mosquitto, state_dir: Path, prefix: str, teams: FakeTeams,
                   **rule: Any) -> dict[str, Any]:
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": db.dsn}],
                      sources=[mqtt_source(broker, prefix)], daemon={"log_level": "info"})
    cfg["api"] = {"public_url": PUBLIC_URL, "link_secret": LINK_SECRET, "listen": "127.0.0.1:0"}
    cfg["alarms"] = {"rules": [limit_rule(**rule)], "routes": [route("oncall", teams.url)]}
    return cfg


async def engine_loaded(proc: DaemonProcess) -> None:
    def loaded() -> bool:
        text = proc.metrics()
        return bool(re.search(r'ingestd_alarm_engine_loaded\{tenant="acme"\} 1\.0', text))
    await eventually(lambda: asyncio.to_thread(loaded), timeout=30, what="alarm engine loaded in the process")


async def publish(broker: Mosquitto, prefix: str, value: float, ts_ms: int) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        await c.publish(f"{prefix}/acme/wells/w1/casing_pressure", orjson.dumps({"ts": ts_ms, "value": value}), qos=1)


async def test_crash_between_post_and_mark_resends_the_same_event(apache_db: TenantDb, mosquitto: Mosquitto,
                                                                  state_dir: Path) -> None:
    """At-least-once: Teams received the card, ingestd died before marking the outbox row: the restarted
    process sends the same card (same event id and sequence) again, and nothing else."""
    prefix = f"c{uuid.uuid4().hex[:6]}"
    async with FakeTeams() as teams:
        proc = DaemonProcess(process_config(apache_db, mosquitto, state_dir, prefix, teams))
        try:
            await asyncio.to_thread(proc.start)
            await engine_loaded(proc)
            teams.push(Action(hang=True))
            await publish(mosquitto, prefix, 150.0, int(time.time() * 1000))
            await teams.wait_requests(1, timeout=20)
            await asyncio.to_thread(proc.kill)  # crash after the POST, before the 2xx and the mark
            assert apache_db.query("SELECT status FROM notification_outbox") == [("pending",)]
            await asyncio.to_thread(proc.start)
            await teams.wait_requests(2, timeout=30)
            await eventually(lambda: apache_db.query("SELECT status FROM notification_outbox") == [("sent",)],
                             what="outbox row marked sent")
        finally:
            await asyncio.to_thread(proc.kill)
    first, second = teams.requests[:2]
    assert first.headers["x-ingestd-event"] == second.headers["x-ingestd-event"]
    assert len(teams.requests) == 2
    assert apache_db.query(f"SELECT kind FROM alarm_journal WHERE alarm_id = '{AID}'") == [("ACTIVATED",)]


async def test_crash_during_on_delay_resumes_the_timer(apache_db: TenantDb, mosquitto: Mosquitto,
                                                      state_dir: Path) -> None:
    """Scenario 37: a 4 s on-delay runs, ingestd is killed half-way, restarts: the alarm activates at the
    original deadline (pending_since + 4 s, persisted as an absolute time), once, never earlier."""
    prefix = f"d{uuid.uuid4().hex[:6]}"
    async with FakeTeams() as teams:
        cfg = process_config(apache_db, mosquitto, state_dir, prefix, teams,
                             hi={"setpoint": 100.0, "deadband": 5.0, "on_delay": "4s"})
        proc = DaemonProcess(cfg)
        try:
            await asyncio.to_thread(proc.start)
            await engine_loaded(proc)
            await publish(mosquitto, prefix, 150.0, int(time.time() * 1000))
            row = await eventually(lambda: apache_db.query(
                "SELECT eval_state FROM alarm_state WHERE next_due IS NOT NULL"), what="pending on-delay persisted")
            pending_since = row[0][0]["deb"]["HI"][1]
            await asyncio.to_thread(proc.kill)
            assert apache_db.query("SELECT count(*) FROM alarm_journal") == [(0,)]
            await asyncio.to_thread(proc.start)
            await teams.wait_requests(1, timeout=30)
            rows = await eventually(lambda: apache_db.query(
                "SELECT kind, (extract(epoch FROM at) * 1e6)::bigint FROM alarm_journal"), what="activation")
        finally:
            await asyncio.to_thread(proc.kill)
    assert [r[0] for r in rows] == ["ACTIVATED"]
    assert rows[0][1] == pending_since + 4 * US, "activated at the persisted deadline"
