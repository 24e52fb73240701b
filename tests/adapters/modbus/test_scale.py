"""Many simulated PLCs polled at 1 s by one event loop: every value arrives, correctly decoded."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import pytest

from adapters.modbus.source import ModbusSource
from ingestd.model import Quality
from ingestd.testing import RecordingContext

from .support import SimPlc, UnitData, load_sources, start_plc, supervise

FLOATS = 10  # registers 0..19: float32 (CDAB on odd devices)
WORDS = 30   # registers 20..49: int16


def _device(i: int) -> tuple[UnitData, dict[str, float]]:
    """50 registers whose values identify the device, and the decoded values expected from them."""
    regs: list[int] = []
    expected: dict[str, float] = {}
    swap = i % 2 == 1
    for f in range(FLOATS):
        value = struct.unpack(">f", struct.pack(">f", i * 1000.0 + f + 0.25))[0]
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        regs += [lo, hi] if swap else [hi, lo]
        expected[f"plc{i}.f{f}"] = value
    for w in range(WORDS):
        value = (i * 37 + w * 101) % 65536 - 32768
        regs.append(value & 0xFFFF)
        expected[f"plc{i}.w{w}"] = float(value)
    return UnitData(holding={0: regs}), expected


def _source(i: int, port: int) -> dict[str, Any]:
    order = "CDAB" if i % 2 == 1 else "ABCD"
    tags = [{"name": f"plc{i}.f{f}", "address": 2 * f, "type": "float32", "byte_order": order}
            for f in range(FLOATS)]
    tags += [{"name": f"plc{i}.w{w}", "address": 2 * FLOATS + w, "type": "int16"} for w in range(WORDS)]
    return {"name": f"plc{i}", "protocol": "modbus", "host": "127.0.0.1", "port": port, "poll_interval": "1s",
            "timeout": "2s", "tags": tags}


async def _poll_many(n: int, polls: int = 2) -> float:
    devices = [_device(i) for i in range(n)]
    plcs: list[SimPlc] = [await start_plc({1: data}) for data, _ in devices]
    configs = load_sources(*(_source(i, p.port) for i, p in enumerate(plcs)))
    ctxs = [RecordingContext.for_source(c) for c in configs]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(supervise(ModbusSource(c), x, stop)) for c, x in zip(configs, ctxs, strict=True)]
    started = time.monotonic()
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(x.wait_for(lambda c: len(c.rec.batches) >= polls, timeout=30) for x in ctxs))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for p in plcs:
            await p.stop()
    for ctx, (_, expected) in zip(ctxs, devices, strict=True):
        assert "restart" not in ctx.rec.events, ctx.name
        for batch in ctx.rec.batches[:polls]:
            assert len(batch) == FLOATS + WORDS  # one emit per poll with every tag
            assert (batch.quality == Quality.GOOD).all()
            got = {ctx.points[k].tag: v for k, v in zip(batch.key.tolist(), batch.value.tolist(), strict=True)}
            assert got == expected, ctx.name
        assert ctx.rec.status[0].kind == "up"
    return elapsed


async def test_50_plcs_at_1s() -> None:
    elapsed = await _poll_many(50)
    assert elapsed < 3.5  # two polls: at most one interval of phase + one interval + slack


async def test_200_plcs_at_1s() -> None:
    elapsed = await _poll_many(200)
    assert elapsed < 4.0


@pytest.mark.slow
async def test_500_plcs_at_1s() -> None:
    elapsed = await _poll_many(500, polls=3)
    assert elapsed < 6.0
