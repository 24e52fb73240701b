"""The run loop against an in-memory device: batches, quality/status, unit down/up, scheduling.

Real-server behaviour (pymodbus on loopback) is in test_integration.py; these tests script exact
failures (exception codes, timeouts, lost connections) and check what the source does with them.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import pytest

from adapters.modbus.schedule import phase_offset
from adapters.modbus.source import ModbusSource
from ingestd.errors import SourceUnavailable
from ingestd.model import Quality
from ingestd.testing import RecordingContext, StatusEvent

from .support import FakeDevice, batches_with, load_source, rows_of, running

TAGS = [
    {"name": "u1.pressure", "unit_id": 1, "address": 0, "type": "float32"},
    {"name": "u1.flow", "unit_id": 1, "address": 2, "type": "uint16"},
    {"name": "u1.far", "unit_id": 1, "address": 200, "type": "int16"},
    {"name": "u1.pump", "unit_id": 1, "address": 5, "register": "coil", "type": "bool"},
    {"name": "u2.level", "unit_id": 2, "address": 10, "type": "uint16"},
    {"name": "u2.alarm", "unit_id": 2, "address": 11, "type": "bit", "bit": 2},
    {"name": "u3.temp", "unit_id": 3, "address": 0, "type": "int16", "register": "input"},
]


def _device() -> FakeDevice:
    return FakeDevice({
        (1, "holding"): {0: 0x42F6, 1: 0xE979, 2: 17, 200: 0xFFFE},
        (1, "coil"): {5: True},
        (2, "holding"): {10: 42, 11: 0b100},
        (3, "input"): {0: 0xFF9C},
    })


def _setup(**overrides: Any) -> tuple[ModbusSource, RecordingContext, FakeDevice]:
    cfg = load_source(**{"poll_interval": "20ms", "tags": TAGS, **overrides})
    dev = _device()
    return ModbusSource(cfg, dev.factory), RecordingContext.for_source(cfg), dev


def _unit_calls(dev: FakeDevice, unit: int) -> int:
    return sum(1 for c in dev.calls if c[1] == unit)


async def test_one_batch_per_poll_with_every_value_decoded() -> None:
    source, ctx, _dev = _setup()
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 3))
    assert [len(b) for b in ctx.rec.batches[:3]] == [7, 7, 7]
    first = ctx.rec.batches[0]
    assert {ctx.points[k].tag: v for k, v in zip(first.key.tolist(), first.value.tolist(), strict=True)} == {
        "u1.pressure": 123.45600128173828, "u1.flow": 17.0, "u1.far": -2.0, "u1.pump": 1.0,
        "u2.level": 42.0, "u2.alarm": 1.0, "u3.temp": -100.0,
    }
    assert first.quality.tolist() == [Quality.GOOD] * 7
    assert first.status.tolist() == [0] * 7
    # 5 requests per poll: unit 1 coil, unit 1 holding 0-2, unit 1 holding 200, unit 2 holding, unit 3 input
    assert ctx.rec.gauges["requests_per_poll"] == 5
    assert ctx.rec.status == [StatusEvent("up", "")]


async def test_exception_marks_only_that_requests_tags_bad() -> None:
    source, ctx, dev = _setup()
    dev.script[(1, "holding", 0)] = [2]  # illegal data address for the request covering 0..2
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 2))
    first = {tag: (v, q, s) for tag, v, q, s in rows_of(ctx)[:7]}
    for tag in ("u1.pressure", "u1.flow"):
        value, quality, status = first[tag]
        assert math.isnan(value)
        assert (quality, status) == (Quality.BAD, 2)
    assert first["u1.far"] == (-2.0, Quality.GOOD, 0)
    assert first["u2.level"] == (42.0, Quality.GOOD, 0)
    second = {tag: (v, q, s) for tag, v, q, s in rows_of(ctx)[7:14]}
    assert second["u1.pressure"] == (123.45600128173828, Quality.GOOD, 0)
    assert ctx.rec.events["exception"] == 1
    assert [e.kind for e in ctx.rec.status] == ["up"]  # an exception answer is not an outage


async def test_busy_is_retried_within_the_poll() -> None:
    source, ctx, dev = _setup(retries=2)
    dev.script[(2, "holding", 10)] = [6, 6]
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 1))
    assert {t: (v, q) for t, v, q, _ in rows_of(ctx)}["u2.level"] == (42.0, Quality.GOOD)
    assert ctx.rec.events["retry"] == 2


async def test_busy_beyond_retries_is_bad_with_code_6() -> None:
    source, ctx, dev = _setup(retries=1)
    dev.script[(2, "holding", 10)] = [6, 6]
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 1))
    rows = {t: (q, s) for t, _, q, s in rows_of(ctx)}
    assert rows["u2.level"] == rows["u2.alarm"] == (Quality.BAD, 6)


async def test_gateway_exception_marks_the_unit_bad_and_down_then_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source, ctx, dev = _setup()
    dev.script[(2, "holding", 10)] = [11, 11, 11]
    u2_points = (4, 5)
    async with running(source, ctx):
        await ctx.wait_for(lambda c: StatusEvent("up", "unit2") in c.rec.status)
    rows = {t: (q, s) for t, _, q, s in rows_of(ctx)[:7]}
    assert rows["u2.level"] == rows["u2.alarm"] == (Quality.BAD, 11)
    assert rows["u1.flow"] == (Quality.GOOD, 0)
    down = [e for e in ctx.rec.status if e.kind == "down"]
    assert len(down) == 1
    assert (down[0].device, down[0].points) == ("unit2", u2_points)
    assert "exception 11 (gateway target device failed to respond)" in down[0].reason
    assert [e for e in ctx.rec.status if e.kind == "up"] == [StatusEvent("up", ""), StatusEvent("up", "unit2")]
    assert not [r for r in caplog.records if r.name == ctx.log.name]  # no per-poll logging (the core logs transitions)


async def test_silent_unit_goes_down_once_is_probed_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source, ctx, dev = _setup(retries=2)
    dev.dead.add(2)
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 6))
        calls_while_down = _unit_calls(dev, 2)
        dev.dead.clear()
        await ctx.wait_for(lambda c: StatusEvent("up", "unit2") in c.rec.status)
        await ctx.wait_for(batches_with(ctx, len(ctx.rec.batches) + 1))
    down = [e for e in ctx.rec.status if e.kind == "down"]
    assert len(down) == 1
    assert (down[0].device, down[0].points) == ("unit2", (4, 5))
    assert "no answer within 1s" in down[0].reason
    # first poll: 1 try + 2 retries; afterwards one probe per poll and no retries
    polls = len([b for b in ctx.rec.batches if 4 not in b.key.tolist()])
    assert calls_while_down <= 3 + (polls - 1) + 1
    # units 1 and 3 kept coming every poll; unit 2's rows are absent (not re-emitted) while it is down
    for b in ctx.rec.batches[:6]:
        tags = {ctx.points[k].tag for k in b.key.tolist()}
        assert {"u1.pressure", "u3.temp"} <= tags
        assert "u2.level" not in tags
    assert "u2.level" in {ctx.points[k].tag for k in ctx.rec.batches[-1].key.tolist()}
    assert [e.kind for e in ctx.rec.status if e.device == ""] == ["up"]  # the connection itself stayed up
    assert not [r for r in caplog.records if r.name == ctx.log.name]  # no per-poll logging (the core logs transitions)


async def test_no_answer_at_all_is_a_connection_failure_reported_once() -> None:
    source, ctx, dev = _setup(retries=0)
    dev.dead.update({1, 2, 3})
    for _ in range(3):  # the core supervisor would call run() again after backoff
        with pytest.raises(SourceUnavailable, match=r"modbus source plc: no answer from 127.0.0.1:502"):
            await source.run(ctx)
    assert ctx.rec.status == [StatusEvent("down", "", "no answer from 127.0.0.1:502 (3 request(s) timed out)")]
    assert not ctx.rec.batches
    assert dev.closed == dev.connects == 3
    dev.dead.clear()
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 1))
    assert ctx.rec.status[1:] == [StatusEvent("up", "")]


async def test_connection_lost_mid_poll_emits_what_was_read_then_raises() -> None:
    source, ctx, dev = _setup()
    dev.script[(2, "holding", 10)] = ["lost"]
    with pytest.raises(SourceUnavailable, match="closed by the peer"):
        await source.run(ctx)
    assert sorted(ctx.points[k].tag for k in ctx.rows.key.tolist()) == [
        "u1.far", "u1.flow", "u1.pressure", "u1.pump",
    ]
    assert ctx.rec.status == [StatusEvent("down", "", "connection to fake:502 closed by the peer")]
    assert dev.closed == 1


async def test_connect_refused_is_source_unavailable_and_down_once() -> None:
    source, ctx, dev = _setup()
    dev.refuse = True
    for _ in range(2):
        with pytest.raises(SourceUnavailable, match="refused or unreachable"):
            await source.run(ctx)
    assert [e.kind for e in ctx.rec.status] == ["down"]


def _grid(name: str, interval: float, times: list[float]) -> tuple[list[int], list[float]]:
    """Slot number and lateness of each time on the source's grid ``phase + k * interval``."""
    phase = phase_offset(name, interval)
    slots = [round((t - phase) / interval) for t in times]
    return [n - slots[0] for n in slots], [t - (phase + n * interval) for t, n in zip(times, slots, strict=True)]


