"""Teams notifier against a real local HTTP server (reference/alarms.md §6.7, scenarios 43–48).

Backoff sleeps go through an injected fake clock (recorded, not slept); HTTP, timeouts and connection
resets are real.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator

import pytest

from alarms.config import AlarmsConfig
from alarms.dispatch import Delivery, Dispatcher
from alarms.links import AckLinks
from alarms.model import US, AlarmPolicy, Level, Priority
from alarms.notifiers.cards import encode, envelope
from alarms.notifiers.sender import deliver
from alarms.notifiers.teams import RetryPolicy, SendOutcome, TeamsNotifier, webhook_id
from alarms.testing import T0, AlarmHarness
from ingestd.config.types import Secret

from .teams_server import Action, FakeTeams

BODY = encode(envelope({"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                        "version": "1.2", "body": [{"type": "TextBlock", "text": "evt-1 #1"}]}))


class FakeTime:
    """Monotonic clock advanced only by the notifier's (recorded) sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def teams() -> AsyncIterator[FakeTeams]:
    async with FakeTeams() as server:
        yield server


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


def notifier(clock: FakeTime, **retry: float) -> TeamsNotifier:
    policy = RetryPolicy(**{"timeout_s": 2.0, "base_s": 0.5, "cap_s": 8.0, **retry})  # type: ignore[arg-type]
    return TeamsNotifier(retry=policy, sleep=clock.sleep, monotonic=clock.monotonic, rng=lambda: 0.5,
                         rate_per_s=1000.0)


async def test_s43_retry_503_503_202_backoff_with_jitter(teams: FakeTeams, clock: FakeTime) -> None:
    teams.push(503, 503, 202)
    async with notifier(clock) as n:
        res = await n.send(teams.url, BODY, dedup_key="evt-1#1")
    assert res.ok and res.attempts == 3 and res.status == 202
    assert clock.sleeps == [0.25, 0.5]  # full jitter (rng 0.5) of 0.5 s, 1 s
    assert [r.body for r in teams.requests] == [BODY] * 3  # one logical notification, 3 attempts
    assert {r.headers["x-ingestd-event"] for r in teams.requests} == {"evt-1#1"}
    assert all(r.errors == [] for r in teams.requests)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_s43_transient_statuses_are_retried(teams: FakeTeams, clock: FakeTime, status: int) -> None:
    teams.push(status, 202)
    async with notifier(clock) as n:
        res = await n.send(teams.url, BODY)
    assert res.ok and res.attempts == 2


async def test_s43_network_reset_is_retried(teams: FakeTeams, clock: FakeTime) -> None:
    teams.push(Action(reset=True), 202)
    async with notifier(clock) as n:
        res = await n.send(teams.url, BODY)
    assert res.ok and res.attempts == 2 and len(teams.requests) == 2


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), ("3600", 60.0), ("HTTP-DATE", 7.0)])
async def test_s43_429_honours_retry_after_capped(teams: FakeTeams, clock: FakeTime, header: str,
                                                 expected: float) -> None:
    wall = 1_800_000_000.0
    if header == "HTTP-DATE":
        header = email.utils.formatdate(wall + 7, usegmt=True)
    teams.push(Action(429, {"Retry-After": header}), 202)
    n = TeamsNotifier(retry=RetryPolicy(timeout_s=2, retry_after_max_s=60, deadline_s=300), sleep=clock.sleep,
                      monotonic=clock.monotonic, wall=lambda: wall, rate_per_s=1000.0)
    async with n:
        res = await n.send(teams.url, BODY)
    assert res.ok and res.attempts == 2 and clock.sleeps == [pytest.approx(expected)]


