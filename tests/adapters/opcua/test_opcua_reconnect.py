"""Server restart mid-stream: the source fails fast, the (stand-in) supervisor calls run() again, and
data resumes by itself — also when the tags' namespace URI moved to another index."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from opcua_testserver import URI, PlcServer, latest, source_config, supervise

from adapters.opcua.source import OpcUaSource
from ingestd.errors import SourceUnavailable
from ingestd.testing import RecordingContext
from tests.support.ports import free_port


@pytest.mark.parametrize("shift_namespace", [False, True], ids=["same-index", "shifted-index"])
async def test_data_resumes_after_server_restart(plc: Any, shift_namespace: bool) -> None:
    port = free_port()
    first: PlcServer = await plc(port, n_tags=3)
    cfg = source_config(first.endpoint, 3, subscription={"publishing_interval": "100ms"})
    source = OpcUaSource(cfg)
    ctx = RecordingContext.for_source(cfg)
    supervisor = asyncio.create_task(supervise(source, ctx))
    try:
        await ctx.wait_for(lambda c: latest(c, "tag00") == 0.0)
        await first.write(0, 11.0)
        await ctx.wait_for(lambda c: latest(c, "tag00") == 11.0)

        await first.stop()
        await ctx.wait_for(lambda c: c.rec.status[-1].kind == "down", timeout=10)

        extra = ["urn:wellos:test:inserted-first"] if shift_namespace else []
        second: PlcServer = await plc(port, n_tags=3, extra_namespaces=extra)
        assert (second.ns != first.ns) is shift_namespace
        await ctx.wait_for(lambda c: c.rec.status[-1].kind == "up", timeout=30)
        await second.write(0, 77.0)
        await second.write(2, 79.0)
        await ctx.wait_for(lambda c: latest(c, "tag00") == 77.0 and latest(c, "tag02") == 79.0, timeout=30)
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
    kinds = [e.kind for e in ctx.rec.status]
    assert kinds[0] == "up"
    assert "down" in kinds
    assert kinds[-1] == "up"
    assert "bad_node" not in ctx.rec.events  # every tag was re-resolved against the new namespace array
    assert cfg.tags[0].node_id.startswith(f"nsu={URI};")


async def test_hung_server_is_detected_by_the_status_probe(plc: Any) -> None:
    """A server that stops answering while its socket stays open (half-open connection, frozen
    process) is detected by the watchdog's status probe, not only by a closed socket."""
    server: PlcServer = await plc(n_tags=1)
    cfg = source_config(server.endpoint, 1, watchdog_interval="200ms", request_timeout="500ms")
    ctx = RecordingContext.for_source(cfg)
    task = asyncio.create_task(OpcUaSource(cfg).run(ctx))
    await ctx.wait_rows(1)
    transports = list(server.server.iserver.asyncio_transports)
    assert transports
    for transport in transports:
        transport.pause_reading()  # requests are never read, so never answered
    try:
        with pytest.raises(SourceUnavailable, match="timed out"):
            await asyncio.wait_for(task, 10)
    finally:
        for transport in transports:
            if not transport.is_closing():
                transport.resume_reading()
    assert ctx.rec.status[-1].kind == "down"


async def test_bad_node_is_logged_once_across_sessions_but_reported_in_each(
        plc: Any, caplog: pytest.LogCaptureFixture) -> None:
    server: PlcServer = await plc(n_tags=1)
    tags = [{"name": "good", "node_id": f"nsu={URI};s=Tag00"}, {"name": "missing", "node_id": f"nsu={URI};s=Nope"}]
    cfg = source_config(server.endpoint, 0, tags=tags)
    source = OpcUaSource(cfg)  # one source object, run() twice: like the supervisor after a reconnect
    ctx = RecordingContext.for_source(cfg)
    missing = next(p.index for p in ctx.points if p.tag == "missing")
    for session in (1, 2):
        task = asyncio.create_task(source.run(ctx))
        await ctx.wait_for(lambda c, n=session: int((c.rows.key == missing).sum()) == n)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ctx.rec.events["bad_node"] == 1
    assert len([r for r in caplog.records if "'missing'" in r.getMessage()]) == 1


async def test_unreachable_server_is_unavailable_and_reported_down(caplog: pytest.LogCaptureFixture) -> None:
    """Each attempt reports down (the core dedupes and logs once per outage); the adapter itself does
    not log every attempt."""
    cfg = source_config(f"opc.tcp://127.0.0.1:{free_port()}", 1)
    source = OpcUaSource(cfg)
    ctx = RecordingContext.for_source(cfg)
    for _ in range(3):
        with pytest.raises(SourceUnavailable, match="connect"):
            await asyncio.wait_for(source.run(ctx), 10)
    assert [e.kind for e in ctx.rec.status] == ["down"] * 3
    assert [r for r in caplog.records if r.levelno >= 30 and "connect" in r.getMessage()] == []
