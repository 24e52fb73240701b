"""Fixtures for the OPC UA adapter tests: real asyncua servers on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from opcua_testserver import PlcServer

from tests.support.ports import free_port

PlcFactory = Callable[..., Awaitable[PlcServer]]


@pytest.fixture
async def plc() -> AsyncIterator[PlcFactory]:
    """``await plc(n_tags=..., ...)`` starts a server (stopped at teardown)."""
    started: list[PlcServer] = []

    async def start(port: int | None = None, **kwargs: Any) -> PlcServer:
        server = await PlcServer(port or free_port(), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
