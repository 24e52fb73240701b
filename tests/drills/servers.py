"""Field-device servers for the source drills, each a real process that a drill can kill and restart
on the same port: ``python -m tests.drills.servers modbus|opcua PORT``.

* modbus: a pymodbus TCP server, unit 1, holding/input registers 0..9 counting up every 100 ms;
* opcua: an asyncua server (security None, anonymous) with Double variables ``nsu=urn:ingestd:drill;s=T0..T4``
  changing every 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DeviceServer"]

ROOT = Path(__file__).resolve().parents[2]
OPCUA_NS = "urn:ingestd:drill"


class DeviceServer:
    """One simulated device server as a child process (restartable on the same port)."""

    def __init__(self, kind: str, port: int) -> None:
        self.kind = kind
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/ingestd-drill-{kind}-{port}.log")

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.drills.servers", self.kind, str(self.port)],
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} server did not start listening")
            time.sleep(0.05)  # readiness polling of a child process

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


async def _modbus(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    regs = list(range(10))
    holding = SimData(0, values=regs, datatype=DataType.REGISTERS)
    inputs = SimData(0, values=regs, datatype=DataType.REGISTERS)
    bits = SimData(0, values=[False] * 16, datatype=DataType.BITS)
    device = SimDevice(1, simdata=([bits], [SimData(0, values=[False] * 16, datatype=DataType.BITS)], [holding],
                                   [inputs]))
    server = ModbusTcpServer([device], address=("127.0.0.1", port))
    await server.serve_forever()


async def _opcua(port: int) -> None:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(OPCUA_NS)
    plant = await server.nodes.objects.add_object(idx, "Plant")
    nodes = [await plant.add_variable(ua.NodeId(f"T{i}", idx), f"T{i}", 0.0) for i in range(5)]
    async with server:
        n = 0
        while True:
            n += 1
            for i, node in enumerate(nodes):
                await node.write_value(float(n + i))
            await asyncio.sleep(0.1)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(_modbus(port) if kind == "modbus" else _opcua(port))


if __name__ == "__main__":
    main()
