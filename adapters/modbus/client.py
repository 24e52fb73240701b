"""The only module that imports pymodbus: a small async client for polling.

``AsyncModbusTcpClient`` is configured so that ingestd, not pymodbus, owns every recovery decision:

* ``reconnect_delay=0``: pymodbus never reconnects by itself (the core supervisor does, with backoff);
* ``retries=0``: one send per call; :class:`~adapters.modbus.source.ModbusSource` re-sends per ``retries``;
* timeouts are ours (``asyncio.timeout`` around each call); pymodbus' own timeout is only a backstop,
  so an unanswered request neither logs an error from pymodbus nor counts towards its rule of dropping
  the connection after ``retries + 3`` unanswered requests (which would let one dead unit behind a
  gateway take its live neighbours down with it); ``set_max_no_responses(huge)`` disables that rule
  for the backstop path too.

Transaction ids are watched through pymodbus' public trace hooks: a frame answering a request we already
gave up on (a late answer) is dropped and counted; any other frame that is not the answer we wait for
(unknown transaction id, wrong unit, not Modbus TCP) means the stream can no longer be trusted, and the
pending call fails at once with :class:`~adapters.modbus.errors.ConnectionLost`. So does a connection the
peer closes: the pending call does not wait for its timeout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Final

import numpy as np
import numpy.typing as npt
from pymodbus import exceptions as pm_exc
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from .errors import ConnectionLost, ModbusException, RequestTimeout

__all__ = ["ModbusClient"]

_FUNCTION: Final = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_BACKSTOP: Final = 300.0
"""pymodbus' own timeout; ours always fire first."""
_NEVER: Final = 1 << 30
_ABANDONED: Final = 32
"""How many timed-out transaction ids we remember to recognise their late answers."""


