"""Alarm engine end to end with the real daemon: MQTT → evaluation → journal/outbox → local Teams server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingestd.api.alarm_service import AlarmService
from tests.alarms.support import PUBLIC_URL, alarm_env, cards, limit_rule
from tests.conftest import TenantDb
from tests.support.daemon import scrape
from tests.support.mosquitto import Mosquitto

AID = "casing@w1.casing_pressure"


async def test_hi_crossing_yields_exactly_one_card(tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    async with alarm_env(tenant_db, mosquitto, state_dir, rules=[limit_rule()]) as env:
        teams = env.teams["oncall"]
        await env.publish("casing_pressure", 50.0)
        await env.publish("casing_pressure", 150.0)
        await teams.wait_requests(1)
        await env.publish("casing_pressure", 160.0)  # still in alarm: no new card
        await env.wait_journal(AID, "ACTIVATED")
        await env.settled()
        got = cards(teams)
        assert len(got) == 1
        text = str(got[0])
        assert "w1.casing_pressure" in text and "HI" in text
        ev = env.rt.core.alarms[AID].record.event_id
        assert ev is not None and f"{ev} #1" in text
        ack = [a for a in got[0]["actions"] if a["title"] == "Acknowledge"]
        assert ack and ack[0]["url"].startswith(f"{PUBLIC_URL}/v1/alarms/ack?")
        assert env.kinds(AID) == ["ACTIVATED"]
        assert [r[3] for r in env.outbox()] == ["sent"]
        assert teams.requests[0].headers["x-ingestd-event"] == f"{ev}#1"
        assert isinstance(env.daemon.alarm_service, AlarmService)  # type: ignore[attr-defined]
        port = env.daemon.metrics_port
        assert port is not None
        expected = ['ingestd_alarms_active{priority="high",tenant="acme"} 1.0',
                    'ingestd_notifications_total{result="accepted",route="oncall",tenant="acme"} 1.0',
                    'ingestd_alarm_transitions_total{kind="ACTIVATED",tenant="acme"} 1.0',
                    'ingestd_alarm_outbox_pending{tenant="acme"} 0.0']

        async def metrics_ok() -> bool:
            text = await asyncio.to_thread(scrape, port)
            return all(line in text for line in expected)
        await env.wait(metrics_ok, "alarm metrics exported")
