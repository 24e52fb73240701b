"""Integration tests of OpcUaSource against a real asyncua server: subscription and polling data
paths, quality, timestamps, unsupported types, bad nodes, server-side deadband."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asyncua import ua
from opcua_testserver import URI, PlcServer, latest, source_config

from adapters.opcua.config import OpcUaSourceConfig
from adapters.opcua.source import OpcUaSource
from ingestd.model import Quality, now_us
from ingestd.testing import RecordingContext

BAD_SENSOR = 0x808A_0000
UNCERTAIN_SUBNORMAL = 0x4094_0000


@asynccontextmanager
async def running(cfg: OpcUaSourceConfig) -> AsyncIterator[tuple[OpcUaSource, RecordingContext]]:
    source = OpcUaSource(cfg)
    ctx = RecordingContext.for_source(cfg)
    task = asyncio.create_task(source.run(ctx))
    try:
        yield source, ctx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # re-raises what the source failed with, if it did


def rows_of(ctx: RecordingContext, tag: str) -> list[tuple[int, float, int, int]]:
    b = ctx.rows
    key = next(p.index for p in ctx.points if p.tag == tag)
    return [(int(t), float(v), int(q), int(s)) for k, t, v, q, s in
            zip(b.key, b.ts, b.value, b.quality, b.status, strict=True) if k == key]


def has_value(tag: str, value: float) -> Any:
    return lambda c: value in c.values_by_tag().get(tag, [])


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_values_flow_and_changes_arrive(plc: Any, mode: str) -> None:
    server: PlcServer = await plc(n_tags=5)
    cfg = source_config(server.endpoint, 5, mode=mode, polling={"interval": "100ms"})
    async with running(cfg) as (_, ctx):
        await ctx.wait_for(lambda c: all(latest(c, f"tag{i:02d}") == float(i) for i in range(5)))
        assert ctx.rec.status[0].kind == "up"
        await server.write(2, 42.5)
        await ctx.wait_for(has_value("tag02", 42.5))
    b = ctx.rows
    assert set(b.quality.tolist()) == {Quality.GOOD}
    assert set(b.status.tolist()) == {0}
    assert ctx.rec.gauges.get("monitored_items" if mode == "subscription" else "polled_items") == 5


async def test_subscription_builds_one_batch_per_publish(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=30)
    cfg = source_config(server.endpoint, 30, subscription={"publishing_interval": "200ms"})
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(30)
        before = len(ctx.rec.batches)
        for i in range(30):
            await server.write(i, 100.0 + i)
        await ctx.wait_for(lambda c: all(latest(c, f"tag{i:02d}") == 100.0 + i for i in range(30)))
        # 30 changes written back-to-back arrive in one or two publish cycles, not 30 batches
        assert len(ctx.rec.batches) - before <= 3


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_quality_from_status_and_bad_is_nan(plc: Any, mode: str) -> None:
    server: PlcServer = await plc(n_tags=3)
    cfg = source_config(server.endpoint, 3, mode=mode, polling={"interval": "100ms"})
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(3)
        await server.write(0, 7.25, status=UNCERTAIN_SUBNORMAL)
        await server.write(1, 99.0, status=BAD_SENSOR)
        await ctx.wait_for(lambda c: any(r[3] == UNCERTAIN_SUBNORMAL for r in rows_of(c, "tag00"))
                           and any(r[3] == BAD_SENSOR for r in rows_of(c, "tag01")))
    unc = next(r for r in rows_of(ctx, "tag00") if r[3] == UNCERTAIN_SUBNORMAL)
    bad = next(r for r in rows_of(ctx, "tag01") if r[3] == BAD_SENSOR)
    assert unc[1:3] == (7.25, Quality.UNCERTAIN)
    assert math.isnan(bad[1])
    assert bad[2] == Quality.BAD


@pytest.mark.parametrize(("mode", "expect"), [("source", "src"), ("server", "srv"), ("receive", "recv")])
async def test_timestamp_source_and_fallbacks(plc: Any, mode: str, expect: str) -> None:
    server: PlcServer = await plc(n_tags=3)
    src = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    srv = dt.datetime(2024, 5, 1, 12, 0, 1, 654321, tzinfo=dt.UTC)
    src_us = int(src.timestamp() * 1e6)
    srv_us = int(srv.timestamp() * 1e6)
    cfg = source_config(server.endpoint, 3, timestamp=mode)
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(3)
        t0 = now_us()
        await server.write(0, 10.0, source_ts=src, server_ts=srv)  # both present
        await server.write(1, 11.0, server_ts=srv)  # no source timestamp
        await server.write(2, 12.0)  # neither
        await ctx.wait_for(lambda c: latest(c, "tag00") == 10.0 and latest(c, "tag01") == 11.0
                           and latest(c, "tag02") == 12.0)
    ts = {tag: rows_of(ctx, tag)[-1][0] for tag in ("tag00", "tag01", "tag02")}
    if expect == "src":
        assert ts["tag00"] == src_us
        assert ts["tag01"] == srv_us  # falls back to the server timestamp
    elif expect == "srv":
        assert ts["tag00"] == srv_us
        assert ts["tag01"] == srv_us
    else:
        assert ts["tag00"] >= t0
        assert ts["tag01"] >= t0
    assert t0 <= ts["tag02"] <= now_us()  # nothing sent: receive time


async def test_value_types_numbers_stored_strings_rejected_once_per_tag(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=1, string_tags=1)
    plant = server.server.get_node(f"ns={server.ns};s=Plant")
    await plant.add_variable(f"ns={server.ns};s=Flag", "Flag", True)
    await plant.add_variable(f"ns={server.ns};s=Count", "Count", ua.Variant(-42, ua.VariantType.Int64))
    await plant.add_variable(f"ns={server.ns};s=State", "State", ua.Variant(3, ua.VariantType.Int32),
                             datatype=ua.NodeId(ua.ObjectIds.ServerState))
    tags = [{"name": "num", "node_id": f"nsu={URI};s=Tag00"},
            {"name": "text", "node_id": f"nsu={URI};s=Text0", "data_type": "float"},
            {"name": "flag", "node_id": f"nsu={URI};s=Flag", "data_type": "bool"},
            {"name": "count", "node_id": f"nsu={URI};s=Count", "data_type": "int"},
            {"name": "state", "node_id": f"nsu={URI};s=State", "data_type": "enum"}]
    cfg = source_config(server.endpoint, 0, tags=tags)
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(5)
        await server.nodes[1].write_value("changed")
        await ctx.wait_for(lambda c: len(rows_of(c, "text")) >= 2)
    assert [rows_of(ctx, t)[0][1:3] for t in ("flag", "count", "state")] == [
        (1.0, Quality.GOOD), (-42.0, Quality.GOOD), (3.0, Quality.GOOD)]
    texts = rows_of(ctx, "text")
    assert all(math.isnan(v) and q == Quality.BAD and s == 0x8074_0000 for _, v, q, s in texts)
    assert len(ctx.rec.rejects) == 1  # once per tag, not once per value
    reason, detail, _ = ctx.rec.rejects[0]
    assert reason == "unsupported_type"
    assert "'text'" in detail
    assert "String" in detail


async def test_bad_node_reported_per_tag_and_retried(plc: Any, caplog: pytest.LogCaptureFixture) -> None:
    server: PlcServer = await plc(n_tags=2)
    tags = [{"name": "good", "node_id": f"nsu={URI};s=Tag00"},
            {"name": "later", "node_id": f"nsu={URI};s=Later"},
            {"name": "newns", "node_id": "nsu=urn:later:ns;i=5000"}]
    cfg = source_config(server.endpoint, 0, tags=tags, bad_node_retry="200ms")
    caplog.set_level(logging.WARNING)
    async with running(cfg) as (_, ctx):
        await ctx.wait_for(lambda c: latest(c, "good") == 0.0 and len(rows_of(c, "later")) == 1
                           and len(rows_of(c, "newns")) == 1)
        assert rows_of(ctx, "later")[0][2:] == (Quality.BAD, 0x8034_0000)  # BadNodeIdUnknown
        assert rows_of(ctx, "newns")[0][2:] == (Quality.BAD, 0x8034_0000)
        await server.write(0, 5.0)  # the rest keeps flowing
        await ctx.wait_for(has_value("good", 5.0))
        await ctx.wait_for(lambda c: c.rec.events.get("bad_node", 0) >= 2)
        # several retries happen; each problem is logged once
        await asyncio.wait_for(_retries(ctx, 3), 10)
        srv = server.server
        plant = srv.get_node(f"ns={server.ns};s=Plant")
        await plant.add_variable(f"ns={server.ns};s=Later", "Later", 33.0)
        other = await srv.register_namespace("urn:later:ns")
        await plant.add_variable(f"ns={other};i=5000", "NewNs", 44.0)
        await ctx.wait_for(lambda c: latest(c, "later") == 33.0 and latest(c, "newns") == 44.0)
    logged = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(logged) == 2
    assert ctx.rec.events["bad_node"] == 2
    assert ctx.rec.gauges["bad_nodes"] == 0


async def _retries(ctx: RecordingContext, n: int) -> None:
    """Wait until the retry loop has run ``n`` more times."""
    target = ctx.rec.events.get("bad_node_retry", 0) + n
    await ctx.wait_for(lambda c: c.rec.events.get("bad_node_retry", 0) >= target)


async def test_absolute_deadband_filter_is_sent_to_the_server(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=2)
    tags = [{"name": "filtered", "node_id": f"nsu={URI};s=Tag00",
             "monitoring": {"deadband_type": "absolute", "deadband_value": 5.0}},
            {"name": "plain", "node_id": f"nsu={URI};s=Tag01"}]
    cfg = source_config(server.endpoint, 0, tags=tags)
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(2)
        for v in (10.0, 12.0, 20.0):
            await server.write(0, v)
            await server.write(1, v)
        await ctx.wait_for(lambda c: latest(c, "filtered") == 20.0 and latest(c, "plain") == 20.0)
    assert 12.0 not in ctx.values_by_tag()["filtered"]  # |12 - 10| <= 5: suppressed by the server
    assert 12.0 in ctx.values_by_tag()["plain"]


async def test_polling_reports_bad_nodes_each_poll_and_logs_once(plc: Any, caplog: pytest.LogCaptureFixture) -> None:
    server: PlcServer = await plc(n_tags=1)
    tags = [{"name": "good", "node_id": f"nsu={URI};s=Tag00"}, {"name": "gone", "node_id": f"ns={server.ns};s=Gone"}]
    cfg = source_config(server.endpoint, 0, tags=tags, mode="polling", polling={"interval": "50ms"})
    caplog.set_level(logging.WARNING)
    async with running(cfg) as (_, ctx):
        await ctx.wait_for(lambda c: len(rows_of(c, "gone")) >= 4)
    assert {r[2:] for r in rows_of(ctx, "gone")} == {(Quality.BAD, 0x8034_0000)}
    assert len([r for r in caplog.records if "'gone'" in r.getMessage()]) == 1


async def test_subscription_parameters_reach_the_server(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=3)
    tags = [{"name": "a", "node_id": f"nsu={URI};s=Tag00"},
            {"name": "b", "node_id": f"nsu={URI};s=Tag01",
             "monitoring": {"sampling_interval": "100ms", "queue_size": 3, "deadband_type": "percent",
                            "deadband_value": 2.5}},
            {"name": "c", "node_id": f"nsu={URI};s=Tag02", "monitoring": {"trigger": "status_value_timestamp"}}]
    cfg = source_config(server.endpoint, 0, tags=tags,
                        subscription={"publishing_interval": "200ms", "queue_size": 7, "sampling_interval": "50ms"})
    async with running(cfg) as (_, ctx):
        await ctx.wait_rows(3)
        subs = list(server.server.iserver.subscription_service.subscriptions.values())
        assert [s.data.RevisedPublishingInterval for s in subs] == [200.0], [s.data for s in subs]
    assert len(server.monitor_requests) == 3, server.monitor_requests
    a, b, c = server.monitor_requests
    assert (a.RequestedParameters.SamplingInterval, a.RequestedParameters.QueueSize) == (50.0, 7)
    assert a.RequestedParameters.Filter.Body is None  # server default (StatusValue, no deadband): no filter
    assert (b.RequestedParameters.SamplingInterval, b.RequestedParameters.QueueSize) == (100.0, 3)
    flt = b.RequestedParameters.Filter
    assert (int(flt.Trigger), flt.DeadbandType, flt.DeadbandValue) == (1, 2, 2.5)  # StatusValue, Percent
    assert (int(c.RequestedParameters.Filter.Trigger), c.RequestedParameters.Filter.DeadbandType) == (2, 0)
    assert [r.ItemToMonitor.NodeId.Identifier for r in (a, b, c)] == ["Tag00", "Tag01", "Tag02"]
    assert [r.RequestedParameters.ClientHandle for r in (a, b, c)] == [0, 1, 2]
