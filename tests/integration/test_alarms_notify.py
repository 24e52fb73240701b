"""Notification delivery through the real daemon (reference/alarms.md §6.7): retries, Retry-After, timeouts,
permanent failures with fail-over and the "notification channel failed" system alarm, reminders, escalation.
Teams is a real local HTTP server (tests/alarms/teams_server.py) that validates every envelope and card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from alarms.model import Operator
from tests.alarms.support import alarm_env, cards, limit_rule, route
from tests.alarms.teams_server import Action, FakeTeams
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

AID = "casing@w1.casing_pressure"


async def test_retries_503_503_202_one_logical_notification(apache_db: TenantDb, mosquitto: Mosquitto,
                                                             state_dir: Path) -> None:
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule()]) as env:
        teams = env.teams["oncall"]
        teams.push(503, 503, 202)
        await env.publish("casing_pressure", 150.0)
        await teams.wait_requests(3)
        await env.settled()
        assert len(teams.requests) == 3
        keys = {r.headers["x-ingestd-event"] for r in teams.requests}
        assert len(keys) == 1, "every attempt carries the same event id and sequence"
        assert [r.body for r in teams.requests[1:]] == [teams.requests[0].body] * 2
        rows = env.query("SELECT status, attempts, route FROM notification_outbox")
        assert rows == [("sent", 3, "oncall")]


async def test_429_retry_after_is_honoured(apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule()]) as env:
        teams = env.teams["oncall"]
        teams.push(Action(429, {"Retry-After": "2"}), 202)
        await env.publish("casing_pressure", 150.0)
        first, second = (await teams.wait_requests(2))[:2]
        assert second.at - first.at >= 1.9, "the server asked for 2 s"
        await env.settled()
        assert env.query("SELECT status, attempts FROM notification_outbox") == [("sent", 2)]


async def test_timeout_after_acceptance_resends_the_same_event(apache_db: TenantDb, mosquitto: Mosquitto,
                                                               state_dir: Path) -> None:
    """Scenario 44: Teams took the card but the answer never came: the retry may duplicate the card, visibly
    (same event id and sequence); the outbox records one logical send with two attempts."""
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule()],
                         routes=lambda s: [route("oncall", s["oncall"].url, timeout="1s")]) as env:
        teams = env.teams["oncall"]
        teams.push(Action(hang=True), 202)
        await env.publish("casing_pressure", 150.0)
        await teams.wait_requests(2, timeout=20)
        await env.settled()
        a, b = teams.requests[:2]
        assert a.body == b.body and a.headers["x-ingestd-event"] == b.headers["x-ingestd-event"]
        assert env.query("SELECT status, attempts FROM notification_outbox") == [("sent", 2)]


@pytest.mark.parametrize("status", [400, 404])
async def test_permanent_failure_fails_over_and_raises_a_system_alarm(
        apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path, caplog: pytest.LogCaptureFixture,
        status: int) -> None:
    """Scenario 45: no retry on 4xx, the fallback route gets the card, "notification channel failed" is
    raised (and itself notified through the fallback), and the webhook URL never reaches a log."""
    caplog.set_level(logging.DEBUG)

    def routes(s: dict[str, FakeTeams]) -> list[dict[str, Any]]:
        return [route("oncall", s["oncall"].url, fallback="backup"), route("backup", s["backup"].url, priorities=[])]

    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule()], teams=("oncall", "backup"),
                         routes=routes) as env:
        primary, backup = env.teams["oncall"], env.teams["backup"]
        primary.push(status, status)
        await env.publish("casing_pressure", 150.0)
        await backup.wait_requests(2)
        await env.wait_journal("system@notify:oncall", "ACTIVATED")
        await env.settled()
        assert len(primary.requests) == 2, "one attempt per card, no retry of a permanent error"
        got = cards(backup)
        assert any("w1.casing_pressure" in str(c) for c in got)
        assert any("route oncall" in str(c) for c in got), "the system alarm went out through the fallback"
        rows = {r[0]: (r[3], r[4]) for r in env.outbox()}
        assert rows[AID] == ("sent", "backup")
        # the primary works again: its next card clears the system alarm
        await env.publish("casing_pressure", 40.0)
        await env.wait_journal("system@notify:oncall", "CLEARED")
    url = primary.url
    for secret in (url, url.split("?")[0], "TOPSECRETsig123"):
        assert secret not in caplog.text


async def test_reminders_until_acknowledged(apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    """Scenario 42: an unacknowledged alarm is repeated every repeat_interval; the ack (engine function) stops
    it at once — while a second, unacknowledged alarm keeps reminding (the control)."""
    rule = limit_rule(tags=["w*.casing_pressure"])
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[rule],
                         routes=lambda s: [route("oncall", s["oncall"].url, repeat_interval="1s",
                                                 group_by="alarm")]) as env:
        a1, a2 = AID, "casing@w2.casing_pressure"
        await env.publish("casing_pressure", 150.0, well="w1")
        await env.publish("casing_pressure", 150.0, well="w2")
        await env.wait_journal(a1, "REMINDED", 1)
        rec = await env.service.ack("acme", a1, Operator("jane", "on my way"))
        assert rec.state.value == "ACK_ACTIVE" and rec.acked_by == "jane"
        n2 = env.kinds(a2).count("REMINDED")
        await env.wait_journal(a2, "REMINDED", n2 + 2)
        kinds = env.kinds(a1)
        assert "REMINDED" not in kinds[kinds.index("ACKED"):]
        acked = [r for r in env.journal(a1) if r[2] == "ACKED"]
        assert len(acked) == 1
        await env.wait(lambda: any("Acknowledged" in str(c) and "w1.casing_pressure" in str(c)
                                   for c in cards(env.teams["oncall"])), "acknowledged update card")


async def test_escalation_when_not_acknowledged_in_time(apache_db: TenantDb, mosquitto: Mosquitto,
                                                        state_dir: Path) -> None:
    """Scenario 51: unacknowledged beyond escalate_after → the escalation route; acknowledged → cancelled."""
    rule = limit_rule(tags=["w*.casing_pressure"])

    def routes(s: dict[str, FakeTeams]) -> list[dict[str, Any]]:
        return [route("oncall", s["oncall"].url, escalate_to="supervisor", escalate_after="1s", group_by="alarm"),
                route("supervisor", s["supervisor"].url, priorities=[])]

    async with alarm_env(apache_db, mosquitto, state_dir, rules=[rule], teams=("oncall", "supervisor"),
                         routes=routes) as env:
        await env.publish("casing_pressure", 150.0, well="w2")
        await env.wait(lambda: env.rt.core.alarms["casing@w2.casing_pressure"].record.cond, "w2 active")
        await env.service.ack("acme", "casing@w2.casing_pressure", Operator("jane"))
        await env.publish("casing_pressure", 150.0, well="w1")
        sup = env.teams["supervisor"]
        await sup.wait_requests(1)
        await env.wait_journal(AID, "ESCALATION")
        await env.settled()
        got = cards(sup)
        assert len(got) == 1 and "w1.casing_pressure" in str(got[0]) and "ESCALATED" in str(got[0])
        assert "ESCALATION" not in env.kinds("casing@w2.casing_pressure")
