"""The Modbus TCP source: one task per connection, polling on a phase-shifted monotonic grid.

Per poll, the units behind the connection are read one after another (a gateway serialises them anyway)
with the precompiled requests; every answer is decoded into preallocated columns and the poll ends with
one ``ctx.emit`` of one :class:`~ingestd.model.Batch`.

Failure semantics (see README.md):

* exception response → BAD rows for that request's tags, value NaN, ``status`` = the exception code;
  codes 5/6 (acknowledge/busy) are re-sent up to ``retries`` times first;
* gateway exceptions 10/11, or a unit that stops answering while others answer → BAD rows (10/11) and
  ``ctx.status.down(reason, device="unit<N>", points=<its points>)`` once; while down, the unit gets one
  probe request per poll (no retries) so it cannot stall its neighbours; ``up`` once it answers again;
* the connection fails (connect error, closed by the peer, a transaction-id mismatch or malformed
  frame, or not a single answer in a whole poll) → ``ctx.status.down(reason)`` once and
  :class:`~ingestd.errors.SourceUnavailable`: the core supervisor reconnects with backoff.

Status transitions are reported once each; the core logs every transition once (down with its reason,
and when it comes back) and dedupes across restarts, so the adapter itself logs nothing per poll or per
transition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ingestd.config.base import SourceConfig
from ingestd.errors import SourceConfigError, SourceUnavailable
from ingestd.model import Batch, Quality, now_us
from ingestd.ports import SourceContext

from .client import ModbusClient
from .config import ModbusSourceConfig
from .errors import GATEWAY_CODES, RETRY_CODES, ConnectionLost, ModbusException, RequestTimeout
from .program import Program, ReadOp, UnitProgram, compile_program
from .schedule import first_deadline, next_deadline, phase_offset

__all__ = ["ClientFactory", "ModbusClientLike", "ModbusSource"]


class ModbusClientLike(Protocol):
    """What the source needs from a connection (``client.ModbusClient``; fakes in tests)."""

    late_answers: int

    async def connect(self) -> None: ...

    def close(self) -> None: ...

    async def read_registers(self, kind: str, unit: int, address: int, count: int,
                             timeout: float) -> npt.NDArray[np.uint16]: ...

    async def read_bits(self, kind: str, unit: int, address: int, count: int,
                        timeout: float) -> npt.NDArray[np.bool_]: ...


ClientFactory = Callable[[ModbusSourceConfig], ModbusClientLike]


def _pymodbus_client(cfg: ModbusSourceConfig) -> ModbusClientLike:
    return ModbusClient(cfg.host, cfg.port, connect_timeout=cfg.connect_timeout, name=cfg.name)


@dataclass(slots=True)
class _Poll:
    """Columns of one poll, filled request by request."""

    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    status: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    filled: npt.NDArray[np.bool_]
    answered: int = 0
    timeouts: int = 0
    down: list[tuple[UnitProgram, str]] = field(default_factory=list)
    up: list[UnitProgram] = field(default_factory=list)

    @classmethod
    def new(cls, rows: int) -> _Poll:
        return cls(np.full(rows, np.nan), np.zeros(rows, np.uint8), np.zeros(rows, np.uint32),
                   np.zeros(rows, np.int64), np.zeros(rows, np.bool_))

    def bad(self, start: int, stop: int, code: int) -> None:
        self.value[start:stop] = np.nan
        self.quality[start:stop] = Quality.BAD
        self.status[start:stop] = code
        self.ts[start:stop] = now_us()
        self.filled[start:stop] = True

    def batch(self, keys: npt.NDArray[np.int32]) -> Batch | None:
        if self.filled.all():
            return Batch(keys.copy(), self.ts, self.value, self.quality, self.status)
        if not self.filled.any():
            return None
        m = self.filled
        return Batch(keys[m], self.ts[m], self.value[m], self.quality[m], self.status[m])


class ModbusSource:
    """Polls one Modbus TCP connection. ``run`` is called again by the core supervisor after a failure."""

    def __init__(self, config: SourceConfig, client_factory: ClientFactory | None = None) -> None:
        if not isinstance(config, ModbusSourceConfig):
            raise TypeError(f"ModbusSource needs a ModbusSourceConfig, not {type(config).__name__}")
        self.config = config
        self._factory = client_factory or _pymodbus_client
        self._down: str | None = None
        """Reason the connection was reported down (once per outage of this instance; the core dedupes too)."""
        self._up_reported = False
        self._units_down: dict[int, str] = {}

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.config
        program = compile_program(cfg, _point_indexes(cfg, ctx))
        ctx.metrics.gauge("requests_per_poll", program.requests)
        client = self._factory(cfg)
        try:
            try:
                await client.connect()
                if cfg.pause_after_connect > 0:
                    await asyncio.sleep(cfg.pause_after_connect)
                await self._loop(ctx, client, program)
            except ConnectionLost as exc:
                self._connection_down(ctx, str(exc))
                raise SourceUnavailable(f"modbus source {ctx.name}: {exc}") from exc
        finally:
            client.close()

    async def _loop(self, ctx: SourceContext, client: ModbusClientLike, program: Program) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.poll_interval
        deadline = first_deadline(loop.time(), interval, phase_offset(ctx.name, interval))
        while True:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            await self._poll(ctx, client, program)
            finished = loop.time()
            ctx.metrics.observe("poll", finished - started)
            deadline, missed = next_deadline(deadline, interval, finished)
            if missed:
                ctx.metrics.count("overrun")
                ctx.metrics.count("missed_poll", missed)

    async def _poll(self, ctx: SourceContext, client: ModbusClientLike, program: Program) -> None:
        poll = _Poll.new(program.rows)
        late = client.late_answers
        try:
            first = True
            for unit in program.units:
                first = await self._poll_unit(ctx, client, unit, poll, first)
        except ConnectionLost:
            await self._emit(ctx, poll, program)
            raise
        ctx.metrics.count("poll")
        if client.late_answers != late:
            ctx.metrics.count("late_answer", client.late_answers - late)
        if not poll.answered:
            raise ConnectionLost(f"no answer from {self.config.host}:{self.config.port} "
                                 f"({poll.timeouts} request(s) timed out)")
        if self._down is not None or not self._up_reported:
            ctx.status.up()
            self._down, self._up_reported = None, True
        for unit in poll.up:
            del self._units_down[unit.unit]
            ctx.status.up(device=unit.device)
        await self._emit(ctx, poll, program)
        for unit, reason in poll.down:
            self._units_down[unit.unit] = reason
            ctx.status.down(reason, device=unit.device, points=unit.points)

    async def _poll_unit(self, ctx: SourceContext, client: ModbusClientLike, unit: UnitProgram, poll: _Poll,
                         first: bool) -> bool:
        """Read one unit's requests; returns the updated ``first`` flag (for ``pause``)."""
        cfg = self.config
        was_down = unit.unit in self._units_down
        retries = 0 if was_down else cfg.retries
        failure: str | None = None
        for op in unit.reads:
            if not first and cfg.pause > 0:
                await asyncio.sleep(cfg.pause)
            first = False
            try:
                data = await self._read(ctx, client, op, unit.timeout, retries)
            except RequestTimeout as exc:
                poll.timeouts += 1
                failure = str(exc)
                break
            except ModbusException as exc:
                poll.answered += 1
                ctx.metrics.count("exception")
                if exc.code in GATEWAY_CODES:
                    poll.bad(op.start, unit.stop, exc.code)  # every remaining tag of this unit
                    failure = str(exc)
                    break
                poll.bad(op.start, op.stop, exc.code)
                retries = cfg.retries
                continue
            poll.answered += 1
            retries = cfg.retries
            t = now_us()
            poll.ts[op.start:op.stop] = t
            poll.filled[op.start:op.stop] = True
            for g in op.groups:
                g.fill(data, poll.value, poll.quality, poll.status)
        if failure is not None:
            if not was_down:
                poll.down.append((unit, failure))
        elif was_down:
            poll.up.append(unit)
        return first

    async def _read(self, ctx: SourceContext, client: ModbusClientLike, op: ReadOp, timeout: float,
                    retries: int) -> npt.NDArray[np.generic]:
        attempt = 0
        while True:
            try:
                if op.bits:
                    return await client.read_bits(op.kind, op.unit, op.address, op.count, timeout)
                return await client.read_registers(op.kind, op.unit, op.address, op.count, timeout)
            except RequestTimeout:
                ctx.metrics.count("timeout")
                if attempt >= retries:
                    raise
            except ModbusException as exc:
                if exc.code not in RETRY_CODES or attempt >= retries:
                    raise
            attempt += 1
            ctx.metrics.count("retry")
            if self.config.pause > 0:
                await asyncio.sleep(self.config.pause)

    async def _emit(self, ctx: SourceContext, poll: _Poll, program: Program) -> None:
        batch = poll.batch(program.keys)
        if batch is not None:
            await ctx.emit(batch)

    def _connection_down(self, ctx: SourceContext, reason: str) -> None:
        if self._down is None:
            ctx.status.down(reason)
        self._down = reason


def _point_indexes(cfg: ModbusSourceConfig, ctx: SourceContext) -> list[int]:
    """Point index of every configured tag (the core builds one point per tag, in order)."""
    by_identity = {id(p.config): p.index for p in ctx.points if p.config is not None}
    out = []
    for i, tag in enumerate(cfg.tags):
        index = by_identity.get(id(tag))
        if index is None:
            if i < len(ctx.points) and ctx.points[i].tag == tag.name:
                index = ctx.points[i].index
            else:
                raise SourceConfigError(f"modbus source {ctx.name}: tag {tag.name!r} has no point")
        out.append(index)
    return out