class ModbusClient:
    """One Modbus TCP connection. Not safe for concurrent calls: the source serialises requests."""

    def __init__(self, host: str, port: int, *, connect_timeout: float, name: str = "ingestd") -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.late_answers = 0
        """Answers that arrived after their request had timed out (dropped)."""
        self._client = AsyncModbusTcpClient(
            host, port=port, name=name, reconnect_delay=0, reconnect_delay_max=0, timeout=_BACKSTOP, retries=0,
            trace_packet=self._on_packet, trace_pdu=self._on_pdu, trace_connect=self._on_connect,
        )
        self._client.set_max_no_responses(_NEVER)
        self._failure: str | None = None
        self._expect_tid = -1
        self._expect_unit = -1
        self._abandoned: deque[int] = deque(maxlen=_ABANDONED)
        self._deadline: asyncio.Timeout | None = None
        self._closing = False

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._failure is None and self._client.connected

    async def connect(self) -> None:
        self._failure = None
        self._closing = False
        self._abandoned.clear()
        try:
            async with asyncio.timeout(self.connect_timeout):
                ok = await self._client.connect()
        except TimeoutError:
            raise ConnectionLost(f"connect to {self.where} timed out after {self.connect_timeout:g}s") from None
        if not ok:
            raise ConnectionLost(f"cannot connect to {self.where} (refused or unreachable)")

    def close(self) -> None:
        self._closing = True
        self._client.close()

    async def read_registers(self, kind: str, unit: int, address: int, count: int,
                             timeout: float) -> npt.NDArray[np.uint16]:
        """Holding or input registers as uint16 words."""
        if kind not in ("holding", "input"):
            raise ValueError(f"not a register kind: {kind!r}")
        rsp = await self._execute(kind, unit, address, count, timeout)
        regs = rsp.registers
        if len(regs) < count:
            self._fail(f"short answer from unit {unit}: {len(regs)} of {count} {kind} registers")
            raise ConnectionLost(f"{self._failure} ({self.where})")
        return np.asarray(regs if len(regs) == count else regs[:count], dtype=np.uint16)

    async def read_bits(self, kind: str, unit: int, address: int, count: int,
                        timeout: float) -> npt.NDArray[np.bool_]:
        """Coils or discrete inputs as booleans."""
        if kind not in ("coil", "discrete"):
            raise ValueError(f"not a bit kind: {kind!r}")
        rsp = await self._execute(kind, unit, address, count, timeout)
        bits = rsp.bits
        if len(bits) < count:
            self._fail(f"short answer from unit {unit}: {len(bits)} of {count} {kind} bits")
            raise ConnectionLost(f"{self._failure} ({self.where})")
        return np.asarray(bits[:count], dtype=np.bool_)

    def _call(self, kind: str, unit: int, address: int, count: int) -> Awaitable[ModbusPDU]:
        c = self._client
        if kind == "holding":
            return c.read_holding_registers(address, count=count, device_id=unit)
        if kind == "input":
            return c.read_input_registers(address, count=count, device_id=unit)
        if kind == "coil":
            return c.read_coils(address, count=count, device_id=unit)
        return c.read_discrete_inputs(address, count=count, device_id=unit)

    async def _execute(self, kind: str, unit: int, address: int, count: int, timeout: float) -> ModbusPDU:
        if not self.connected:
            raise ConnectionLost(f"{self._failure or 'not connected'} ({self.where})")
        try:
            async with asyncio.timeout(timeout) as deadline:
                self._deadline = deadline
                rsp = await self._call(kind, unit, address, count)
        except TimeoutError:
            if self._failure is not None:
                raise ConnectionLost(f"{self._failure} ({self.where})") from None
            if self._expect_tid >= 0:
                self._abandoned.append(self._expect_tid)
            raise RequestTimeout(f"{self._what(kind, unit, address, count)}: no answer within {timeout:g}s") from None
        except pm_exc.ModbusException as exc:  # ConnectionException, ModbusIOException, ...
            self._fail(f"invalid exchange: {exc}")
            raise ConnectionLost(f"invalid exchange with {self._what(kind, unit, address, count)}: {exc}") from exc
        finally:
            self._deadline = None
            self._expect_tid = self._expect_unit = -1
        if self._failure is not None:
            raise ConnectionLost(f"{self._failure} ({self.where})")
        if rsp.isError():
            raise ModbusException(int(getattr(rsp, "exception_code", 0)), self._what(kind, unit, address, count))
        if rsp.function_code != _FUNCTION[kind]:
            self._fail(f"answer with function {rsp.function_code} to a function {_FUNCTION[kind]} request")
            raise ConnectionLost(f"{self._failure} ({self._what(kind, unit, address, count)})")
        return rsp

    def _what(self, kind: str, unit: int, address: int, count: int) -> str:
        return f"{self.where} unit {unit} {kind} {address}+{count}"

    # --- pymodbus trace hooks (called synchronously from its transport) -----------------------------

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        if self._deadline is not None and not self._deadline.expired():
            self._deadline.reschedule(asyncio.get_running_loop().time())

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._expect_tid = pdu.transaction_id
            self._expect_unit = pdu.dev_id
        return pdu

    def _on_connect(self, connected: bool) -> None:
        if not connected and not self._closing:
            self._fail("connection closed by the peer")

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        if sending or self._failure is not None:
            return data
        pos, n = 0, len(data)
        while n - pos >= 8:
            tid = (data[pos] << 8) | data[pos + 1]
            pid = (data[pos + 2] << 8) | data[pos + 3]
            length = (data[pos + 4] << 8) | data[pos + 5]
            if pid != 0 or not 2 <= length <= 254:
                self._fail(f"not a Modbus TCP frame (protocol id {pid}, length {length})")
                break
            end = pos + 6 + length
            if end > n:
                break
            if tid == self._expect_tid and data[pos + 6] == self._expect_unit:
                break  # the answer we wait for: pymodbus takes it; anything after it stays in its buffer
            if tid in self._abandoned:
                self.late_answers += 1  # pymodbus skips it (transaction id mismatch)
            elif tid == self._expect_tid:
                self._fail(f"answer from unit {data[pos + 6]} to a request for unit {self._expect_unit}")
                break
            else:
                expected = self._expect_tid if self._expect_tid >= 0 else "none"
                self._fail(f"unexpected transaction id {tid} (awaiting {expected})")
                break
            pos = end
        return data

