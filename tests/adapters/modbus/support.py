"""Test servers and helpers for the Modbus adapter tests.

* :func:`start_plc` — a real pymodbus TCP server on 127.0.0.1 (port 0, or a given port for restarts) with
  one simulated device per unit id, plus per-unit behaviour switches (hang, exception codes);
* :func:`start_silent` — a TCP server that accepts connections and never answers;
* :func:`start_raw` — a minimal hand-written Modbus TCP server whose answers a test can corrupt
  (wrong transaction id, late answers);
* :func:`supervise` — a tiny stand-in for the core supervisor: re-runs a source after SourceUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.errors import ConnectionLost, ModbusException, RequestTimeout
from ingestd.config.load import parse_config
from ingestd.errors import SourceUnavailable
from ingestd.ports import AdapterRegistry, AdapterSpec, Source
from ingestd.testing import RecordingContext

SPEC = AdapterSpec("modbus", "adapters.modbus.config:ModbusSourceConfig", "adapters.modbus.source:ModbusSource",
                   "Modbus TCP polling")
REGISTRY = AdapterRegistry([SPEC])
TENANTS = [{"slug": "t1", "dsn": "env:INGESTD_TEST_DSN"}]


def load_sources(*sources: Mapping[str, Any]) -> list[Any]:
    """Validate source tables through the real config loader; returns the typed source configs."""
    cfg = parse_config({"tenants": TENANTS, "sources": list(sources)}, REGISTRY)
    return list(cfg.sources)


def load_source(**source: Any) -> Any:
    source.setdefault("name", "plc")
    source.setdefault("protocol", "modbus")
    source.setdefault("host", "127.0.0.1")
    return load_sources(source)[0]


@dataclass
class UnitData:
    """Contents of one simulated unit: address → values, per register kind."""

    holding: Mapping[int, Sequence[int]] = field(default_factory=dict)
    input: Mapping[int, Sequence[int]] = field(default_factory=dict)
    coils: Mapping[int, Sequence[bool]] = field(default_factory=dict)
    discrete: Mapping[int, Sequence[bool]] = field(default_factory=dict)


@dataclass
class Behaviour:
    """Live switches read by the simulated devices on every request."""

    hang: set[int] = field(default_factory=set)
    """Unit ids whose requests are never answered (until teardown)."""
    exceptions: dict[tuple[int, int, int], int] = field(default_factory=dict)
    """(unit, function code, start address) → exception code returned for such requests."""
    busy_left: dict[int, int] = field(default_factory=dict)
    """Unit id → how many more requests answer exception 6 (busy)."""
    requests: dict[int, int] = field(default_factory=dict)
    """Requests seen per unit id."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hung: int = 0

    async def action(self, unit: int, function_code: int, _start: int, address: int, _count: int,
                     _registers: list[int], _values: Any) -> ExcCodes | None:
        self.requests[unit] = self.requests.get(unit, 0) + 1
        if unit in self.hang:
            self.hung += 1
            try:
                await self.release.wait()
            finally:
                self.hung -= 1
            return ExcCodes.GATEWAY_NO_RESPONSE
        if self.busy_left.get(unit, 0) > 0:
            self.busy_left[unit] -= 1
            return ExcCodes.DEVICE_BUSY
        code = self.exceptions.get((unit, function_code, address))
        return ExcCodes(code) if code is not None else None


def _block(entries: Mapping[int, Sequence[Any]], bits: bool) -> list[SimData]:
    dtype = DataType.BITS if bits else DataType.REGISTERS
    if not entries:  # pymodbus needs at least one block per kind
        return [SimData(60000, values=[False] * 16 if bits else [0], datatype=dtype)]
    return [SimData(addr, values=list(vals), datatype=dtype) for addr, vals in sorted(entries.items())]


@dataclass
class SimPlc:
    server: ModbusTcpServer
    port: int
    behaviour: Behaviour
    units: Mapping[int, UnitData]

    async def stop(self) -> None:
        await self.server.shutdown()
        self.behaviour.release.set()


