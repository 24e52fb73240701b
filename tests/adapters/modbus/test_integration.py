"""The source against real pymodbus TCP servers (and hand-written misbehaving ones) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from adapters.modbus.source import ModbusSource
from ingestd.model import Quality
from ingestd.testing import RecordingContext, StatusEvent

from .support import (
    SimPlc,
    UnitData,
    batches_with,
    holding_frame,
    load_source,
    load_sources,
    rows_of,
    running,
    start_plc,
    start_raw,
    start_silent,
    supervise,
)

FLOAT_123 = [0x42F6, 0xE979]
PLC = UnitData(
    holding={
        0: [*FLOAT_123,                          # 0-1  float32 ABCD
            0xE979, 0x42F6,                      # 2-3  float32 CDAB
            0xFFFF, 0xFFFE,                      # 4-5  int32 -2
            0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,      # 6-9  uint64 max
            0x8000, 0, 0, 0,                     # 10-13 int64 min
            0b1000_0000_0000_0100,               # 14   bits 2 and 15
            0x5745, 0x4C4C, 0x2D30, 0x3700,      # 15-18 "WELL-07"
            0x3132, 0x2E35],                     # 19-20 "12.5"
        # 21-29 are not defined on the device: reading them is exception 2 (illegal data address)
        30: [0xFF9C, 0x9CFF],                    # 30 int16 -100 ABCD, 31 int16 -100 BADC
    },
    input={0: [0x79E9, 0xF642, 7]},              # 0-1 float32 DCBA, 2 uint16
    coils={0: [True, False, True, True]},
    discrete={8: [False, True]},
)

PLC_TAGS: list[dict[str, Any]] = [
    {"name": "f_abcd", "address": 0, "type": "float32"},
    {"name": "f_cdab", "address": 2, "type": "float32", "byte_order": "CDAB"},
    {"name": "i32", "address": 4, "type": "int32"},
    {"name": "u64", "address": 6, "type": "uint64"},
    {"name": "i64", "address": 10, "type": "int64"},
    {"name": "bit2", "address": 14, "type": "bit", "bit": 2},
    {"name": "bit15", "address": 14, "type": "bit", "bit": 15},
    {"name": "text", "address": 15, "type": "string", "length": 4},
    {"name": "numtext", "address": 19, "type": "string", "length": 2, "data_type": "float"},
    {"name": "i16", "address": 30, "type": "int16"},
    {"name": "i16_badc", "address": 31, "type": "int16", "byte_order": "BADC"},
    {"name": "in_dcba", "address": 0, "register": "input", "type": "float32", "byte_order": "DCBA"},
    {"name": "in_u16", "address": 2, "register": "input"},
    {"name": "coil0", "address": 0, "register": "coil", "type": "bool"},
    {"name": "coil3", "address": 3, "register": "coil", "type": "bool"},
    {"name": "di9", "address": 9, "register": "discrete", "type": "bool"},
]


def _named(prefix: str, tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "name": f"{prefix}.{t['name']}"} for t in tags]


@contextlib.asynccontextmanager
async def plcs(*units: dict[int, UnitData]) -> AsyncIterator[list[SimPlc]]:
    started = [await start_plc(u) for u in units]
    try:
        yield started
    finally:
        for p in started:
            await p.stop()


async def test_values_and_quality_from_a_real_plc() -> None:
    async with plcs({1: PLC}) as [plc]:
        cfg = load_source(port=plc.port, poll_interval="100ms", max_gap=0, tags=PLC_TAGS)
        ctx = RecordingContext.for_source(cfg)
        async with running(ModbusSource(cfg), ctx):
            await ctx.wait_for(batches_with(ctx, 2))
    first = {tag: (v, q, s) for tag, v, q, s in rows_of(ctx)[:len(PLC_TAGS)]}
    assert {t: v for t, (v, q, s) in first.items() if t != "text"} == {
        "f_abcd": 123.45600128173828, "f_cdab": 123.45600128173828, "i32": -2.0, "u64": float(2**64 - 1),
        "i64": float(-(2**63)), "bit2": 1.0, "bit15": 1.0, "numtext": 12.5, "i16": -100.0, "i16_badc": -100.0,
        "in_dcba": 123.45600128173828, "in_u16": 7.0, "coil0": 1.0, "coil3": 1.0, "di9": 1.0,
    }
    assert all(q == Quality.GOOD for t, (_, q, _) in first.items() if t != "text")
    value, quality, status = first["text"]  # "WELL-07" is not a number: BAD with the adapter's status
    assert math.isnan(value)
    assert (quality, status) == (Quality.BAD, 0x8000_0002)
    assert len(ctx.rec.batches[0]) == len(PLC_TAGS)  # one emit per poll
    assert ctx.rec.status == [StatusEvent("up", "")]


async def test_gap_over_undefined_registers_surfaces_exception_2() -> None:
    # max_gap 10 merges 19-20 and 30-31 into one read over 21-29, which the device does not have.
    async with plcs({1: PLC}) as [plc]:
        cfg = load_source(port=plc.port, poll_interval="100ms", max_gap=10, tags=[
            {"name": "numtext", "address": 19, "type": "string", "length": 2},
            {"name": "i16", "address": 30, "type": "int16"},
            {"name": "flow", "address": 2, "register": "input"},
        ])
        ctx = RecordingContext.for_source(cfg)
        async with running(ModbusSource(cfg), ctx):
            await ctx.wait_for(batches_with(ctx, 1))
    rows = {t: (q, s) for t, _, q, s in rows_of(ctx)}
    assert rows == {"numtext": (Quality.BAD, 2), "i16": (Quality.BAD, 2), "flow": (Quality.GOOD, 0)}


async def test_busy_device_is_retried_and_exception_codes_surface() -> None:
    async with plcs({1: PLC, 2: PLC}) as [plc]:
        plc.behaviour.busy_left[1] = 1                     # first request to unit 1: busy (6), then fine
        plc.behaviour.exceptions[(2, 4, 2)] = 4            # unit 2 input registers: server device failure
        cfg = load_source(port=plc.port, poll_interval="100ms", retries=1, tags=[
            {"name": "u1", "unit_id": 1, "address": 0, "type": "float32"},
            {"name": "u2_in", "unit_id": 2, "address": 2, "register": "input"},
            {"name": "u2_h", "unit_id": 2, "address": 30, "type": "int16"},
        ])
        ctx = RecordingContext.for_source(cfg)
        async with running(ModbusSource(cfg), ctx):
            await ctx.wait_for(batches_with(ctx, 1))
    rows = {t: (v, q, s) for t, v, q, s in rows_of(ctx)}
    assert rows["u1"] == (123.45600128173828, Quality.GOOD, 0)
    assert rows["u2_h"] == (-100.0, Quality.GOOD, 0)
    assert rows["u2_in"][1:] == (Quality.BAD, 4)
    assert ctx.rec.events["retry"] == 1


async def test_gateway_unit_that_stops_answering_is_down_while_others_keep_polling() -> None:
    units = {1: PLC, 2: PLC, 3: PLC}
    async with plcs(units) as [plc]:
        plc.behaviour.hang.add(2)
        cfg = load_source(port=plc.port, poll_interval="100ms", timeout="150ms", retries=0, tags=[
            {"name": f"u{u}.f", "unit_id": u, "address": 0, "type": "float32"} for u in (1, 2, 3)
        ] + [{"name": "u2.in", "unit_id": 2, "address": 2, "register": "input"}])
        ctx = RecordingContext.for_source(cfg)
        async with running(ModbusSource(cfg), ctx):
            await ctx.wait_for(lambda c: any(e.kind == "down" for e in c.rec.status))
            n = len(ctx.rec.batches)
            await ctx.wait_for(batches_with(ctx, n + 3))
            plc.behaviour.hang.clear()  # unit 2 answers new requests again
            await ctx.wait_for(lambda c: StatusEvent("up", "unit2") in c.rec.status)
            await ctx.wait_for(batches_with(ctx, len(ctx.rec.batches) + 1))
    downs = [e for e in ctx.rec.status if e.kind == "down"]
    assert len(downs) == 1
    assert (downs[0].device, downs[0].points) == ("unit2", (1, 3))
    assert "unit 2 holding 0+2: no answer within 0.15s" in downs[0].reason
    assert [e for e in ctx.rec.status if e.kind == "up"] == [StatusEvent("up", ""), StatusEvent("up", "unit2")]
    for b in ctx.rec.batches[1:n + 3]:  # units 1 and 3 in every poll while unit 2 was down
        assert sorted(ctx.points[k].tag for k in b.key.tolist()) == ["u1.f", "u3.f"]
    assert sorted(ctx.points[k].tag for k in ctx.rec.batches[-1].key.tolist()) == ["u1.f", "u2.f", "u2.in", "u3.f"]


async def test_reconnect_after_the_server_restarts() -> None:
    plc = await start_plc({1: PLC})
    cfg = load_source(port=plc.port, poll_interval="50ms", tags=PLC_TAGS[:1])
    ctx = RecordingContext.for_source(cfg)
    source, stop = ModbusSource(cfg), asyncio.Event()
    task = asyncio.create_task(supervise(source, ctx, stop))
    try:
        await ctx.wait_for(batches_with(ctx, 2))
        await plc.stop()
        await ctx.wait_for(lambda c: any(e.kind == "down" for e in c.rec.status))
        before = len(ctx.rec.batches)
        await ctx.wait_for(lambda c: c.rec.events.get("restart", 0) >= 3)  # reconnect attempts while it is gone
        plc = await start_plc({1: PLC}, port=plc.port)
        await ctx.wait_for(batches_with(ctx, before + 2))
    finally:
        stop.set()
        await task
        await plc.stop()
    kinds = [(e.kind, e.device) for e in ctx.rec.status]
    assert kinds == [("up", ""), ("down", ""), ("up", "")]  # one down however many failed reconnects
    assert "closed by the peer" in ctx.rec.status[1].reason
    assert ctx.values_by_tag()["f_abcd"][-1] == 123.45600128173828


async def test_transaction_id_mismatch_forces_a_reconnect() -> None:
    async def wrong_tid(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
        return holding_frame((tid + 7) & 0xFFFF, unit, [1] * count)

    raw = await start_raw(wrong_tid)
    try:
        cfg = load_source(port=raw.port, poll_interval="50ms", timeout="2s", tags=PLC_TAGS[:1])
        ctx = RecordingContext.for_source(cfg)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Exception, match="unexpected transaction id") as info:
            await ModbusSource(cfg).run(ctx)
        assert loop.time() - started < 1.0  # fails at once, not after the 2 s timeout
    finally:
        await raw.stop()
    assert type(info.value).__name__ == "SourceUnavailable"
    assert [e.kind for e in ctx.rec.status] == ["down"]
    assert not ctx.rec.batches


async def test_dead_plc_never_delays_the_others() -> None:
    interval = 0.2
    silent, silent_port = await start_silent()
    async with plcs(*({1: PLC} for _ in range(20))) as live:
        configs = load_sources(
            *({"name": f"plc{i}", "protocol": "modbus", "host": "127.0.0.1", "port": p.port, "poll_interval": interval,
               "timeout": "1s", "tags": _named(f"plc{i}", PLC_TAGS[:3])} for i, p in enumerate(live)),
            {"name": "dead", "protocol": "modbus", "host": "127.0.0.1", "port": silent_port,
             "poll_interval": interval, "timeout": "1s", "tags": _named("dead", PLC_TAGS[:3])},
        )
        ctxs = [RecordingContext.for_source(c) for c in configs]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(supervise(ModbusSource(c), x, stop)) for c, x in zip(configs, ctxs, strict=True)]
        try:
            dead = ctxs[-1]
            await dead.wait_for(lambda c: c.rec.events.get("restart", 0) >= 2, timeout=15)  # 2 full timeouts
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    silent.close()
    await silent.wait_closed()
    assert [e.kind for e in ctxs[-1].rec.status] == ["down"]
    assert not ctxs[-1].rec.batches
    for ctx in ctxs[:-1]:
        ts = np.array([b.ts[0] for b in ctx.rec.batches]) / 1e6
        gaps = np.diff(ts)
        assert len(ts) >= 9, ctx.name  # >= 2 s of polling at 5 Hz
        assert gaps.max() < interval * 1.5, (ctx.name, gaps.max())
        assert "overrun" not in ctx.rec.events
