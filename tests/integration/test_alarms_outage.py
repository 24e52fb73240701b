"""The tenant database goes down during an alarm (scenario 39): evaluation continues in memory, the cards go
out directly, a system alarm is raised, and every transition is journaled in order when it returns."""

from __future__ import annotations

from pathlib import Path

from tests.alarms.proxy import CuttableProxy
from tests.alarms.support import ProxiedDb, alarm_env, limit_rule
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

AID = "casing@w1.casing_pressure"


async def test_database_down_during_an_alarm(tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    async with CuttableProxy(tenant_db.server.port) as proxy:
        db = ProxiedDb(tenant_db.tier, tenant_db.server, tenant_db.name, proxy.port)
        async with alarm_env(db, mosquitto, state_dir, rules=[limit_rule()],
                             tenant={"pool": {"connect_timeout": "1s"}}) as env:
            teams = env.teams["oncall"]
            await env.publish("casing_pressure", 50.0)
            await env.wait(lambda: env.rt.core.alarms.get(AID) is not None, "alarm bound")
            proxy.cut()
            await env.publish("casing_pressure", 150.0)
            await env.wait(lambda: env.rt.core.alarms[AID].record.cond, "activated in memory")
            await env.wait(lambda: env.rt.core.db_down, "alarm writer noticed the outage")
            await env.wait(lambda: any("system@db" in r.body.decode() or "database" in r.body.decode().lower()
                                       for r in teams.requests), "database-down card sent directly")
            await env.wait(lambda: any(AID.split("@")[1] in r.body.decode() for r in teams.requests),
                           "alarm card sent while the database is down")
            await env.publish("casing_pressure", 40.0)
            await env.wait(lambda: not env.rt.core.alarms[AID].record.cond, "cleared in memory")
            assert env.kinds(AID) == []  # nothing could be written
            proxy.restore()
            await env.wait_journal(AID, "CLEARED")
            await env.wait_journal("system@db", "CLEARED", timeout=30)
            await env.settled(timeout=30)
        rows = env.journal(AID)
        assert [r[2] for r in rows] == ["ACTIVATED", "CLEARED"]
        assert [r[1] for r in rows] == [1, 2]
        sys_kinds = env.kinds("system@db")
        assert sys_kinds[0] == "ACTIVATED" and "CLEARED" in sys_kinds
        late = env.query(f"SELECT bool_and(written_at > at) FROM alarm_journal WHERE alarm_id = '{AID}'")
        assert late == [(True,)]
        keys = [r.headers["x-ingestd-event"] for r in teams.requests]
        assert len(keys) == len(set(keys)), keys
        assert all(r[3] in ("sent", "dropped") for r in env.outbox()), env.outbox()
