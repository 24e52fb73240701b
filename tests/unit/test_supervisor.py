"""Supervisor: typed-error policy, capped full-jitter backoff, breaker, health resets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from adapters.mqtt.config import MqttSourceConfig
from ingestd.errors import SourceAuthError, SourceConfigError, SourceUnavailable
from ingestd.metrics import Metrics
from ingestd.pipeline.breaker import Backoff
from ingestd.pipeline.supervisor import RunState, SourceRunner
from ingestd.ports import SourceContext
from ingestd.testing import RecordingContext
from tests.support.wait import eventually


def cfg(**kw: Any) -> MqttSourceConfig:
    base: dict[str, Any] = {"name": "s", "protocol": "mqtt", "subscriptions": [{"topic": "a/{tag}"}],
                            "backoff_initial": 0.001, "backoff_max": 0.01, "breaker_fail_max": 3,
                            "breaker_reset": 0.2}
    base.update(kw)
    return MqttSourceConfig.model_validate(base)


def test_backoff_is_capped_full_jitter() -> None:
    b = Backoff(0.5, 30.0, random.Random(1))
    delays = [b.next() for _ in range(50)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 2.0  # 0.5, 1, 2 caps for the first attempts
    assert max(delays[10:]) > 10  # later attempts spread up to the cap
    b.reset()
    assert b.next() <= 0.5


class Flaky:
    """Fails ``fails`` times, then connects (reports up) and waits forever."""

    calls = 0

    def __init__(self, fails: int, exc: type[Exception] = SourceUnavailable) -> None:
        self.fails = fails
        self.exc = exc

    async def run(self, ctx: SourceContext) -> None:
        Flaky.calls += 1
        if Flaky.calls <= self.fails:
            raise self.exc(f"attempt {Flaky.calls} failed")
        ctx.status.up()
        await asyncio.Event().wait()


def runner(c: MqttSourceConfig, source: Any, downs: list[str]) -> tuple[SourceRunner, Metrics]:
    m = Metrics()

    def make_ctx(r: SourceRunner) -> SourceContext:
        ctx = RecordingContext.for_source(c)
        orig_up = ctx.status.up

        def up(device: str = "") -> None:
            r.healthy()
            orig_up(device)

        ctx.status.up = up  # type: ignore[method-assign]
        return ctx

    return SourceRunner(c, lambda _: source, make_ctx, m, mark_down=downs.append), m


async def wait_state(r: SourceRunner, state: RunState, attempts: int | None = None) -> None:
    await eventually(lambda: r.state is state and (attempts is None or r.attempts >= attempts), interval=0.005,
                     timeout=10, what=f"runner {state}")


async def test_unavailable_is_retried_until_it_connects() -> None:
    Flaky.calls = 0
    downs: list[str] = []
    r, m = runner(cfg(), Flaky(2), downs)
    task = asyncio.create_task(r.run())
    await wait_state(r, RunState.RUNNING, attempts=3)
    task.cancel()
    assert downs == ["attempt 1 failed", "attempt 2 failed"]
    assert r.breaker.current_state == "closed"
    assert r.backoff.attempt == 0  # reset once healthy
    assert m.source_restarts.labels("s", "unavailable")._value.get() == 2


async def test_breaker_opens_after_fail_max_and_holds_retries() -> None:
    Flaky.calls = 0
    downs: list[str] = []
    r, m = runner(cfg(breaker_reset=0.3), Flaky(100), downs)
    task = asyncio.create_task(r.run())
    await eventually(lambda: r.breaker.current_state == "open", interval=0.001, timeout=5, what="breaker open")
    opened_at = Flaky.calls
    assert opened_at == 3
    assert m.breaker_state.labels("source", "s")._value.get() == 2
    await asyncio.sleep(0.1)
    assert Flaky.calls == opened_at  # no attempt while open
    await eventually(lambda: Flaky.calls > opened_at, interval=0.01, timeout=5, what="half-open retry")
    task.cancel()


@pytest.mark.parametrize(("exc", "state"), [(SourceAuthError, RunState.PARKED),
                                            (SourceConfigError, RunState.DISABLED)])
async def test_auth_and_config_errors_are_not_retried(exc: type[Exception], state: RunState) -> None:
    Flaky.calls = 0
    downs: list[str] = []
    r, _ = runner(cfg(), Flaky(100, exc), downs)
    task = asyncio.create_task(r.run())
    await wait_state(r, state)
    await asyncio.sleep(0.05)
    assert Flaky.calls == 1
    assert len(downs) == 1
    task.cancel()


async def test_adapter_bug_does_not_kill_the_supervisor() -> None:
    Flaky.calls = 0
    downs: list[str] = []
    r, m = runner(cfg(), Flaky(1, RuntimeError), downs)
    task = asyncio.create_task(r.run())
    await wait_state(r, RunState.RUNNING, attempts=2)
    task.cancel()
    assert m.source_restarts.labels("s", "bug")._value.get() == 1
