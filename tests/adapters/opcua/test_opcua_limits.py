"""Operation limits: the server publishes (and enforces) MaxNodesPerRead / MaxMonitoredItemsPerCall;
requests are chunked to fit, and every tag flows."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from opcua_testserver import PlcServer, latest, source_config

from adapters.opcua.client import OpcUaClient
from adapters.opcua.source import OpcUaSource
from ingestd.testing import RecordingContext

MAX_READ = 11705
MAX_REGISTER = 11711
MAX_MONITORED = 11714
N = 35


async def _run_until_all_tags(server: PlcServer, **cfg_extra: Any) -> RecordingContext:
    cfg = source_config(server.endpoint, N, **cfg_extra)
    ctx = RecordingContext.for_source(cfg)
    task = asyncio.create_task(OpcUaSource(cfg).run(ctx))
    try:
        await ctx.wait_for(lambda c: all(latest(c, f"tag{i:02d}") == float(i) for i in range(N)))
        await server.write(34, 1234.0)  # the last chunk keeps flowing too
        await ctx.wait_for(lambda c: latest(c, "tag34") == 1234.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ctx


async def test_monitored_items_are_created_in_chunks_of_the_server_limit(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=N, limits={MAX_MONITORED: 10, MAX_READ: 10, MAX_REGISTER: 10})
    ctx = await _run_until_all_tags(server)
    assert server.calls["monitor"] == [10, 10, 10, 5]
    assert ctx.rec.gauges["monitored_items"] == N


async def test_polling_reads_are_chunked_to_the_server_limit(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=N, limits={MAX_READ: 10, MAX_REGISTER: 10, MAX_MONITORED: 10})
    await _run_until_all_tags(server, mode="polling", polling={"interval": "50ms"})
    polls = server.calls["read"]
    assert polls
    assert max(polls) == 10
    # every poll reads 35 nodes as 10 + 10 + 10 + 5 (requests of one poll may interleave)
    assert sorted(polls[:4]) == [5, 10, 10, 10]


@pytest.mark.parametrize("published", [0, None])
async def test_fallback_when_the_server_publishes_no_limit(plc: Any, published: int | None) -> None:
    server: PlcServer = await plc(n_tags=N, limits={MAX_MONITORED: published})
    await _run_until_all_tags(server, limits={"fallback": 12})
    assert server.calls["monitor"] == [12, 12, 11]


async def test_node_registration_is_chunked_to_the_server_limit(plc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    register = OpcUaClient.register_nodes

    async def spy(self: OpcUaClient, nodes: Any) -> Any:
        sizes.append(len(nodes))
        return await register(self, nodes)

    monkeypatch.setattr(OpcUaClient, "register_nodes", spy)
    server: PlcServer = await plc(n_tags=N, limits={MAX_REGISTER: 10})
    await _run_until_all_tags(server, mode="polling", polling={"interval": "50ms"})
    assert sizes == [10, 10, 10, 5]
