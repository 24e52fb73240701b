"""The pymodbus wrapper: exception translation, transaction-id checks, and no recovery behind our back."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from adapters.modbus.client import ModbusClient
from adapters.modbus.errors import ConnectionLost, ModbusException, RequestTimeout
from ingestd.errors import SourceUnavailable

from .support import RawServer, UnitData, holding_frame, start_plc, start_raw


@pytest.fixture
async def plc_client() -> AsyncIterator[ModbusClient]:
    plc = await start_plc({1: UnitData(holding={0: [1, 2, 3]}, coils={0: [True, False, True]})})
    client = ModbusClient("127.0.0.1", plc.port, connect_timeout=2)
    await client.connect()
    yield client
    client.close()
    await plc.stop()


async def _connected(raw: RawServer) -> ModbusClient:
    client = ModbusClient("127.0.0.1", raw.port, connect_timeout=2)
    await client.connect()
    return client


async def test_reads_registers_and_bits(plc_client: ModbusClient) -> None:
    assert (await plc_client.read_registers("holding", 1, 0, 3, 1.0)).tolist() == [1, 2, 3]
    assert (await plc_client.read_bits("coil", 1, 0, 3, 1.0)).tolist() == [True, False, True]


async def test_exception_response_keeps_the_connection(plc_client: ModbusClient) -> None:
    with pytest.raises(ModbusException, match=r"unit 1 holding 50\+2: exception 2 \(illegal data address\)") as info:
        await plc_client.read_registers("holding", 1, 50, 2, 1.0)
    assert info.value.code == 2
    assert (await plc_client.read_registers("holding", 1, 0, 1, 1.0)).tolist() == [1]


async def test_connect_refused() -> None:
    raw = await start_raw(_echo)
    port = raw.port
    await raw.stop()
    client = ModbusClient("127.0.0.1", port, connect_timeout=2)
    with pytest.raises(ConnectionLost, match=f"cannot connect to 127.0.0.1:{port}"):
        await client.connect()
    assert isinstance(ConnectionLost("x"), SourceUnavailable)


async def test_timeout_then_late_answer_is_dropped_and_the_connection_keeps_working() -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def slow_first(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
        seen.append(tid)
        if len(seen) == 1:
            await release.wait()  # the device answers the first request only after the client gave up
        return holding_frame(tid, unit, [tid] * count)

    raw = await start_raw(slow_first)
    client = await _connected(raw)
    try:
        with pytest.raises(RequestTimeout, match=r"unit 1 holding 0\+1: no answer within 0.1s"):
            await client.read_registers("holding", 1, 0, 1, 0.1)
        release.set()
        second = await client.read_registers("holding", 1, 0, 1, 2.0)
    finally:
        client.close()
        await raw.stop()
    assert second.tolist() == [seen[1]]  # its own answer, not the late one
    assert client.late_answers == 1
    assert raw.connections == 1


async def test_many_timeouts_do_not_make_pymodbus_drop_the_connection() -> None:
    async def unit2_silent(tid: int, unit: int, function: int, address: int, count: int) -> bytes | None:
        return None if unit == 2 else holding_frame(tid, unit, [5] * count)

    raw = await start_raw(unit2_silent)
    client = await _connected(raw)
    try:
        for _ in range(8):  # pymodbus' default would disconnect after retries + 3 unanswered requests
            with pytest.raises(RequestTimeout):
                await client.read_registers("holding", 2, 0, 1, 0.02)
        assert (await client.read_registers("holding", 1, 0, 2, 1.0)).tolist() == [5, 5]
    finally:
        client.close()
        await raw.stop()
    assert raw.connections == 1


@pytest.mark.parametrize(("answer", "message"), [
    (lambda tid, unit: holding_frame(tid + 1, unit, [1]), "unexpected transaction id"),
    (lambda tid, unit: holding_frame(tid, unit + 1, [1]), "answer from unit 2 to a request for unit 1"),
    (lambda tid, unit: struct.pack(">HHHB", tid, 1, 5, unit) + b"\x03\x02\x00\x01", "not a Modbus TCP frame"),
    (lambda tid, unit: holding_frame(tid, unit, [1]), "short answer from unit 1: 1 of 2 holding registers"),
])
async def test_untrustworthy_stream_fails_at_once(answer: object, message: str) -> None:
    async def respond(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
        return answer(tid, unit)  # type: ignore[operator, no-any-return]

    raw = await start_raw(respond)
    client = await _connected(raw)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ConnectionLost, match=message):
            await client.read_registers("holding", 1, 0, 2, 3.0)
        assert loop.time() - started < 1.0  # not after the 3 s timeout
        with pytest.raises(ConnectionLost):  # the connection is not used again
            await client.read_registers("holding", 1, 0, 2, 3.0)
    finally:
        client.close()
        await raw.stop()


async def test_peer_closing_fails_the_pending_request_at_once_and_pymodbus_does_not_reconnect() -> None:
    got_request = asyncio.Event()

    async def hang(tid: int, unit: int, function: int, address: int, count: int) -> bytes | None:
        got_request.set()
        await asyncio.Event().wait()  # never answers; the server closing the socket ends it
        return None

    raw = await start_raw(hang)
    port = raw.port
    client = await _connected(raw)
    pending = asyncio.create_task(client.read_registers("holding", 1, 0, 1, 5.0))
    await asyncio.wait_for(got_request.wait(), 2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await raw.stop()
    with pytest.raises(ConnectionLost, match="closed by the peer"):
        await pending
    assert loop.time() - started < 1.0
    # a server comes back on the same port: pymodbus must not reconnect by itself (the supervisor does)
    back = await start_raw(_echo, port=port)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(back.connected.wait(), 0.5)
        with pytest.raises(ConnectionLost):
            await client.read_registers("holding", 1, 0, 1, 1.0)
    finally:
        client.close()
        await back.stop()
    assert back.connections == 0


async def _echo(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    return holding_frame(tid, unit, list(range(count)))