async def test_polls_stay_on_the_grid_without_drift() -> None:
    interval = 0.1
    source, ctx, dev = _setup(poll_interval=interval, tags=TAGS[:1])
    dev.latency = 0.03  # each poll takes 30 % of the interval: "now + interval" would drift 30 ms per poll
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 10))
    slots, lateness = _grid("plc", interval, [c[0] for c in dev.calls[:10]])
    assert slots == list(range(10))
    assert max(lateness) < 0.02
    assert min(lateness) > -0.002
    assert "overrun" not in ctx.rec.events


async def test_overrun_is_counted_and_missed_slots_are_skipped() -> None:
    interval = 0.1
    source, ctx, dev = _setup(poll_interval=interval, tags=TAGS[:1])
    dev.script[(1, "holding", 0)] = [0.0, 0.25]  # the second poll takes 2.5 intervals
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 4))
    assert ctx.rec.events["overrun"] == 1
    assert ctx.rec.events["missed_poll"] == 2
    # slots 2 and 3 are skipped, not fired back to back; the source stays on its grid
    slots, lateness = _grid("plc", interval, [c[0] for c in dev.calls[:4]])
    assert slots == [0, 1, 4, 5]
    assert max(lateness) < 0.02


async def test_pause_between_requests() -> None:
    source, ctx, dev = _setup(pause="15ms", poll_interval="1s")
    async with running(source, ctx):
        await ctx.wait_for(batches_with(ctx, 1))
    starts = [c[0] for c in dev.calls[:5]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.014


async def test_polls_of_different_sources_are_phase_shifted() -> None:
    # Same interval, different names: the first poll lands on each name's own phase of the grid.
    firsts = []
    for name in ("well-a", "well-b"):
        cfg = load_source(name=name, poll_interval="200ms", tags=TAGS[:1])
        dev = _device()
        ctx = RecordingContext.for_source(cfg)
        async with running(ModbusSource(cfg, dev.factory), ctx):
            await ctx.wait_for(batches_with(ctx, 1))
        firsts.append(dev.calls[0][0] % 0.2)
    for name, t in zip(("well-a", "well-b"), firsts, strict=True):
        expected = phase_offset(name, 0.2)
        assert min(abs(t - expected), 0.2 - abs(t - expected)) < 0.03, name