async def start_plc(units: Mapping[int, UnitData], *, port: int = 0, behaviour: Behaviour | None = None) -> SimPlc:
    behaviour = behaviour or Behaviour()
    devices = [
        SimDevice(uid, simdata=(_block(d.coils, True), _block(d.discrete, True), _block(d.holding, False),
                                _block(d.input, False)),
                  action=partial(behaviour.action, uid))
        for uid, d in units.items()
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return SimPlc(server, bound, behaviour, units)


async def start_silent() -> tuple[asyncio.Server, int]:
    """Accepts connections, reads requests, never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


Responder = Callable[[int, int, int, int, int], Awaitable[bytes | None]]
"""(tid, unit, function, address, count) → raw frame to send back (or None for no answer)."""


def holding_frame(tid: int, unit: int, registers: Sequence[int]) -> bytes:
    pdu = struct.pack(">BB", 3, 2 * len(registers)) + struct.pack(f">{len(registers)}H", *registers)
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


@dataclass
class RawServer:
    server: asyncio.Server
    port: int
    connections: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    async def drop_connections(self) -> None:
        """Close every accepted connection (a device reboot, as seen from the client)."""
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def stop(self) -> None:
        self.server.close()
        await self.drop_connections()
        await self.server.wait_closed()


async def start_raw(responder: Responder, port: int = 0) -> RawServer:
    """A hand-written Modbus TCP server: every request frame goes through ``responder``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        raw.connected.set()
        task = asyncio.current_task()
        assert task is not None
        raw.handlers.add(task)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                body = await reader.readexactly(length - 1)
                function, address, count = struct.unpack(">BHH", body[:5])
                answer = await responder(tid, unit, function, address, count)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            raw.handlers.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    raw = RawServer(server, server.sockets[0].getsockname()[1])
    return raw


async def supervise(source: Source, ctx: RecordingContext, stop: asyncio.Event, backoff: float = 0.05) -> None:
    """Re-run ``source`` after SourceUnavailable until ``stop`` is set (the core supervisor's job)."""
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            run = asyncio.create_task(source.run(ctx))
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                run.cancel()
            try:
                await run
            except asyncio.CancelledError:
                break
            except SourceUnavailable:
                ctx.metrics.count("restart")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), backoff)  # backoff that ends early on stop
    finally:
        stopping.cancel()


def values_of(ctx: RecordingContext) -> dict[str, float]:
    """Latest value per tag name."""
    return {tag: vals[-1] for tag, vals in ctx.values_by_tag().items()}


def rows_of(ctx: RecordingContext) -> list[tuple[str, float, int, int]]:
    """(tag, value, quality, status) for every emitted row."""
    b = ctx.rows
    return [(ctx.points[k].tag, v, q, s)
            for k, v, q, s in zip(b.key.tolist(), b.value.tolist(), b.quality.tolist(), b.status.tolist(),
                                  strict=True)]


Outcome = str | int | float
"""Scripted outcome of one fake request: "timeout", "lost", an exception code (int) or a delay (float s)."""


class FakeDevice:
    """In-memory stand-in for a Modbus TCP connection (implements the source's client protocol).

    ``registers[(unit, kind)][address]`` holds words or bits. ``script[(unit, kind, address)]`` is a list of
    outcomes consumed one per request starting at that address; ``dead`` units always time out.
    Every request is logged in ``calls`` with the loop time it was made.
    """

    def __init__(self, registers: Mapping[tuple[int, str], Mapping[int, int | bool]] | None = None) -> None:
        self.registers = {k: dict(v) for k, v in (registers or {}).items()}
        self.script: dict[tuple[int, str, int], list[Outcome]] = {}
        self.dead: set[int] = set()
        self.refuse = False
        self.latency = 0.0
        self.late_answers = 0
        self.connects = 0
        self.closed = 0
        self.calls: list[tuple[float, int, str, int, int]] = []
        self.called = asyncio.Event()

    def factory(self, _cfg: Any) -> FakeDevice:
        return self

    async def connect(self) -> None:
        self.connects += 1
        if self.refuse:
            raise ConnectionLost("cannot connect to fake:502 (refused or unreachable)")

    def close(self) -> None:
        self.closed += 1

    async def _answer(self, kind: str, unit: int, address: int, count: int, timeout: float) -> list[Any]:
        self.calls.append((asyncio.get_running_loop().time(), unit, kind, address, count))
        self.called.set()
        outcome: Outcome | None = None
        queue = self.script.get((unit, kind, address))
        if queue:
            outcome = queue.pop(0)
        if unit in self.dead or outcome == "timeout":
            raise RequestTimeout(f"fake unit {unit} {kind} {address}+{count}: no answer within {timeout:g}s")
        if outcome == "lost":
            raise ConnectionLost("connection to fake:502 closed by the peer")
        if isinstance(outcome, int):
            raise ModbusException(outcome, f"fake unit {unit}")
        delay = outcome if isinstance(outcome, float) else self.latency
        if delay:
            await asyncio.sleep(delay)  # simulated device latency
        table = self.registers.get((unit, kind), {})
        return [table.get(a, 0) for a in range(address, address + count)]

    async def read_registers(self, kind: str, unit: int, address: int, count: int, timeout: float) -> Any:
        return np.asarray(await self._answer(kind, unit, address, count, timeout), dtype=np.uint16)

    async def read_bits(self, kind: str, unit: int, address: int, count: int, timeout: float) -> Any:
        return np.asarray(await self._answer(kind, unit, address, count, timeout), dtype=np.bool_)


@contextlib.asynccontextmanager
async def running(source: Source, ctx: RecordingContext) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` in a task for the duration of the block; cancel and reap it afterwards."""
    task = asyncio.create_task(source.run(ctx), name=f"source-{ctx.name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SourceUnavailable):
            await task


def batches_with(ctx: RecordingContext, n: int) -> Callable[[RecordingContext], bool]:
    """Predicate for ``ctx.wait_for``: at least ``n`` batches were emitted."""
    return lambda c: len(c.rec.batches) >= n
