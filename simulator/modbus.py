"""Modbus TCP: one simulated gateway, each well a unit id (its well number) with holding registers.

Values are written into the registers on every read (pymodbus's device ``action`` hook), so a poll
always sees the field's current state; a well in a comm fault answers exception 0x0B (gateway target
device failed to respond), as a radio RTU behind a real gateway would.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from ingestd.sim.layout import MODBUS_REGISTER_COUNT, MODBUS_REGISTERS

from .field import Field

__all__ = ["ModbusGateway", "encode_registers"]


def encode_registers(values: dict[str, float]) -> list[int]:
    """The well's holding registers 0..10: float32 ABCD for measurements, uint16 for pump_running."""
    regs = [0] * MODBUS_REGISTER_COUNT
    for tag, addr in MODBUS_REGISTERS.items():
        v = values.get(tag, 0.0)
        if tag == "pump_running":
            regs[addr] = int(v)
        else:
            regs[addr], regs[addr + 1] = struct.unpack(">HH", struct.pack(">f", v))
    return regs


class ModbusGateway:
    def __init__(self, field: Field, wells: list[int], port: int) -> None:
        self.field = field
        self.wells = wells
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def _action(self, unit: int, _fc: int, _start: int, _address: int, _count: int, registers: list[int],
                      _values: Any) -> ExcCodes | None:
        if self.field.faulted(unit):
            return ExcCodes.GATEWAY_NO_RESPONSE
        regs = encode_registers(self.field.values(unit))
        registers[: len(regs)] = regs  # the holding block starts at register 0
        return None

    async def start(self) -> None:
        def block(bits: bool, n: int = 1, address: int = 60000) -> list[SimData]:
            return [SimData(address, values=[False] * 16 if bits else [0] * n,
                            datatype=DataType.BITS if bits else DataType.REGISTERS)]

        devices = [SimDevice(w, simdata=(block(True), block(True), block(False, MODBUS_REGISTER_COUNT, 0),
                                         block(False)), action=partial(self._action, w))
                   for w in self.wells]
        self._server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)

    async def update(self, _ts_ms: int) -> None:
        """Nothing to push: registers are filled when read."""

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