async def test_s44_timeout_after_acceptance_may_duplicate_with_the_same_event_id(teams: FakeTeams,
                                                                                  clock: FakeTime) -> None:
    teams.push(Action(hang=True), 202)  # Teams processed the post, but the answer never arrives
    async with notifier(clock, timeout_s=0.2) as n:
        res = await n.send(teams.url, BODY, dedup_key="evt-7#4")
    assert res.ok and res.attempts == 2  # one logical send, two attempts: at-least-once
    first, second = teams.requests
    assert first.body == second.body and first.headers["x-ingestd-event"] == second.headers["x-ingestd-event"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_s45_non_retryable_statuses_fail_at_once_and_never_log_the_url(
        teams: FakeTeams, clock: FakeTime, status: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    teams.push(status)
    async with notifier(clock) as n:
        res = await n.send(Secret(teams.url), BODY, route="oncall")
    assert res.outcome is SendOutcome.REJECTED and res.fail_over and res.attempts == 1
    assert res.detail == f"HTTP {status}" and len(teams.requests) == 1
    assert res.webhook == webhook_id(teams.url)
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(res) + repr(n)
    assert "TOPSECRET" not in text and "sig=" not in text and f":{teams.port}/workflows" not in text
    assert any("failed: rejected" in r.getMessage() for r in caplog.records)


async def test_s45_fail_over_to_the_fallback_route(teams: FakeTeams, clock: FakeTime,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeTeams() as backup:
        monkeypatch.setenv("PRIMARY_HOOK", teams.url)
        monkeypatch.setenv("BACKUP_HOOK", backup.url)
        cfg = AlarmsConfig.model_validate({"routes": [
            {"name": "oncall", "tenant": "acme", "webhook": "env:PRIMARY_HOOK", "fallback": "backup",
             "group_wait": "0s"},
            {"name": "backup", "tenant": "acme", "priorities": [], "webhook": "env:BACKUP_HOOK"}]})
        teams.push(404)  # workflow deleted
        h = AlarmHarness(AlarmPolicy(priority=Priority.HIGH, tag="well_1/tp", site="well_1"))
        h.cond(True, Level.HI, 1500.0, 1450.0)
        d = Dispatcher(cfg)
        d.submit(h.intents[0], T0)
        (delivery,) = d.tick(T0)
        async with notifier(clock) as n:
            report = await deliver(delivery, cfg, n, links=AckLinks("x" * 32, "https://wellos.example"), now_us=T0)
        assert report.ok and report.delivered_via == "backup" and report.failed_routes == ("oncall",)
        assert [r for r, _ in report.attempts] == ["oncall", "backup"]
        (got,) = backup.requests
        assert got.errors == [] and got.body == teams.requests[0].body  # the same card, same event id
        card = got.json["attachments"][0]["content"]
        assert card["actions"][0]["title"] == "Acknowledge"


async def test_s46_202_is_accepted_and_legacy_throttle_text_is_retried(teams: FakeTeams, clock: FakeTime) -> None:
    teams.push(Action(200, body=b"Microsoft Teams endpoint returned HTTP error 429"), 202)
    async with notifier(clock) as n:
        res = await n.send(teams.url, BODY)
    assert res.ok and res.status == 202 and res.attempts == 2


async def test_retry_deadline_exhausted(teams: FakeTeams, clock: FakeTime) -> None:
    teams.push(*([503] * 50))
    async with notifier(clock, deadline_s=10.0) as n:
        res = await n.send(teams.url, BODY)
    assert res.outcome is SendOutcome.EXHAUSTED and res.fail_over
    assert sum(clock.sleeps) <= 10.0 and res.attempts == len(teams.requests) >= 4


async def test_s47_one_request_per_second_per_webhook_in_order(teams: FakeTeams, clock: FakeTime) -> None:
    n = TeamsNotifier(retry=RetryPolicy(timeout_s=2), sleep=clock.sleep, monotonic=clock.monotonic)
    bodies = [BODY.replace(b"evt-1 #1", f"evt-1 #{k}".encode()) for k in range(6)]
    async with n:
        results = await asyncio.gather(*(n.send(teams.url, b) for b in bodies))
    assert all(r.ok for r in results)
    assert clock.sleeps == pytest.approx([1.0] * 5)  # paced at 1/s
    assert [r.body for r in teams.requests] == bodies  # sent in submission order


async def test_unusable_webhooks_are_invalid_without_sending(teams: FakeTeams, clock: FakeTime,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_HOOK", raising=False)
    async with notifier(clock) as n:
        r1 = await n.send(Secret("env:NOPE_HOOK"), BODY)
        r2 = await n.send(teams.url, b"x" * 29_000)
        r3 = await n.send("ftp://127.0.0.1/hook?sig=TOPSECRET", BODY)
    assert [r.outcome for r in (r1, r2, r3)] == [SendOutcome.INVALID] * 3
    assert "NOPE_HOOK" in r1.detail and "TOPSECRET" not in r3.detail
    assert teams.requests == []


async def test_end_to_end_alarm_to_teams_card(teams: FakeTeams, clock: FakeTime,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples → state machine → dispatcher (group_wait) → rendered cards → real HTTP → validated."""
    monkeypatch.setenv("HOOK", teams.url)
    cfg = AlarmsConfig.model_validate({"routes": [{"name": "oncall", "webhook": "env:HOOK", "group_wait": "10s"}]})
    d = Dispatcher(cfg)
    links = AckLinks("y" * 32, "https://wellos.example/api")
    harnesses = [AlarmHarness(AlarmPolicy(priority=Priority.HIGH, tag=f"pad_7/well_{k}/tp", site="pad_7",
                                          unit="psi"), alarm_id=f"tp@pad_7/well_{k}/tp") for k in range(3)]
    for h in harnesses:
        h.cond(True, Level.HI, 1500.0, 1450.0)
        for i in h.intents:
            d.submit(i, T0)
    deliveries: list[Delivery] = d.tick(T0 + 10 * US)
    async with notifier(clock) as n:
        reports = [await deliver(x, cfg, n, links=links, now_us=T0) for x in deliveries]
    assert [r.ok for r in reports] == [True]
    (req,) = await teams.wait_requests(1)
    assert req.errors == []
    texts = [b["text"] for b in req.json["attachments"][0]["content"]["body"]]
    assert texts[0] == "3 alarm notifications — pad_7"
    assert all("[Acknowledge](https://wellos.example/api/v1/alarms/ack?" in t for t in texts[1:])


def test_fake_time_is_not_wall_time() -> None:
    assert FakeTime().monotonic() != time.monotonic()
